"""summary.json, the one file that says what a run is and what it reached: its keys, the
record of its method, its per-class entries, and which epoch is its best.

The engine writes it through these definitions (utils/record.py, RunRecord) and the
report reads it through the same ones (summarize.py and report/), so a key is named in
one place. Pure Python: the report imports it without torch.

    status            running, finished, diverged, interrupted or failed
    header            script, run_dir, method, dataset, noise, model, seed, epochs, device...
    method record     method_name, label, knobs {flag: value}, knob_baselines {flag: value
                      at which the method is its baseline}, is_ce, method_title, comparable
                      (the settings it shares with the CE run it is paired with)
    results           best_* and last_* of every accuracy column (best_results), the
                      epochs trained, wall time, actual noise rate, collapsed/chance_acc
    per_class         {"best": entry, "last": entry}, an entry per_class_entry's keys
    made_by, config   as config.json records them (utils/identity.py)

The best epoch is the first epoch that reaches the highest value of the selection column
(test accuracy, or validation accuracy where the run holds out a split; the momentum
model's where the method has one): `best_row` and `is_new_best` are its only definitions.
"""
import time

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
# Text fields of the header that the report shows.
STRINGS = ("script", "method", "status", "error")
# What a run records about its method; `comparable` may be null, `method_title` is newer.
METHOD_RECORD = ("method_name", "label", "knobs", "knob_baselines", "is_ce")
METHOD_RECORD_OPTIONAL = ("comparable", "method_title")
# Accuracies (percent) that the report averages; the _ema ones belong to runs with a
# momentum model (SLN-MO).
ACCURACIES = ("last_test_acc", "best_test_acc", "last_test_acc_ema", "best_test_acc_ema")
# Last-epoch values of newer runs (percent; ECE in %): averaged where every seed has them.
LAST_VALUES = ("last_mem_noisy", "last_test_ece")
# Every number the report reads from a summary.
NUMBERS = ACCURACIES + LAST_VALUES + ("actual_noise_rate", "initial_test_acc", "chance_acc")
# Flags of the run's end: a list of decisions to keep a stale result, and a collapse mark.
KEPT_STALE, COLLAPSED = "kept_stale", "collapsed"
# per_class: the entries and the per-true-class training columns each may hold.
PER_CLASS_EPOCHS = ("best", "last")
PER_CLASS_RATES = ("train_fit_clean", "train_mem_noisy")
PER_CLASS_COUNTS = ("train_n_clean", "train_n_noisy")
# Columns of metrics.csv whose values at the last and the best epoch are in the summary.
EPOCH_COLUMNS = ("test_loss", "test_conf", "test_ece", "train_acc_true", "fit_clean", "mem_noisy",
                 "fix_noisy")


def method_record(method):
    """The summary's record of a method object (methods.Method)."""
    knobs = method.knob_values()
    return {"method_name": method.name, "method_title": method.title or method.name, "label": method.label,
            "knobs": knobs, "knob_baselines": {k: method.knobs[k] for k in knobs}, "is_ce": method.is_ce()}


def header(cfg, script, run_dir, method, *, comparable, actual_noise_rate, device, precision, torch_version,
           init_from):
    """The summary's fixed part, written when the run starts."""
    return {"status": "running", "script": script, "run_dir": run_dir, "method": method.tag,
            **method_record(method), "comparable": comparable,
            "dataset": cfg.dataset, "noise_type": cfg.noise_type, "noise_rate": cfg.noise_rate,
            "model": cfg.model, "seed": cfg.seed, "n_epoch": cfg.n_epoch,
            "actual_noise_rate": actual_noise_rate, "device": device, "precision": precision,
            "deterministic": cfg.deterministic, "torch_version": torch_version, "init_from": init_from}


