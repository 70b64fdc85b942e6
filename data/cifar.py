"""CIFAR-10/100 from the "python version" archives (the files torchvision reads).

Each batch file is a pickle (latin1) with `data` uint8 (N, 3072), channel-major
(1024 R, 1024 G, 1024 B, each row-major), and `labels` (CIFAR-10) or `fine_labels`
(CIFAR-100). The train order is data_batch_1..5 concatenated; CIFAR-N and the SLN
label files index that order. We validate structure (keys, shapes, label ranges),
not the md5 of extracted files, so a user's own copy and test fixtures load.
"""
import os
import pickle
import shlex

import numpy as np

from errors import UserError

from .base import DataFile, DataSet, DatasetSpec
from .download import check_download_allowed, file_md5, folders_made_for

SPECS = {
    "cifar10": dict(
        folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
        meta="batches.meta", label_key="labels", num_classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010)),
    "cifar100": dict(
        folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train=["train"], test=["test"],
        meta="meta", label_key="fine_labels", num_classes=100,
        mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
}


# The SLN release keeps each CIFAR in a folder of its own (--datapath ./data/CIFAR10), the
# GLS release both in ./data (--data_root): either layout serves both families of scripts.
SLN_SUBFOLDER = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def find_cifar_folder(name, root):
    """The extracted folder: `root/<folder>`, `root` itself when it is that folder, or the
    other release's layout: `root/CIFAR10/<folder>` (root ./data) or `root/../<folder>`
    (root ./data/CIFAR10)."""
    folder, sub = SPECS[name]["folder"], SLN_SUBFOLDER[name]
    root = os.path.normpath(root)
    candidates = [os.path.join(root, folder), root, os.path.join(root, sub, folder)]
    if os.path.basename(root) == sub:
        candidates.append(os.path.join(os.path.dirname(root) or ".", folder))
    for path in candidates:
        if os.path.basename(os.path.normpath(path)) == folder and os.path.isdir(path):
            return path
    return None


def _missing_message(name, root, reason):
    spec = SPECS[name]
    return (f"{name} not found: expected the folder {os.path.join(root, spec['folder'])} "
            f"({reason}). Download {spec['archive']} from {spec['url']} (md5 {spec['md5']}) "
            f"and extract it under {root}, or point --data_root/--datapath at the folder "
            f"that holds {spec['folder']}. Offline, use --dataset digits.")


def download_cifar(name, root):
    """Download and extract the archive with torchvision's utility (md5 checked). An archive
    already in `root` is extracted when its md5 is the released one, and refused otherwise."""
    from torchvision.datasets.utils import download_and_extract_archive

    spec = SPECS[name]
    archive = os.path.join(root, spec["archive"])
    if os.path.isfile(archive) and file_md5(archive) != spec["md5"]:
        raise UserError(f"{archive} is present but fails its md5 check ({file_md5(archive)}, the "
                        f"released archive's is {spec['md5']}): it is damaged or incomplete. Delete "
                        f"it and download {spec['url']} again, or extract a good copy under {root}")
    if not os.path.isfile(archive):
        check_download_allowed(spec["url"], archive)
    try:
        with folders_made_for(root):
            download_and_extract_archive(spec["url"], root, filename=spec["archive"], md5=spec["md5"])
    except Exception as exc:  # offline, refused, or a bad archive: all end the same way
        raise UserError(_missing_message(name, root, f"download failed: {exc}")) from None


