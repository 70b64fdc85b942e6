"""Generalized cross-entropy (Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training
Deep Neural Networks with Noisy Labels", NeurIPS 2018).

    L_q = (1 - p_y^q) / q,      p = softmax(z), 0 < q <= 1

q -> 0 is cross-entropy (the limit of (1 - p^q) / q is -log p); q = 1 is the mean absolute
error 1 - p_y (up to the factor 2 of the L1 distance between p and the one-hot label).
This method's default is q = 0.7, the value the paper's experiments are commonly reproduced
with; it is not checked against the paper's text (docs/REPRODUCTION.md). No q > 0 gives CE exactly,
so --q 0 is defined as its limit and computed as plain cross-entropy: the knob's baseline.
"""
import torch
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods import Method


def gce_loss(logits, labels, q):
    """Batch mean of (1 - p_y^q) / q in fp32; q = 0 is its limit, cross-entropy."""
    log_p_y = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    if q == 0:
        return -log_p_y.mean()
    # 1 - p^q = -expm1(q log p): exact for small q, where 1 - p^q would cancel in fp32
    return (-torch.expm1(q * log_p_y) / q).mean()


class GCE(Method):
    name = "gce"
    title = "GCE"
    summary = "generalized cross-entropy (1 - p_y^q) / q: q -> 0 is CE, q = 1 is MAE"
    knobs = {"q": 0.0}

    def __init__(self, q):
        self.q = q
        self.tag = "ce" if q == 0 else f"gce-q{q:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--q", type=finite_float, default=defaults.get("q", 0.7),
                           help="the exponent q in (0, 1] (1: mean absolute error; 0: its limit, "
                                "plain cross-entropy)")

    @classmethod
    def check_flags(cls, cfg):
        if not 0.0 <= cfg.q <= 1.0:
            raise UserError(f"--q {cfg.q} is outside [0, 1]: the paper's range is (0, 1] "
                            "(0.7 the default here; 0 means plain cross-entropy)")
        cfg.q = abs(cfg.q)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.q)

    @property
    def label(self):
        return "CE" if self.q == 0 else f"GCE q={self.q:g}"

    def is_ce(self):
        return self.q == 0

    def loss(self, logits, labels, indices):
        return gce_loss(logits, labels, self.q)
