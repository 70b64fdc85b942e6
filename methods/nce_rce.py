"""Active-passive losses (Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
Labels", ICML 2020), as their official release computes them (HanxunH/Active-Passive-Losses,
loss.py).

    L = alpha * active + beta * RCE
    NCE = log p_y / sum_k log p_k                                  (loss.py:79-90)
    NFL = (1 - p_y)^g log p_y / sum_k (1 - p_k)^g log p_k          (loss.py:353-375)
    RCE = -sum_k clamp(p_k, 1e-7, 1) log clamp(onehot(y)_k, 1e-4, 1)   (loss.py:43-57)

A normalised loss (active: it raises p_y) is robust to symmetric noise but underfits; the
reverse cross-entropy (passive: it lowers the other classes) restores the fit. --active nce
is the release's NCE+RCE (loss.py:167-176), --active nfl its NFL+RCE (loss.py:402-411); in
NFL the focal weights (1 - p)^g are detached from the gradient, as released.

The defaults are the release's per data set (configs/cifar10, configs/cifar100; the same
for both active losses and both noise types): alpha 1, beta 1 on CIFAR-10 and every data set
it has no setting for (digits included), alpha 10, beta 0.1 on CIFAR-100; gamma 0.5.

No weights give cross-entropy. The knob is beta, whose baseline 0 is the active loss alone
(alpha * NCE, the paper's NCE row): a run is paired against it, and against a CE run of the
same protocol, which every method is; no run of this method is cross-entropy (is_ce).
"""
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods import Method
from methods._robust import check_weights, released_or_given, reverse_cross_entropy

PROB_MIN = 1e-7     # the release's clamp of p in its RCE (loss.py:53)
FOCAL_GAMMA = 0.5   # configs/cifar10/sym/nfl+rce.yaml:32 (and every NFL+RCE configuration)
# (alpha, beta) of the release's NCE+RCE and NFL+RCE configurations; others take CIFAR-10's.
RELEASED = {"cifar10": (1.0, 1.0), "cifar100": (10.0, 0.1)}


def normalized_cross_entropy(log_p, labels):
    """Per-sample NCE: -log p_y / -sum_k log p_k."""
    return log_p.gather(1, labels[:, None]).squeeze(1) / log_p.sum(dim=1)


def normalized_focal_loss(log_p, labels, gamma):
    """Per-sample NFL: the focal loss -(1 - p_y)^g log p_y over its sum over every class,
    the weights (1 - p)^g without gradient."""
    terms = -(1.0 - log_p.detach().exp()) ** gamma * log_p
    return terms.gather(1, labels[:, None]).squeeze(1) / terms.sum(dim=1)


def apl_loss(logits, labels, alpha, beta, active="nce", gamma=FOCAL_GAMMA):
    """Batch mean of alpha * active + beta * RCE in fp32 (active: "nce" or "nfl")."""
    log_p = F.log_softmax(logits.float(), dim=1)
    if active == "nce":
        act = normalized_cross_entropy(log_p, labels)
    else:
        act = normalized_focal_loss(log_p, labels, gamma)
    loss = alpha * act.mean()
    if beta == 0:
        return loss
    return loss + beta * reverse_cross_entropy(log_p.exp(), labels, PROB_MIN).mean()


class NCERCE(Method):
    name = "nce_rce"
    title = "Active-passive loss"
    summary = "active-passive loss alpha * NCE (or NFL) + beta * reverse CE (beta 0: the active loss alone)"
    knobs = {"apl_beta": 0.0}

    def __init__(self, alpha, beta, active="nce", gamma=None):
        self.apl_alpha, self.apl_beta, self.active = alpha, beta, active
        self.focal_gamma = gamma if active == "nfl" else None
        act = "nce" if active == "nce" else f"nfl-g{gamma:g}"
        self.tag = f"{act}-a{alpha:g}" if beta == 0 else f"{act}-rce-a{alpha:g}-b{beta:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--active", choices=["nce", "nfl"], default=defaults.get("active", "nce"),
                           help="the active loss: normalised cross-entropy (NCE+RCE) or normalised "
                                "focal loss (NFL+RCE)")
        group.add_argument("--focal_gamma", type=finite_float, default=defaults.get("focal_gamma"),
                           help=f"the focal exponent of --active nfl (default: the release's, "
                                f"{FOCAL_GAMMA:g})")
        group.add_argument("--apl_alpha", type=finite_float, default=defaults.get("apl_alpha"),
                           help="weight of the active loss (default: the release's, 1 on CIFAR-10 "
                                "and every other data set, 10 on CIFAR-100)")
        group.add_argument("--apl_beta", type=finite_float, default=defaults.get("apl_beta"),
                           help="weight of the reverse cross-entropy (default: the release's, 1 on "
                                "CIFAR-10 and every other data set, 0.1 on CIFAR-100; 0: the active "
                                "loss alone)")

    @classmethod
    def check_flags(cls, cfg):
        released_or_given(cfg, RELEASED, "apl_alpha", "apl_beta")
        check_weights(cfg, "apl_alpha", "apl_beta", "alpha: the active loss, beta: reverse cross-entropy")
        if cfg.active == "nce":
            if cfg.focal_gamma is not None:
                raise UserError(f"--focal_gamma {cfg.focal_gamma} applies to --active nfl only: drop "
                                "it, or add --active nfl")
            return
        if cfg.focal_gamma is None:
            cfg.focal_gamma = FOCAL_GAMMA
        if cfg.focal_gamma < 0:
            raise UserError(f"--focal_gamma {cfg.focal_gamma} must be >= 0 (0: NFL is NCE)")
        cfg.focal_gamma = abs(cfg.focal_gamma)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.apl_alpha, cfg.apl_beta, cfg.active, cfg.focal_gamma)

    @property
    def label(self):
        act = "NCE" if self.active == "nce" else f"NFL gamma={self.focal_gamma:g}"
        if self.apl_beta == 0:
            return f"{act} alpha={self.apl_alpha:g}"
        return f"{act}+RCE alpha={self.apl_alpha:g} beta={self.apl_beta:g}"

    def loss(self, logits, labels, indices):
        return apl_loss(logits, labels, self.apl_alpha, self.apl_beta, self.active, self.focal_gamma)
