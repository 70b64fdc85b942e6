"""CIFAR-N: human noisy labels of the CIFAR train sets (Wei et al., ICLR 2022).

Files CIFAR-10_human.pt / CIFAR-100_human.pt from the `data/` folder of the GitHub
repository UCSC-REAL/cifar-10-100n: a torch.save of a dict of numpy int64 arrays in
CIFAR train order. Noise types and rates against clean_label:

    CIFAR-10N   clean (clean_label), aggre (aggre_label, 9.0%), rand1/2/3
                (random_label1/2/3, 17.2/18.1/17.6%), worst (worse_label, 40.2%)
    CIFAR-100N  clean100 (clean_label), noisy100 (noisy_label, 40.2%)

`<type>_twin` (e.g. worst_twin) is the synthetic twin of a human label set: labels
drawn from its estimated transition matrix, so the per-class flip rates match and
the instance dependence of human noise is gone. It is seeded by --noise_seed.
"""
import os

import numpy as np
import torch

from errors import UserError

from .base import DataFile, NoiseType
from .download import download_file
from .noise import check_label_range, file_provenance, generated, make_noisy_labels, twin_labels

REPOSITORY = "https://github.com/UCSC-REAL/cifar-10-100n"
FILES = {
    "cifar10": dict(filename="CIFAR-10_human.pt", md5="96644db5574813cae939af5f7f2a0aec", num_classes=10),
    "cifar100": dict(filename="CIFAR-100_human.pt", md5="a67b45c1d7992051865b5c755bd68bb1", num_classes=100),
}
# noise type -> (data set, key of the label file)
HUMAN_TYPES = {
    "clean": ("cifar10", "clean_label"),
    "aggre": ("cifar10", "aggre_label"),
    "worst": ("cifar10", "worse_label"),
    "rand1": ("cifar10", "random_label1"),
    "rand2": ("cifar10", "random_label2"),
    "rand3": ("cifar10", "random_label3"),
    "clean100": ("cifar100", "clean_label"),
    "noisy100": ("cifar100", "noisy_label"),
}
TWIN_SUFFIX = "_twin"
TWIN_TYPES = tuple(t + TWIN_SUFFIX for t in HUMAN_TYPES if not t.startswith("clean"))


def default_noise_path(dataset, data_root):
    return os.path.join(data_root, FILES[dataset]["filename"])


def download_url_of(dataset):
    return f"https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/main/data/{FILES[dataset]['filename']}"


