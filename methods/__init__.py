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
batch, and after the epoch epoch_columns(), evaluated_model(run) and eval_models(). `run` is
the engine's RunState (utils/state.py): the model, its optimiser, the noisy labels, the loaders.
docs/EXTENDING.md walks through a complete example.

The contract, checked when a run starts, before anything is written (Method.check_contract;
a breach is an error naming the method, the rule and the fix):
- `name` is a string; `tag` a non-empty string that can be part of a folder name (no "/");
  `label` a string; `is_ce()` returns True or False;
- `knobs` is a dict {flag: baseline value}; every knob is a flag of the run and an
  attribute of the same name on the instance, holding a number (the base class reads
  getattr(self, knob) for summary.json, and sweeps vary the flag);
- the method defines loss() or train_step(), and every hook it overrides takes the
  arguments the engine passes (as in the defaults below);
- epoch_columns() and eval_models() return dicts (checked each epoch).
Whatever a hook raises while a run trains marks the run failed (summary.json), with the
traceback in the run folder's error.log; --if_exists auto continues it.
"""
import functools
import inspect
import numbers
import os

from core.plugins import discover
from errors import UserError


class Method:
    """The default hooks: plain training on `loss`. Subclasses override what they need."""

    name = None          # the --method name; a subclass with a name is a method
    title = None         # its readable name in figure titles ("Co-teaching"); default: name
    summary = ""         # one line for train.py --help
    knobs = {}           # {flag: value at which the method is its baseline}
    epoch_flags = ()     # flags that count epochs (a smoke run scales them to its epochs)

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

    @classmethod
    def protocol(cls, dataset):
        """Defaults of train.py's training flags (n_epoch, lr, weight_decay, ...) that the
        method's release trains `dataset` with, in place of train.py's; {}: train.py's."""
        return {}

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
        """Called once, before training (and before a resumed run's state is loaded: then
        run.resuming is true, and what load_state_dict restores need not be made)."""

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

    def evaluated_model(self, run):
        """The model of the unsuffixed evaluation columns (and best.pt's selection) when it
        is not the main network (DivideMix: the mean of its two networks' outputs), else
        None; the main network's own columns then get the suffix _main."""
        return None

    def eval_models(self):
        """Extra models to evaluate every epoch: {name: model}; columns get a _name suffix."""
        return {}

    def inputs(self):
        """{flag: path} of the files outside the run folder that a fresh start of the run
        reads (another run's checkpoint). Their sha1 is part of the run's made_by: a run whose
        input changed since is stale. A resumed or finished run reads none of them (setup
        sees run.resuming), so one whose input has moved away goes on as it is."""
        return {}

    def divergence_hint(self, script):
        """What to try when this method's loss diverged or its run collapsed, in the run of
        `script` (main_GLS_load, ...): "" when nothing specific applies."""
        return ""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    # ------------------------------------------------------------ the contract

    @classmethod
    def hooks(cls):
        """{hook: its arguments}: the methods of this base class that the engine calls, with the
        arguments it passes (read from the defaults' signatures, so they stay in step)."""
        found = {}
        for hook, function in vars(Method).items():
            if inspect.isfunction(function) and not hook.startswith("_") and hook != "check_contract":
                found[hook] = tuple(list(inspect.signature(function).parameters)[1:])
        return found

    def check_contract(self, cfg=None):
        """Refuse, with a UserError naming the method, the rule and the fix, a method that
        breaks what the engine relies on (the module's docstring lists it). `cfg`: the run's
        flags, of which every knob must be one."""
        kind = type(self)
        who = f"method {self.name!r} ({kind.__module__}.{kind.__name__})"

        def refuse(rule, fix):
            raise UserError(f"{who}: {rule}: {fix} (the rules: methods/__init__.py, docs/EXTENDING.md)")

        if not isinstance(self.name, str) or not self.name:
            refuse(f"name is {self.name!r}", "set name to the --method name, a string")
        for hook, args in Method.hooks().items():
            function = getattr(self, hook, None)
            if not callable(function):
                refuse(f"{hook} is {function!r}, not a method", f"define {hook}(self{''.join(', ' + a for a in args)})")
            try:
                inspect.signature(function).bind(*args)
            except TypeError:
                refuse(f"{hook}{inspect.signature(function)} cannot take the engine's arguments",
                       f"define it as {hook}(self{''.join(', ' + a for a in args)})")
            except ValueError:  # no signature to read (a builtin): nothing to check
                pass
        if kind.loss is Method.loss and kind.train_step is Method.train_step:
            refuse("it defines neither loss() nor train_step()", "define one of them")
        if not isinstance(self.tag, str) or not self.tag or os.sep in self.tag or "\0" in self.tag:
            refuse(f"tag is {self.tag!r}", "set self.tag (in __init__, from the flags) to a non-empty string "
                                           "without '/': it names the run folder")
        if not isinstance(getattr(self, "title", None), (str, type(None))):
            refuse(f"title is {self.title!r}", "set title to a readable name, a string (or leave it None)")
        if not isinstance(self.label, str):
            refuse(f"label is {self.label!r}, not a string", "return a readable name from label")
        if not isinstance(self.knobs, dict):
            refuse(f"knobs is a {type(self.knobs).__name__}", "set knobs = {flag: baseline value}")
        for knob, baseline in self.knobs.items():
            if cfg is not None and not hasattr(cfg, knob):
                refuse(f"knob {knob!r} is no flag of the run", f"name each knob after the flag it is "
                       f"(add --{knob} in add_flags, or rename the knob)")
            if not hasattr(self, knob):
                refuse(f"knob {knob!r} is no attribute of the instance (the base class reads "
                       f"getattr(self, {knob!r}))", f"store the flag's value as self.{knob} in __init__")
            for what, value in (("value", getattr(self, knob)), ("baseline value", baseline)):
                if not isinstance(value, numbers.Real):
                    refuse(f"knob {knob!r} has the {what} {value!r}, not a number", "knobs hold numbers")
        ce = self.is_ce()
        if not isinstance(ce, bool):
            refuse(f"is_ce() returned {ce!r}, not True or False", "return a bool")


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
