"""ELR+ (Liu et al., "Early-Learning Regularization Prevents Memorization of Noisy Labels",
NeurIPS 2020), as its official release trains it (shengliu66/ELR, folder ELR_plus/:
trainer/trainer.py, base/base_trainer.py, model/loss.py).

Two networks of the run's architecture are trained, each with a weight-averaged copy of its
own (an exponential moving average of its parameters). Network k keeps a target t_i for
every training sample, a running average of the predictions of the OTHER network's
averaged copy. At each step, for network k and the batch (x, y, i):

    lambda_m ~ Beta(a, a), lambda_m <- max(lambda_m, 1 - lambda_m);  j = a random permutation
    x~ = lambda_m x + (1 - lambda_m) x_j,  y~ = lambda_m onehot(y) + (1 - lambda_m) onehot(y_j)
    t_i <- beta t_i + (1 - beta) s_i / sum s_i,  s = softmax(other network's average(x))
    q   = lambda_m t_i + (1 - lambda_m) t_j          (the targets mixed like the images)
    p   = clamp(softmax(network k (x~)), 1e-4, 1 - 1e-4)
    L   = -mean_i <y~_i, log softmax> + r(step, coef_step) * lambda * mean_i log(1 - <q_i, p_i>)

and after the optimiser's step the average moves: w~ <- d w~ + (1 - d) w with
d = r(step + 1, ema_step) * ema_alpha (or min(1 - 1/(step + 1), ema_alpha), the release's
ema_update false), r the release's sigmoid ramp-up exp(-5 (1 - min(step, T) / T)^2)
(1 at T = 0). On 100-class data sets the release also multiplies the mixed label by q and
renormalises it before the cross-entropy: --elr_plus_weight_labels, on by default there.
Both networks step on each batch in turn, network 1 first (the release trains one whole
epoch of each in turn), each with its own mixup draw. --elr_plus_warmup epochs of plain
cross-entropy may come first (the release's warm-up; none by default, as released).

The averaged copies start from weights of their own (the release initialises them apart),
are never trained, average the parameters only, and compute the targets in training mode
(batch statistics; their BatchNorm statistics follow their own forward passes), as released.
The first network is the run's model (columns _main), the second the network "net2"
(_net2), their averages _ema1 and _ema2; the main columns (and best.pt's selection) are
the release's evaluated model, the mean of the two networks' logits. The targets, the
averaged weights and the step count are the method's state, checkpointed with the run.
docs/REPRODUCTION.md section 7 cites the release line by line for every default.
"""
import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from data import dataset_spec
from errors import UserError
from methods import Method
from methods.elr import CLAMP, update_targets

# The release's configuration files: ELR_plus/config_cifar10.json, config_cifar10_asym.json,
# config_cifar100.json, config_clothing1m.json. Every other data set takes CIFAR-10's.
RELEASED = {
    "cifar10": dict(lam=3.0, beta=0.7, coef_step=0, ema_alpha=0.997, ema_update="sigmoid", ema_step=40000),
    "cifar10-asym": dict(lam=1.0, beta=0.9, coef_step=0, ema_alpha=0.997, ema_update="sigmoid", ema_step=40000),
    "cifar100": dict(lam=7.0, beta=0.9, coef_step=40000, ema_alpha=0.997, ema_update="sigmoid", ema_step=40000),
    "clothing1m": dict(lam=3.0, beta=0.7, coef_step=0, ema_alpha=0.9999, ema_update="average", ema_step=0),
}
MIXUP_ALPHA = 1.0   # the mixup_alpha of all four
EMA_UPDATES = ("sigmoid", "average")


