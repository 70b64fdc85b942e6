"""Data sets and their noisy labels.

Every DatasetSpec and NoiseType declared at module level in a file of this package is
found here (core.plugins): a new data set or noise type is one declaration in one file,
and the flags, their --help, the checks and the runs follow.

dataset_spec(name), noise_type(name)   the declarations (aliases resolved)
load_dataset(name, root)               the data, clean labels
prepare_data(cfg)                      (data, noisy train labels, provenance, noise type)
check_data_flags(cfg)                  every refusal that the flags alone decide
data_files(cfg)                        the files the run reads ([DataFile])
"""
import functools
import os

import numpy as np

from core.args import flag_dests
from core.plugins import discover
from errors import UserError

from .base import DataFile, DataSet, DatasetSpec, NoiseType  # noqa: F401  (the names plug-ins use)


@functools.lru_cache(maxsize=None)
def _registry():
    found = discover("data", lambda obj, module: isinstance(obj, (DatasetSpec, NoiseType)))
    datasets = {k: v for k, v in found.items() if isinstance(v, DatasetSpec)}
    order = list(found)  # synthetic noise first in every list, then as found
    noises = {k: v for k, v in sorted(((k, v) for k, v in found.items() if isinstance(v, NoiseType)),
                                      key=lambda kv: (kv[1].group != "synthetic", order.index(kv[0])))}
    aliases = {a: n.name for n in noises.values() for a in n.aliases}
    clash = sorted(set(aliases) & set(noises))
    if clash:
        raise UserError(f"noise type alias {clash[0]!r} is also the name of a noise type: rename one")
    return datasets, noises, aliases, found.files


def declared_in(name):
    """The file that declares the data set or noise type `name`."""
    return _registry()[3][canonical_noise_type(name)]


def dataset_names():
    return list(_registry()[0])


def noise_type_names():
    return list(_registry()[1])


def dataset_spec(name):
    datasets = _registry()[0]
    if name not in datasets:
        raise UserError(f"--dataset {name!r} is unknown; choose one of {', '.join(datasets)}")
    return datasets[name]


def canonical_noise_type(name):
    """The noise type's own name for one of its aliases (sym -> symmetric)."""
    return _registry()[2].get(name, name)


def noise_type(name):
    noises = _registry()[1]
    name = canonical_noise_type(name)
    if name not in noises:
        raise UserError(f"unknown noise type {name!r}; choose one of {', '.join(noise_type_help_names())}")
    return noises[name]


def noise_type_help_names():
    return [n.name + (f" ({', '.join(n.aliases)})" if n.aliases else "") for n in _registry()[1].values()]


def noise_types_help():
    """One line per group of noise types, for --help."""
    groups = {}
    for n in _registry()[1].values():
        groups.setdefault(n.group, []).append(n.name + (f" ({', '.join(n.aliases)})" if n.aliases else ""))
    return "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items())


def add_data_flags(group, defaults):
    """The flags that data sets and noise types declare."""
    for plugin in list(_registry()[0].values()) + list(_registry()[1].values()):
        if plugin.flags is not None:
            plugin.flags(group, defaults)


def flags_of_others(cfg):
    """{dest: (kind, name)} of the flags that data sets and noise types declare for themselves,
    of those this run does not use (another data set's, another noise type's)."""
    import argparse

    datasets, noises = _registry()[0], _registry()[1]
    used = {dataset_spec(cfg.dataset).name, noise_type(cfg.noise_type).name}
    found, mine = {}, set()
    for kind, plugins in (("data set", datasets), ("noise type", noises)):
        for plugin in plugins.values():
            if plugin.flags is None:
                continue
            p = argparse.ArgumentParser(add_help=False)
            plugin.flags(p, {})
            dests = flag_dests(p)
            if plugin.name in used:
                mine |= dests
            else:
                found.update({d: (kind, plugin.name) for d in dests})
    return {d: owner for d, owner in found.items() if d not in mine}


def check_data_flags(cfg):
    """Refuse, from the flags alone and before anything loads, a data set, a noise type or a
    combination that does not exist."""
    for spec in _registry()[0].values():
        if spec.check_flags is not None:
            spec.check_flags(cfg)
    spec, noise = dataset_spec(cfg.dataset), noise_type(cfg.noise_type)
    if noise.needs_clean_labels and not spec.clean_train_labels:
        raise UserError(f"{spec.name}'s labels are real noise with no clean labels to corrupt: use "
                        f"noise type real (--noise_type/--noise_mode), not {cfg.noise_type!r}")
    if not noise.needs_clean_labels and spec.clean_train_labels:
        human = [n.name for n in _registry()[1].values() if n.group.startswith("CIFAR-N human")]
        raise UserError(f"noise type {noise.name} means a data set's own noisy labels (Clothing1M); "
                        f"{spec.name} has clean labels: for real human noise on CIFAR use a CIFAR-N "
                        f"type ({', '.join(human)})")
    if cfg.noise_file and not noise.accepts_noise_file:
        raise UserError(f"--noise_file sets noisy labels, and noise type {noise.name} does not take "
                        "them from a file (openset replaces images and keeps the labels; real labels "
                        "are the data set's own): drop one of the two")
    if noise.check is not None:
        noise.check(spec, cfg)


def data_files(cfg):
    """[DataFile] of what a run of these flags reads: its data set's files, then its noise
    type's (none with --noise_file, which replaces them and is checked as a flag)."""
    spec, noise = dataset_spec(cfg.dataset), noise_type(cfg.noise_type)
    files = list(spec.files(cfg)) if spec.files is not None else []
    if noise.files is not None and not cfg.noise_file:
        files += noise.files(cfg)
    return files


def load_dataset(name, root="./data", cfg=None):
    """The data set `name` with its clean labels (cfg: the flags a data set may read). A
    relative root is relative to the current folder, and messages name it absolute."""
    return dataset_spec(name).load(os.path.abspath(root), cfg)


def prepare_data(cfg, saved=None):
    """Load cfg.dataset and make its noisy train labels (in the data set's train order):
    (data, labels, provenance, noise type). --noise_file takes the labels from a
    `label,label_noisy` CSV whatever the type: the type and rate then only name the run,
    and the actual rate is measured. `saved`: () -> (labels, provenance) a run folder holds
    (or None), read when its --noise_file is gone (a run that has started needs nothing but
    itself)."""
    from .noise import file_provenance, noisy_labels_from_file

    data = load_dataset(cfg.dataset, cfg.data_root, cfg)
    noise = noise_type(cfg.noise_type)
    if cfg.noise_file and not os.path.lexists(cfg.noise_file):
        kept = saved() if saved is not None else None
        if kept is None:
            raise UserError(f"--noise_file {cfg.noise_file}: no such file; pass the path of an existing "
                            "file")
        noisy, provenance = kept
    elif cfg.noise_file:
        noisy = noisy_labels_from_file(cfg.noise_file, data.train_labels, data.num_classes)
        provenance = file_provenance(cfg.noise_file)
    else:
        noisy, provenance = noise.make(data, cfg)
    noisy = np.asarray(noisy, dtype=np.int64)
    if noisy.shape != (data.num_train,):
        raise UserError(f"{len(noisy)} noisy labels for {data.num_train} training images")
    bad = np.flatnonzero((noisy < 0) | (noisy >= data.num_classes))
    if len(bad):
        raise UserError(f"noise type {noise.name} made label {noisy[bad[0]]} for training image "
                        f"{bad[0]}, outside 0..{data.num_classes - 1}")
    return data, noisy, provenance, noise


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
