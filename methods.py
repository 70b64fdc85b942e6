"""What differs between methods: the loss on a batch, and a few hooks.

The engine (utils/engine.py) runs one training loop for every method. A method
computes the batch loss from the logits, the batch's noisy labels and its sample
indices, and may act at the start of an epoch, after an optimiser step, and add
models to evaluate. Its state goes into the checkpoint, so a resumed run goes on
exactly where it stopped.
"""
import copy

import torch

from loss import corrected_targets, gls_loss, sln_targets, soft_cross_entropy


class Method:
    """The no-op hooks; subclasses override what they need."""

    tag = "method"

    def setup(self, ctx):
        """Called once, before training, with the engine's TrainContext."""

    def start_epoch(self, epoch, ctx):
        """Called at the start of every epoch (0-based)."""

    def loss(self, logits, labels, indices):
        raise NotImplementedError

    def after_step(self, model):
        """Called after every optimiser step."""

    def eval_models(self):
        """Extra models to evaluate every epoch: {name: model}; columns get a _name suffix."""
        return {}

    def divergence_hint(self):
        """What to try when this method's loss diverged ("" when nothing specific applies)."""
        return ""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class GLS(Method):
    """wa * CE + wb * GLS(smooth_rate) on the noisy labels (loss.gls_loss)."""

    def __init__(self, smooth_rate, wa=0.0, wb=1.0):
        self.smooth_rate, self.wa, self.wb = smooth_rate, wa, wb
        if wb == 0:
            self.tag = "ce"
        elif wa == 0:
            self.tag = f"r{smooth_rate:g}"
        else:
            self.tag = f"wa{wa:g}-wb{wb:g}-r{smooth_rate:g}"

    def loss(self, logits, labels, indices):
        return gls_loss(logits, labels, self.smooth_rate, self.wa, self.wb)

    def divergence_hint(self):
        if self.smooth_rate < 0 and self.wb > 0:
            return ("Negative smoothing is unbounded below and can diverge from scratch: start "
                    "from the CE warm-up (main_GLS_load.py), or use a milder smooth rate or a lower --lr.")
        return ""


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

    def __init__(self, sigma, ema_decay=0.999, correction=-1, n_epoch=None, soft=False,
                 carry_targets=True, correction_aug=True):
        self.sigma, self.ema_decay, self.soft = float(sigma), ema_decay, soft
        self.carry_targets, self.correction_aug = carry_targets, correction_aug
        self.correction = correction if n_epoch is not None and 1 <= correction < n_epoch else None
        self.ema = None
        self.targets = None  # (N, K) on the device once correction has started
        corrects = self.correction is not None
        name = "sln" + ("mo" if ema_decay > 0 else "") + ("lc" if corrects else "")
        self.tag = f"{name}-sigma{sigma:g}" + (f"-c{correction}" if corrects else "")
        if name == "sln" and sigma == 0:
            self.tag = "ce"

    def setup(self, ctx):
        if self.ema_decay > 0:
            # Both models start identical; the momentum model is never trained, only averaged.
            self.ema = copy.deepcopy(ctx.model).eval().requires_grad_(False)
            # state_dict() tensors share storage with the live modules, so these pairs stay
            # valid for the whole run (loading a state dict copies into them in place).
            pairs = list(zip(self.ema.state_dict().values(), ctx.model.state_dict().values()))
            self._ema_floats = [e for e, m in pairs if e.is_floating_point()]
            self._model_floats = [m for e, m in pairs if e.is_floating_point()]
            self._counters = [(e, m) for e, m in pairs if not e.is_floating_point()]

    def start_epoch(self, epoch, ctx):
        if self.correction is not None and epoch >= self.correction:
            self.sigma = 0.0
            self.targets = self.correct_labels(ctx)

    @torch.no_grad()
    def correct_labels(self, ctx):
        """Targets from the momentum model's logits on the training set. The loss min-max
        runs over the samples the loader yields: every one on CIFAR, the epoch's subset on
        Clothing1M (data/clothing1m.py); the others keep their one-hot label until predicted."""
        logits, seen = ctx.predict(self.ema if self.ema is not None else ctx.model,
                                   augment=self.correction_aug)
        noisy_onehot = torch.nn.functional.one_hot(ctx.noisy_labels, ctx.num_classes).float()
        current = self.targets if self.carry_targets and self.targets is not None else noisy_onehot
        targets = noisy_onehot
        targets[seen] = corrected_targets(logits[seen], ctx.noisy_labels[seen], current[seen], self.soft)
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