# The flags: (name, type, default, help); a default of None is the data set's, resolved
# by check_flags from the release's configuration files.
FLAGS = [
    ("elr_plus_lambda", finite_float, None,
     "weight of the regulariser (default: the release's, 3 on CIFAR-10, Clothing1M and every "
     "other data set, 1 on CIFAR-10 asym, 7 on CIFAR-100)"),
    ("elr_plus_beta", finite_float, None,
     "momentum of the targets' running average (default: the release's, 0.7 on CIFAR-10, "
     "Clothing1M and every other data set, 0.9 on CIFAR-10 asym and CIFAR-100)"),
    ("elr_plus_mixup_alpha", finite_float, MIXUP_ALPHA, "mixup's Beta(alpha, alpha) (0: no mixing)"),
    ("elr_plus_ema_alpha", finite_float, None,
     "final weight of the average's past (default: the release's, 0.997; 0.9999 on Clothing1M)"),
    ("elr_plus_ema_update", "choice", None,
     "how that weight rises: sigmoid (ramped up over --elr_plus_ema_step steps) or average "
     "(min(1 - 1/(step + 1), alpha)) (default: the release's, sigmoid; average on Clothing1M)"),
    ("elr_plus_ema_step", integer, None,
     "steps of the sigmoid ramp-up of the averaging weight (default: the release's, 40000; 0 on "
     "Clothing1M, where it is unused)"),
    ("elr_plus_coef_step", integer, None,
     "steps of the sigmoid ramp-up of lambda (default: the release's, 0 (none) on CIFAR-10 and "
     "every other data set, 40000 on CIFAR-100)"),
    ("elr_plus_warmup", integer, 0, "epochs of plain cross-entropy first (the release's 0)"),
    ("elr_plus_weight_labels", "bool", None,
     "multiply the mixed label by the mixed target before the cross-entropy (default: the "
     "release's, on for 100 classes, else off)"),
]


# Each flag's valid values: (name, test, what the refusal says after the value).
CHECKS = [
    ("elr_plus_lambda", lambda v: v >= 0, "must be >= 0 (it weighs a regulariser)"),
    ("elr_plus_beta", lambda v: 0 <= v < 1, "is outside [0, 1): it is the momentum of the targets' running average"),
    ("elr_plus_mixup_alpha", lambda v: v >= 0, "must be >= 0 (the Beta distribution's parameter; 0: no mixing)"),
    ("elr_plus_ema_alpha", lambda v: 0 <= v < 1, "is outside [0, 1): it is the weight of the average's past"),
    ("elr_plus_ema_step", lambda v: v >= 0, "must be >= 0 (a number of steps)"),
    ("elr_plus_coef_step", lambda v: v >= 0, "must be >= 0 (a number of steps)"),
    ("elr_plus_warmup", lambda v: v >= 0, "must be >= 0 (a number of epochs)"),
]


def released_defaults(dataset, noise_type):
    """The release's settings for this data set and noise (its asym file for CIFAR-10 asym)."""
    key = f"{dataset}-asym" if dataset == "cifar10" and noise_type == "asym" else dataset
    return RELEASED.get(key, RELEASED["cifar10"])


