"""Early-learning regularisation (Liu et al., "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020), as its official release computes it
(shengliu66/ELR, ELR/model/loss.py).

Every training sample i keeps a target t_i, a running average of the model's own
predictions (zeros at the start). At each step, for the samples of the batch:

    p_i  = clamp(softmax(z_i), 1e-4, 1 - 1e-4)
    t_i <- beta * t_i + (1 - beta) * p_i / sum_k p_ik        (detached: no gradient)
    L    = CE(z, y) + lambda * mean_i log(1 - <p_i, t_i>)

The target is updated before the loss reads it, as released. The regulariser rewards
agreement with the early predictions, so that the noisy labels are not memorised later.
lambda = 0 is plain cross-entropy: the knob's baseline. The targets are the method's
state, checkpointed with the run.
"""
import torch
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods import Method

CLAMP = 1e-4
# (lambda, beta) of the release's configuration files; every other case takes CIFAR-10's.
RELEASED = {"cifar10": (3.0, 0.7), "cifar10-asym": (1.0, 0.9), "cifar100": (7.0, 0.9)}


def released_defaults(dataset, noise_type):
    """(lambda, beta) of the release for this data set and noise."""
    key = f"{dataset}-asym" if dataset == "cifar10" and noise_type == "asym" else dataset
    return RELEASED.get(key, RELEASED["cifar10"])


def update_targets(targets, indices, p, beta):
    """t[indices] <- beta * t[indices] + (1 - beta) * p / sum_k p_k, in place, without gradient."""
    with torch.no_grad():
        targets[indices] = beta * targets[indices] + (1.0 - beta) * p / p.sum(dim=1, keepdim=True)


def elr_loss(logits, labels, targets, indices, lam, beta):
    """CE + lam * mean log(1 - <p, t>) after t[indices] <- beta t + (1 - beta) p / sum p.
    `targets` (N, K) is updated in place."""
    p = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
    update_targets(targets, indices, p, beta)
    ce = F.cross_entropy(logits.float(), labels)
    if lam == 0:
        return ce
    return ce + lam * torch.log(1.0 - (targets[indices] * p).sum(dim=1)).mean()


class ELR(Method):
    name = "elr"
    title = "ELR"
    summary = "early-learning regularisation: CE + lambda * log(1 - <p, running mean of p>)"
    knobs = {"elr_lambda": 0.0}

    def __init__(self, lam, beta):
        self.elr_lambda, self.elr_beta = lam, beta
        self.tag = "ce" if lam == 0 else f"elr-l{lam:g}-b{beta:g}"
        self.targets = None

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--elr_lambda", type=finite_float, default=defaults.get("elr_lambda"),
                           help="weight of the regulariser (default: the release's, 3 on CIFAR-10 "
                                "and every other data set, 1 on CIFAR-10 asym, 7 on CIFAR-100; "
                                "0: plain cross-entropy)")
        group.add_argument("--elr_beta", type=finite_float, default=defaults.get("elr_beta"),
                           help="momentum of the targets' running average (default: the release's, "
                                "0.7 on CIFAR-10 and every other data set, 0.9 on CIFAR-10 asym and "
                                "CIFAR-100)")

    @classmethod
    def check_flags(cls, cfg):
        lam, beta = released_defaults(cfg.dataset, cfg.noise_type)
        # Resolved here, so that the default and the same value typed share a run folder.
        cfg.elr_lambda = lam if cfg.elr_lambda is None else cfg.elr_lambda
        cfg.elr_beta = beta if cfg.elr_beta is None else cfg.elr_beta
        if cfg.elr_lambda < 0:
            raise UserError(f"--elr_lambda {cfg.elr_lambda} must be >= 0 (it weighs a regulariser; "
                            "0 is plain cross-entropy)")
        if not 0.0 <= cfg.elr_beta < 1.0:
            raise UserError(f"--elr_beta {cfg.elr_beta} is outside [0, 1): it is the momentum of "
                            "the targets' running average")
        cfg.elr_lambda, cfg.elr_beta = abs(cfg.elr_lambda), abs(cfg.elr_beta)  # -0 is 0: one folder

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.elr_lambda, cfg.elr_beta)

    @property
    def label(self):
        return "CE" if self.elr_lambda == 0 else f"ELR lambda={self.elr_lambda:g} beta={self.elr_beta:g}"

    def is_ce(self):
        return self.elr_lambda == 0

    def setup(self, run):
        self.targets = torch.zeros(len(run.noisy_labels), run.num_classes, device=run.device)

    def loss(self, logits, labels, indices):
        return elr_loss(logits, labels, self.targets, indices, self.elr_lambda, self.elr_beta)

    def state_dict(self):
        return {"targets": self.targets}

    def load_state_dict(self, state):
        self.targets.copy_(state["targets"])
