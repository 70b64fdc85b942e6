"""Bootstrapping (Reed et al., "Training Deep Neural Networks on Noisy Labels with
Bootstrapping", ICLR workshop 2015): the target mixes the label with the model's own
prediction,

    soft:  L = -sum_k (beta * onehot(y)_k + (1 - beta) * p_k) log p_k
    hard:  L = -sum_k (beta * onehot(y)_k + (1 - beta) * onehot(argmax p)_k) log p_k

p = softmax(z). The authors released no code; the formulas are those of the Keras losses
boot_soft (giorgiop/loss-correction, loss.py:56-62) and boot_hard
(YisenWang/symmetric_cross_entropy_for_noisy_labels, loss.py:63-73), with their betas:
0.95 soft, 0.8 hard. In the soft target the prediction keeps its gradient (the extra term is
the entropy of p, which the loss then lowers: the paper's minimum-entropy reading); the hard
target, an argmax, has none. beta = 1 is plain cross-entropy: the knob's baseline.
"""
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods import Method
from methods._robust import cross_entropy

BETA = {"soft": 0.95, "hard": 0.8}   # loss-correction loss.py:57; SCE release loss.py:67


def bootstrap_loss(logits, labels, beta, mode="soft"):
    """Batch mean of the soft or hard bootstrapping loss in fp32; beta = 1 is cross-entropy."""
    log_p = F.log_softmax(logits.float(), dim=1)
    onehot = F.one_hot(labels, log_p.shape[1]).float()
    if beta == 1:
        return cross_entropy(logits, labels, log_p)
    if mode == "soft":
        own = log_p.exp()
    else:
        own = F.one_hot(log_p.detach().argmax(dim=1), log_p.shape[1]).float()
    return -((beta * onehot + (1.0 - beta) * own) * log_p).sum(dim=1).mean()


class Bootstrap(Method):
    name = "bootstrap"
    title = "Bootstrapping"
    summary = "soft or hard bootstrapping: the target mixes the label with the prediction (beta 1: CE)"
    knobs = {"boot_beta": 1.0}

    def __init__(self, beta, mode="soft"):
        self.boot_beta, self.boot = beta, mode
        self.tag = "ce" if beta == 1 else f"boot{mode}-b{beta:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--boot", choices=["soft", "hard"], default=defaults.get("boot", "soft"),
                           help="soft: mix in the softmax; hard: mix in its argmax as a one-hot")
        group.add_argument("--boot_beta", type=finite_float, default=defaults.get("boot_beta"),
                           help="weight of the label in the target (default: 0.95 soft, 0.8 hard, "
                                "the released Keras losses'; 1: plain cross-entropy)")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.boot_beta is None:
            cfg.boot_beta = BETA[cfg.boot]
        if not 0.0 <= cfg.boot_beta <= 1.0:
            raise UserError(f"--boot_beta {cfg.boot_beta} is outside [0, 1]: it is the label's share "
                            "of the target (1: plain cross-entropy)")
        cfg.boot_beta = abs(cfg.boot_beta)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.boot_beta, cfg.boot)

    @property
    def label(self):
        return "CE" if self.boot_beta == 1 else f"Bootstrap {self.boot} beta={self.boot_beta:g}"

    def is_ce(self):
        return self.boot_beta == 1

    def loss(self, logits, labels, indices):
        return bootstrap_loss(logits, labels, self.boot_beta, self.boot)