def sigmoid_rampup(current, length):
    """exp(-5 (1 - current / length)^2), current clipped to [0, length]; 1 at length 0."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def ema_decay(step, ema_alpha, ema_update, ema_step):
    """The averaging weight d after the step-th optimiser step (1-based)."""
    if ema_update == "sigmoid":
        return sigmoid_rampup(step + 1, ema_step) * ema_alpha
    return min(1.0 - 1.0 / (step + 1), ema_alpha)


@torch.no_grad()
def ema_update(ema_model, model, decay):
    """w~ <- decay * w~ + (1 - decay) * w over the parameters (not the buffers)."""
    ema, params = list(ema_model.parameters()), [p.detach() for p in model.parameters()]
    torch._foreach_mul_(ema, decay)
    torch._foreach_add_(ema, params, alpha=1.0 - decay)


def mix(a, index, lam):
    """lam * a + (1 - lam) * a[index]; a itself without mixing (index None)."""
    return a if index is None else lam * a + (1.0 - lam) * a[index]


def elr_plus_loss(logits, mixed_labels, q, coef, weight_labels=False):
    """-mean <y~, log softmax(z)> + coef * mean log(1 - <q, clamp(softmax(z))>); with
    weight_labels the label is y~ * q renormalised first. q carries no gradient."""
    log_p = F.log_softmax(logits.float(), dim=1)
    p = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
    if weight_labels:
        mixed_labels = mixed_labels * q
        mixed_labels = mixed_labels / mixed_labels.sum(dim=1, keepdim=True)
    ce = -(mixed_labels * log_p).sum(dim=1).mean()
    return ce + coef * torch.log(1.0 - (q * p).sum(dim=1)).mean()


class MeanOfLogits(torch.nn.Module):
    """The release's evaluated model: the mean of two networks' logits."""

    def __init__(self, first, second):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x):
        return 0.5 * (self.first(x) + self.second(x))


class ELRPlus(Method):
    name = "elr_plus"
    title = "ELR+"       # its readable name in figure titles
    summary = "ELR+: two networks with weight averages, mixup, and ELR targets from the other's average"
    knobs = {}   # no value of a flag makes it plain cross-entropy

    def __init__(self, lam, beta, mixup_alpha=MIXUP_ALPHA, ema_alpha=0.997, ema_update="sigmoid",
                 ema_step=40000, coef_step=0, warmup=0, weight_labels=False):
        self.elr_plus_lambda, self.elr_plus_beta = lam, beta
        self.elr_plus_mixup_alpha, self.elr_plus_ema_alpha = mixup_alpha, ema_alpha
        self.elr_plus_ema_update, self.elr_plus_ema_step = ema_update, ema_step
        self.elr_plus_coef_step, self.elr_plus_warmup = coef_step, warmup
        self.elr_plus_weight_labels = weight_labels
        self.tag = (f"elr_plus-l{lam:g}-b{beta:g}-m{mixup_alpha:g}-e{ema_alpha:g}-{ema_update}{ema_step}"
                    f"-c{coef_step}-w{warmup}" + ("-wl" if weight_labels else ""))
        self.step = 0          # optimiser steps of each network after the warm-up
        self.warming = False
        self.targets = self.emas = self.pair = None

    @classmethod
    def add_flags(cls, group, defaults):
        for name, kind, default, text in FLAGS:
            kwargs = {"choices": EMA_UPDATES} if kind == "choice" else \
                {"action": argparse.BooleanOptionalAction} if kind == "bool" else {"type": kind}
            group.add_argument(f"--{name}", default=defaults.get(name, default), help=text, **kwargs)

    @classmethod
    def check_flags(cls, cfg):
        # Resolved here, so that the default and the same value typed share a run folder.
        released = released_defaults(cfg.dataset, cfg.noise_type)
        for flag, key in (("elr_plus_lambda", "lam"), ("elr_plus_beta", "beta"), ("elr_plus_ema_alpha", "ema_alpha"),
                          ("elr_plus_ema_update", "ema_update"), ("elr_plus_ema_step", "ema_step"),
                          ("elr_plus_coef_step", "coef_step")):
            if getattr(cfg, flag) is None:
                setattr(cfg, flag, released[key])
        if cfg.elr_plus_weight_labels is None:
            cfg.elr_plus_weight_labels = dataset_spec(cfg.dataset).num_classes == 100
        for flag, ok, why in CHECKS:
            if not ok(getattr(cfg, flag)):
                raise UserError(f"--{flag} {getattr(cfg, flag)} {why}")
        if cfg.elr_plus_warmup >= cfg.n_epoch:
            raise UserError(f"--elr_plus_warmup {cfg.elr_plus_warmup} leaves none of the {cfg.n_epoch} "
                            "epochs to ELR+: use fewer warm-up epochs or a larger --n_epoch")
        for flag in ("elr_plus_lambda", "elr_plus_beta", "elr_plus_mixup_alpha", "elr_plus_ema_alpha"):
            setattr(cfg, flag, abs(getattr(cfg, flag)))  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.elr_plus_lambda, cfg.elr_plus_beta, cfg.elr_plus_mixup_alpha, cfg.elr_plus_ema_alpha,
                   cfg.elr_plus_ema_update, cfg.elr_plus_ema_step, cfg.elr_plus_coef_step,
                   cfg.elr_plus_warmup, cfg.elr_plus_weight_labels)

    @property
    def label(self):
        return f"ELR+ lambda={self.elr_plus_lambda:g} beta={self.elr_plus_beta:g}"

    # ------------------------------------------------------------ training

    def setup(self, run):
        run.add_network("net2")
        # The averages: weights of their own, never trained, in training mode throughout
        # (evaluation puts them back in it).
        self.emas = [run.build_network() for _ in range(2)]
        for ema in self.emas:
            ema.model.requires_grad_(False)
            ema.model.train()
        self.targets = [torch.zeros(len(run.noisy_labels), run.num_classes, device=run.device) for _ in range(2)]
        self.pair = MeanOfLogits(run.model, run.networks["net2"].model)

    def start_epoch(self, epoch, run):
        self.warming = epoch < self.elr_plus_warmup

    def coefficient(self):
        return sigmoid_rampup(self.step, self.elr_plus_coef_step) * self.elr_plus_lambda

    def decay(self):
        return ema_decay(self.step, self.elr_plus_ema_alpha, self.elr_plus_ema_update, self.elr_plus_ema_step)

    def draw_mixup(self, n, device):
        """(lambda, permutation) of one network's batch: numpy's Beta, torch's permutation on
        the device, both from the run's training RNG; (1, None) without mixing."""
        if self.elr_plus_mixup_alpha == 0:
            return 1.0, None
        lam = float(np.random.beta(self.elr_plus_mixup_alpha, self.elr_plus_mixup_alpha))
        return max(lam, 1.0 - lam), torch.randperm(n, device=device)

    def train_step(self, run, x, y, idx):
        if self.warming:
            return self.warmup_step(run, x, y, idx)
        self.step += 1
        coef, decay = self.coefficient(), self.decay()
        labels = F.one_hot(y, run.num_classes).float()
        first = None
        for k, name in enumerate(("", "net2")):
            net, other_ema = run.networks[name], self.emas[1 - k]
            lam, index = self.draw_mixup(len(y), y.device)
            with run.autocast():
                logits = net.forward(mix(x, index, lam))
                with torch.no_grad():
                    other = other_ema.forward(x)
            update_targets(self.targets[k], idx, torch.softmax(other.float(), dim=1), self.elr_plus_beta)
            q = mix(self.targets[k][idx], index, lam)
            loss = elr_plus_loss(logits, mix(labels, index, lam), q, coef, self.elr_plus_weight_labels)
            run.minimize(loss, network=name)
            ema_update(self.emas[k].model, net.model, decay)
            if first is None:
                first = loss.detach().float(), logits.detach()
        return first

    def warmup_step(self, run, x, y, idx):
        """The release's warm-up: each network on plain cross-entropy, its targets from its own
        predictions; no mixing, no averaging, no step counted."""
        first = None
        for k, name in enumerate(("", "net2")):
            with run.autocast():
                logits = run.networks[name].forward(x)
            update_targets(self.targets[k], idx, torch.softmax(logits.detach().float(), dim=1), self.elr_plus_beta)
            loss = F.cross_entropy(logits.float(), y)
            run.minimize(loss, network=name)
            if first is None:
                first = loss.detach().float(), logits.detach()
        return first

    def epoch_columns(self):
        return {"elr_plus_coef": self.coefficient(), "ema_decay": self.decay()}

    def evaluated_model(self, run):
        return self.pair  # the main network's own columns get the suffix _main

    def eval_models(self):
        return {"ema1": self.emas[0].model, "ema2": self.emas[1].model}

    def state_dict(self):
        state = {"step": self.step, "targets1": self.targets[0], "targets2": self.targets[1]}
        for k, ema in enumerate(self.emas):
            state.update({f"ema{k + 1}.{key}": value for key, value in ema.model.state_dict().items()})
        return state

    def load_state_dict(self, state):
        self.step = state["step"]
        for k, ema in enumerate(self.emas):
            self.targets[k].copy_(state[f"targets{k + 1}"])
            prefix = f"ema{k + 1}."
            ema.model.load_state_dict({key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)})
