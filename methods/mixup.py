"""mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018), as its
official release trains (facebookresearch/mixup-cifar10, train.py:119-138).

Each batch is mixed with a shuffled copy of itself, and the loss mixes the two labels:

    lambda ~ Beta(alpha, alpha), once per batch;  j = a random permutation of the batch
    x~_i = lambda * x_i + (1 - lambda) * x_j(i)
    L    = lambda * CE(f(x~), y) + (1 - lambda) * CE(f(x~), y_j)

lambda is drawn with numpy and the permutation with torch, as released: both from the run's
training RNG (seeded by --seed, saved in every checkpoint, so a resumed run draws what it
would have drawn); the permutation on the training device, so the step copies nothing from
the host. alpha defaults to the release's 1 (train.py:39); alpha = 0 is plain cross-entropy
(the release's lambda = 1): the knob's baseline, trained by the default step.

The training columns (train_acc, mem_noisy, ...) are counted from the predictions on the
mixed images against each row's own label y_i; the test columns are unaffected.
"""
import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods import Method
from methods._robust import cross_entropy


def mixup_inputs(x, index, lam):
    """lam * x + (1 - lam) * x[index] (lam a float; index a permutation of the batch)."""
    return lam * x + (1.0 - lam) * x[index]


def mixup_loss(logits, labels_a, labels_b, lam):
    """lam * CE(logits, labels_a) + (1 - lam) * CE(logits, labels_b), batch means in fp32."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return lam * cross_entropy(logits, labels_a, log_p) + (1.0 - lam) * cross_entropy(logits, labels_b, log_p)


class Mixup(Method):
    name = "mixup"
    title = "mixup"
    summary = "mixup: train on convex combinations of image pairs and of their labels (alpha 0: CE)"
    knobs = {"mixup_alpha": 0.0}

    def __init__(self, alpha):
        self.mixup_alpha = alpha
        self.tag = "ce" if alpha == 0 else f"mixup-a{alpha:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--mixup_alpha", type=finite_float, default=defaults.get("mixup_alpha", 1.0),
                           help="lambda ~ Beta(alpha, alpha) per batch (0: no mixing, plain "
                                "cross-entropy)")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.mixup_alpha < 0:
            raise UserError(f"--mixup_alpha {cfg.mixup_alpha} must be >= 0 (the Beta distribution's "
                            "parameter; 0: no mixing)")
        cfg.mixup_alpha = abs(cfg.mixup_alpha)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.mixup_alpha)

    @property
    def label(self):
        return "CE" if self.mixup_alpha == 0 else f"mixup alpha={self.mixup_alpha:g}"

    def is_ce(self):
        return self.mixup_alpha == 0

    def loss(self, logits, labels, indices):  # the default step's, at alpha 0
        return cross_entropy(logits, labels)

    def train_step(self, run, x, y, idx):
        if self.mixup_alpha == 0:
            return super().train_step(run, x, y, idx)
        lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
        index = torch.randperm(len(y), device=y.device)
        with run.autocast():
            logits = run.forward(mixup_inputs(x, index, lam))
        loss = mixup_loss(logits, y, y[index], lam)
        run.minimize(loss)
        return loss.detach().float(), logits.detach()
