"""f-divergence maximisation (Wei & Liu, "When Optimizing f-Divergence is Robust with Label
Noise", ICLR 2021), after its official release (weijiaheng/Robust-f-divergence-measures,
CIFAR-10/runner.py).

The network h is trained to maximise the variational lower bound of the f-divergence
between the joint distribution of (h(X), noisy Y) and the product of their marginals:

    D_f >= E_joint[g(v)] - E_product[f*(g(v))],     v = p_h(y | x), the softmax at the label

with each divergence's activation g and the conjugate f* of its generator. The loss is its
negative, -mean_i g(p(y_i | x_i)) + mean_i f*(g(p(y_j2 | x_j1))), the second mean over peer
pairs: an image x_j1 and a label y_j2 drawn from the training set independently (the
release takes a fresh shuffled loader's first batch for the images and its second batch for
the labels, every step; methods/_peer.py). The divergences (runner.py, activation and
conjugate):

    total_variation   g(v) = tanh(v) / 2                 f*(t) = t
    jensen_shannon    g(v) = log 2 - log(1 + e^-v)       f*(t) = -log(2 - e^t)
    pearson           g(v) = v                           f*(t) = t^2 / 4 + t
    kl                g(v) = v                           f*(t) = e^(t - 1)
    jeffrey           g(v) = v                           f*(t) = t + t^2 / 4 + t^3 / 16

Before --warmup epochs the network trains on the release's stable cross-entropy
-log(softmax + 1e-5)_y (runner.py, CrossEntropyLossStable), with no peer draw. The release's
bias correction (runner_bias_*.py, with a noise transition matrix) is not provided: its
README recommends training without it, as its runner.py does.
"""
import math

import torch
import torch.nn.functional as F

from core.args import integer
from errors import UserError
from methods import Method
from methods._peer import check_in_memory, peer_step

LOG2 = math.log(2.0)

# {name: (g, f* o g)}: the activation of the joint term, and the conjugate applied to it, as
# functions of v = p(y | x), transcribed from the release's activation() and conjugate().
DIVERGENCES = {
    "total_variation": (lambda v: torch.tanh(v) / 2, lambda v: torch.tanh(v) / 2),
    "jensen_shannon": (lambda v: LOG2 - F.softplus(-v), lambda v: v + F.softplus(-v) - LOG2),
    "pearson": (lambda v: v, lambda v: v * v / 4 + v),
    "kl": (lambda v: v, lambda v: torch.exp(v - 1)),
    "jeffrey": (lambda v: v, lambda v: v + v * v / 4 + v * v * v / 16),
}

# The release's names, for the documentation and the messages.
RELEASE_NAMES = {"total_variation": "Total-Variation", "jensen_shannon": "Jenson-Shannon",
                 "pearson": "Pearson", "kl": "KL", "jeffrey": "Jeffrey"}


def label_probability(logits, labels, eps):
    """p(labels | x) + eps in fp32, (B,) (the release's -ProbLossStable)."""
    return torch.softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1) + eps


def fdiv_loss(logits, labels, peer_logits, peer_labels, divergence, eps=0.0):
    """-mean g(p(y | x)) + mean f*(g(p(y_peer | x_peer))): the negative variational bound."""
    g, conjugate = DIVERGENCES[divergence]
    return -g(label_probability(logits, labels, eps)).mean() + \
        conjugate(label_probability(peer_logits, peer_labels, eps)).mean()


def stable_cross_entropy(logits, labels, eps=1e-5):
    """Batch mean of -log(softmax + eps)_y (the release's warm-up loss)."""
    return -torch.log(label_probability(logits, labels, 0.0) + eps).mean()


class FDiv(Method):
    name = "fdiv"
    title = "f-divergence"
    summary = "f-divergence: maximise the variational bound of D_f(joint || product of marginals)"

    def __init__(self, divergence, warmup=0, eps=0.0):
        self.divergence, self.warmup, self.eps = divergence, warmup, eps
        self.tag = f"fdiv-{divergence}" + (f"-w{warmup}" if warmup else "")
        self.warming = warmup > 0

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--divergence", choices=list(DIVERGENCES),
                           default=defaults.get("divergence", "total_variation"),
                           help="the f-divergence maximised (the release's Total-Variation, "
                                "Jenson-Shannon, Pearson, KL, Jeffrey)")
        group.add_argument("--warmup", type=integer, default=defaults.get("warmup", 0),
                           help="epochs of cross-entropy before the f-divergence (default 0, as "
                                "the release passes it; its CIFAR runs start from a trained "
                                "cross-entropy model instead)")

    @classmethod
    def check_flags(cls, cfg):
        if not 0 <= cfg.warmup < cfg.n_epoch:
            raise UserError(f"--warmup {cfg.warmup} is outside [0, --n_epoch {cfg.n_epoch}): it counts "
                            "the cross-entropy epochs before the f-divergence ones (0: none)")
        check_in_memory(cfg, cls.name)

    @classmethod
    def from_config(cls, cfg):
        # CIFAR-100's runner adds 1e-5 to the softmax before the activations (ProbLossStable)
        return cls(cfg.divergence, cfg.warmup, 1e-5 if cfg.dataset == "cifar100" else 0.0)

    @property
    def label(self):
        return f"f-div {RELEASE_NAMES[self.divergence]}" + (f" warm-up {self.warmup}" if self.warmup else "")

    def start_epoch(self, epoch, run):
        self.warming = epoch < self.warmup

    def loss(self, logits, labels, indices):
        return stable_cross_entropy(logits, labels)

    def train_step(self, run, x, y, idx):
        if self.warming:
            return super().train_step(run, x, y, idx)
        return peer_step(run, x, y, lambda z, t, pz, pt: fdiv_loss(z, t, pz, pt, self.divergence, self.eps),
                         disjoint=True)
