"""Data sets and their noisy labels.

load_dataset(name, root) -> DataSet (clean labels, uint8 images, normalisation);
prepare_data(cfg) -> (DataSet, noisy train labels, their provenance).
One file per source (cifar.py, cifarn.py, clothing1m.py, digits.py), noise.py for
label noise and its dispatch, loader.py for the device-resident loader.
"""
from dataclasses import dataclass, field

import numpy as np

from errors import UserError

from .cifar import SPECS as CIFAR_SPECS, load_cifar
from .clothing1m import Clothing1M
from .digits import load_digits_split
from .loader import DeviceLoader
from .noise import make_noise

DATASETS = ("cifar10", "cifar100", "clothing1m", "digits")


@dataclass
class DataSet:
    """An in-memory image classification set: uint8 (N, C, H, W) images, int64 labels.

    pad/flip: the training augmentation (random crop with zero padding, h-flip).
    val_images/val_labels: an optional held-out split (noisy labels), see split_validation.
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


def load_dataset(name, root="./data", download=True):
    if name == "digits":
        tr_x, tr_y, te_x, te_y = load_digits_split()
        mean = (float(tr_x.mean()) / 255,)
        std = (float(tr_x.std()) / 255,)
        # 8x8 digits: shift by at most one pixel, never mirror (a mirrored 2 is no 2).
        return DataSet("digits", 10, tr_x, tr_y, te_x, te_y, mean, std, pad=1, flip=False)
    if name in CIFAR_SPECS:
        spec = CIFAR_SPECS[name]
        tr_x, tr_y, te_x, te_y = load_cifar(name, root, download=download)
        return DataSet(name, spec["num_classes"], tr_x, tr_y, te_x, te_y, spec["mean"], spec["std"])
    if name == "clothing1m":
        return Clothing1M(root)
    raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def dataset_num_classes(name):
    """The class count of a data set without loading it (to check flags before a run)."""
    if name == "digits":
        return 10
    if name in CIFAR_SPECS:
        return CIFAR_SPECS[name]["num_classes"]
    if name == "clothing1m":
        return Clothing1M.num_classes
    raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def prepare_data(cfg):
    """Load cfg.dataset and make its noisy train labels (in the data set's train order):
    (data, labels, provenance), see data.noise.make_noise."""
    if cfg.dataset == "clothing1m":
        data = Clothing1M(cfg.data_root, cfg.image_size, cfg.num_per_class, cfg.num_workers)
    else:
        data = load_dataset(cfg.dataset, cfg.data_root)
    noisy, provenance = make_noise(data, cfg)
    noisy = np.asarray(noisy, dtype=np.int64)
    if noisy.shape != (data.num_train,):
        raise UserError(f"{len(noisy)} noisy labels for {data.num_train} training images")
    return data, noisy, provenance


def hold_out_validation(data, noisy, fraction, seed):
    """Move `fraction` of each noisy class out of training into a noisy validation split.

    Selection on noisy validation accuracy is honest: it never looks at clean labels.
    Returns the training rows' noisy labels and the held-out indices (train order).
    """
    if data.has_val:
        raise UserError(f"{data.name} has a validation split of its own: drop --val_fraction")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(noisy):
        members = np.flatnonzero(noisy == c)
        val.extend(rng.choice(members, int(round(fraction * len(members))), replace=False))
    val = np.sort(np.asarray(val, dtype=np.int64))
    if len(val) == 0:  # every best.pt would be chosen on an empty split (accuracy 0)
        largest = max(np.sum(noisy == c) for c in np.unique(noisy))
        raise UserError(f"--val_fraction {fraction} holds out no image ({len(noisy)} training images, "
                        f"{largest} in the largest class): use at least {1 / largest:.2g}, or 0 for "
                        "no validation split")
    keep = np.setdiff1d(np.arange(len(noisy)), val)
    data.val_images, data.val_labels = data.train_images[val], noisy[val]
    data.train_images, data.train_labels = data.train_images[keep], data.train_labels[keep]
    return noisy[keep], val
