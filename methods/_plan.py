"""An epoch's own batches for the methods whose epoch is not one pass over the training set
(DivideMix's labelled and unlabelled subsets, PES's refinement passes and confident
subset): the run's loader replaced by one that yields the method's plan, and the batched
crop-and-flip augmentation of any rows of the training set on the device. This file
defines no method (its name starts with "_").
"""
import torch

from data import dataset_spec
from data.loader import DeviceLoader, batch_bounds
from errors import UserError


def require_in_memory(cfg, method, why):
    """Refuse a data set that is not held in memory (Clothing1M): the method's plan reads
    any training row at any step."""
    if not dataset_spec(cfg.dataset).in_memory:
        raise UserError(f"--method {method} {why}; {cfg.dataset} is not held in memory: use a data set "
                        "that is (cifar10, cifar100, CIFAR-N, digits)")


class PlanLoader:
    """The run's training loader as the engine iterates it: the method's steps once it has
    made an epoch's plan (method.plan, in start_epoch: a dict with the step count "steps";
    method.steps(loader, plan) yields them), else the run's own batches (an epoch without a
    plan, and the engine's first batch for --compile's check)."""

    def __init__(self, base, method):
        self.base, self.method = base, method

    def __getattr__(self, name):  # the run's loader's attributes (pad, flip, images, ...)
        if name in ("base", "method"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def set_epoch(self, epoch):
        self.base.set_epoch(epoch)

    def __len__(self):
        plan = self.method.plan
        return len(self.base) if plan is None else plan["steps"]

    def __iter__(self):
        if self.method.plan is None:
            return iter(self.base)
        plan, self.method.plan = self.method.plan, None
        return self.method.steps(self.base, plan)


def epoch_generator(device, seed, epoch, stream):
    """A torch generator on `device` for the draws of one epoch of a method: a function of
    (seed, epoch, stream) alone, so that a resumed epoch draws what the interrupted one did
    (stream 0 and 1 are the run's loaders', data/loader.py)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch + (stream << 40))
    return g


def augment(loader, idx, generator):
    """The rows `idx` of a training DeviceLoader with a fresh random crop (its zero padding)
    and, where the loader flips, a horizontal flip each, drawn from `generator`: one gather,
    as the loader itself augments a batch; normalised."""
    n = len(idx)
    offsets = torch.randint(0, 2 * loader.pad + 1, (n, 2), generator=generator, device=idx.device)
    flips = torch.rand(n, generator=generator, device=idx.device) < 0.5
    x = DeviceLoader.windows(loader.padded, *loader.images.shape[2:])[idx, :, offsets[:, 0], offsets[:, 1]]
    if loader.flip:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return loader.normalize(x)


def cycle(rows, batch_size, generator, drop_last=False):
    """Endless batches of the device tensor `rows`, each pass a fresh permutation, as a
    DataLoader iterator restarted whenever it runs out. Without drop_last the last batch of
    a pass may be smaller (one of a single sample joins the batch before); with it only
    full batches (the caller makes sure there is one). None forever when there are no rows."""
    while True:
        if not len(rows):
            yield None
            continue
        order = rows[torch.randperm(len(rows), generator=generator, device=rows.device)]
        bounds = drop_last_bounds(len(rows), batch_size) if drop_last else batch_bounds(len(rows), batch_size)
        for start, stop in bounds:
            yield order[start:stop]


def drop_last_bounds(n, batch_size):
    """[(start, stop)] of the full batches of n samples: a DataLoader's drop_last=True."""
    return [(start, start + batch_size) for start in range(0, n - batch_size + 1, batch_size)]
