"""Methods are plug-ins: a file in this folder that defines a Method subclass with a `name`
is a method, found with no list to edit (core.plugins).

A method owns, in its own file:
- its name, a one-line summary, and its flags (add_flags: defaults and help);
- its run-name tag and its readable label ("NLS r=-2");
- its knobs: the flags a sweep varies, with the value at which the method reduces to its
  baseline (GLS: smooth_rate 0; SLN: sigma 0); and whether a run of it is plain
  cross-entropy (is_ce), the baseline every method is also paired against;
- its state (state_dict/load_state_dict, checkpointed with the run, so resume is exact);
- extra per-epoch columns (epoch_columns), extra models to evaluate (eval_models);
- and, when a loss on the logits is not enough, its own training step (train_step: two
  networks, input mixing).

The engine (utils/engine.py) calls, in this order: from_config(cfg) once, setup(run)
before training, then each epoch start_epoch(epoch, run), train_step(run, x, y, idx) per
batch, and after the epoch epoch_columns(), test_model(run) and eval_models(). `run` is the
engine's RunState (utils/state.py): the model, its optimiser, the noisy labels, the loaders.
docs/EXTENDING.md walks through a complete example.
"""
import functools

from core.plugins import discover
from errors import UserError


class Method:
    """The default hooks: plain training on `loss`. Subclasses override what they need."""

    name = None          # the --method name; a subclass with a name is a method
    summary = ""         # one line for train.py --help
    knobs = {}           # {flag: value at which the method is its baseline}

    # ------------------------------------------------------------ declaration

    @classmethod
    def add_flags(cls, group, defaults):
        """Add the method's flags to `group`; `defaults` (a script's) override the method's own."""

    @classmethod
    def check_flags(cls, cfg):
        """Refuse flag values the method does not define (raise UserError naming the fix)."""

    @classmethod
    def from_config(cls, cfg):
        return cls()

    tag = "method"       # the run folder's method part, set by __init__ from the flags

    @property
    def label(self):
        """A readable name for tables and legends."""
        return self.tag

    def knob_values(self):
        """{knob: value} of this run: the knobs that apply to it (none: no knob baseline)."""
        return {k: getattr(self, k) for k in self.knobs}

    def is_ce(self):
        """True when the network is trained exactly as plain cross-entropy would train it."""
        return False

    # ------------------------------------------------------------ training

    def setup(self, run):
        """Called once, before training (and before a resumed run's state is loaded)."""

    def start_epoch(self, epoch, run):
        """Called at the start of every epoch (0-based)."""

    def loss(self, logits, labels, indices):
        raise NotImplementedError(f"method {self.name} defines neither loss() nor train_step()")

    def train_step(self, run, x, y, idx):
        """One optimiser step on a batch; returns the detached fp32 loss and the logits of
        the main model (the epoch's training columns are counted from them). No host sync."""
        with run.autocast():
            logits = run.forward(x)
        loss = self.loss(logits, y, idx)
        run.minimize(loss)
        self.after_step(run.model)
        return loss.detach().float(), logits.detach()

    def after_step(self, model):
        """Called after every optimiser step of the default train_step."""

    def epoch_columns(self):
        """Extra columns of this epoch's metrics.csv row, e.g. {"kept_fraction": 0.8}."""
        return {}

    def test_model(self, run):
        """The model of the main (unsuffixed) evaluation columns, which also select best.pt:
        the main network, unless the method's release evaluates another (ELR+: the mean of
        its two networks' logits)."""
        return run.model

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


@functools.lru_cache(maxsize=None)
def methods():
    """{name: Method subclass} of every method in this folder."""
    return discover("methods", lambda obj, module: isinstance(obj, type) and issubclass(obj, Method)
                    and obj.__module__ == module.__name__ and obj.name is not None)


def get_method(name):
    found = methods()
    if name not in found:
        raise UserError(f"--method {name!r} is unknown; choose one of {', '.join(sorted(found))}")
    return found[name]
