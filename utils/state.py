"""RunState: everything about one run in one typed object, what is fixed apart from its progress.

The engine (utils/engine.py) builds it in prepare() from the flags, before anything is
written; the methods' hooks read it (the model, its optimiser, the noisy labels, the
loaders) and may add networks to it. What changes as the run trains is one Progress
(`run.history`): last.pt carries it forward, so a resumed run goes on exactly where it
stopped. Its fields read as attributes of the run too (`run.epoch`, `run.rows`, ...).
"""
import contextlib
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import torch

from core.device import predict

from .schema import is_new_best


@dataclass
class Network:
    """A trained network: its model, the forward the step calls (the model, or its
    torch.compile'd wrapper), its optimiser and, with --precision fp16, its gradient scaler."""
    model: torch.nn.Module
    forward: object
    optimizer: torch.optim.Optimizer
    scaler: Optional[object] = None

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


@dataclass
class Progress:
    """What a run has done so far: the epochs completed, metrics.csv's rows, the training
    time, the accuracy before the first step, the per-class records of the best and last
    epochs and, with --record_train_probs, the sum over epochs of the train softmax.
    last.pt's "state" is its state_dict. `kept_stale_log`, summary.json's list of the
    decisions to keep a result made by other code or data, is read from summary.json on a
    resume instead: a finished run's decision is recorded there alone."""
    epoch: int = 0
    rows: list = field(default_factory=list)
    wall_time_s: float = 0.0
    initial: dict = None
    per_class: dict = field(default_factory=dict)  # summary.json's {"best": .., "last": ..}
    train_probs_sum: torch.Tensor = None
    kept_stale_log: list = field(default_factory=list)

    def add_epoch(self, row, per_class, seconds):
        """The epoch just trained: its metrics.csv row, its per-class record
        (utils.metrics.per_class_record) and how long it took."""
        self.rows.append(row)
        self.record_per_class(per_class)
        self.epoch = row["epoch"]
        self.wall_time_s += seconds

    def record_per_class(self, record):
        """The per-class record of the epoch just added to rows: it is the last, and the
        best when it is the best epoch of test accuracy so far (utils.schema.is_new_best)."""
        best = is_new_best(self.rows, "test_acc")
        self.per_class = {"best": record if best else self.per_class.get("best"), "last": record}

    def state_dict(self):
        state = {"epoch": self.epoch, "rows": self.rows, "wall_time_s": self.wall_time_s,
                 "initial": self.initial, "per_class": self.per_class}
        if self.train_probs_sum is not None:
            state["train_probs_sum"] = self.train_probs_sum
        return state

    def load_state_dict(self, state):
        self.epoch, self.rows = state["epoch"], state["rows"]
        self.wall_time_s, self.initial = state["wall_time_s"], state["initial"]
        self.per_class = state.get("per_class", {})  # a checkpoint of older code has none
        if "train_probs_sum" in state:
            self.train_probs_sum = state["train_probs_sum"]


PROGRESS_FIELDS = tuple(f.name for f in fields(Progress))


@dataclass
class RunSetup:
    """What is fixed about a run, set before its first epoch."""
    # --- what the run is
    cfg: object = None
    config: dict = None             # config.json: every flag (and, once written, made_by)
    script: str = None
    method: object = None
    # --- how it computes
    device: torch.device = torch.device("cpu")
    autocast: object = contextlib.nullcontext
    channels_last: bool = False
    # --- data and labels
    data: object = None
    all_noisy_labels: np.ndarray = None  # noisy_labels.npy: every training image's, held-out rows included
    noise_report: dict = None       # noise.json
    identity: dict = None           # what checkpoints record of the labels and model
    made_by: dict = None            # code, command, versions, device, data (utils/identity.py)
    num_classes: int = None
    noisy_labels: torch.Tensor = None   # (N,) the training rows' labels, on the device
    true_labels: torch.Tensor = None    # (N,) their true labels (-1: none), or None (unknown)
    val_index: np.ndarray = None    # the rows held out for validation (--val_fraction)
    # --- networks and loaders
    networks: dict = field(default_factory=dict)  # {"": the main network, name: added ones}
    build_network: object = None    # () -> Network of the run's architecture and optimiser
    train_loader: object = None
    eval_splits: dict = field(default_factory=dict)
    train_eval_loader: object = None  # the training rows in order, without augmentation
    train_aug_loader: object = None   # the same with the training augmentation
    # --- where its weights start
    init_from: str = None
    resuming: bool = False          # set before method.setup: last.pt restores the method's state
    kept_stale: list = field(default_factory=list)  # what changed, resumed with --keep_stale


class RunState(RunSetup):
    """A run: what is fixed (RunSetup) and its progress, `history` (a Progress). The
    constructor takes the fields of both."""

    def __init__(self, history=None, **values):
        progress = {k: values.pop(k) for k in PROGRESS_FIELDS if k in values}
        super().__init__(**values)
        self.history = history if history is not None else Progress(**progress)

    @classmethod
    def for_model(cls, model, optimizer, device, forward=None, scaler=None, **values):
        """A RunState around one model, for benchmarks and tests that drive a method's steps
        without the engine."""
        return cls(device=device, networks={"": Network(model, forward or model, optimizer, scaler)}, **values)

    # ------------------------------------------------------------ the main network

    @property
    def model(self):
        return self.networks[""].model

    @property
    def forward(self):
        return self.networks[""].forward

    @property
    def optimizer(self):
        return self.networks[""].optimizer

    def add_network(self, name):
        """A second network for methods that train several (co-teaching): the run's
        architecture, freshly initialised from the training RNG, with its own optimiser;
        the engine sets its lr, evaluates it (columns suffixed _<name>) and checkpoints it."""
        if name in self.networks or not name.isidentifier():
            raise ValueError(f"network name {name!r} is taken or not an identifier")
        self.networks[name] = self.build_network()
        return self.networks[name]

    def minimize(self, loss, network=""):
        """One optimiser step of `network` on `loss`: backward and step, through the fp16
        gradient scaler when the run has one."""
        net = self.networks[network]
        net.optimizer.zero_grad(set_to_none=True)
        if net.scaler is None:
            loss.backward()
            net.optimizer.step()
        else:
            net.scaler.scale(loss).backward()
            net.scaler.step(net.optimizer)
            net.scaler.update()

    def predict(self, model, augment=False):
        """core.device.predict over the training rows, without augmentation or (augment=True)
        with a fresh crop and flip each epoch: all of them, except on Clothing1M, whose
        loaders cover the epoch's subset."""
        loader = self.train_aug_loader if augment else self.train_eval_loader
        return predict(model, loader, len(self.noisy_labels), self.num_classes, self.device, self.autocast)

    # ------------------------------------------------------------ progress

    def progress(self):
        """What last.pt carries forward (its "state"): history.state_dict()."""
        return self.history.state_dict()

    def load_progress(self, state):
        self.history.load_state_dict(state)

    def record_per_class(self, record):
        self.history.record_per_class(record)


def _progress_attribute(name):
    """run.<name> reads and sets run.history.<name>."""
    return property(lambda run: getattr(run.history, name), lambda run, value: setattr(run.history, name, value),
                    doc=f"run.history.{name}")


for _name in PROGRESS_FIELDS:
    setattr(RunState, _name, _progress_attribute(_name))
