"""CORES² phase 1, the confidence-regularised sample sieve (Cheng et al., "Learning with
Instance-Dependent Label Noise: A Sample Sieve Approach", ICLR 2021), as its official
release computes it (UCSC-REAL/cores, loss.py and phase1.py).

Per sample, with p = softmax(z) and l_j = -log(p_j + 1e-8) (loss.py, loss_cores):

    loss_i = CE(z_i, y_i) - beta(t) * sum_j prior_j * l_ij      (CE minus the confidence
                                                                  regulariser)
    keep_i = CE(z_i, y_i) - mean_j l_ij <= 0                     (the sieve)

and the batch loss is the mean of loss_i over the kept samples (0 when none is kept).
The regulariser rewards confident predictions; the sieve drops the samples whose loss on
their label exceeds their mean loss over all classes, the likely noisy ones. The sieve's
threshold is the uniform mean even where the loss weighs the classes by the prior, as
released. Every sample is kept during the first --cores_warmup epochs (the release's
`epoch <= 30`: 31 epochs).

beta(t) follows the release's table (f_beta): 0 for --cores_beta_warmup epochs (10),
then linspace(0, beta, --cores_beta_ramp) (30 epochs), then beta (2); past the table it
stays at beta. The release divides each epoch's learning rate by 1 + beta(t)
(phase1.py, adjust_learning_rate); so does this method (--no-cores_divide_lr: not).

The prior is the distribution of the noisy labels among the samples the last epoch kept
(phase1.py: noise_prior * N minus the sieved-out counts per noisy class, normalised): the
noisy labels' distribution itself until the sieve starts. The sieve's state, which
samples the last epoch kept, and the prior the last epoch trained with are checkpointed:
resume is exact. A sample a partial epoch (Clothing1M's subsets) does not draw keeps its
last decision.

beta 0 without the sieve (--cores_beta 0 --no-cores_sieve) is plain cross-entropy: the
knobs' baseline. Columns: cores_beta, cores_lr (the learning rate the epoch trained
with, the lr column divided by 1 + beta), kept_fraction (the share of the training samples
the epoch kept), kept_clean_fraction (the share of truly clean labels among them; empty
where the true labels are unknown).
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from errors import UserError
from methods import Method

EPS = 1e-8  # inside the regulariser's log, as released


def beta_schedule(beta, warmup, ramp, n_epoch):
    """beta of each epoch 0 .. n_epoch - 1: the release's f_beta table, zeros(warmup) then
    linspace(0, beta, ramp), then beta for every later epoch."""
    table = np.concatenate([np.zeros(warmup), np.linspace(0.0, beta, ramp)])
    return [float(b) for b in np.concatenate([table, np.full(max(0, n_epoch - len(table)), beta)])[:n_epoch]]


def cores_loss(logits, labels, prior, beta, sieve):
    """(batch loss, keep mask) of loss_cores, in fp32; `prior` (K,); with sieve False every
    sample is kept (the release's warm-up). beta 0 without the sieve is cross-entropy."""
    logits = logits.float()
    if beta == 0 and not sieve:
        return F.cross_entropy(logits, labels), torch.ones_like(labels, dtype=torch.bool)
    ce = F.cross_entropy(logits, labels, reduction="none")
    neg_log = -torch.log(torch.softmax(logits, dim=1) + EPS)
    per_sample = ce - beta * (neg_log * prior).sum(dim=1)
    if not sieve:
        return per_sample.mean(), torch.ones_like(labels, dtype=torch.bool)
    keep = ce - neg_log.mean(dim=1) <= 0
    kept = keep.float()
    return (kept * per_sample).sum() / kept.sum().clamp(min=1.0), keep


def kept_prior(noisy_labels, kept, num_classes):
    """The distribution of the noisy labels over the kept samples, float32."""
    counts = torch.bincount(noisy_labels[kept], minlength=num_classes).double()
    return (counts / counts.sum().clamp(min=1.0)).float()


class Cores(Method):
    name = "cores"
    title = "CORES²"
    summary = "CORES² sample sieve: CE minus beta * confidence regulariser, on the samples the sieve keeps"
    knobs = {"cores_beta": 0.0, "cores_sieve": False}

    def __init__(self, beta=2.0, beta_warmup=10, beta_ramp=30, warmup=31, sieve=True, divide_lr=True, n_epoch=1):
        self.cores_beta, self.cores_beta_warmup, self.cores_beta_ramp = beta, beta_warmup, beta_ramp
        self.cores_warmup, self.cores_sieve, self.cores_divide_lr = warmup, sieve, divide_lr
        self.schedule = beta_schedule(beta, beta_warmup, beta_ramp, n_epoch)
        self.tag = "ce" if self.is_ce() else (
            f"cores-b{beta:g}-{beta_warmup}-{beta_ramp}" + (f"-sieve{warmup}" if sieve else "-nosieve")
            + ("" if divide_lr else "-lr"))
        self.beta, self.sieving, self.lr = 0.0, False, None
        self.kept = self.prior = self.noisy_labels = self.clean = None

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--cores_beta", type=finite_float, default=defaults.get("cores_beta", 2.0),
                           help="beta, the regulariser's final weight (0 with --no-cores_sieve: plain "
                                "cross-entropy)")
        group.add_argument("--cores_beta_warmup", type=integer, default=defaults.get("cores_beta_warmup", 10),
                           help="epochs at beta 0 before it rises")
        group.add_argument("--cores_beta_ramp", type=integer, default=defaults.get("cores_beta_ramp", 30),
                           help="epochs of the rise, linspace(0, beta, ramp)")
        group.add_argument("--cores_warmup", type=integer, default=defaults.get("cores_warmup", 31),
                           help="epochs that keep every sample before the sieve acts (the release's "
                                "epoch <= 30)")
        group.add_argument("--cores_sieve", action=argparse.BooleanOptionalAction, default=defaults.get("cores_sieve", True),
                           help="sieve the samples after the warm-up (--no-cores_sieve: keep all)")
        group.add_argument("--cores_divide_lr", action=argparse.BooleanOptionalAction,
                           default=defaults.get("cores_divide_lr", True),
                           help="divide each epoch's learning rate by 1 + beta, as released")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.cores_beta < 0:
            raise UserError(f"--cores_beta {cfg.cores_beta} must be >= 0 (it weighs the confidence "
                            "regulariser; 0 drops it)")
        for flag in ("cores_beta_warmup", "cores_beta_ramp", "cores_warmup"):
            if getattr(cfg, flag) < 0:
                raise UserError(f"--{flag} {getattr(cfg, flag)} must be >= 0 (a number of epochs)")
        cfg.cores_beta = abs(cfg.cores_beta)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.cores_beta, cfg.cores_beta_warmup, cfg.cores_beta_ramp, cfg.cores_warmup,
                   cfg.cores_sieve, cfg.cores_divide_lr, cfg.n_epoch)

    @property
    def label(self):
        if self.is_ce():
            return "CE"
        return f"CORES beta={self.cores_beta:g}" + ("" if self.cores_sieve else " (no sieve)")

    def is_ce(self):
        return self.cores_beta == 0 and not self.cores_sieve

    def setup(self, run):
        self.noisy_labels = run.noisy_labels
        self.kept = torch.ones(len(run.noisy_labels), dtype=torch.bool, device=run.device)
        self.prior = kept_prior(self.noisy_labels, self.kept, run.num_classes)
        if run.true_labels is not None:
            self.clean = run.noisy_labels == run.true_labels

    def start_epoch(self, epoch, run):
        self.beta = self.schedule[epoch]
        self.sieving = self.cores_sieve and epoch >= self.cores_warmup
        self.prior = kept_prior(self.noisy_labels, self.kept, run.num_classes)
        if self.cores_divide_lr:
            for group in run.optimizer.param_groups:
                group["lr"] = group["lr"] / (1.0 + self.beta)
        self.lr = run.optimizer.param_groups[0]["lr"]

    def train_step(self, run, x, y, idx):
        with run.autocast():
            logits = run.forward(x)
        loss, keep = cores_loss(logits, y, self.prior, self.beta, self.sieving)
        run.minimize(loss)
        self.kept[idx] = keep
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        kept = int(self.kept.sum())
        clean = None if self.clean is None else int((self.clean & self.kept).sum()) / max(kept, 1)
        return {"cores_beta": self.beta, "cores_lr": self.lr, "kept_fraction": kept / len(self.kept), "kept_clean_fraction": clean}

    def state_dict(self):
        return {"kept": self.kept, "prior": self.prior}

    def load_state_dict(self, state):
        self.kept.copy_(state["kept"])
        self.prior.copy_(state["prior"])
