"""Stochastic label noise with its momentum model and label correction (Chen et al., ICLR 2021).

SLN trains on onehot(y) + sigma * N(0, 1) (loss.sln_targets); SLN-MO evaluates a momentum
(EMA) copy of the network; SLN-MO-LC corrects the labels from it after --correction epochs.
noise_cifar_train.py and noise_clothing1m_train.py are this method with the release's
protocols.
"""
import copy

import torch

from core.args import finite_float, integer
from errors import UserError
from loss import corrected_targets, sln_targets, soft_cross_entropy
from methods import Method


class SLN(Method):
    """Stochastic label noise with its momentum model and label correction
    (Chen et al., ICLR 2021).

    sigma      : std of the Gaussian added to every one-hot target (loss.sln_targets).
    ema_decay  : the momentum model e <- d * e + (1 - d) * theta after every optimiser
                 step, over the parameters and the BN running statistics (SLN-MO); it is
                 evaluated every epoch (metrics column test_acc_ema). 0 keeps none.
    correction : label correction after this many epochs (SLN-MO-LC): sigma becomes 0 and,
                 at the start of every later epoch, the targets become
                 loss.corrected_targets of the momentum model's predictions (the model's
                 own without one) on the training set. Outside 1..n_epoch-1 (the
                 release's -1 included) it never starts.
    soft       : corrected targets mix in the softmax (Clothing1M), not the argmax one-hot (CIFAR).
    carry_targets : the loss of a correction is measured against the previous correction's
                 targets (CIFAR, as released); False: against the noisy labels every time
                 (Clothing1M, whose release builds a fresh subset, with noisy targets, each epoch).
    correction_aug : predict on augmented training images (a fresh crop and flip each
                 correction), as released; False: on the images themselves.

    Tags: ce (sigma 0, nothing else), sln-sigma0.5, slnmo-sigma0.5, slnmolc-sigma0.5-c250,
    slnlc-sigma0.5-c250 (correction from the model itself).
    """
    name = "sln"
    title = "SLN"
    summary = "stochastic label noise (sigma), its momentum model (SLN-MO) and label correction (-LC)"
    epoch_flags = ("correction",)
    knobs = {"sigma": 0.0}

    def __init__(self, sigma, ema_decay=0.999, correction=-1, n_epoch=None, soft=False,
                 carry_targets=True, correction_aug=True):
        self.sigma, self.ema_decay, self.soft = float(sigma), ema_decay, soft
        self.sigma0 = self.sigma  # the flag's value; sigma becomes 0 once correction starts
        self.carry_targets, self.correction_aug = carry_targets, correction_aug
        self.correction = correction if n_epoch is not None and 1 <= correction < n_epoch else None
        self.ema = None
        self.targets = None  # (N, K) on the device once correction has started
        corrects = self.correction is not None
        name = "sln" + ("mo" if ema_decay > 0 else "") + ("lc" if corrects else "")
        self.tag = f"{name}-sigma{sigma:g}" + (f"-c{correction}" if corrects else "")
        if name == "sln" and sigma == 0:
            self.tag = "ce"
        self.variant = {"sln": "SLN", "slnmo": "SLN-MO", "slnmolc": "SLN-MO-LC", "slnlc": "SLN-LC"}[name]

    @classmethod
    def add_flags(cls, g, d):
        g.add_argument("--sigma", type=finite_float, default=d.get("sigma", 0.5),
                       help="std of the stochastic label noise (0: none)")
        g.add_argument("--correction", type=integer, default=d.get("correction", -1),
                       help="label correction after this many epochs; -1 or any value outside "
                            "1..epochs-1: never")
        g.add_argument("--ema_decay", type=finite_float, default=d.get("ema_decay", 0.999),
                       help="decay of the momentum model (SLN-MO); 0: no momentum model (plain SLN)")
        g.add_argument("--correction_aug", choices=["on", "off"], default=None,
                       help="label correction predicts on augmented training images (on: the "
                            "default, as released) or on the images themselves (off)")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.sigma < 0:
            raise UserError(f"--sigma {cfg.sigma} must be >= 0")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise UserError(f"--ema_decay {cfg.ema_decay} is outside [0, 1); 0 means no momentum model")
        if cfg.correction_aug == "on":  # the default, as released: one name for one run
            cfg.correction_aug = None

    @classmethod
    def from_config(cls, cfg, soft=False, carry_targets=True):
        return cls(cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch, soft=soft,
                   carry_targets=carry_targets, correction_aug=cfg.correction_aug != "off")

    @property
    def label(self):
        return f"{self.variant} sigma={self.sigma0:g}" + (f" c{self.correction}" if self.correction else "")

    def knob_values(self):
        return {"sigma": self.sigma0}

    def is_ce(self):
        return self.sigma0 == 0 and self.correction is None

    def setup(self, run):
        if self.ema_decay > 0:
            # Both models start identical; the momentum model is never trained, only averaged.
            self.ema = copy.deepcopy(run.model).eval().requires_grad_(False)
            # state_dict() tensors share storage with the live modules, so these pairs stay
            # valid for the whole run (loading a state dict copies into them in place).
            pairs = list(zip(self.ema.state_dict().values(), run.model.state_dict().values()))
            self._ema_floats = [e for e, m in pairs if e.is_floating_point()]
            self._model_floats = [m for e, m in pairs if e.is_floating_point()]
            self._counters = [(e, m) for e, m in pairs if not e.is_floating_point()]

    def start_epoch(self, epoch, run):
        if self.correction is not None and epoch >= self.correction:
            self.sigma = 0.0
            self.targets = self.correct_labels(run)

    @torch.no_grad()
    def correct_labels(self, run):
        """Targets from the momentum model's logits on the training set. The loss min-max
        runs over the samples the loader yields: every one on CIFAR, the epoch's subset on
        Clothing1M (data/clothing1m.py); the others keep their one-hot label until predicted."""
        logits, seen = run.predict(self.ema if self.ema is not None else run.model,
                                   augment=self.correction_aug)
        noisy_onehot = torch.nn.functional.one_hot(run.noisy_labels, run.num_classes).float()
        current = self.targets if self.carry_targets and self.targets is not None else noisy_onehot
        targets = noisy_onehot
        targets[seen] = corrected_targets(logits[seen], run.noisy_labels[seen], current[seen], self.soft)
        return targets

    def loss(self, logits, labels, indices):
        if self.targets is not None:  # sigma is 0 from the correction on
            return soft_cross_entropy(logits, self.targets[indices])
        return soft_cross_entropy(logits, sln_targets(labels, logits.shape[1], self.sigma))

    @torch.no_grad()
    def after_step(self, model):
        if self.ema is None:
            return
        # e <- d * e + (1 - d) * theta is lerp(e, theta, 1 - d): one fused kernel per list.
        torch._foreach_lerp_(self._ema_floats, self._model_floats, 1.0 - self.ema_decay)
        for e, m in self._counters:  # BN's num_batches_tracked: an integer count, copied
            e.copy_(m)

    def eval_models(self):
        return {} if self.ema is None else {"ema": self.ema}

    def state_dict(self):
        return {"sigma": self.sigma, "targets": self.targets,
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state):
        self.sigma, self.targets = state["sigma"], state["targets"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
