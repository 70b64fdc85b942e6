"""Tables and plots of many runs: summarize.py RESULTS_DIR --out OUT_DIR.

Finds every run folder under RESULTS_DIR (a folder holding config.json and
summary.json: the results contract, utils/results.py), groups the runs that differ
only by --seed, and writes to OUT_DIR:

    summary.csv, summary.md   per group: method, data set, noise, smooth rate or sigma,
                              seeds, mean and sample std (ddof=1) over seeds of the last
                              and best test accuracy (and the momentum model's, for
                              SLN-MO), mean actual noise rate, and the means of the last
                              epoch's mem_noisy and test_ece where every seed has them;
                              summary.md also shows the paired difference to the baseline
    paired.csv                per group against its baseline (the same script and
                              settings with smooth rate 0 for GLS, sigma 0 for SLN; the
                              CE warm-up has none): over the seeds finished in both, the
                              mean difference (group - baseline) of last and best test
                              accuracy and its 95% t-interval. Runs with the same seed
                              share noisy labels and initial weights, so pairing removes
                              that variance. Groups that are their own baseline get no
                              row; a group without baseline runs gets a row with a note.
    unfinished.csv            every run that is not finished (running, interrupted,
                              diverged, failed, no summary, damaged summary): listed,
                              never averaged
    acc_vs_smooth_rate.png    GLS runs: accuracy vs smooth rate, one line per noise
                              setting, error bars = sample std over seeds
    acc_vs_sigma.png          SLN runs: the same against sigma (dashed: momentum model)
    curves_<PATTERN>.png      with --curves PATTERN: test accuracy per epoch of every
                              group whose id contains PATTERN (mean over seeds, band = std)
    mem_curves_<PATTERN>.png  and, for the runs whose metrics.csv has them, fit_clean and
                              mem_noisy per epoch (memorisation of the noisy labels)

Damaged input is skipped with a warning naming the folder (a config.json that is not a
JSON object: the run; a damaged summary.json: the run counts as unfinished; a malformed
metrics.csv: the run is left out of the curves); bad arguments end with "error: ..."
and exit status 2.

    python summarize.py results --out results/summary --curves main_GLS_load
"""
import argparse
import csv
import hashlib
import json
import math
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from errors import UserError  # noqa: E402
from core.files import write_csv  # noqa: E402
from utils.results import result_settings  # noqa: E402

# Accuracy columns of summary.json that are averaged (percent); the _ema ones exist for
# runs with a momentum model (SLN-MO).
ACCURACIES = ("last_test_acc", "best_test_acc", "last_test_acc_ema", "best_test_acc_ema")
# Last-epoch values that newer runs' summary.json holds (percent; ECE in %): their means
# are reported where every seed of a group has them.
LAST_VALUES = ("last_mem_noisy", "last_test_ece")
# Every number of summary.json read here: checked once, when the run is loaded.
SUMMARY_NUMBERS = ACCURACIES + LAST_VALUES + ("actual_noise_rate", "initial_test_acc")
# Config keys shown in their own columns; other differing settings go to "other".
SHOWN = ("dataset", "noise_type", "noise_rate", "model", "n_epoch", "smooth_rate", "sigma", "seed")
SCRIPT_NAMES = {"main_warmup": "CE warm-up", "main_GLS_direct_train": "GLS direct",
                "main_GLS_load": "GLS after warm-up", "noise_cifar_train": "SLN",
                "noise_clothing1m_train": "SLN Clothing1M"}
# The setting whose value 0 makes a script's baseline: GLS at r = 0 is CE, SLN at sigma
# = 0 trains on the labels without added noise. The CE warm-up (main_warmup) has none.
BASELINE_KNOB = {"main_GLS_load": "smooth_rate", "main_GLS_direct_train": "smooth_rate",
                 "noise_cifar_train": "sigma", "noise_clothing1m_train": "sigma"}
