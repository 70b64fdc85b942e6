"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with
Extremely Noisy Labels", NeurIPS 2018), with the schedule of its official release
(bhanML/Co-teaching, main.py and loss.py).

Two networks of the run's architecture, each with its own optimiser (the run's settings),
see the same batch. Each keeps the fraction R(t) of the batch on which its own
cross-entropy is smallest, and its PEER trains on that selection: the samples one network
finds easy, probably clean, teach the other, so that their errors do not reinforce
themselves. Each loss is the mean cross-entropy over the kept samples.

R(t), as in the paper, is the fraction KEPT; the release schedules the fraction dropped,
its forget rate f(t) = 1 - R(t): rate_schedule = forget_rate everywhere, its first
num_gradual entries linspace(0, forget_rate ** exponent, num_gradual), read at the epoch
index t; the release trains epochs t = 1 .. n_epoch - 1 (t = 0 only evaluates the initial
weights), so this engine's epoch e (0-based, every one trained) reads t = e + 1. With the
defaults (num_gradual 10, exponent 1) the first epoch drops forget_rate / 9 of the batch,
the ninth and every later one forget_rate.

--forget_rate defaults to the expected fraction of wrong labels of the run's noise model
(default_forget_rate): 1 - the mean of the diagonal of its transition matrix (the noise
type's `matrix`), which is --noise_rate for symmetric and pairflip noise and half of it
for CIFAR-10 asym; the release defaults to --noise_rate whatever the noise.

The main network is the run's model (columns without suffix, best.pt's selection); the
second one is the network "peer" (columns suffixed _peer), checkpointed with it. Columns:
kept_fraction (kept samples / seen samples), kept_clean_fraction and
kept_clean_fraction_peer (the share of truly clean labels among the samples each network
kept, the release's "pure ratio"; empty where the true labels are unknown).
"""
import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from data import dataset_spec, noise_type
from errors import UserError
from methods import Method


FORGET_RATE_HELP = ("the fraction of each batch finally dropped (default: the expected fraction of "
                    "wrong labels of the run's noise model, 1 - the mean of the diagonal of its "
                    "transition matrix: --noise_rate for symmetric and pairflip, half of it for "
                    "CIFAR-10 asym, 0 for clean; --noise_rate for the types without a matrix that "
                    "take a rate (instance, dependent, openset); required for human and real noise. "
                    "The release defaults to --noise_rate)")


def default_forget_rate(cfg):
    """The expected fraction of wrong labels of the run's noise model: 1 - mean(diag P), P
    the noise type's transition matrix at --noise_rate (rounded to 12 decimals, so that
    0.2 is 0.2); --noise_rate for a type that takes a rate but declares no matrix; a
    UserError for one with neither (human and real noise)."""
    noise = noise_type(cfg.noise_type)
    if noise.matrix is not None:
        P = noise.matrix(cfg.noise_rate, dataset_spec(cfg.dataset).num_classes)
        return round(1.0 - float(np.mean(np.diag(P))), 12)
    if noise.uses_rate:
        return cfg.noise_rate
    raise UserError(f"noise type {cfg.noise_type} has no noise model (no transition matrix, no "
                    "--noise_rate) to default --forget_rate to: pass --forget_rate, the expected "
                    "fraction of wrong labels (noise.json of any run on these labels reports the "
                    "actual one)")


def forget_schedule(forget_rate, num_gradual, exponent, n_epoch):
    """R of each engine epoch 0 .. n_epoch - 1: the release's rate_schedule[e + 1]."""
    release = np.ones(n_epoch + 1) * forget_rate
    release[:num_gradual] = np.linspace(0, forget_rate ** exponent, num_gradual)[:n_epoch + 1]
    return [float(r) for r in release[1:]]


def small_loss_selection(losses, num_keep):
    """Indices of the num_keep smallest losses (ties: the earlier sample first)."""
    return torch.argsort(losses.detach(), stable=True)[:num_keep]


def small_loss_mask(losses, num_keep, among):
    """Boolean mask of the num_keep smallest losses among the samples where `among` is
    true (ties: the earlier sample first); num_keep may be a device tensor (no host sync)."""
    order = torch.argsort(losses.detach(), stable=True)
    order = order[torch.argsort((~among[order]).to(torch.uint8), stable=True)]  # candidates first
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    return (rank < num_keep) & among