def per_class_entry(epoch, confusion, test_acc, train):
    """One epoch's per-class results: the test confusion matrix (row = true class, column =
    predicted; counts), test accuracy per class (None for a class without test images), and
    `train`, the training columns per true class (PER_CLASS_RATES, PER_CLASS_COUNTS)."""
    return {"epoch": epoch, "test_acc": test_acc, "test_confusion": confusion, **train}


def best_row(rows, column):
    """The row of the first epoch that reaches the highest `column`."""
    return max(rows, key=lambda row: row[column])


def is_new_best(rows, column, lowest=False):
    """Is the last row the best one so far (best_row): above every earlier epoch's `column`
    (below, with `lowest`: a loss)?"""
    last = rows[-1][column]
    return all((last < row[column]) if lowest else (last > row[column]) for row in rows[:-1])


def best_results(rows):
    """best/last of every test and val accuracy column of metrics.csv's rows; with a val
    split, test accuracy at the best val epoch (and, with a momentum model, the plain
    network's test accuracy at the momentum model's best val epoch); the last and best-epoch
    values of EPOCH_COLUMNS."""
    if not rows:
        return {}
    out = {}
    for column in rows[0]:
        split, sep, suffix = column.partition("_acc")
        if not sep or split not in ("test", "val"):
            continue
        best = best_row(rows, column)
        out[f"best_{split}_acc{suffix}"] = best[column]
        out[f"last_{split}_acc{suffix}"] = rows[-1][column]
        if column == "test_acc":
            out["best_epoch"] = best["epoch"]
        if split == "val":
            out[f"best_val_epoch{suffix}"] = best["epoch"]
            out[f"test_acc_at_best_val{suffix}"] = best[f"test_acc{suffix}"]
            if suffix == "_ema" and "test_acc" in best:
                # the plain network at the momentum model's best validation epoch: the
                # net.pth the SLN release keeps there (noise_clothing1m_train.py:138-141)
                out["test_acc_noema_at_best_val_ema"] = best["test_acc"]
    for column in rows[0]:
        base, suffix = (column[:-4], "_ema") if column.endswith("_ema") else (column, "")
        if base in EPOCH_COLUMNS:
            best = best_row(rows, f"test_acc{suffix}")
            out[f"last_{column}"] = rows[-1][column]
            out[f"best_epoch_{column}"] = best[column]
    return out


def kept_stale_entry(changes, made_by, **more):
    """One entry of KEPT_STALE: when a result made by other code or data was kept
    (--keep_stale), what changed, and the code and data (`made_by`, as utils/identity.py
    records it) that would make it now; `more`: e.g. resumed_at_epoch."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": changes,
            "code_now": made_by["code"].get("source_sha1"), "data_now": made_by.get("data"), **more}


def selection_column(row, momentum=False):
    """The column whose best epoch (is_new_best) best.pt keeps: validation accuracy where the
    run holds out a split (`row` has val_acc), else test accuracy; the momentum model's
    with `momentum`."""
    return ("val_acc" if "val_acc" in row else "test_acc") + ("_ema" if momentum else "")


def result_line(values):
    """One line of a run's result from best_results' values: best (with its epoch) and last
    test accuracy of the network, then of each extra evaluated model (the momentum model
    of SLN-MO: _ema; a second network: _peer)."""
    if "last_test_acc" not in values:
        return "result: no epoch completed"
    parts = [f"test accuracy best {values['best_test_acc']:.2f} (epoch {values['best_epoch']}), "
             f"last {values['last_test_acc']:.2f}"]
    for key in sorted(values):
        suffix = key[len("last_test_acc"):]
        if key.startswith("last_test_acc_") and values[key] is not None:
            name = {"ema": "momentum model"}.get(suffix[1:], f"network {suffix[1:]}")
            parts.append(f"{name}: best {values['best_test_acc' + suffix]:.2f}, last {values[key]:.2f}")
    if values.get("test_acc_at_best_val") is not None:
        parts.append(f"at the best validation epoch ({values['best_val_epoch']}): "
                     f"{values['test_acc_at_best_val']:.2f}")
    return "result: " + "; ".join(parts)
