"""RunState: everything about one run in one typed object.

The engine (utils/engine.py) builds it in prepare() from the flags, before anything is
written; the methods' hooks read it (the model, its optimiser, the noisy labels, the
loaders) and may add networks to it; its progress fields (epoch, rows, ...) are what
last.pt carries forward, so a resumed run goes on exactly where it stopped.
"""
import contextlib
from dataclasses import dataclass, field
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
class RunState:
    # --- what the run is
    cfg: object = None
    config: dict = None
    script: str = None
    method: object = None
    path: str = None
    # --- how it computes
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    autocast: object = contextlib.nullcontext
    channels_last: bool = False
    # --- data and labels
    data: object = None
    noise: object = None            # the NoiseType
    noisy: np.ndarray = None        # every training image's noisy label (train order)
    noise_report: dict = None       # noise.json
    identity: dict = None           # what checkpoints record of the labels and model
    made_by: dict = None            # code, command, versions, device, data (utils/identity.py)
    comparable: dict = None         # the settings that pair it with CE runs (utils.cli.comparable_settings)
    num_classes: int = None
    noisy_labels: torch.Tensor = None   # (N,) the training rows' labels, on the device
    true_labels: torch.Tensor = None    # (N,) their true labels (-1: none), or None (unknown)
    val_index: np.ndarray = None
    # --- networks and loaders
    networks: dict = field(default_factory=dict)  # {"": the main network, name: added ones}
    build_network: object = None    # () -> Network of the run's architecture and optimiser
    train_loader: object = None
    eval_splits: dict = field(default_factory=dict)
    train_eval_loader: object = None  # the training rows in order, without augmentation
    train_aug_loader: object = None   # the same with the training augmentation
    # --- progress (last.pt's "state")
    epoch: int = 0
    rows: list = field(default_factory=list)
    wall_time_s: float = 0.0
    initial: dict = None
    per_class: dict = field(default_factory=dict)  # summary.json's {"best": .., "last": ..}
    train_probs_sum: torch.Tensor = None
    init_from: str = None
    resuming: bool = False          # set before method.setup: last.pt restores the method's state
    kept_stale: list = field(default_factory=list)      # what changed, resumed with --keep_stale
    kept_stale_log: list = field(default_factory=list)  # summary.json's record of such decisions

    @classmethod
    def for_model(cls, model, optimizer, device, forward=None, scaler=None, **fields):
        """A RunState around one model, for benchmarks and tests that drive a method's steps
        without the engine."""
        return cls(device=device, networks={"": Network(model, forward or model, optimizer, scaler)}, **fields)

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
        """What last.pt carries forward (its "state")."""
        state = {"epoch": self.epoch, "rows": self.rows, "wall_time_s": self.wall_time_s,
                 "initial": self.initial, "per_class": self.per_class}
        if self.train_probs_sum is not None:
            state["train_probs_sum"] = self.train_probs_sum
        return state

    def record_per_class(self, record):
        """The per-class record (utils.metrics.per_class_record) of the epoch just added to
        rows: it is the last, and the best when it is the best epoch of test accuracy so far
        (utils.schema.is_new_best)."""
        best = is_new_best(self.rows, "test_acc")
        self.per_class = {"best": record if best else self.per_class.get("best"), "last": record}

    def load_progress(self, state):
        self.epoch, self.rows = state["epoch"], state["rows"]
        self.wall_time_s, self.initial = state["wall_time_s"], state["initial"]
        self.per_class = state.get("per_class", {})  # a checkpoint of older code has none
        if "train_probs_sum" in state:
            self.train_probs_sum = state["train_probs_sum"]