# Per-epoch plots of --curves: (metrics.csv column, line style, legend tag).
ACC_CURVES = (("test_acc", "-", ""), ("test_acc_ema", "--", " MO"))
MEM_CURVES = (("fit_clean", "-", " fit_clean"), ("mem_noisy", "--", " mem_noisy"))
# Epoch 0 of a curve, where summary.json recorded it (before the first step).
INITIAL = {"test_acc": "initial_test_acc"}


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- reading run folders

def find_runs(results_dir):
    """Every readable run below results_dir (a folder with a config.json), as dicts:
    folder, config, summary (None if missing or damaged), problem (what is damaged)."""
    runs = []
    for folder, dirs, files in os.walk(results_dir, onerror=warn_unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "config.json" in files:
            run = load_run(folder, "summary.json" in files)
            if run is not None:
                runs.append(run)
        elif "summary.json" in files:
            warn(f"skipping {folder}: it has a summary.json but no config.json, so its "
                 "settings are unknown (restore config.json to include it)")
    return runs


def warn_unreadable(exc):
    warn(f"cannot read {exc.filename} ({exc.strerror}): skipped")


def load_run(folder, has_summary):
    """The run in `folder`, or None (with a warning) when its config.json is unusable."""
    config, problem = read_json_object(os.path.join(folder, "config.json"))
    problem = problem or config_problem(config)
    if problem:
        warn(f"skipping {folder}: config.json {problem}; restore it (every run writes one "
             "at its start) or move the folder out of the results")
        return None
    run = {"folder": folder, "config": config, "summary": None, "problem": None}
    if has_summary:
        summary, problem = read_json_object(os.path.join(folder, "summary.json"))
        if problem:
            # Not averaged, but listed: the run's numbers cannot be trusted.
            warn(f"{folder}: summary.json {problem}; the run is listed as unfinished "
                 "(rerun it with --resume or --overwrite to rewrite it)")
            run["problem"] = f"summary.json {problem}"
        else:
            run["summary"] = checked_summary(folder, summary)
    return run


def read_json_object(path):
    """(dict, None), or (None, what is wrong) for a file that is unreadable, not JSON,
    or JSON other than an object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8
        return None, f"is not JSON ({exc})"
    if not isinstance(obj, dict):
        return None, f"is JSON but not an object (it holds {json_type(obj)})"
    return obj, None


def json_type(obj):
    return {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(obj), "a number")


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def config_problem(config):
    """What makes a config unusable for grouping and sorting (a hand edit), or None."""
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"has seed {seed!r}, not an integer"
    for key in ("noise_rate", "smooth_rate", "sigma", "n_epoch"):
        if config.get(key) is not None and not (is_number(config[key]) and math.isfinite(config[key])):
            return f"has {key} {config[key]!r}, not a finite number"
    for key in ("dataset", "noise_type", "model"):
        if config.get(key) is not None and not isinstance(config[key], str):
            return f"has {key} {config[key]!r}, not a string"
    return None


def checked_summary(folder, summary):
    """summary.json without values of the wrong type, each dropped with a warning: a
    hand-edited NaN must not turn a mean into NaN, nor a string crash the tables."""
    for key in ("script", "method", "status"):
        if key in summary and not isinstance(summary[key], str):
            warn(f"{folder}: summary.json {key} is {summary[key]!r}, not a string; ignored")
            del summary[key]
    for key in SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is not None and not (is_number(value) and math.isfinite(value)):
            del summary[key]
            warn(f"{folder}: summary.json {key} is {value!r}, not a finite number; ignored, so "
                 f"its group reports no mean of {key}")
    return summary


class MetricsError(ValueError):
    """A metrics.csv that is not one header and one row of numbers per epoch."""


def read_metrics(path):
    """{column: array over epochs 1..n} of a metrics.csv."""
    try:
        with open(path, newline="") as f:
            table = list(csv.reader(f))
    except (OSError, ValueError, csv.Error) as exc:
        raise MetricsError(f"cannot be read ({exc})") from None
    if not table:
        raise MetricsError("is empty")
    header, records = table[0], table[1:]
    if "epoch" not in header or "" in header or len(set(header)) < len(header):
        raise MetricsError(f"has a wrong header {','.join(header)[:80]!r} (expected epoch,lr,...)")
    if not records:
        raise MetricsError("has a header but no epochs")
    values = []
    for line, record in enumerate(records, start=2):
        if len(record) != len(header):
            raise MetricsError(f"line {line} has {len(record)} fields, the header {len(header)}")
        values.append([metrics_number(v, line) for v in record])
    columns = dict(zip(header, np.array(values).T))
    # The curves index epochs by row: a resumed run that duplicated rows must not shift them.
    if not np.array_equal(columns["epoch"], np.arange(1, len(records) + 1)):
        raise MetricsError("has epochs that are not 1, 2, ..., n")
    return columns


def metrics_number(text, line):
    """A metrics.csv field as a float; empty (a value the run did not record): NaN."""
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise MetricsError(f"line {line} has {text!r}, not a number") from None


def metrics_of(run):
    """The run's metrics.csv as columns ({} without one); a malformed one is warned about
    once and treated as absent."""
    if "metrics" not in run:
        path = os.path.join(run["folder"], "metrics.csv")
        run["metrics"] = {}
        if os.path.exists(path):
            try:
                run["metrics"] = read_metrics(path)
            except MetricsError as exc:
                warn(f"{run['folder']}: metrics.csv {exc}; the run is left out of the curves")
    return run["metrics"]


# ---------------------------------------------------------------- grouping runs

def script_of(run):
    return (run["summary"] or {}).get("script") or os.path.basename(os.path.dirname(run["folder"]))


def method_of(run):
    return (run["summary"] or {}).get("method", "?")


def canonical(value):
    """Equal numbers as one JSON value (0, 0.0 and -0.0; 2 and 2.0): they are one setting."""
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def group_config(config):
    """The config without the seed and without the settings that cannot change a result."""
    return {k: canonical(v) for k, v in result_settings(config).items() if k != "seed"}


def group_key(script, config):
    """What runs of one group share: the script and every setting but the seed."""
    return json.dumps([script, group_config(config)], sort_keys=True)


def group_runs(runs):
    """{group id: [runs]} for runs whose script and config agree except for the seed.

    The method tag is a function of the config, so it needs no place in the key (and a
    run that died before writing summary.json still joins its group).
    """
    groups = {}
    for run in runs:
        groups.setdefault(group_key(script_of(run), run["config"]), []).append(run)
    named = {}
    for key, members in groups.items():
        members.sort(key=lambda r: (r["summary"] is None, r["config"].get("seed", 0)))
        c = members[0]["config"]
        digest = hashlib.sha1(key.encode()).hexdigest()[:6]
        gid = (f"{script_of(members[0])}/{c.get('dataset')}-{c.get('noise_type')}"
               f"{fmt_num(c.get('noise_rate'))}-{c.get('model')}-{method_of(members[0])}-{digest}")
        named[gid] = sorted(members, key=lambda r: r["config"].get("seed", 0))
        seeds = [r["config"].get("seed", 0) for r in named[gid] if finished(r)]
        if len(set(seeds)) < len(seeds):  # copies of a run under two result folders
            warn(f"group {gid} has several finished runs with seed(s) "
                 f"{sorted({s for s in seeds if seeds.count(s) > 1})}: each is averaged, "
                 "and the paired differences use the first")
    return named


def finished(run):
    return (run["summary"] or {}).get("status") == "finished"


def smooth_rate_of(config):
    """The GLS smooth rate, or None where no GLS term is trained (the CE warm-up: wb = 0)."""
    if "smooth_rate" not in config or not config.get("wb", 1):
        return None
    return config["smooth_rate"]


# ---------------------------------------------------------------- statistics

def mean_std(values):
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def values_of(runs, name):
    """summary[name] of every run, or None unless every run has it: a column only some
    seeds have would mix populations."""
    values = [r["summary"][name] for r in runs if r["summary"].get(name) is not None]
    return values if len(values) == len(runs) else None


def group_rows(groups):
    """One row per group of finished runs, and one per run that is not finished."""
    rows, unfinished = [], []
    for gid, members in groups.items():
        done = [r for r in members if finished(r)]
        unfinished += [unfinished_row(gid, r) for r in members if not finished(r)]
        if not done:
            continue
        c = done[0]["config"]
        row = {"group": gid, "script": script_of(done[0]), "method": method_of(done[0]),
               "dataset": c.get("dataset"), "noise_type": c.get("noise_type"),
               "noise_rate": c.get("noise_rate"), "smooth_rate": smooth_rate_of(c),
               "sigma": c.get("sigma"), "model": c.get("model"), "n_epoch": c.get("n_epoch"),
               "n_seeds": len(done), "seeds": " ".join(str(r["config"].get("seed")) for r in done),
               "n_not_averaged": len(members) - len(done)}
        for name in ACCURACIES:
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values_of(done, name))
        for name in LAST_VALUES:
            row[f"{name}_mean"] = mean_std(values_of(done, name))[0]
        row["actual_noise_rate_mean"] = mean_std(
            [r["summary"]["actual_noise_rate"] for r in done
             if r["summary"].get("actual_noise_rate") is not None])[0]
        rows.append(row)
    add_other_settings(rows, groups)
    rows.sort(key=lambda r: (r["script"], r["dataset"] or "", r["noise_type"] or "",
                             r["noise_rate"] or 0, r["model"] or "", r["other"],
                             -(r["smooth_rate"] or 0), r["sigma"] or 0, r["method"]))
    unfinished.sort(key=lambda u: u["run_dir"])
    return rows, unfinished


def add_other_settings(rows, groups):
    """row['other']: the settings, beyond the shown columns, in which this group differs
    from other groups of the same script (e.g. 'lr=0.01 ema_decay=0.9')."""
    configs = {r["group"]: group_config(groups[r["group"]][0]["config"]) for r in rows}
    for row in rows:
        same_script = [configs[r["group"]] for r in rows if r["script"] == row["script"]]
        keys = sorted({k for c in same_script for k in c} - set(SHOWN))
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in same_script}) > 1]
        row["other"] = " ".join(f"{k}={fmt_value(configs[row['group']].get(k))}" for k in varying)


def unfinished_row(gid, run):
    s = run["summary"] or {}
    note = (run["problem"] or s.get("error")
            or (f"diverged at epoch {s['diverged_epoch']}" if "diverged_epoch" in s else ""))
    status = ("damaged summary.json" if run["problem"]
              else "no summary.json" if run["summary"] is None else s.get("status", "unknown"))
    return {"group": gid, "run_dir": run["folder"], "status": status,
            "epochs_completed": s.get("epochs_completed", 0), "n_epoch": run["config"].get("n_epoch"),
            "last_test_acc": s.get("last_test_acc"), "note": note}


# ---------------------------------------------------------------- paired differences

def knob_of(script, config):
    """(name, value) of the setting this group is compared on against 0, or None (the
    warm-up, a GLS run without a GLS term, a script this file does not know)."""
    name = BASELINE_KNOB.get(script)
    value = smooth_rate_of(config) if name == "smooth_rate" else config.get(name) if name else None
    return None if value is None else (name, value)


def t_interval(diffs):
    """Mean of paired differences and its 95% t-interval, mean ± t_{0.975, n-1} sd/sqrt(n)
    with sd of ddof=1; (mean, None, None) for one pair, where it is undefined."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def finished_by_seed(runs):
    """{seed: run} of the finished runs (the first, where a seed has copies)."""
    by_seed = {}
    for run in runs:
        if finished(run):
            by_seed.setdefault(run["config"].get("seed", 0), run)
    return by_seed


def paired_rows(rows, groups):
    """One row per summary row whose group has a baseline other than itself."""
    index = {group_key(script_of(m[0]), m[0]["config"]): gid for gid, m in groups.items()}
    paired = []
    for row in rows:
        config = groups[row["group"]][0]["config"]
        knob = knob_of(row["script"], config)
        if knob is None:
            continue
        # The same grouping key with the knob at 0: "every other setting equal" means
        # exactly what grouping means by it.
        base_key = group_key(row["script"], {**config, knob[0]: 0})
        if base_key == group_key(row["script"], config):
            continue  # the baseline itself
        base_gid = index.get(base_key)
        paired.append(paired_row(row, groups[row["group"]], base_gid, groups.get(base_gid, []), knob[0]))
    return paired


def paired_row(row, runs, base_gid, base_runs, knob):
    """Group minus baseline over the seeds finished in both."""
    mine, theirs = finished_by_seed(runs), finished_by_seed(base_runs)
    seeds = sorted(set(mine) & set(theirs))
    out = {k: row[k] for k in ("group", "script", "method", "dataset", "noise_type", "noise_rate",
                               "model", "smooth_rate", "sigma", "other")}
    out.update(baseline_group=base_gid, n_pairs=len(seeds), seeds=" ".join(map(str, seeds)),
               baseline_method=method_of(next(iter(theirs.values()))) if theirs else None)
    if base_gid is None:
        out["note"] = f"no baseline runs ({knob}=0, every other setting equal)"
    elif not seeds:
        out["note"] = "no seed finished in both"
    for name in ACCURACIES:
        a, b = values_of([mine[s] for s in seeds], name), values_of([theirs[s] for s in seeds], name)
        if seeds and a is not None and b is not None:
            diff = [x - y for x, y in zip(a, b)]
            out[f"{name}_diff_mean"], out[f"{name}_diff_ci_low"], out[f"{name}_diff_ci_high"] = t_interval(diff)
    return out


# ---------------------------------------------------------------- tables

CSV_COLUMNS = (["group", "script", "method", "dataset", "noise_type", "noise_rate", "smooth_rate",
                "sigma", "model", "n_epoch", "other", "n_seeds", "seeds", "n_not_averaged"]
               + [f"{a}_{s}" for a in ACCURACIES for s in ("mean", "std")]
               + ["actual_noise_rate_mean"] + [f"{v}_mean" for v in LAST_VALUES])
PAIRED_COLUMNS = (["group", "baseline_group", "script", "method", "baseline_method", "dataset",
                   "noise_type", "noise_rate", "model", "smooth_rate", "sigma", "other",
                   "n_pairs", "seeds"]
                  + [f"{a}_diff_{s}" for a in ACCURACIES for s in ("mean", "ci_low", "ci_high")]
                  + ["note"])
UNFINISHED_COLUMNS = ["run_dir", "status", "epochs_completed", "n_epoch", "last_test_acc", "note", "group"]


def fmt_num(x):
    return "" if x is None else f"{x + 0.0:g}"  # + 0.0: -0.0 shows as 0


def fmt_value(x):
    return " ".join(map(fmt_value, x)) if isinstance(x, list) else str(x)


def fmt_acc(mean, std):
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_diff(p, name):
    """'+1.23 [-0.50, +2.96] (3 pairs)' for a paired row; why there is no difference
    where it has none."""
    if p["baseline_group"] is None:
        return "no baseline runs"
    mean = p.get(f"{name}_diff_mean")
    if mean is None:
        return "no seed finished in both" if not p["n_pairs"] else ""
    low, high = p.get(f"{name}_diff_ci_low"), p.get(f"{name}_diff_ci_high")
    interval = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
    return f"{mean:+.2f}{interval} ({p['n_pairs']} pair{'s' * (p['n_pairs'] > 1)})"


def fmt_vs_baseline(row, paired, baselines, name):
    """The markdown cell of `name`'s paired difference for a summary row."""
    if row[f"{name}_mean"] is None:
        return ""
    if row["group"] in paired:
        return fmt_diff(paired[row["group"]], name)
    return "baseline" if row["group"] in baselines else ""


def markdown_table(rows, paired=()):
    """The groups as a Markdown table (accuracies in %, mean ± sample std over seeds)."""
    ema = any(r["last_test_acc_ema_mean"] is not None for r in rows)
    extra = [(name, head) for name, head in (("last_mem_noisy", "mem noisy"), ("last_test_ece", "ECE"))
             if any(r[f"{name}_mean"] is not None for r in rows)]
    by_group = {p["group"]: p for p in paired}
    baselines = {p["baseline_group"] for p in paired}
    head = ["method", "data", "noise", "r / sigma", "epochs", "seeds", "last acc", "best acc"]
    head += ["last acc (MO)", "best acc (MO)"] if ema else []
    head += [h for _, h in extra]
    head += ["Δ last acc vs baseline"] + (["Δ last acc (MO)"] if ema else [])
    head += ["actual noise", "other settings", "group"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        knob = (f"r={fmt_num(r['smooth_rate'])}" if r["smooth_rate"] is not None
                else f"sigma={fmt_num(r['sigma'])}" if r["sigma"] is not None else "")
        cells = [f"{r['script']}:{r['method']}", r["dataset"], f"{r['noise_type']} {fmt_num(r['noise_rate'])}",
                 knob, str(r["n_epoch"]),
                 str(r["n_seeds"]) + (f" (+{r['n_not_averaged']} not averaged)" if r["n_not_averaged"] else ""),
                 fmt_acc(r["last_test_acc_mean"], r["last_test_acc_std"]),
                 fmt_acc(r["best_test_acc_mean"], r["best_test_acc_std"])]
        if ema:
            cells += [fmt_acc(r["last_test_acc_ema_mean"], r["last_test_acc_ema_std"]),
                      fmt_acc(r["best_test_acc_ema_mean"], r["best_test_acc_ema_std"])]
        cells += [fmt_acc(r[f"{name}_mean"], None) for name, _ in extra]
        cells += [fmt_vs_baseline(r, by_group, baselines, "last_test_acc")]
        cells += [fmt_vs_baseline(r, by_group, baselines, "last_test_acc_ema")] if ema else []
        noise = r["actual_noise_rate_mean"]
        cells += ["" if noise is None else f"{noise:.3f}", r["other"], f"`{r['group']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path, results_dir, rows, paired, unfinished, plots):
    parts = [f"# Summary of {results_dir}", "",
             "Test accuracy in %: mean ± sample standard deviation (ddof=1) over the seeds of "
             "each group; only finished runs are averaged. MO: the momentum (EMA) model. "
             "Mem noisy, ECE: last epoch, %. Actual noise: fraction of flipped training labels. "
             "Δ vs baseline: mean over the seeds finished in both of (this group - the same "
             "settings at smooth rate 0 or sigma 0), in points, with its 95% t-interval "
             "(paired.csv).", "",
             markdown_table(rows, paired) if rows else "No finished runs.", ""]
    parts += ["## Runs not averaged", ""]
    if unfinished:
        parts += ["| run | status | epochs | last acc | note |", "|---|---|---|---|---|"]
        parts += [f"| `{u['run_dir']}` | {u['status']} | {u['epochs_completed']}/{u['n_epoch']} | "
                  f"{'' if u['last_test_acc'] is None else format(u['last_test_acc'], '.2f')} | "
                  f"{u['note']} |" for u in unfinished]
    else:
        parts.append("None: every run found is finished.")
    parts.append("")
    if plots:
        parts += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


# ---------------------------------------------------------------- plots

def line_label(row):
    return (f"{SCRIPT_NAMES.get(row['script'], row['script'])}, {row['dataset']} "
            f"{row['noise_type']} {fmt_num(row['noise_rate'])}")


def lines_over(rows, groups, knob):
    """{line key: [rows]}: groups that differ only by `knob` (smooth_rate or sigma) share a line."""
    lines = {}
    for row in rows:
        if row[knob] is None:
            continue
        config = group_config(groups[row["group"]][0]["config"])
        config.pop(knob)
        key = json.dumps([row["script"], config], sort_keys=True)
        lines.setdefault(key, []).append(row)
    labels = {}
    for key, members in lines.items():
        members.sort(key=lambda r: r[knob])
        label = line_label(members[0])
        labels[key] = label + (f", {members[0]['other']}" if members[0]["other"] else "")
    if len(set(labels.values())) < len(labels):  # still ambiguous: add the line's hash
        labels = {k: f"{v} [{hashlib.sha1(k.encode()).hexdigest()[:4]}]" for k, v in labels.items()}
    return [(labels[k], lines[k]) for k in sorted(lines, key=labels.get)]


def plot_against(path, rows, groups, knob, xlabel, symlog=False):
    """Accuracy (last, best) against `knob`, one line per setting; None when no row has it."""
    lines = lines_over(rows, groups, knob)
    if not lines:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, which in zip(axes, ("last", "best")):
        for i, (label, members) in enumerate(lines):
            color = f"C{i % 10}"
            xs = [r[knob] for r in members]
            for suffix, style, tag in (("", "o-", ""), ("_ema", "s--", " (MO)")):
                ys = [r[f"{which}_test_acc{suffix}_mean"] for r in members]
                if any(y is None for y in ys):
                    continue
                errs = [r[f"{which}_test_acc{suffix}_std"] or 0.0 for r in members]
                ax.errorbar(xs, ys, yerr=errs, fmt=style, color=color, capsize=3,
                            markersize=4, label=label + tag)
        if symlog:
            # Linear in [-1, 1], logarithmic beyond: the paper's rates run from 0.8 to -8.
            ax.set_xscale("symlog", linthresh=1.0)
        xs_all = sorted({r[knob] for _, m in lines for r in m})
        ax.set_xticks(xs_all)
        ax.set_xticklabels([fmt_num(x) for x in xs_all], rotation=90 if len(xs_all) > 6 else 0)
        ax.set_xlabel(xlabel)
        ax.set_title(f"{which} test accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%), mean ± std over seeds")
    if axes[1].get_legend_handles_labels()[0]:  # none where no group has the accuracies
        axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def group_curve(runs, column):
    """(epochs, mean, sample std or None, number of runs) of a metrics.csv column over the
    runs that have it, or None when none has it (runs made before the column existed).

    Epoch 0 is summary.json's value before the first step (INITIAL; for a run started
    from the warm-up: the warm-up's) where every run recorded it.
    """
    series = []
    for run in runs:
        values = metrics_of(run).get(column)
        # All empty: never recorded (mem_noisy of a run without wrong labels).
        if values is not None and not np.isnan(values).all():
            start = run["summary"].get(INITIAL.get(column))
            series.append(np.concatenate([[math.nan if start is None else start], values]))
    if not series:
        return None
    n = min(map(len, series))
    data = np.stack([s[:n] for s in series])
    first = 0 if np.isfinite(data[:, 0]).all() else 1
    data = data[:, first:]
    std = data.std(axis=0, ddof=1) if len(series) > 1 else None
    return np.arange(first, n), data.mean(axis=0), std, len(series)


def plot_curves(path, pattern, groups, columns=ACC_CURVES, ylabel="test accuracy (%)",
                title="test accuracy per epoch"):
    """`columns` per epoch of the groups whose id contains `pattern`: mean over the
    finished seeds, band = sample std, one colour per group; None when nothing to draw."""
    chosen = [gid for gid in sorted(groups) if pattern in gid]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn, from_zero = 0, False
    for i, gid in enumerate(chosen):
        done = [r for r in groups[gid] if finished(r)]
        for column, style, tag in columns:
            curve = group_curve(done, column)
            if curve is None:
                continue
            epochs, means, stds, n = curve
            from_zero |= epochs[0] == 0
            ax.plot(epochs, means, style, color=f"C{i % 10}",
                    label=f"{gid} ({n} seed{'s' * (n > 1)}){tag}")
            if stds is not None:
                ax.fill_between(epochs, means - stds, means + stds, color=f"C{i % 10}", alpha=0.15)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: before training)" if from_zero else "epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\ngroups matching '{pattern}'", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_mem_curves(path, pattern, groups):
    """Memorisation per epoch: how much of the clean labels the model fits against how
    much of the wrong ones it has memorised (the runs whose metrics.csv has them)."""
    return plot_curves(path, pattern, groups, MEM_CURVES,
                       ylabel="% of training samples",
                       title="fit_clean (solid): predicted = label, among the correct labels\n"
                             "mem_noisy (dashed): predicted = noisy label, among the wrong labels")


# ---------------------------------------------------------------- main

def check_out_dir(out):
    """Refuse an --out that cannot take the tables, before anything is written."""
    if not out:
        raise UserError("--out is empty (an unset shell variable?): pass a folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder: pass a folder (it is created if missing)")
    if os.path.exists(os.path.join(out, "config.json")):
        raise UserError(f"--out {out} is a run folder (it holds config.json): pass another folder")
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--out {out} cannot be created: {existing} is a file; pass another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} cannot be written: {existing} is not writable by you; "
                        "pass a folder you can write")