def _read_batch(path, label_key, num_classes):
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        what = (f"is a symbolic link to nothing ({os.readlink(path)})" if os.path.islink(path)
                else "is missing")
        raise UserError(f"{path} {what}: the CIFAR folder is incomplete; "
                        "delete it and extract the archive again") from None
    except Exception as exc:
        raise UserError(f"{path} is not a readable CIFAR pickle ({exc}); "
                        "delete the folder and extract the archive again") from None
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise UserError(f"{path} lacks the keys 'data' and {label_key!r}: not a CIFAR "
                        "python-version batch; extract the archive again")
    data, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) == 0
            or labels.shape != (len(data),) or labels.dtype.kind not in "iu"):
        raise UserError(f"{path}: expected uint8 data of shape (N, 3072), N > 0, and N integer "
                        f"labels, got {data.dtype} {data.shape} and labels {labels.dtype} {labels.shape}; "
                        "extract the archive again")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise UserError(f"{path}: key {label_key!r}, row {bad[0]} holds {labels[bad[0]]}, outside "
                        f"0..{num_classes - 1} ({len(bad)} such): not a batch of this data set; point "
                        "--data_root/--datapath at its folder or extract its archive again")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(name, root, download=True):
    """Return (train_images, train_labels, test_images, test_labels) as uint8 NCHW / int64."""
    spec = SPECS[name]
    folder = find_cifar_folder(name, root)
    if folder is None:
        archive = os.path.join(root, spec["archive"])
        if not download and not os.path.exists(archive):
            raise UserError(_missing_message(name, root, "folder missing"))
        download_cifar(name, root)
        folder = find_cifar_folder(name, root)
        if folder is None:
            raise UserError(_missing_message(name, root, "the archive did not contain it"))
    if not os.path.exists(os.path.join(folder, spec["meta"])):
        raise UserError(f"{os.path.join(folder, spec['meta'])} is missing: the CIFAR folder is "
                        "incomplete; delete it and extract the archive again")
    parts = {}
    for split in ("train", "test"):
        batches = [_read_batch(os.path.join(folder, f), spec["label_key"], spec["num_classes"])
                   for f in spec[split]]
        parts[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return (*parts["train"], *parts["test"])


def load(name, root):
    spec = SPECS[name]
    tr_x, tr_y, te_x, te_y = load_cifar(name, root)
    return DataSet(name, spec["num_classes"], tr_x, tr_y, te_x, te_y, spec["mean"], spec["std"])


# ---------------------------------------------------------------- what a run reads

def download_command(name, root):
    spec = SPECS[name]
    root = shlex.quote(os.path.abspath(root))
    return (f"mkdir -p {root} && curl -L {spec['url']} | tar xz -C {root}  "
            f"(the archive's md5: {spec['md5']})")


def cifar_file(name, root):
    """The DataFile of CIFAR `name` read from `root`: the folder found (or an archive there,
    which a run extracts), else the folder where it goes."""
    spec = SPECS[name]
    archive = os.path.join(root, spec["archive"])
    path = find_cifar_folder(name, root) or (archive if os.path.isfile(archive) else os.path.join(root, spec["folder"]))
    return DataFile(path, f"{name}, the python-version archive extracted", download_command(name, root),
                    fake=lambda cfg: write_stand_in(name, root))


# A smoke run's stand-in: random images in the archive's format, every class equally often.
# Images of a stand-in: at least STAND_IN_TRAIN training images and STAND_IN_PER_CLASS of
# each class, so that a 0.25 validation split (papers/smoke.py) holds out one of each.
STAND_IN_TRAIN, STAND_IN_PER_CLASS, STAND_IN_TEST = 100, 3, 50


def write_stand_in(name, root):
    """Write a small CIFAR folder of random images, in the format of the extracted archive,
    under root (smoke runs: sweep.py paper --smoke)."""
    spec = SPECS[name]
    k = spec["num_classes"]
    rng = np.random.default_rng(k)
    folder = os.path.join(root, spec["folder"])
    os.makedirs(folder, exist_ok=True)

    def write(file_name, n):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 spec["label_key"]: rng.permutation(np.arange(n) % k).tolist()}
        with open(os.path.join(folder, file_name), "wb") as f:
            pickle.dump(entry, f, protocol=2)

    train = max(STAND_IN_TRAIN, STAND_IN_PER_CLASS * k)
    for file_name in spec["train"]:
        write(file_name, train // len(spec["train"]))
    for file_name in spec["test"]:
        write(file_name, STAND_IN_TEST)
    with open(os.path.join(folder, spec["meta"]), "wb") as f:
        pickle.dump({}, f, protocol=2)


CIFAR10 = DatasetSpec("cifar10", 10, 3, 32, lambda root, cfg: load("cifar10", root),
                      "CIFAR-10: 50,000 + 10,000 32x32 colour images, 10 classes (downloaded to --data_root)",
                      files=lambda cfg: [cifar_file("cifar10", cfg.data_root)])
CIFAR100 = DatasetSpec("cifar100", 100, 3, 32, lambda root, cfg: load("cifar100", root),
                       "CIFAR-100: 50,000 + 10,000 32x32 colour images, 100 classes (downloaded to --data_root)",
                       files=lambda cfg: [cifar_file("cifar100", cfg.data_root)])
