"""Data sets and their noisy labels.

load_dataset(name, root) -> DataSet (clean labels, uint8 images, normalisation);
prepare_data(cfg) -> (DataSet, noisy train labels), dispatching on cfg.noise_type.
One file per source (cifar.py, digits.py), noise.py for synthetic noise,
loader.py for the device-resident loader.
"""
from dataclasses import dataclass

import numpy as np

from errors import UserError

from .cifar import SPECS as CIFAR_SPECS, load_cifar
from .digits import load_digits_split
from .loader import DeviceLoader
from .noise import canonical_noise_type, make_noisy_labels

DATASETS = ("cifar10", "cifar100", "digits")
CLASS_CONDITIONAL = ("clean", "symmetric", "pairflip", "asym")


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

    @property
    def in_channels(self):
        return self.train_images.shape[1]

    def train_loader(self, labels, batch_size, device, seed, channels_last=False):
        return DeviceLoader(self.train_images, labels, batch_size, self.mean, self.std, device,
                            train=True, pad=self.pad, flip=self.flip, seed=seed,
                            channels_last=channels_last)

    def eval_loader(self, split, batch_size, device, channels_last=False, labels=None):
        """Loader without augmentation over 'train', 'val' or 'test'."""
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
    raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def make_noise(data, cfg):
    """Noisy train labels for cfg.noise_type; may also alter data (e.g. open-set images)."""
    noise_type = canonical_noise_type(cfg.noise_type)
    if noise_type in CLASS_CONDITIONAL:
        return make_noisy_labels(data.train_labels, noise_type, cfg.noise_rate,
                                 data.num_classes, cfg.noise_seed)
    raise UserError(f"unknown noise type {cfg.noise_type!r}; choose one of "
                    f"{', '.join(CLASS_CONDITIONAL + ('sym',))}")


def prepare_data(cfg):
    """Load cfg.dataset and make its noisy train labels (in the data set's train order)."""
    data = load_dataset(cfg.dataset, cfg.data_root)
    noisy = np.asarray(make_noise(data, cfg), dtype=np.int64)
    if noisy.shape != data.train_labels.shape:
        raise UserError(f"{len(noisy)} noisy labels for {len(data.train_labels)} training images")
    return data, noisy


def hold_out_validation(data, noisy, fraction, seed):
    """Move `fraction` of each noisy class out of training into a noisy validation split.

    Selection on noisy validation accuracy is honest: it never looks at clean labels.
    Returns the training rows' noisy labels and the held-out indices (train order).
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(noisy):
        members = np.flatnonzero(noisy == c)
        val.extend(rng.choice(members, int(round(fraction * len(members))), replace=False))
    val = np.sort(np.asarray(val, dtype=np.int64))
    keep = np.setdiff1d(np.arange(len(noisy)), val)
    data.val_images, data.val_labels = data.train_images[val], noisy[val]
    data.train_images, data.train_labels = data.train_images[keep], data.train_labels[keep]
    return noisy[keep], val