def load_results(results_dir):
    """The runs below results_dir; UserError when there is no folder or no readable run."""
    if not os.path.isdir(results_dir):
        raise UserError(f"{results_dir} is not a folder: pass the folder the runs were "
                        "written to (their --result_dir)")
    runs = find_runs(results_dir)
    if not runs:
        raise UserError(f"{results_dir} holds no readable run folder (a folder with a "
                        "config.json): pass the --result_dir of your runs")
    return runs


def write_outputs(results_dir, runs, out_dir, curves=()):
    """Write the tables and plots of `runs`; returns (rows, paired, unfinished, plot paths)."""
    groups = group_runs(runs)
    rows, unfinished = group_rows(groups)
    paired = paired_rows(rows, groups)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "summary.csv"), rows, CSV_COLUMNS)
    write_csv(os.path.join(out_dir, "paired.csv"), paired, PAIRED_COLUMNS)
    write_csv(os.path.join(out_dir, "unfinished.csv"), unfinished, UNFINISHED_COLUMNS)
    plots = [plot_against(os.path.join(out_dir, "acc_vs_smooth_rate.png"), rows, groups,
                          "smooth_rate", "smooth rate r (symlog axis)", symlog=True),
             plot_against(os.path.join(out_dir, "acc_vs_sigma.png"), rows, groups, "sigma", "sigma")]
    for pattern in curves:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", pattern).strip("_") or "all"
        path = plot_curves(os.path.join(out_dir, f"curves_{slug}.png"), pattern, groups)
        if path is None:
            warn(f"--curves {pattern!r} matches no finished group with a readable metrics.csv")
        # Runs made before fit_clean/mem_noisy existed lack them: no plot, no warning.
        plots += [path, plot_mem_curves(os.path.join(out_dir, f"mem_curves_{slug}.png"), pattern, groups)]
    plots = [p for p in plots if p]
    write_markdown(os.path.join(out_dir, "summary.md"), results_dir, rows, paired, unfinished, plots)
    return rows, paired, unfinished, plots


