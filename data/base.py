"""What a data set and a noise type declare, and the in-memory data set the engine trains on.

A data set is one DatasetSpec, a noise type one NoiseType, declared at module level in any
file of data/: data/__init__.py finds them (core.plugins), and the flags, their --help,
the checks and the runs follow. docs/EXTENDING.md has a worked example of each.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .loader import DeviceLoader


@dataclass(frozen=True)
class DataFile:
    """A file or folder that a run reads, as a data set or noise type declares it in its
    files(cfg): where the run reads it, what it is, and how to get it (the download command,
    or the release's file). fake(cfg) writes a small stand-in there, for smoke runs
    (sweep.py paper --smoke); None where there is none."""
    path: str
    what: str
    get: str
    fake: Optional[Callable] = None


@dataclass(frozen=True)
class DatasetSpec:
    """A data set.

    load(cfg) returns the data (a DataSet, or an object with its interface, like Clothing1M)
    from cfg.data_root and the flags. `flags(group, defaults)` adds flags of its own (the
    defaults are the script's, which may set them); they exist
    in every script (a new one must default to None or False, so that the run names of
    other data sets stay as they are), and check_flags(cfg) checks them in every run.
    """
    name: str
    num_classes: int
    in_channels: int
    image_size: int                   # height = width of its images
    load: Callable
    help: str
    has_val: bool = False             # a clean validation split of its own
    in_memory: bool = True            # held in memory: --val_fraction, --record_train_probs
    clean_train_labels: bool = True   # False: its training labels are real noise (Clothing1M)
    default_noise: str = "symmetric"  # the GLS scripts' noise type when none is given
    flags: Optional[Callable] = None
    check_flags: Optional[Callable] = None  # check_flags(cfg): range checks of its flags
    # files(cfg) -> [DataFile]: what a run reads (sweep.py's data check, and what a kept
    # sweep plan watches: None, files not named, means a sweep of it is always planned)
    files: Optional[Callable] = None
    smoke: tuple = ()                 # ((flag, value), ...): a smoke run's small size (sweep.py paper --smoke)
    # modules its load imports at its first call (imported once by a sweep's preloading
    # process, sweeps/launch/preload.py, instead of once a run)
    imports: tuple = ()


@dataclass(frozen=True)
class NoiseType:
    """A kind of label noise.

    make(data, cfg) -> (noisy train labels in train order, provenance: a dict for noise.json
    saying where they came from); it may alter `data` (open-set noise replaces images, and
    records which in data.noise_arrays). true_labels(data) gives the true class of every
    training image, -1 for one that belongs to no class (default: data.train_labels).
    check(dataset_spec, cfg) refuses a data set or setting the type does not define, from
    the flags alone, before anything loads. matrix(noise_rate, num_classes), for a type
    that draws each label from a class-conditional model, is that model's transition
    matrix P[i, j] = P(noisy = j | clean = i) (methods read from it, before any label is
    drawn, the expected fraction of wrong labels).
    """
    name: str
    help: str
    make: Callable
    group: str = "synthetic"          # heading in --help
    aliases: tuple = ()
    uses_rate: bool = True            # False: --noise_rate is ignored (and not in the run name)
    needs_clean_labels: bool = True   # False: the data set's own noisy labels (real)
    accepts_noise_file: bool = True   # --noise_file may replace its labels
    check: Optional[Callable] = None
    files: Optional[Callable] = None  # files(cfg) -> [DataFile]: the label files a run reads
    true_labels: Optional[Callable] = None
    flags: Optional[Callable] = None
    matrix: Optional[Callable] = None

    def true_train_labels(self, data):
        """The true class of every training image (-1: none of the data set's), or None
        when unknown (a data set whose labels are real noise)."""
        if data.train_labels is None:
            return None
        if self.true_labels is not None:
            return np.asarray(self.true_labels(data), dtype=np.int64)
        return np.array(data.train_labels, dtype=np.int64)


@dataclass
class DataSet:
    """An in-memory image classification set: uint8 (N, C, H, W) images, int64 labels.

    pad/flip: the training augmentation (random crop with zero padding, h-flip).
    val_images/val_labels: an optional held-out split (noisy labels), see hold_out_validation.
    """
    name: str
    num_classes: int
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: tuple
    std: tuple
    pad: int = 4
    flip: bool = True
    val_images: np.ndarray = None
    val_labels: np.ndarray = None
    noise_arrays: dict = field(default_factory=dict)  # saved with the run, e.g. open-set indices

    @property
    def in_channels(self):
        return self.train_images.shape[1]

    @property
    def num_train(self):
        return len(self.train_images)

    @property
    def has_val(self):
        return self.val_images is not None

    def train_loader(self, labels, batch_size, device, seed, channels_last=False):
        return DeviceLoader(self.train_images, labels, batch_size, self.mean, self.std, device,
                            train=True, pad=self.pad, flip=self.flip, seed=seed,
                            channels_last=channels_last)

    def eval_loader(self, split, batch_size, device, channels_last=False, labels=None):
        """Loader over 'train', 'val' or 'test' in order, without augmentation."""
        images = getattr(self, f"{split}_images")
        labels = getattr(self, f"{split}_labels") if labels is None else labels
        return DeviceLoader(images, labels, batch_size, self.mean, self.std, device,
                            train=False, channels_last=channels_last)
