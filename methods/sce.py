"""Symmetric cross-entropy (Wang et al., "Symmetric Cross Entropy for Robust Learning with
Noisy Labels", ICCV 2019), as its official release computes it
(YisenWang/symmetric_cross_entropy_for_noisy_labels, loss.py:9-21).

    L = alpha * CE + beta * RCE
    CE  = -log p_y                                   p = softmax(z)
    RCE = -sum_k p_k log t_k,   t = clamp(onehot(y), 1e-4, 1)

The reverse cross-entropy swaps prediction and label; log 0 is undefined, so the release
clips the one-hot label at 1e-4: log t_k = ln 1e-4 = -9.21 for every k != y and 0 for y,
which makes RCE = 9.21 * (1 - p_y), a bounded (noise-robust) term. alpha weighs the CE
term, which fits the data, beta the RCE term, which resists the noise. The release also
clips p_y at 1e-7 in its CE term, as Keras' cross-entropy does; here the CE term is
-log_softmax without a clip, as every CE baseline of this repository computes it.

The defaults are the release's per data set: alpha 0.1, beta 1 on CIFAR-10 (and every data
set it has no setting for, digits included), alpha 6, beta 0.1 on CIFAR-100.
alpha 1, beta 0 is plain cross-entropy: the knobs' baseline.
"""
import torch.nn.functional as F

from core.args import finite_float
from methods import Method
from methods._robust import check_weights, cross_entropy, released_or_given, reverse_cross_entropy

# (alpha, beta) of the release's runs (train_models.py:215-217, :222-224); others take CIFAR-10's.
RELEASED = {"cifar10": (0.1, 1.0), "cifar100": (6.0, 0.1)}


def sce_loss(logits, labels, alpha, beta):
    """Batch mean of alpha * CE + beta * RCE in fp32; (1, 0) is plain cross-entropy."""
    log_p = F.log_softmax(logits.float(), dim=1)
    ce = cross_entropy(logits, labels, log_p)
    if beta == 0:
        return ce if alpha == 1 else alpha * ce
    return alpha * ce + beta * reverse_cross_entropy(log_p.exp(), labels).mean()


class SCE(Method):
    name = "sce"
    title = "Symmetric cross-entropy"
    summary = "symmetric cross-entropy alpha * CE + beta * reverse CE (alpha 1, beta 0: CE)"
    knobs = {"sce_alpha": 1.0, "sce_beta": 0.0}

    def __init__(self, alpha, beta):
        self.sce_alpha, self.sce_beta = alpha, beta
        self.tag = "ce" if self.is_ce() else f"sce-a{alpha:g}-b{beta:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--sce_alpha", type=finite_float, default=defaults.get("sce_alpha"),
                           help="weight of the cross-entropy term (default: the release's, 0.1 on "
                                "CIFAR-10 and every other data set, 6 on CIFAR-100)")
        group.add_argument("--sce_beta", type=finite_float, default=defaults.get("sce_beta"),
                           help="weight of the reverse cross-entropy term (default: the release's, "
                                "1 on CIFAR-10 and every other data set, 0.1 on CIFAR-100; with "
                                "--sce_alpha 1, 0 is plain cross-entropy)")

    @classmethod
    def check_flags(cls, cfg):
        released_or_given(cfg, RELEASED, "sce_alpha", "sce_beta")
        check_weights(cfg, "sce_alpha", "sce_beta", "alpha: cross-entropy, beta: reverse cross-entropy")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.sce_alpha, cfg.sce_beta)

    @property
    def label(self):
        return "CE" if self.is_ce() else f"SCE alpha={self.sce_alpha:g} beta={self.sce_beta:g}"

    def is_ce(self):
        return self.sce_alpha == 1 and self.sce_beta == 0

    def loss(self, logits, labels, indices):
        return sce_loss(logits, labels, self.sce_alpha, self.sce_beta)