def _safe_globals():
    """What unpickling integer numpy arrays needs, and nothing else. The released files
    name numpy.core.multiarray._reconstruct, which numpy 2 moved to numpy._core."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    allowed = [np.ndarray, np.dtype, reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles a dtype by its class
    if dtypes is not None:
        allowed += [getattr(dtypes, f"{kind}{bits}DType") for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)]
    return allowed


def _torch_at_least(major, minor):
    version = torch.__version__.split("+")[0].split(".")
    return (int(version[0]), int(version[1])) >= (major, minor)


def read_label_file(path):
    """The label file's dict, unpickled weights-only with an allow-list of numpy globals.

    Fallback: before torch 2.6 the allow-list cannot name a global under another module
    path (the files say numpy.core, numpy 2 has numpy._core); there the file is unpickled
    in full only when its md5 is a released one (FILES), so nothing but the published
    files is ever fully unpickled.
    """
    try:
        # safe_globals accepts (global, "module.name") aliases from torch 2.6 on.
        if hasattr(torch.serialization, "safe_globals") and _torch_at_least(2, 6):
            with torch.serialization.safe_globals(_safe_globals()):
                labels = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from torchvision.datasets.utils import check_md5
            if not any(check_md5(path, f["md5"]) for f in FILES.values()):
                raise UserError(f"{path} is not one of the released CIFAR-N files (md5 differs) and "
                                f"this torch ({torch.__version__}) cannot read it safely; "
                                "upgrade torch to 2.6 or later, or use the released file")
            labels = torch.load(path, map_location="cpu", weights_only=False)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} cannot be read as a CIFAR-N label file "
                        f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"download it again from {REPOSITORY} (folder data/)") from None
    if not isinstance(labels, dict):
        raise UserError(f"{path} holds a {type(labels).__name__}, not the dict of label arrays of "
                        f"a CIFAR-N file; download it again from {REPOSITORY} (folder data/)")
    return labels


def load_human_labels(path, noise_type):
    """Return (noisy, clean) int64 arrays of a CIFAR-N label file for a human noise type."""
    if noise_type not in HUMAN_TYPES:
        raise UserError(f"{noise_type!r} is not a CIFAR-N label set; choose one of {', '.join(HUMAN_TYPES)}")
    dataset, key = HUMAN_TYPES[noise_type]
    labels = read_label_file(path)
    for k in (key, "clean_label"):
        if k not in labels:
            other = [d for d, f in FILES.items() if f["filename"] != FILES[dataset]["filename"]]
            raise UserError(f"{path} has no {k!r} labels (keys: {', '.join(map(str, labels))}): "
                            f"{noise_type} needs {FILES[dataset]['filename']} ({dataset}); "
                            f"is this the {other[0]} file?")
    noisy, clean = np.asarray(labels[key]), np.asarray(labels["clean_label"])
    integers = noisy.dtype.kind in "iu" and clean.dtype.kind in "iu"
    if noisy.shape != clean.shape or noisy.ndim != 1 or not integers:
        raise UserError(f"{path}: {key} is {noisy.dtype} {noisy.shape} and clean_label {clean.dtype} "
                        f"{clean.shape}; expected two integer arrays of the same length: download the "
                        f"file again from {REPOSITORY} (folder data/)")
    check_label_range(path, {key: noisy, "clean_label": clean}, FILES[dataset]["num_classes"])
    return noisy.astype(np.int64), clean.astype(np.int64)


def fetch_label_file(dataset, path):
    """Download the released file to `path` when it is missing (md5 checked)."""
    if os.path.exists(path):
        return path
    return download_file(download_url_of(dataset), path, FILES[dataset]["md5"], "the CIFAR-N label file",
                         f"or point --noise_path at it (the data/ folder of {REPOSITORY})")


def human_type_of(noise_type):
    """worst_twin -> worst; a human type is its own."""
    return noise_type[:-len(TWIN_SUFFIX)] if noise_type in TWIN_TYPES else noise_type


def check_dataset(spec, cfg):
    """A CIFAR-N type names the data set it labels: worst on cifar100 is an error."""
    noise_type, dataset = cfg.noise_type, spec.name
    wanted = HUMAN_TYPES[human_type_of(noise_type)][0]
    if dataset != wanted:
        same = [t.name for t in NOISE_TYPES if HUMAN_TYPES[human_type_of(t.name)][0] == dataset]
        hint = f"on {dataset} use {', '.join(same)}" if same else f"use --dataset {wanted}"
        raise UserError(f"noise type {noise_type} is a {wanted} label set of CIFAR-N; {hint}")


def cifarn_noisy_labels(dataset, train_labels, noise_type, noise_path, data_root):
    """(labels, path): the human labels of a CIFAR-N type, or of the human set a twin type
    copies (data.noise draws the twin), checked against the CIFAR train labels."""
    human_type = human_type_of(noise_type)
    path = noise_path or default_noise_path(dataset, data_root)
    noisy, clean = load_human_labels(fetch_label_file(dataset, path), human_type)
    if clean.shape != train_labels.shape or not np.array_equal(clean, train_labels):
        differ = ("a different number of labels" if clean.shape != train_labels.shape
                  else f"{int(np.sum(clean != train_labels))} differing labels")
        raise UserError(f"{path}: its clean_label does not equal the {dataset} train labels in "
                        f"{data_root} ({len(clean)} vs {len(train_labels)} labels, {differ}). The "
                        "file indexes the train order data_batch_1..5 of the python-version archive: "
                        f"use the released {FILES[dataset]['filename']} with the original archive")
    return noisy, path


def human_labels(data, cfg):
    labels, path = cifarn_noisy_labels(data.name, data.train_labels, cfg.noise_type, cfg.noise_path,
                                       cfg.data_root)
    return labels, file_provenance(path)


def twin(data, cfg):
    labels, path = cifarn_noisy_labels(data.name, data.train_labels, cfg.noise_type, cfg.noise_path,
                                       cfg.data_root)
    labels = twin_labels(data.train_labels, labels, data.num_classes, cfg.noise_seed)
    return labels, {**generated(cfg, "noisify from the human labels' transition matrix"),
                    **{f"human_{k}": v for k, v in file_provenance(path).items()}}


def label_files(cfg):
    """files() of a CIFAR-N type: the label file it reads (--noise_path, else in the data root)."""
    dataset = HUMAN_TYPES[human_type_of(cfg.noise_type)][0]
    path = cfg.noise_path or default_noise_path(dataset, cfg.data_root)
    get = f"curl -L --create-dirs -o {os.path.abspath(path)} {download_url_of(dataset)}  (md5 {FILES[dataset]['md5']})"
    return [DataFile(path, f"the CIFAR-N label file of {dataset}", get,
                     fake=lambda cfg: write_stand_in(path, dataset, cfg))]


def write_stand_in(path, dataset, cfg):
    """A label file in the released format for the CIFAR under cfg.data_root: every key of the
    released file, each label set symmetric noise at its published rate (smoke runs)."""
    from data import load_dataset

    data = load_dataset(dataset, cfg.data_root, cfg)
    rates = {"aggre_label": 0.090, "random_label1": 0.172, "random_label2": 0.181, "random_label3": 0.176,
             "worse_label": 0.402, "noisy_label": 0.402}  # the rates of this module's docstring
    labels = {"clean_label": data.train_labels}
    for seed, (owner, key) in enumerate(sorted(HUMAN_TYPES.values())):
        if owner == dataset and key in rates:
            labels[key] = make_noisy_labels(data.train_labels, "symmetric", rates[key], data.num_classes, seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(labels, path)


# `clean` (the CIFAR labels themselves) is data/noise.py's; every other label set is read.
NOISE_TYPES = [NoiseType(name, f"CIFAR-N {dataset}: {key} of the human label file", human_labels,
                         group="CIFAR-N human labels", uses_rate=False, check=check_dataset, files=label_files)
               for name, (dataset, key) in HUMAN_TYPES.items() if name != "clean"]
NOISE_TYPES += [NoiseType(name, f"synthetic twin of {human_type_of(name)}: drawn from its transition "
                          "matrix, seeded by --noise_seed", twin, group="CIFAR-N synthetic twins",
                          uses_rate=False, check=check_dataset, files=label_files) for name in TWIN_TYPES]
