"""Data sets and their noisy labels.

load_dataset(name, root) -> DataSet (clean labels, uint8 images, normalisation);
prepare_data(cfg) -> (DataSet, noisy train labels), dispatching on cfg.noise_type.
One file per source (cifar.py, cifarn.py, clothing1m.py, digits.py), noise.py for
synthetic noise, loader.py for the device-resident loader.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from errors import UserError

from .cifar import SPECS as CIFAR_SPECS, find_cifar_folder, load_cifar
from .cifarn import CIFARN_TYPES, check_dataset as check_cifarn_dataset, cifarn_noisy_labels
from .clothing1m import Clothing1M
from .digits import load_digits_split
from .loader import DeviceLoader
from .noise import (canonical_noise_type, make_instance_noise, make_noisy_labels,
                    noisy_labels_from_file, replace_with_open_set)

DATASETS = ("cifar10", "cifar100", "clothing1m", "digits")
CLASS_CONDITIONAL = ("clean", "symmetric", "pairflip", "asym")
NOISE_TYPES = CLASS_CONDITIONAL + ("dependent", "instance", "openset")
# Real noise: CIFAR-N human labels and their synthetic twins (data/cifarn.py), and
# "real", a data set's own noisy labels (Clothing1M, which has no clean ones to corrupt).
NOISE_TYPES += CIFARN_TYPES + ("real",)
# Types whose labels do not depend on --noise_rate (it is ignored for them).
RATE_FREE_NOISE = ("clean", "real") + CIFARN_TYPES


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


def make_noise(data, cfg):
    """Noisy train labels for cfg.noise_type; may also alter data (open-set images).

    --noise_file (cfg.noise_file) takes the labels from a `label,label_noisy` CSV whatever
    the type: the type and rate then only name the run, and the actual rate is measured.
    """
    noise_type = canonical_noise_type(cfg.noise_type)
    check_noise_fits(data.name, noise_type, getattr(cfg, "noise_file", None))
    if noise_type == "real":
        return data.noisy_train_labels
    noise_file = getattr(cfg, "noise_file", None)
    if noise_file:
        return noisy_labels_from_file(noise_file, data.train_labels, data.num_classes)
    if noise_type in CLASS_CONDITIONAL:
        return make_noisy_labels(data.train_labels, noise_type, cfg.noise_rate,
                                 data.num_classes, cfg.noise_seed)
    if noise_type in CIFARN_TYPES:
        return cifarn_noisy_labels(data.name, data.train_labels, data.num_classes, noise_type,
                                   getattr(cfg, "noise_path", None), cfg.data_root, cfg.noise_seed)
    if noise_type == "dependent":
        return noisy_labels_from_file(released_idn_file(cfg), data.train_labels, data.num_classes)
    if noise_type == "instance":
        return make_instance_noise(data.train_images, data.train_labels, cfg.noise_rate,
                                   data.num_classes, data.mean, data.std, cfg.noise_seed)
    assert noise_type == "openset", noise_type  # check_noise_fits refused every other name
    add_open_set(data, cfg)
    return data.train_labels.copy()


def check_noise_fits(dataset, noise_type, noise_file=None):
    """Refuse, from the flags alone and before anything loads, a noise type that does not
    exist for the data set: pairflip needs 10 classes, asym 10 or 100, openset CIFAR-10;
    Clothing1M takes only `real` (its own labels), `real` only Clothing1M, and a CIFAR-N
    type only the CIFAR it labels."""
    noise_type = canonical_noise_type(noise_type)
    if noise_type not in NOISE_TYPES:
        raise UserError(f"unknown noise type {noise_type!r}; choose one of "
                        f"{', '.join(NOISE_TYPES + ('sym',))}")
    num_classes = dataset_num_classes(dataset)
    if noise_type == "pairflip" and num_classes != 10:
        raise UserError(f"pairflip noise is defined for 10 classes (CIFAR-10), and {dataset} has "
                        f"{num_classes}: use symmetric or asym noise")
    if noise_type == "asym" and num_classes not in (10, 100):
        raise UserError(f"asym noise is defined for CIFAR-10 and CIFAR-100, not {dataset}")
    if noise_type == "openset" and noise_file:
        raise UserError("--noise_file sets noisy labels, openset noise replaces images and "
                        "keeps the labels: drop one of the two")
    if noise_type == "openset" and dataset != "cifar10":
        raise UserError(f"openset noise is defined for cifar10 (CIFAR-100 images under CIFAR-10 "
                        f"labels), not {dataset}; choose another noise type")
    if dataset == "clothing1m" and (noise_type != "real" or noise_file):
        raise UserError(f"Clothing1M's labels are real noise with no clean labels to corrupt: use "
                        f"noise type real (--noise_type/--noise_mode), not {noise_type!r}"
                        + (", and no --noise_file" if noise_file else ""))
    if noise_type == "real" and dataset != "clothing1m":
        raise UserError(f"noise type real means a data set's own noisy labels (Clothing1M); "
                        f"{dataset} has clean labels: for real human noise on CIFAR use a CIFAR-N "
                        f"type ({', '.join(CIFARN_TYPES)})")
    if noise_type in CIFARN_TYPES:
        check_cifarn_dataset(noise_type, dataset)


def released_idn_file(cfg):
    """Dependent noise without --noise_file: the SLN release's layout,
    <data_root>/label_noisy/dependent<rate>.csv (with --datapath ./data/CIFAR10)."""
    path = os.path.join(cfg.data_root, "label_noisy", f"dependent{cfg.noise_rate}.csv")
    if not os.path.isfile(path):
        raise UserError(
            f"dependent (IDN) noise reads its labels from a file and {path} does not exist. "
            "Pass --noise_file PATH (the SLN release ships dependent0.4.csv for CIFAR-10 and "
            "CIFAR-100), or make the file from a network trained on clean labels:\n"
            f"  python3 main_warmup.py --dataset {cfg.dataset} --noise_type clean --record_train_probs "
            f"--data_root {cfg.data_root}\n"
            f"  python3 -m data.idn --run RUN_DIR --noise_rate {cfg.noise_rate} "
            f"--data_root {cfg.data_root} --out {path}")
    return path


def add_open_set(data, cfg):
    """Open-set noise: round(r * N) CIFAR-10 training images become CIFAR-100 training
    images, their CIFAR-10 labels kept (data.noise_arrays records which).

    CIFAR-100 is looked for next to CIFAR-10: in --data_root itself (./data holding both
    cifar-10-batches-py and cifar-100-python), or in the sibling folder CIFAR100 (the SLN
    layout ./data/CIFAR10 and ./data/CIFAR100).
    """
    root = os.path.normpath(cfg.data_root)
    parent = os.path.dirname(root) or "."
    candidates = [root, os.path.join(parent, "CIFAR100"), parent]
    archive = CIFAR_SPECS["cifar100"]["archive"]
    found = [c for c in candidates
             if find_cifar_folder("cifar100", c) or os.path.isfile(os.path.join(c, archive))]
    if not found:
        raise UserError(f"openset noise takes its images from CIFAR-100, not found in "
                        f"{' or '.join(candidates)}: extract {archive} "
                        f"({CIFAR_SPECS['cifar100']['url']}) into one of them")
    open_images = load_cifar("cifar100", found[0], download=False)[0]
    data.train_images, replaced, sources = replace_with_open_set(
        data.train_images, open_images, cfg.noise_rate, cfg.noise_seed)
    data.noise_arrays.update(open_set_index=replaced, open_set_source=sources)


def prepare_data(cfg):
    """Load cfg.dataset and make its noisy train labels (in the data set's train order)."""
    if cfg.dataset == "clothing1m":
        data = Clothing1M(cfg.data_root, cfg.image_size, cfg.num_per_class, cfg.num_workers)
    else:
        data = load_dataset(cfg.dataset, cfg.data_root)
    noisy = np.asarray(make_noise(data, cfg), dtype=np.int64)
    if noisy.shape != (data.num_train,):
        raise UserError(f"{len(noisy)} noisy labels for {data.num_train} training images")
    return data, noisy


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
    keep = np.setdiff1d(np.arange(len(noisy)), val)
    data.val_images, data.val_labels = data.train_images[val], noisy[val]
    data.train_images, data.train_labels = data.train_images[keep], data.train_labels[keep]
    return noisy[keep], val
