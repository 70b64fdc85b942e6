"""What differs between methods: the loss on a batch, and a few hooks.

The engine (utils/engine.py) runs one training loop for every method. A method
computes the batch loss from the logits, the batch's noisy labels and its sample
indices, and may act at the start of an epoch, after an optimiser step, and add
models to evaluate. Its state goes into the checkpoint, so a resumed run goes on
exactly where it stopped.
"""
from loss import gls_loss


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