def summarize(results_dir, out_dir, curves=()):
    """Write the tables and plots; returns (rows, unfinished, plot paths)."""
    rows, _, unfinished, plots = write_outputs(results_dir, find_runs(results_dir), out_dir, curves)
    return rows, unfinished, plots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", help="folder searched (recursively) for run folders")
    p.add_argument("--out", required=True, help="folder for summary.csv, summary.md and the plots")
    p.add_argument("--curves", action="append", default=[], metavar="PATTERN",
                   help="plot test accuracy (and fit_clean, mem_noisy) per epoch of the groups "
                        "whose id contains PATTERN (ids are in summary.csv's group column); repeatable")
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out)
        runs = load_results(args.results_dir)
        rows, paired, unfinished, plots = write_outputs(args.results_dir, runs, args.out, args.curves)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up while writing
        print(f"error: cannot write to --out {args.out} ({exc}): free space or pass another folder",
              file=sys.stderr)
        return 2
    print(markdown_table(rows, paired) if rows else "no finished runs")
    if unfinished:
        print(f"{len(unfinished)} run(s) not finished, not averaged: see {args.out}/unfinished.csv")
        for u in unfinished:
            print(f"  {u['status']:>12}  {u['run_dir']}")
    names = ["summary.csv", "summary.md", "paired.csv", "unfinished.csv"]
    for name in names + [os.path.basename(p) for p in plots]:
        print(f"wrote {os.path.join(args.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
