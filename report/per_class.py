"""Per-class results: per group, epoch (best, last) and true class, the test accuracy and
the training fit_clean / mem_noisy, and the mean confusion and transition matrices."""
import math
import os

import numpy as np

from core.files import read_json_file, warn
from utils.schema import PER_CLASS_COUNTS, PER_CLASS_EPOCHS, PER_CLASS_RATES

from .checks import square_matrix
from .values import fmt_acc, md_row


def per_class_rows(rows, groups):
    """Per group, epoch (best, last) and class: the mean (and sample std) over the finished
    seeds that recorded per-class results of the test accuracy, and the mean of the
    training fit_clean / mem_noisy where every such seed has a value for the class."""
    out = []
    for row in rows:
        runs = [r for r in groups[row["group"]].done if r["per_class"]]
        for which in PER_CLASS_EPOCHS:
            entries = [r["per_class"][which] for r in runs if which in r["per_class"]]
            sizes = {len(e["test_acc"]) for e in entries}
            if len(sizes) > 1:
                warn(f"group {row['group']}: its seeds record per-class results of {sorted(sizes)} "
                     "classes; no per-class table")
                continue
            if entries:
                out += per_class_table(row, which, entries)
    return out


def per_class_table(row, which, entries):
    """The rows of per_class.csv of one group and epoch; None where a class has no value (no
    test image, no such training sample) in some seed."""
    acc = np.stack([e["test_acc"] for e in entries])
    std = acc.std(axis=0, ddof=1) if len(entries) > 1 else np.full(acc.shape[1], np.nan)
    means = {"test_acc_mean": acc.mean(axis=0), "test_acc_std": std}
    for key in PER_CLASS_RATES + PER_CLASS_COUNTS:
        means[f"{key[len('train_'):]}_mean"] = all_seeds_mean(entries, key)
    epochs = " ".join(str(e["epoch"]) for e in entries if e["epoch"] is not None)
    table = []
    for k in range(acc.shape[1]):
        line = {"group": row["group"], "script": row["script"], "label": row["label"], "epoch": which,
                "epochs": epochs, "n_seeds": len(entries), "class": k}
        for name, values in means.items():
            line[name] = None if values is None or math.isnan(values[k]) else float(values[k])
        table.append(line)
    return table


def all_seeds_mean(entries, key):
    """Mean over the entries of an array they all have (NaN where one lacks a value), or None."""
    if not all(key in e for e in entries):
        return None
    return np.stack([e[key] for e in entries]).mean(axis=0)


def row_normalised(counts):
    """A confusion matrix as fractions of each true class (a row without samples: NaN)."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def mean_confusion(runs, which):
    """The row-normalised test confusion matrix at `which` epoch, mean over the runs that
    recorded it; None when none did."""
    mats = [row_normalised(r["per_class"][which]["test_confusion"]) for r in runs
            if r["per_class"] and which in r["per_class"]]
    if not mats or len({m.shape for m in mats}) > 1:
        return None
    return np.mean(mats, axis=0)


def mean_transition(runs):
    """noise.json's transition_matrix (row = true class, column = noisy label), mean over the
    runs that have a valid one (one noise setting: they are equal); None without one."""
    mats = []
    for run in runs:
        noise, problem = read_json_file(os.path.join(run["folder"], "noise.json"))
        if problem and problem != "is missing":
            warn(f"{run['folder']}: noise.json {problem}; its transition matrix is not drawn")
        matrix = (noise or {}).get("transition_matrix")
        if matrix is None:
            continue
        array = square_matrix(matrix)
        if array is None:
            warn(f"{run['folder']}: noise.json transition_matrix is not a square matrix of numbers; ignored")
        else:
            mats.append(array)
    if not mats or len({m.shape for m in mats}) > 1:
        return None
    return np.mean(mats, axis=0)


def per_class_markdown(per_class, max_classes=20):
    """Per group: class, test accuracy at the best and the last epoch, fit_clean and
    mem_noisy at the last epoch (over 20 classes: the 10 of lowest last accuracy)."""
    tables = {}
    for line in per_class:
        tables.setdefault(line["group"], {}).setdefault(line["epoch"], {})[line["class"]] = line
    lines = []
    for gid, by_epoch in tables.items():
        best, last = by_epoch.get("best", {}), by_epoch.get("last", {})
        first = next(iter((last or best).values()))
        classes = sorted(set(best) | set(last))
        listed = classes
        if len(classes) > max_classes:
            listed = sorted(classes, key=lambda k: (last.get(k) or best[k])["test_acc_mean"])[:10]
        lines += [f"### {first['label']} ({first['script']}), {first['n_seeds']} seed(s)", "",
                  f"`{gid}`" + (f": the 10 classes of lowest last accuracy of {len(classes)} (all in "
                                "per_class.csv)" if listed is not classes else ""), "",
                  "| class | test acc, best epoch | test acc, last epoch | fit_clean, last | "
                  "mem_noisy, last | clean / noisy train samples, last |", "|---|---|---|---|---|---|"]
        for k in listed:
            b, l = best.get(k), last.get(k, {})
            counts = " / ".join("" if l.get(c) is None else f"{l[c]:.0f}" for c in ("n_clean_mean", "n_noisy_mean"))
            counts = "" if counts == " / " else counts
            cells = [str(k), fmt_acc(b["test_acc_mean"], b["test_acc_std"]) if b else "",
                     fmt_acc(l.get("test_acc_mean"), l.get("test_acc_std")),
                     fmt_acc(l.get("fit_clean_mean"), None), fmt_acc(l.get("mem_noisy_mean"), None), counts]
            lines.append(md_row(cells))
        lines.append("")
    return lines
