"""Label files: the `label,label_noisy` CSV (read, checked against the training set,
written) and the SLN release's label files (where the release reads them, their md5, their
download), with the provenance noise.json records of a file. data/noise.py re-exports
these names.
"""
import os

import numpy as np

from errors import UserError

from .cifar import SPECS as CIFAR_SPECS
from .download import download_file, file_md5

# The SLN release's label files (chenpf1025/SLN, data/<CIFAR10|CIFAR100>/label_noisy/), by
# (data set, noise type, rate): their md5. The release reads <datapath>/label_noisy/<mode><rate>.csv.
SLN_RELEASE_URL = "https://raw.githubusercontent.com/chenpf1025/SLN/master/data"
SLN_MODE = {"symmetric": "sym", "asym": "asym", "dependent": "dependent"}
SLN_FILES = {
    ("cifar10", "symmetric", 0.4): "6f4d4b29f1767cc37367917b16760015",
    ("cifar10", "asym", 0.4): "20c45fa0651d67efab8346d22c9b9f6d",
    ("cifar10", "dependent", 0.4): "4e509dbb6b8459c76e410fd7640f1144",
    ("cifar100", "symmetric", 0.4): "5be389bac76777b87c4ad67454574e00",
    ("cifar100", "asym", 0.4): "8c063118587039d7234805711214b1c5",
    ("cifar100", "dependent", 0.4): "bb0743666c8c32a68b1a8d7f78e10faa",
}


def load_noise_file(path):
    """Read a `label,label_noisy` CSV (the SLN release's format: a header, then one row per
    training image in train order, row 0 first; LF or CRLF line ends, UTF-8 with or without a byte-order
    mark) -> (clean, noisy) int64 arrays. A bad line is an error naming it."""
    try:
        # universal newlines: CRLF reads as LF; utf-8-sig: a byte-order mark (Excel) is dropped
        with open(path, encoding="utf-8-sig") as f:
            header = f.readline().strip()
            rows = [(n, line.strip()) for n, line in enumerate(f, 2) if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"noise file {path} is not a text CSV (it holds binary data); pass the "
                        "`label,label_noisy` CSV of the SLN release's format") from None
    except OSError as exc:
        raise UserError(f"noise file {path} cannot be read ({exc.strerror}); check --noise_file") from None
    if not header and not rows:
        raise UserError(f"noise file {path} is empty; pass the `label,label_noisy` CSV of the SLN "
                        "release's format (python3 -m data.idn writes one)")
    if header.replace(" ", "") != "label,label_noisy":
        raise UserError(f"{path}: header {header[:80]!r}, expected 'label,label_noisy' (the SLN "
                        "release's format: clean and noisy label of each training image, in train order)")
    table = np.zeros((len(rows), 2), dtype=np.int64)
    for i, (n, line) in enumerate(rows):
        try:
            clean, noisy = (int(v) for v in line.split(","))  # exactly two
            table[i] = clean, noisy
        except (ValueError, OverflowError):
            raise UserError(f"{path}:{n}: {line[:40]!r} is not two integers 'label,label_noisy'; fix "
                            "that line or make the file again (python3 -m data.idn)") from None
    return table[:, 0].copy(), table[:, 1].copy()


def check_label_range(path, columns, num_classes, what="key", unit="index"):
    """Every label of every column in [0, num_classes), or a UserError naming the file, the
    column (or key), the first bad row and its value."""
    for name, labels in columns.items():
        labels = np.asarray(labels)
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if len(bad):
            raise UserError(f"{path}: {what} {name}, {unit} {bad[0]} holds {labels[bad[0]]}, outside "
                            f"0..{num_classes - 1} ({len(bad)} such): the file was made for another data "
                            "set (CIFAR-100 vs CIFAR-10?) or is damaged; pass the one for --dataset")


def noisy_labels_from_file(path, train_labels, num_classes):
    """The file's noisy labels, after checking that they belong to this training set."""
    clean, noisy = load_noise_file(path)
    if len(clean) != len(train_labels):
        raise UserError(f"{path} has {len(clean)} rows but the training set has {len(train_labels)} "
                        "images: the file was made for another data set; pass the one for --dataset")
    check_label_range(path, {"label": clean, "label_noisy": noisy}, num_classes, "column", "row")
    wrong = np.flatnonzero(clean != np.asarray(train_labels))
    if len(wrong):
        raise UserError(f"{path}: its clean column differs from the training labels in {len(wrong)} "
                        f"rows (first: row {wrong[0]}): the file was made for another data set or "
                        "train order; pass the one for --dataset")
    return noisy


def save_noise_file(path, clean_labels, noisy_labels):
    """Write the `label,label_noisy` CSV that load_noise_file reads, atomically (a temporary
    file renamed over `path`): runs read this file, so it is never seen half written."""
    table = np.stack([np.asarray(clean_labels), np.asarray(noisy_labels)], axis=1)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        np.savetxt(tmp, table, fmt="%d", delimiter=",", header="label,label_noisy", comments="")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sln_release_path(data_root, noise_type, noise_rate):
    """Where the SLN release reads a mode's labels: <datapath>/label_noisy/<mode><rate>.csv
    (dataset.py of chenpf1025/SLN; the rate printed as Python prints the float)."""
    return os.path.join(data_root, "label_noisy", f"{SLN_MODE[noise_type]}{float(noise_rate)}.csv")


def sln_release_url(dataset, noise_type, noise_rate):
    folder = "CIFAR10" if dataset == "cifar10" else "CIFAR100"
    return f"{SLN_RELEASE_URL}/{folder}/label_noisy/{SLN_MODE[noise_type]}{float(noise_rate)}.csv"


def sln_release_file(dataset, noise_type, noise_rate, data_root, generate_flag):
    """The SLN release's label file for this setting: the one at the release's path when
    present, else downloaded there (md5 checked) when the release shipped it; None when
    neither (the caller generates the labels). Offline, a missing shipped file is an error
    naming the file, its URL and `generate_flag`, the way to draw labels instead."""
    if noise_type not in SLN_MODE:
        return None
    path = sln_release_path(data_root, noise_type, noise_rate)
    # A file there is read as the release reads it; only the CIFAR label files of the
    # class-conditional types are looked for (a digits run must not pick up CIFAR's).
    if os.path.isfile(path) and (dataset in CIFAR_SPECS or noise_type == "dependent"):
        return path
    md5 = SLN_FILES.get((dataset, noise_type, float(noise_rate)))
    if md5 is None:
        return None
    return download_file(sln_release_url(dataset, noise_type, noise_rate), path, md5,
                         "the SLN release's label file",
                         f"pass it with --noise_file PATH, or draw the labels instead with {generate_flag}")


def file_provenance(path, released_md5=None):
    md5 = file_md5(path)
    source = {"source": "file", "path": os.path.abspath(path), "md5": md5}
    if released_md5 is not None:
        source["released_file"] = md5 == released_md5
    return source