def coteaching_losses(logits, peer_logits, labels, forget_rate):
    """(loss of the main network, loss of the peer, the main network's selection, the peer's):
    each network's loss is its mean cross-entropy over the samples the other kept."""
    num_keep = max(1, int((1.0 - forget_rate) * len(labels)))  # the release's int(); at least one
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    peer_ce = F.cross_entropy(peer_logits.float(), labels, reduction="none")
    keep, peer_keep = small_loss_selection(ce, num_keep), small_loss_selection(peer_ce, num_keep)
    return ce[peer_keep].mean(), peer_ce[keep].mean(), keep, peer_keep


class CoTeaching(Method):
    name = "coteaching"
    title = "Co-teaching"
    summary = "co-teaching: two networks, each trained on the samples its peer finds small-loss"
    knobs = {"forget_rate": 0.0}

    def __init__(self, forget_rate, num_gradual=10, exponent=1.0, n_epoch=1):
        self.forget_rate, self.num_gradual, self.exponent = forget_rate, num_gradual, exponent
        self.schedule = forget_schedule(forget_rate, num_gradual, exponent, n_epoch)
        self.tag = f"coteaching-f{forget_rate:g}-t{num_gradual}-c{exponent:g}"
        self.rate = 0.0
        self.peer = self.clean = None

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--forget_rate", type=finite_float, default=defaults.get("forget_rate"),
                           help=f"tau, {FORGET_RATE_HELP}")
        group.add_argument("--num_gradual", type=integer, default=defaults.get("num_gradual", 10),
                           help="T_k: epochs over which the dropped fraction rises to tau")
        group.add_argument("--exponent", type=finite_float, default=defaults.get("exponent", 1.0),
                           help="c: the rise goes to tau ** c (0.5, 1 or 2 in the paper)")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.forget_rate is None:
            cfg.forget_rate = default_forget_rate(cfg)
        if not 0.0 <= cfg.forget_rate < 1.0:
            raise UserError(f"--forget_rate {cfg.forget_rate} is outside [0, 1): it is the fraction "
                            "of each batch that is dropped")
        if cfg.num_gradual < 0:
            raise UserError(f"--num_gradual {cfg.num_gradual} must be >= 0 (epochs of the rise)")
        if cfg.exponent <= 0:
            raise UserError(f"--exponent {cfg.exponent} must be > 0 (the paper uses 0.5, 1 or 2)")
        cfg.forget_rate = abs(cfg.forget_rate)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.forget_rate, cfg.num_gradual, cfg.exponent, cfg.n_epoch)

    @property
    def label(self):
        return f"Co-teaching tau={self.forget_rate:g}"

    def setup(self, run):
        self.peer = run.add_network("peer")
        if run.true_labels is not None:
            self.clean = run.noisy_labels == run.true_labels

    def start_epoch(self, epoch, run):
        self.rate = self.schedule[epoch]
        # Counts of the epoch: the kept and seen counts are host ints (known from shapes),
        # the clean counts stay on the device until epoch_columns reads them.
        self.kept = self.seen = 0
        self.kept_clean = torch.zeros(2, dtype=torch.int64, device=run.device)

    def train_step(self, run, x, y, idx):
        with run.autocast():
            logits, peer_logits = run.forward(x), self.peer.forward(x)
        loss, peer_loss, keep, peer_keep = coteaching_losses(logits, peer_logits, y, self.rate)
        run.minimize(loss)
        run.minimize(peer_loss, network="peer")
        self.kept += len(keep)
        self.seen += len(y)
        if self.clean is not None:
            self.kept_clean += torch.stack([self.clean[idx[keep]].sum(), self.clean[idx[peer_keep]].sum()])
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        clean = [None, None] if self.clean is None else [c / self.kept for c in self.kept_clean.tolist()]
        return {"forget_rate": self.rate, "kept_fraction": self.kept / self.seen,
                "kept_clean_fraction": clean[0], "kept_clean_fraction_peer": clean[1]}
