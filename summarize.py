"""Tables and plots of many runs: summarize.py RESULTS_DIR --out OUT_DIR.

Finds every run folder under RESULTS_DIR (a folder holding config.json: the results
contract, utils/results.py), groups the runs that differ only by --seed and were made by
the same code and data, and writes to OUT_DIR:

    summary.csv, summary.md   per group: the method as its runs recorded it (label, e.g.
                              "NLS r=-2", and a column per knob), data set, noise, seeds,
                              mean and sample std (ddof=1) over seeds of the last and best
                              test accuracy (and the momentum model's, _ema), the mean
                              actual noise rate, the means of the last mem_noisy and
                              test_ece where every seed has them, and marks: seeds that
                              collapsed or were kept stale, and the code and data version
                              where the same settings were run with several (never
                              averaged together)
    paired.csv                every group against its baselines, seed by seed; the column
                              baseline_kind says which: "knob" (the same script and
                              settings with every knob at its baseline value, e.g. smooth
                              rate 0) or "ce" (the plain cross-entropy run with the same
                              comparable settings, whichever script made it). Over the
                              seeds finished in both: the mean difference (group - baseline)
                              of each accuracy and its 95% t-interval
    per_class.csv             per group, epoch (best, last) and class: test accuracy and the
                              training fit_clean / mem_noisy per true class, mean over the
                              seeds that recorded them (summary.md has the same tables)
    unfinished.csv            every run that is not finished (running, interrupted,
                              diverged, failed, no summary, damaged summary): listed,
                              never averaged
    acc_vs_<knob>_<method>.png  accuracy against each knob of each method, one line per
                              other setting, error bars = sample std over seeds
    curves_<PATTERN>.png      with --curves PATTERN: test accuracy per epoch of every group
                              whose id or label is PATTERN (--match substring: contains it;
                              mean over seeds, band = std)
    mem_curves_<PATTERN>.png  and, for the runs whose metrics.csv has them, fit_clean and
                              mem_noisy per epoch (memorisation of the noisy labels)
    confusion_<NAME>.png      with --confusion PATTERN (a run folder, or the groups whose id
                              or label is PATTERN): the test confusion matrix at the
                              best and the last epoch (rows normalised, mean over seeds)
                              next to the noise's transition matrix (noise.json)

What a run is comes from its own summary.json: method_name, label, knobs {flag: value},
knob_baselines {flag: value at which the method is its baseline}, is_ce and comparable
(the settings it shares with the CE run it is paired with). Runs made before runs recorded
these are listed and averaged, without knob columns or pairing; the table says so. Runs
whose code (made_by's source hash) or data (fingerprint, noisy labels) differ are never
averaged into one group.

Damaged input is skipped with a warning naming the folder (a config.json that is not a
JSON object: the run; a damaged summary.json: the run counts as unfinished; a malformed
metrics.csv: the run is left out of the curves; a folder reached a second time through a
symbolic link: skipped); bad arguments end with "error: ..." and exit status 2. Every
output is written atomically: a full disk leaves the previous file, never half of one.

    python summarize.py results --out results/summary --curves NLS --confusion "NLS r=-2"
    python summarize.py results --paper gls-cifar10 [--parts]    a paper's table (docs/PAPERS.md)
"""
import argparse
import csv
import hashlib
import json
import math
import os
import re
import stat
import statistics
import sys
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from core.files import atomic_savefig, atomic_write_text, read_json_file, warn, write_csv  # noqa: E402
from errors import UserError  # noqa: E402
from utils.results import result_settings  # noqa: E402

# Accuracy columns of summary.json that are averaged (percent); the _ema ones exist for
# runs with a momentum model (SLN-MO).
ACCURACIES = ("last_test_acc", "best_test_acc", "last_test_acc_ema", "best_test_acc_ema")
# Last-epoch values that newer runs' summary.json holds (percent; ECE in %): their means
# are reported where every seed of a group has them.
LAST_VALUES = ("last_mem_noisy", "last_test_ece")
# Every number of summary.json read here: checked once, when the run is loaded.
SUMMARY_NUMBERS = ACCURACIES + LAST_VALUES + ("actual_noise_rate", "initial_test_acc", "chance_acc")
# What a run records about its method (engine: summary.json); comparable may be null.
RECORD_KEYS = ("method_name", "label", "knobs", "knob_baselines", "is_ce")
# Config keys shown in columns of their own (besides the knobs); other differing settings
# go to "other". `method` is train.py's --method, which the label shows.
SHOWN = ("dataset", "noise_type", "noise_rate", "model", "n_epoch", "seed", "method")
# Per-epoch plots of --curves: (metrics.csv column, line style, legend tag).
ACC_CURVES = (("test_acc", "-", ""), ("test_acc_ema", "--", " MO"))
MEM_CURVES = (("fit_clean", "-", " fit_clean"), ("mem_noisy", "--", " mem_noisy"))
# Epoch 0 of a curve, where summary.json recorded it (before the first step).
INITIAL = {"test_acc": "initial_test_acc"}
# Deeper JSON is not a file of this project (a summary is 5 levels deep); refusing it
# keeps every later step free of RecursionError.
MAX_JSON_DEPTH = 32
# Per-class results of summary.json (per_class.best / per_class.last).
PER_CLASS_EPOCHS = ("best", "last")
PER_CLASS_RATES = ("train_fit_clean", "train_mem_noisy")
PER_CLASS_COUNTS = ("train_n_clean", "train_n_noisy")
# A knob axis is logarithmic beyond [-1, 1] when its values reach past this (GLS's smooth
# rates run from 0.8 to -8); knobs within [-2, 2] stay linear.
SYMLOG_BEYOND = 2.0
# Lone surrogates that are not an undecodable byte of a file name (those are \udc80-\udcff
# under os.fsdecode and are written back as the byte): they cannot be written at all.
LONE_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def clean(text):
    """`text` writable as UTF-8: a file name's undecodable bytes are kept, any other lone
    surrogate (a hand-written \\ud800 in a JSON file) becomes U+FFFD."""
    return LONE_SURROGATES.sub("\ufffd", text)


def printable(text):
    """`text` for the terminal: undecodable bytes of file names shown as U+FFFD."""
    return clean(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# ---------------------------------------------------------------- reading run folders

def find_runs(results_dir):
    """Every readable run below results_dir (a folder with a config.json), as dicts (load_run).

    Symbolic links to folders are followed, and every folder is read once: a second path to
    one (a link cycle, or a link to a folder read already) is skipped with a warning naming
    both, and so is a link that leads nowhere. Folders whose name starts with "." are not
    searched.
    """
    runs, seen = [], {}
    stack = [results_dir]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            warn(f"cannot read {folder} ({exc.strerror}): skipped")
            continue
        if (st.st_dev, st.st_ino) in seen:
            warn(f"skipping {folder}: it leads to {seen[st.st_dev, st.st_ino]}, which is read "
                 "already (a link cycle, or a second link to one folder)")
            continue
        seen[st.st_dev, st.st_ino] = folder
        try:
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError as exc:
            warn(f"cannot read {folder} ({exc.strerror}): skipped")
            continue
        names = {e.name for e in entries}
        if "config.json" in names:
            run = load_run(folder, "summary.json" in names)
            if run is not None:
                runs.append(run)
        elif "summary.json" in names:
            failed = read_json_file(os.path.join(folder, "summary.json"))[0] or {}
            if failed.get("status") == "failed":  # it stopped before its first file (the engine's RunRecord)
                warn(f"skipping {folder}: its run failed before training started ({failed.get('error')}); "
                     "rerun its command with --if_exists auto")
            else:
                warn(f"skipping {folder}: it has a summary.json but no config.json, so its "
                     "settings are unknown (restore config.json to include it)")
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not os.path.exists(entry.path):
                warn(f"skipping {entry.path}: a symbolic link to nothing ({os.readlink(entry.path)})")
            elif entry.is_dir():
                subfolders.append(entry.path)
        stack.extend(reversed(subfolders))  # depth first, in name order
    return runs


def read_json(path):
    """(dict, None), or (None, what is wrong) for a file that is missing, not a regular
    file (a FIFO is never opened), not JSON, nested too deeply, or not a JSON object."""
    obj, problem = read_json_file(path)
    if obj is not None and nested_deeper(obj, MAX_JSON_DEPTH):
        return None, f"is not readable JSON (nested more than {MAX_JSON_DEPTH} levels deep)"
    return obj, problem


def nested_deeper(obj, limit):
    """True if `obj` holds lists or objects nested more than `limit` levels (no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
    return False


def load_run(folder, has_summary):
    """The run in `folder` as a dict: folder, config, summary (None if missing or damaged),
    problem (what is damaged), record (its method, or None), per_class, code and data
    (its identity, None where unrecorded); None (with a warning) when config.json is unusable."""
    config, problem = read_json(os.path.join(folder, "config.json"))
    problem = problem or config_problem(config)
    if problem:
        warn(f"skipping {folder}: config.json {problem}; restore it (every run writes one "
             "at its start) or move the folder out of the results")
        return None
    run = {"folder": folder, "config": config, "summary": None, "problem": None,
           "record": None, "per_class": None}
    if has_summary:
        summary, problem = read_json(os.path.join(folder, "summary.json"))
        if problem:
            # Not averaged, but listed: the run's numbers cannot be trusted.
            warn(f"{folder}: summary.json {problem}; the run is listed as unfinished "
                 "(rerun it with --if_exists overwrite to rewrite it)")
            run["problem"] = f"summary.json {problem}"
        else:
            run["summary"] = checked_summary(folder, summary)
            run["record"] = method_record(folder, summary)
            run["per_class"] = checked_per_class(folder, summary.get("per_class"))
    run["code"], run["data"] = identity_of(folder, config, run["summary"])
    return run


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite(x):
    return is_number(x) and math.isfinite(x)


def config_problem(config):
    """What makes a config unusable for grouping and sorting (a hand edit), or None."""
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"has seed {seed!r}, not an integer"
    for key, value in config.items():  # a hand edit: the scripts take finite numbers only
        if (is_number(value) or key in ("noise_rate", "n_epoch")) and not (value is None or is_finite(value)):
            return f"has {key} {value!r}, not a finite number"
    for key in ("dataset", "noise_type", "model"):
        if config.get(key) is not None and not isinstance(config[key], str):
            return f"has {key} {config[key]!r}, not a string"
    return None


def checked_summary(folder, summary):
    """summary.json without values of the wrong type, each dropped with a warning: a
    hand-edited NaN must not turn a mean into NaN, nor a string crash the tables."""
    for key in ("script", "method", "status", "error"):
        if key in summary and not isinstance(summary[key], str):
            warn(f"{folder}: summary.json {key} is {summary[key]!r}, not a string; ignored")
            del summary[key]
        elif key in summary:
            summary[key] = clean(summary[key])
    for key in SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is not None and not is_finite(value):
            del summary[key]
            warn(f"{folder}: summary.json {key} is {value!r}, not a finite number; ignored, so "
                 f"its group reports no mean of {key}")
    for key, kind, what in (("collapsed", bool, "true/false"), ("kept_stale", list, "a list")):
        if key in summary and not isinstance(summary[key], kind):
            warn(f"{folder}: summary.json {key} is {summary[key]!r}, not {what}; ignored")
            del summary[key]
    return summary


def method_record(folder, summary):
    """What the run recorded about its method: {method_name, label, knobs, knob_baselines,
    is_ce, comparable}, numbers in canonical form; None for a run made before runs recorded
    it, or (with a warning) one whose record is damaged."""
    if not any(k in summary for k in RECORD_KEYS + ("comparable",)):
        return None
    problem = record_problem(summary)
    if problem:
        warn(f"{folder}: summary.json {problem}; the run is averaged, but gets no knob "
             "columns and is not paired (rerun it to rewrite its summary.json)")
        return None
    knobs = {clean(k): canonical(v) for k, v in summary["knobs"].items()}
    return {"method_name": clean(summary["method_name"]), "label": clean(summary["label"]),
            "knobs": knobs, "knob_baselines": {k: canonical(summary["knob_baselines"][k]) for k in knobs},
            "is_ce": summary["is_ce"], "comparable": canonical(summary.get("comparable")),
            "method_title": clean(summary["method_title"]) if isinstance(summary.get("method_title"), str) else None}


def is_scalar(x):
    return isinstance(x, (str, bool)) or is_finite(x)


def record_problem(summary):
    """What is wrong with a summary's record of its method, or None."""
    missing = [k for k in RECORD_KEYS if k not in summary]
    if missing:
        return f"lacks {', '.join(missing)} beside the rest of its method record"
    for key in ("method_name", "label"):
        if not isinstance(summary[key], str) or not summary[key]:
            return f"has {key} {summary[key]!r}, not a name"
    knobs, baselines = summary["knobs"], summary["knob_baselines"]
    if not isinstance(knobs, dict) or not all(is_scalar(v) for v in knobs.values()):
        return f"has knobs {knobs!r}, not an object of numbers, strings or true/false"
    if not isinstance(baselines, dict) or not all(k in baselines and is_scalar(baselines[k]) for k in knobs):
        return f"has knob_baselines {baselines!r}, not a value for each of its knobs {sorted(knobs)}"
    if not isinstance(summary["is_ce"], bool):
        return f"has is_ce {summary['is_ce']!r}, not true/false"
    if not isinstance(summary.get("comparable"), (dict, type(None))):
        return f"has comparable {summary['comparable']!r}, not an object"
    return None


def identity_of(folder, config, summary):
    """(code, data) of a run: made_by's source hash, and its data fingerprints as a sorted
    JSON text; None for what the run does not record (older runs)."""
    made_by = config.get("made_by", (summary or {}).get("made_by"))
    if made_by is None:
        return None, None
    code = made_by.get("code") if isinstance(made_by, dict) else None
    sha = code.get("source_sha1") if isinstance(code, dict) else None
    data = made_by.get("data") if isinstance(made_by, dict) else None
    if not isinstance(sha, str) or not isinstance(data, (dict, type(None))):
        warn(f"{folder}: config.json made_by does not record a source hash and data; the run "
             "is grouped with runs of unknown code")
        return None, None
    return clean(sha), None if data is None else clean(json.dumps(data, sort_keys=True))


def checked_per_class(folder, per_class):
    """summary.json's per_class as arrays: {"best"/"last": {"epoch", "test_acc" (K,),
    "test_confusion" (K, K), and where recorded train_fit_clean, train_mem_noisy (K,; NaN
    where a class has no such sample), train_n_clean, train_n_noisy (K,)}}; None when
    absent, or (with a warning) malformed."""
    if per_class is None:
        return None
    if not isinstance(per_class, dict):
        warn(f"{folder}: summary.json per_class is not an object; left out of the per-class tables")
        return None
    out = {}
    for which in PER_CLASS_EPOCHS:
        entry = per_class.get(which)
        if entry is None:
            continue
        checked = per_class_entry(entry)
        if isinstance(checked, str):
            warn(f"{folder}: summary.json per_class.{which} {checked}; left out of the per-class tables")
            continue
        out[which] = checked
    return out or None


def per_class_entry(entry):
    """One epoch's per-class results as arrays, or a string saying what is wrong."""
    if not isinstance(entry, dict):
        return "is not an object"
    acc = entry.get("test_acc")
    if not isinstance(acc, list) or not acc or not all(a is None or is_finite(a) for a in acc):
        return "has no test_acc list of numbers (or null for a class without test images)"
    k = len(acc)
    confusion = entry.get("test_confusion")
    if not (isinstance(confusion, list) and len(confusion) == k
            and all(isinstance(row, list) and len(row) == k and all(is_count(c) for c in row)
                    for row in confusion)):
        return f"has no test_confusion of {k} x {k} counts"
    out = {"epoch": entry.get("epoch") if is_number(entry.get("epoch")) else None,
           "test_acc": np.array([math.nan if a is None else a for a in acc], dtype=float),
           "test_confusion": np.array(confusion, dtype=float)}
    for key in PER_CLASS_RATES + PER_CLASS_COUNTS:
        values = entry.get(key)
        if values is None:
            continue
        ok = is_count if key in PER_CLASS_COUNTS else (lambda v: v is None or is_finite(v))
        if not (isinstance(values, list) and len(values) == k and all(ok(v) for v in values)):
            return f"has {key} that is not {k} {'counts' if key in PER_CLASS_COUNTS else 'numbers or null'}"
        out[key] = np.array([math.nan if v is None else v for v in values], dtype=float)
    return out


def is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class MetricsError(ValueError):
    """A metrics.csv that is not one header and one row of numbers per epoch."""


def read_metrics(path):
    """{column: array over epochs 1..n} of a metrics.csv."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise MetricsError("is not a regular file")  # a FIFO would block forever
        with open(path, newline="") as f:
            table = list(csv.reader(f))
    except (OSError, ValueError, csv.Error) as exc:
        if isinstance(exc, MetricsError):
            raise
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
        if os.path.lexists(path):
            try:
                run["metrics"] = read_metrics(path)
            except MetricsError as exc:
                warn(f"{run['folder']}: metrics.csv {exc}; the run is left out of the curves")
    return run["metrics"]


# ---------------------------------------------------------------- grouping runs

@dataclass
class Group:
    """Runs that differ only by the seed, made by one code version on one data version.

    config: the settings (canonical, without seed and bookkeeping); record: the method's
    record (method_record) of its runs, None for runs made before runs recorded it."""
    gid: str
    script: str
    config: dict
    code: str
    data: str
    runs: list
    record: dict = None

    @property
    def done(self):
        return [r for r in self.runs if finished(r)]

    @property
    def settings(self):
        """What groups with the same settings but other code or data share."""
        return json.dumps([self.script, self.config], sort_keys=True)


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


def same(a, b):
    """Equal as settings (canonical JSON)."""
    return json.dumps(canonical(a), sort_keys=True) == json.dumps(canonical(b), sort_keys=True)


def group_config(config):
    """The config without the seed and without the settings that cannot change a result."""
    return {k: canonical(v) for k, v in result_settings(config).items() if k != "seed"}


def group_runs(runs):
    """{group id: Group}: runs whose script and config agree except for the seed, and whose
    code and data are the same (runs recording none count as one unknown version).

    The method tag is a function of the config, so it needs no place in the key (and a
    run that died before writing summary.json still joins its group).
    """
    by_key = {}
    for run in runs:
        key = json.dumps([script_of(run), group_config(run["config"]), run["code"], run["data"]],
                         sort_keys=True)
        by_key.setdefault(key, []).append(run)
    groups = {}
    for key, members in by_key.items():
        members.sort(key=lambda r: (r["config"].get("seed", 0), r["summary"] is None))
        first = members[0]
        c = first["config"]
        digest = hashlib.sha1(key.encode()).hexdigest()[:6]
        gid = clean(f"{script_of(first)}/{c.get('dataset')}-{c.get('noise_type')}"
                    f"{fmt_num(c.get('noise_rate'))}-{c.get('model')}-{method_of(first)}-{digest}")
        done = [r for r in members if finished(r)]
        record = next((r["record"] for r in done + members if r["record"]), None)
        groups[gid] = Group(gid, script_of(first), group_config(c), first["code"], first["data"],
                            members, record)
        seeds = [r["config"].get("seed", 0) for r in done]
        if len(set(seeds)) < len(seeds):  # copies of a run under two result folders
            warn(f"group {gid} has several finished runs with seed(s) "
                 f"{sorted({s for s in seeds if seeds.count(s) > 1})}: each is averaged, "
                 "and the paired differences use the first")
    return groups


def finished(run):
    return (run["summary"] or {}).get("status") == "finished"


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


def t_interval(diffs):
    """Mean of paired differences and its 95% t-interval, mean ± t_{0.975, n-1} sd/sqrt(n)
    with sd of ddof=1; (mean, None, None) for one pair, where it is undefined."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


# ---------------------------------------------------------------- summary rows

NO_RECORD = ("no method record (made before runs recorded their method, knobs and CE "
             "settings): no knob columns, not paired")


def group_rows(groups):
    """One row per group with finished runs, and one per run that is not finished."""
    rows, unfinished = [], []
    versions = versions_of(groups)
    for group in groups.values():
        unfinished += [unfinished_row(group.gid, r) for r in group.runs if not finished(r)]
        if group.done:
            rows.append(group_row(group, versions[group.settings]))
    add_other_settings(rows, groups)
    rows.sort(key=lambda r: (r["script"], r["dataset"] or "", r["noise_type"] or "",
                             r["noise_rate"] or 0, r["model"] or "", r["other"],
                             r["method_name"] or "", knob_order(r["knobs"]), r["label"],
                             r["code"] or "", r["data"] or ""))
    unfinished.sort(key=lambda u: u["run_dir"])
    return rows, unfinished


def versions_of(groups):
    """{settings: (number of code versions, number of data versions)} over the groups."""
    seen = {}
    for g in groups.values():
        codes, datas = seen.setdefault(g.settings, (set(), set()))
        codes.add(g.code)
        datas.add(g.data)
    return {k: (len(c), len(d)) for k, (c, d) in seen.items()}


def group_row(group, versions):
    """The row of a group: settings, knobs, means over its finished seeds, marks."""
    done, record = group.done, group.record or {}
    c = done[0]["config"]
    n_codes, n_datas = versions
    row = {"group": group.gid, "script": group.script, "method": method_of(done[0]),
           "method_name": record.get("method_name"), "label": record.get("label") or method_of(done[0]),
           "is_ce": record.get("is_ce"),
           "knobs": record.get("knobs", {}), "dataset": c.get("dataset"), "noise_type": c.get("noise_type"),
           "noise_rate": c.get("noise_rate"), "model": c.get("model"), "n_epoch": c.get("n_epoch"),
           "n_seeds": len(done), "seeds": " ".join(str(r["config"].get("seed", 0)) for r in done),
           "n_not_averaged": len(group.runs) - len(done),
           "code": short(group.code), "data": short_data(group.data),
           "n_collapsed": sum(r["summary"].get("collapsed") is True for r in done),
           "n_kept_stale": sum(bool(r["summary"].get("kept_stale")) for r in done),
           "code_split": n_codes > 1, "data_split": n_datas > 1}
    for name in ACCURACIES:
        row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values_of(done, name))
    for name in LAST_VALUES:
        row[f"{name}_mean"] = mean_std(values_of(done, name))[0]
    row["actual_noise_rate_mean"] = mean_std(
        [r["summary"]["actual_noise_rate"] for r in done if r["summary"].get("actual_noise_rate") is not None])[0]
    row["marks"] = marks_of(row)
    row["note"] = "; ".join(filter(None, [
        "" if group.record else NO_RECORD,
        f"{n_codes} code versions of these settings: each is its own group" if n_codes > 1 else "",
        f"{n_datas} data versions of these settings: each is its own group" if n_datas > 1 else ""]))
    return row


def marks_of(row):
    """'collapsed 1/3, kept stale 1/3': seeds averaged that ended near chance, or whose
    result was kept with --keep_stale although their code or data changed."""
    n = row["n_seeds"]
    return ", ".join(f"{what} {k}/{n}" for what, k in (("collapsed", row["n_collapsed"]),
                                                       ("kept stale", row["n_kept_stale"])) if k)


def short(sha):
    return None if sha is None else sha[:8]


def short_data(data):
    """'data/labels' as two short hashes of the data fingerprint and the noisy labels."""
    if data is None:
        return None
    record = json.loads(data)
    return "/".join(str(record.get(k, "?"))[:8] for k in ("data_sha1", "labels_sha1"))


def knob_order(knobs):
    """Sorts knob values numerically (strings after numbers)."""
    return tuple((k, (0, v, "") if is_number(v) else (1, 0, str(v))) for k, v in sorted(knobs.items()))


def add_other_settings(rows, groups):
    """row['other']: the settings, beyond the shown columns and the knobs, in which this
    group differs from other groups of the same script and method (e.g. 'lr=0.01')."""
    for row in rows:
        alike = [r for r in rows if (r["script"], r["method_name"]) == (row["script"], row["method_name"])]
        configs = [groups[r["group"]].config for r in alike]
        hidden = set(SHOWN) | {k for r in alike for k in r["knobs"]}
        row["other"] = fmt_settings(groups[row["group"]].config, varying_keys(configs, hidden))


def varying_keys(configs, hidden=()):
    """The keys, but `hidden`, whose values are not the same in all `configs` (sorted)."""
    keys = sorted({k for c in configs for k in c} - set(hidden))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def fmt_settings(config, keys):
    return " ".join(f"{k}={fmt_value(config.get(k))}" for k in keys)


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

def paired_rows(rows, groups):
    """Per summary row with a method record: against its knob baseline (unless it is its
    own) and against a CE run (unless it is one); see knob_baseline and ce_baseline."""
    by_settings = {}
    for g in groups.values():
        by_settings.setdefault(g.settings, []).append(g)
    paired = []
    for row in rows:
        group = groups[row["group"]]
        if group.record is None:
            continue
        found = knob_baseline(group, by_settings)
        if found is not None:
            paired.append(paired_row("knob", row, group, *found))
        found = ce_baseline(group, groups)
        if found is not None:
            paired.append(paired_row("ce", row, group, *found))
    return paired


def knob_baseline(group, by_settings):
    """(baseline group or None, note): the group of the same script, code and data whose
    settings equal this one's with every knob at its baseline value; None when the group
    has no knob or is its own baseline."""
    knobs, baselines = group.record["knobs"], group.record["knob_baselines"]
    if not knobs or all(same(knobs[k], baselines[k]) for k in knobs):
        return None
    config = {**group.config, **baselines}
    candidates = by_settings.get(json.dumps([group.script, config], sort_keys=True), [])
    for g in candidates:
        if g.code == group.code and g.data == group.data:
            return g, ""
    wanted = ", ".join(f"{k}={fmt_knob(v)}" for k, v in baselines.items())
    if candidates:
        other = ", ".join(sorted(f"code {short(g.code)}, data {short_data(g.data)}" for g in candidates))
        return None, (f"baseline runs ({wanted}) exist only with other code or data ({other}): "
                      "rerun them with this code")
    return None, f"no baseline runs ({wanted}, every other setting equal)"


def ce_baseline(group, groups):
    """(CE group or None, note): a group whose runs train as plain cross-entropy (is_ce) with
    comparable settings equal to this one's and the same data, whichever script made it;
    None for a group that is itself CE.

    Several match: the same script first, then the one with most seeds in common, then by
    id; the note names the others. CE runs of the same script and method must have been
    made by the same code (those of other code are never used); runs of another script or
    another method (train.py --method X against --method gls at r = 0) have another source
    hash by construction, so their code cannot be compared.
    """
    record = group.record
    if record["is_ce"]:
        return None
    if record["comparable"] is None:
        return None, "the runs recorded no comparable settings: no CE run can be matched"
    matching = [g for g in groups.values() if g is not group and g.record and g.record["is_ce"]
                and g.record["comparable"] is not None and same(g.record["comparable"], record["comparable"])]
    kind = same_kind(group)
    usable = [g for g in matching if g.data == group.data and (not kind(g) or g.code == group.code)]
    if not usable:
        if matching:
            return None, ("CE runs with these comparable settings exist only with other code or data: "
                          + ", ".join(sorted(g.gid for g in matching)))
        return None, "no CE run with the same comparable settings (data set, noise, model, epochs, optimiser)"
    mine = set(finished_by_seed(group.runs))
    rank = {g.gid: (g.script != group.script, -len(mine & set(finished_by_seed(g.runs)))) for g in usable}
    usable.sort(key=lambda g: (rank[g.gid], g.gid))
    chosen, others = usable[0], usable[1:]
    if not others:
        return chosen, ""
    first, second = rank[chosen.gid], rank[others[0].gid]
    why = ("same script" if first[0] != second[0] else "most seeds in common" if first != second
           else "the first by id")
    return chosen, f"{len(usable)} CE groups match; used {chosen.gid} ({why}), not " + ", ".join(g.gid for g in others)


def same_kind(group):
    """Whether another group was made by the same script and method file as `group`: only
    then can their source hashes be compared."""
    def method_name(g):
        return g.record["method_name"] if g.record else None
    return lambda g: g.script == group.script and method_name(g) == method_name(group)


def finished_by_seed(runs):
    """{seed: run} of the finished runs (the first, where a seed has copies)."""
    by_seed = {}
    for run in runs:
        if finished(run):
            by_seed.setdefault(run["config"].get("seed", 0), run)
    return by_seed


def paired_row(kind, row, group, base, note):
    """Group minus baseline over the seeds finished in both."""
    mine, theirs = finished_by_seed(group.runs), finished_by_seed(base.runs if base else [])
    seeds = sorted(set(mine) & set(theirs))
    out = {k: row[k] for k in ("group", "script", "method", "label", "dataset", "noise_type",
                               "noise_rate", "model", "knobs", "other")}
    out.update(baseline_kind=kind, baseline_group=base and base.gid, n_pairs=len(seeds),
               seeds=" ".join(map(str, seeds)))
    if base is not None:
        first = next(iter(theirs.values()), base.runs[0])
        out.update(baseline_script=base.script, baseline_method=method_of(first),
                   baseline_label=base.record["label"])
        if not seeds:
            note = "; ".join(filter(None, [note, "no seed finished in both"]))
    out["note"] = note
    for name in ACCURACIES:
        a, b = values_of([mine[s] for s in seeds], name), values_of([theirs[s] for s in seeds], name)
        if seeds and a is not None and b is not None:
            diff = [x - y for x, y in zip(a, b)]
            out[f"{name}_diff_mean"], out[f"{name}_diff_ci_low"], out[f"{name}_diff_ci_high"] = t_interval(diff)
    return out


# ---------------------------------------------------------------- per-class results

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
        report, problem = read_json(os.path.join(run["folder"], "noise.json"))
        if problem and problem != "is missing":
            warn(f"{run['folder']}: noise.json {problem}; its transition matrix is not drawn")
        matrix = (report or {}).get("transition_matrix")
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


def square_matrix(value):
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(r, list) and len(r) == len(value) and all(is_finite(x) for x in r) for r in value):
        return None
    return np.array(value, dtype=float)


# ---------------------------------------------------------------- tables

FIXED_COLUMNS = ["group", "script", "method", "method_name", "label", "is_ce", "dataset", "noise_type",
                 "noise_rate", "model", "n_epoch"]
CSV_TAIL = (["other", "n_seeds", "seeds", "n_not_averaged"]
            + [f"{a}_{s}" for a in ACCURACIES for s in ("mean", "std")]
            + ["actual_noise_rate_mean"] + [f"{v}_mean" for v in LAST_VALUES]
            + ["n_collapsed", "n_kept_stale", "marks", "code", "data", "note"])
PAIRED_HEAD = ["group", "baseline_kind", "baseline_group", "script", "method", "label",
               "baseline_script", "baseline_method", "baseline_label", "dataset", "noise_type",
               "noise_rate", "model"]
PAIRED_TAIL = (["other", "n_pairs", "seeds"]
               + [f"{a}_diff_{s}" for a in ACCURACIES for s in ("mean", "ci_low", "ci_high")] + ["note"])
PER_CLASS_COLUMNS = ["group", "script", "label", "epoch", "epochs", "n_seeds", "class", "test_acc_mean",
                     "test_acc_std", "fit_clean_mean", "mem_noisy_mean", "n_clean_mean", "n_noisy_mean"]
UNFINISHED_COLUMNS = ["run_dir", "status", "epochs_completed", "n_epoch", "last_test_acc", "note", "group"]
# Names a knob column may not take (it is then knob_<name>): the tables' own columns.
TAKEN = set(FIXED_COLUMNS + CSV_TAIL + PAIRED_HEAD + PAIRED_TAIL) | {"knobs", "code_split", "data_split"}


def knob_column(name):
    return f"knob_{name}" if name in TAKEN else name


def knob_columns(rows):
    return [knob_column(k) for k in sorted({k for r in rows for k in r["knobs"]})]


def writable(row):
    return {k: clean(v) if isinstance(v, str) else v for k, v in row.items()}


def with_knob_cells(row):
    """The row with a cell per knob (knob_column names), its strings writable."""
    return writable({**row, **{knob_column(k): v for k, v in row["knobs"].items()}})


def write_table(path, rows, head, tail):
    write_csv(path, [with_knob_cells(r) for r in rows], head + knob_columns(rows) + tail)


def fmt_num(x):
    return "" if x is None else f"{x + 0.0:g}"  # + 0.0: -0.0 shows as 0


def fmt_knob(x):
    return fmt_num(x) if is_number(x) else str(x).lower() if isinstance(x, bool) else str(x)


def fmt_value(x):
    return " ".join(map(fmt_value, x)) if isinstance(x, list) else clean(str(x))


def fmt_acc(mean, std):
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_diff(p, name):
    """'+1.23 [-0.50, +2.96] (3 pairs)' for a paired row; why there is no difference
    where it has none."""
    if p["baseline_group"] is None:
        return ""  # the row's note says why
    mean = p.get(f"{name}_diff_mean")
    if mean is None:
        return "no seed finished in both" if not p["n_pairs"] else ""
    low, high = p.get(f"{name}_diff_ci_low"), p.get(f"{name}_diff_ci_high")
    interval = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
    return f"{mean:+.2f}{interval} ({p['n_pairs']} pair{'s' * (p['n_pairs'] > 1)})"


def md_row(cells):
    """A Markdown table row; a '|' inside a cell (a label, a path) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def fmt_vs(row, paired, kind, name):
    """The markdown cell of `name`'s paired difference of a row against its `kind` baseline."""
    if row[f"{name}_mean"] is None:
        return ""
    p = paired.get((row["group"], kind))
    if p is not None and p["baseline_group"] is None:
        return "no baseline runs" if kind == "knob" else "no CE runs"
    if p is not None:
        return fmt_diff(p, name)
    if row["method_name"] is None:
        return "not paired"
    if kind == "ce":
        return "CE" if row["is_ce"] else ""
    return "baseline" if row["knobs"] else ""  # knobs at their baseline values: no row


def markdown_table(rows, paired=()):
    """The groups as a Markdown table (accuracies in %, mean ± sample std over seeds)."""
    ema = any(r["last_test_acc_ema_mean"] is not None for r in rows)
    extra = [(name, head) for name, head in (("last_mem_noisy", "mem noisy"), ("last_test_ece", "ECE"))
             if any(r[f"{name}_mean"] is not None for r in rows)]
    knobs = sorted({k for r in rows for k in r["knobs"]})
    by_group = {(p["group"], p["baseline_kind"]): p for p in paired}
    split = any(r["code_split"] or r["data_split"] for r in rows)
    marks = any(r["marks"] or r["note"] for r in rows)
    head = ["method", "script"] + knobs + ["data", "noise", "epochs", "seeds", "last acc", "best acc"]
    head += ["last acc (MO)", "best acc (MO)"] if ema else []
    head += [h for _, h in extra]
    head += ["Δ last acc vs knob baseline", "Δ last acc vs CE"] + (["Δ last acc (MO) vs CE"] if ema else [])
    head += ["actual noise"] + (["marks"] if marks else []) + (["code / data"] if split else [])
    head += ["other settings", "group"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], r["script"]] + [fmt_knob(r["knobs"][k]) if k in r["knobs"] else "" for k in knobs]
        cells += [r["dataset"] or "", f"{r['noise_type']} {fmt_num(r['noise_rate'])}", str(r["n_epoch"]),
                  str(r["n_seeds"]) + (f" (+{r['n_not_averaged']} not averaged)" if r["n_not_averaged"] else ""),
                  fmt_acc(r["last_test_acc_mean"], r["last_test_acc_std"]),
                  fmt_acc(r["best_test_acc_mean"], r["best_test_acc_std"])]
        if ema:
            cells += [fmt_acc(r["last_test_acc_ema_mean"], r["last_test_acc_ema_std"]),
                      fmt_acc(r["best_test_acc_ema_mean"], r["best_test_acc_ema_std"])]
        cells += [fmt_acc(r[f"{name}_mean"], None) for name, _ in extra]
        cells += [fmt_vs(r, by_group, kind, "last_test_acc") for kind in ("knob", "ce")]
        cells += [fmt_vs(r, by_group, "ce", "last_test_acc_ema")] if ema else []
        noise = r["actual_noise_rate_mean"]
        cells += ["" if noise is None else f"{noise:.3f}"]
        cells += [", ".join(filter(None, [r["marks"], "no method record" if NO_RECORD in r["note"] else ""]))] if marks else []
        cells += [version_cell(r)] if split else []
        cells += [r["other"], f"`{r['group']}`"]
        lines.append(md_row(cells))
    return "\n".join(lines)


def version_cell(row):
    """The code (and data) version of a row whose settings were run with several."""
    parts = [f"code {row['code'] or 'unknown'}" if row["code_split"] else "",
             f"data {row['data'] or 'unknown'}" if row["data_split"] else ""]
    return ", ".join(filter(None, parts))


def table_notes(rows):
    """The sentences under the table that explain its marks, for the marks it has."""
    notes = []
    if any(r["code_split"] or r["data_split"] for r in rows):
        notes.append("**Code / data:** these settings were run with several code versions (the "
                     "source hash of made_by) or data (fingerprint of the data / of the noisy "
                     "labels). Seeds of different versions are never averaged together: each "
                     "version is its own group. Rerun the stale ones (`--if_exists overwrite`) "
                     "to merge them.")
    if any(r["n_collapsed"] for r in rows):
        notes.append("**collapsed k/n:** k of the n averaged seeds ended near chance (summary.json "
                     "`collapsed`): a result, but the mean hides it.")
    if any(r["n_kept_stale"] for r in rows):
        notes.append("**kept stale k/n:** k seeds were kept with `--keep_stale` although their "
                     "code or data changed (their summary.json's `kept_stale` says what changed).")
    if any(NO_RECORD in r["note"] for r in rows):
        notes.append("**no method record:** runs made before runs recorded their method, knobs and "
                     "CE settings: averaged, but without knob columns and not paired. Rerun them "
                     "to compare them.")
    return notes


def paired_markdown(paired):
    """Every paired row: which baseline, and the differences with their 95% t-intervals."""
    if not paired:
        return ["No group has a baseline to be paired with."]
    ema = any(p.get("last_test_acc_ema_diff_mean") is not None for p in paired)
    head = ["method", "script", "against", "baseline", "Δ last acc", "Δ best acc"]
    head += ["Δ last acc (MO)", "Δ best acc (MO)"] if ema else []
    head += ["note", "group"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in paired:
        base = (f"{p['baseline_label']} ({p['baseline_script']})" if p["baseline_group"] else "none")
        names = ACCURACIES if ema else ACCURACIES[:2]
        cells = [p["label"], p["script"], "knob baseline" if p["baseline_kind"] == "knob" else "CE", base]
        cells += [fmt_diff(p, name) for name in names]
        cells += [p["note"], f"`{p['group']}`"]
        lines.append(md_row(cells))
    return lines


def per_class_markdown(per_class, max_classes=20):
    """Per group: class, test accuracy at the best and the last epoch, fit_clean and
    mem_noisy at the last epoch (over 20 classes: the 10 of lowest last accuracy)."""
    tables = {}
    for line in per_class:
        tables.setdefault(line["group"], {}).setdefault(line["epoch"], {})[line["class"]] = line
    parts = []
    for gid, by_epoch in tables.items():
        best, last = by_epoch.get("best", {}), by_epoch.get("last", {})
        first = next(iter((last or best).values()))
        classes = sorted(set(best) | set(last))
        shown = classes
        if len(classes) > max_classes:
            shown = sorted(classes, key=lambda k: (last.get(k) or best[k])["test_acc_mean"])[:10]
        parts += [f"### {first['label']} ({first['script']}), {first['n_seeds']} seed(s)", "",
                  f"`{gid}`" + (f": the 10 classes of lowest last accuracy of {len(classes)} (all in "
                                "per_class.csv)" if shown is not classes else ""), "",
                  "| class | test acc, best epoch | test acc, last epoch | fit_clean, last | "
                  "mem_noisy, last | clean / noisy train samples, last |", "|---|---|---|---|---|---|"]
        for k in shown:
            b, l = best.get(k), last.get(k, {})
            counts = " / ".join("" if l.get(c) is None else f"{l[c]:.0f}" for c in ("n_clean_mean", "n_noisy_mean"))
            counts = "" if counts == " / " else counts
            cells = [str(k), fmt_acc(b["test_acc_mean"], b["test_acc_std"]) if b else "",
                     fmt_acc(l.get("test_acc_mean"), l.get("test_acc_std")),
                     fmt_acc(l.get("fit_clean_mean"), None), fmt_acc(l.get("mem_noisy_mean"), None), counts]
            parts.append(md_row(cells))
        parts.append("")
    return parts


def write_markdown(path, results_dir, rows, paired, per_class, unfinished, plots):
    parts = [f"# Summary of {results_dir}", "",
             "Test accuracy in %: mean ± sample standard deviation (ddof=1) over the seeds of "
             "each group; only finished runs are averaged. MO: the momentum (EMA) model. "
             "Mem noisy, ECE: last epoch, %. Actual noise: fraction of flipped training labels. "
             "Δ: mean over the seeds finished in both of (this group - its baseline), in points, "
             "with its 95% t-interval: against the knob baseline (the same script and settings "
             "with every knob at its baseline value) and against CE (the cross-entropy run with "
             "the same comparable settings, whichever script made it); paired.csv and the "
             "section below.", "",
             markdown_table(rows, paired) if rows else "No finished runs.", ""]
    for note in table_notes(rows):
        parts += [note, ""]
    parts += ["## Paired differences", ""] + paired_markdown(paired) + [""]
    if per_class:
        parts += ["## Per class", "", "Test accuracy per true class, and on the training set "
                  "per true class fit_clean (predicted = label, among the correct labels) and "
                  "mem_noisy (predicted = noisy label, among the wrong labels), in %, mean over "
                  "the seeds that recorded them (per_class.csv).", ""]
        parts += per_class_markdown(per_class)
    parts += ["## Runs not averaged", ""]
    if unfinished:
        parts += ["| run | status | epochs | last acc | note |", "|---|---|---|---|---|"]
        parts += [md_row([f"`{u['run_dir']}`", u["status"], f"{u['epochs_completed']}/{u['n_epoch']}",
                          "" if u["last_test_acc"] is None else format(u["last_test_acc"], ".2f"), u["note"]])
                  for u in unfinished]
    else:
        parts.append("None: every run found is finished.")
    parts.append("")
    if plots:
        parts += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    atomic_write_text(path, clean("\n".join(parts) + "\n"))


# ---------------------------------------------------------------- plots

def slug(text):
    """A file-name part: letters, digits, '.', '=', '-'; the rest '_'."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "all"


def knob_figures(rows):
    """{(method name, knob): [rows]} for every numeric knob of every method."""
    figures = {}
    for row in rows:
        for knob, value in row["knobs"].items():
            if is_number(value):
                figures.setdefault((row["method_name"], knob), []).append(row)
    return figures


def plot_knobs(out_dir, rows, groups):
    """acc_vs_<knob>_<method>.png for every (method, knob); the paths written."""
    paths = []
    for (method, knob), members in sorted(knob_figures(rows).items()):
        path = os.path.join(out_dir, f"acc_vs_{slug(knob)}_{slug(method)}.png")
        paths.append(plot_against(path, members, groups, knob, method))
    return paths


def lines_over(rows, groups, knob):
    """[(legend label, rows sorted by the knob)]: groups that differ only by `knob` share a line.

    A line's label is its script, data set and noise, and the settings in which it differs
    from the figure's other lines (the code or data version where only those differ)."""
    lines = {}
    for row in rows:
        g = groups[row["group"]]
        config = {k: v for k, v in g.config.items() if k != knob}
        key = json.dumps([g.script, config, g.code, g.data], sort_keys=True)
        lines.setdefault(key, []).append(row)
    configs = {key: json.loads(key) for key in lines}
    labels = {}
    for key, members in lines.items():
        members.sort(key=lambda r: r["knobs"][knob])
        script, config, code, data = configs[key]
        alike = [c[1] for c in configs.values() if c[0] == script]
        r = members[0]
        label = f"{script}: {r['dataset']} {r['noise_type']} {fmt_num(r['noise_rate'])}"
        labels[key] = label + "".join(f", {k}={fmt_value(config.get(k))}"
                                      for k in varying_keys(alike, ("dataset", "noise_type", "noise_rate")))
    for part, index in (("code", 2), ("data", 3)):
        if len(set(labels.values())) < len(labels):  # the same settings, other versions
            labels = {k: f"{v}, {part} {(short if part == 'code' else short_data)(configs[k][index])}"
                      for k, v in labels.items()}
    return [(labels[k], lines[k]) for k in sorted(lines, key=labels.get)]


def method_title(rows, groups, method):
    """The method's readable name (summary.json's method_title), else its --method name."""
    record = groups[rows[0]["group"]].record or {}
    return record.get("method_title") or method


def plot_against(path, rows, groups, knob, method):
    """Accuracy (last, best) of one method against `knob`, one line per other setting; None
    (with a warning saying why) when no line has two values of the knob to join."""
    lines = lines_over(rows, groups, knob)
    if all(len({r["knobs"][knob] for r in members}) < 2 for _, members in lines):
        warn(f"{os.path.basename(path)} is not drawn: no setting of method {method} was run at two "
             f"values of {knob} (sweep {knob} to compare them)")
        return None
    title = method_title(rows, groups, method)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    xs_all = sorted({r["knobs"][knob] for _, m in lines for r in m})
    for ax, which in zip(axes, ("last", "best")):
        for i, (label, members) in enumerate(lines):
            color = f"C{i % 10}"
            xs = [r["knobs"][knob] for r in members]
            for suffix, style, tag in (("", "o-", ""), ("_ema", "s--", " (MO)")):
                ys = [r[f"{which}_test_acc{suffix}_mean"] for r in members]
                if any(y is None for y in ys):
                    continue
                errs = [r[f"{which}_test_acc{suffix}_std"] or 0.0 for r in members]
                ax.errorbar(xs, ys, yerr=errs, fmt=style, color=color, capsize=3,
                            markersize=4, label=label + tag)
        if max(abs(x) for x in xs_all) > SYMLOG_BEYOND:
            ax.set_xscale("symlog", linthresh=1.0)  # linear in [-1, 1], logarithmic beyond
        ax.set_xticks(xs_all)
        ax.set_xticklabels([fmt_num(x) for x in xs_all], rotation=90 if len(xs_all) > 6 else 0)
        ax.set_xlabel(knob + (" (symlog axis)" if ax.get_xscale() == "symlog" else ""))
        ax.set_title(f"{title}: {which} test accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%), mean ± std over seeds")
    fig.tight_layout()
    legend_below(fig, axes[0])  # one legend for both panels
    atomic_savefig(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


LEGEND_FONT = 8


def legend_below(fig, ax):
    """The legend of `ax`'s lines under the figure, in columns, at a readable size: outside
    the axes, so that it never covers a curve, however many lines there are."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # none where no group has the values
        ncol = 1 if max(map(len, labels)) > 60 else 2 if len(labels) > 1 else 1
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                   fontsize=LEGEND_FONT, frameon=False)


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


class Pattern(str):
    """A --curves or --confusion pattern (a str, for file names and titles) and how it names
    groups: the whole group id or label, or (--match substring) any part of it."""

    def __new__(cls, text, substring=False):
        pattern = super().__new__(cls, text)
        pattern.substring = substring
        return pattern

    def matches(self, text):
        return str(self) in text if self.substring else str(self) == text


def matching_rows(pattern, rows):
    """The rows whose group id or label `pattern` matches (Pattern; a plain str: the whole id
    or label), by script, method and knob value."""
    pattern = pattern if isinstance(pattern, Pattern) else Pattern(pattern)
    chosen = [r for r in rows if pattern.matches(r["group"]) or pattern.matches(r["label"])]
    return sorted(chosen, key=lambda r: (r["script"], r["method_name"] or "", knob_order(r["knobs"]),
                                         r["label"], r["other"], r["group"]))


def legend_names(rows):
    """{group id: readable name}: the label and script, the other settings, and the code or
    data version where those alone tell two groups apart."""
    names = {r["group"]: f"{r['label']}, {r['script']}" + (f", {r['other']}" if r["other"] else "")
             for r in rows}
    for part in ("code", "data"):
        if len(set(names.values())) < len(names):
            names = {r["group"]: f"{names[r['group']]}, {part} {r[part] or 'unknown'}" for r in rows}
    return {k: printable(v) for k, v in names.items()}


def plot_curves(path, pattern, rows, groups, columns=ACC_CURVES, ylabel="test accuracy (%)",
                title="test accuracy per epoch"):
    """`columns` per epoch of the groups `pattern` names (matching_rows): mean over the
    finished seeds, band = sample std, one colour per group; None when nothing to draw."""
    chosen = matching_rows(pattern, rows)
    names = legend_names(chosen)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn, from_zero = 0, False
    for i, row in enumerate(chosen):
        for column, style, tag in columns:
            curve = group_curve(groups[row["group"]].done, column)
            if curve is None:
                continue
            epochs, means, stds, n = curve
            from_zero |= epochs[0] == 0
            ax.plot(epochs, means, style, color=f"C{i % 10}",
                    label=f"{names[row['group']]} ({n} seed{'s' * (n > 1)}){tag}")
            if stds is not None:
                ax.fill_between(epochs, means - stds, means + stds, color=f"C{i % 10}", alpha=0.15)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: before training)" if from_zero else "epoch")
    ax.set_ylabel(ylabel)
    how = "containing" if getattr(pattern, "substring", False) else "named"
    ax.set_title(f"{title}\ngroups {how} '{printable(pattern)}'", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    legend_below(fig, ax)
    atomic_savefig(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_mem_curves(path, pattern, rows, groups):
    """Memorisation per epoch: how much of the clean labels the model fits against how
    much of the wrong ones it has memorised (the runs whose metrics.csv has them)."""
    return plot_curves(path, pattern, rows, groups, MEM_CURVES,
                       ylabel="% of training samples",
                       title="fit_clean (solid): predicted = label, among the correct labels\n"
                             "mem_noisy (dashed): predicted = noisy label, among the wrong labels")


def confusion_targets(pattern, runs, rows, groups):
    """[(file-name part, title, runs)] that --confusion PATTERN names: the run folder it is
    (a path, or a folder name), else every group it names (matching_rows)."""
    for run in runs:
        folder = run["folder"]
        if pattern == os.path.basename(os.path.normpath(folder)) or (
                os.path.exists(pattern) and os.path.samefile(pattern, folder)):
            return [(os.path.basename(os.path.normpath(folder)), f"run {os.path.basename(folder)}", [run])]
    names = legend_names(matching_rows(pattern, rows))
    return [(gid.replace("/", "_"), name, groups[gid].done) for gid, name in names.items()]


CELL_NUMBERS_UP_TO = 20  # classes: a confusion figure writes each cell's value up to this


def plot_confusion(path, title, runs):
    """The noise's transition matrix and the test confusion matrix at the best and last
    epoch (rows normalised, mean over the runs); None when no run has per-class results."""
    panels = [(f"{which} epoch: test confusion", "predicted class", mean_confusion(runs, which))
              for which in PER_CLASS_EPOCHS]
    if all(m is None for _, _, m in panels):
        return None
    panels.insert(0, ("noise: transition matrix (noise.json)", "noisy label", mean_transition(runs)))
    k = next(len(m) for _, _, m in panels if m is not None)
    side = 5 if k <= 10 else 6.5
    fig, axes = plt.subplots(1, 3, figsize=(3 * side, side), constrained_layout=True)
    for ax, (name, xlabel, matrix) in zip(axes, panels):
        ax.set_title(name, fontsize=9)
        if matrix is None:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center")
            ax.set_axis_off()
            continue
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
        k = len(matrix)
        if k <= 20:
            ax.set_xticks(range(k))
            ax.set_yticks(range(k))
        if k <= CELL_NUMBERS_UP_TO:  # beyond, a cell is too small for a readable number
            for i in range(k):
                for j in range(k):
                    if np.isfinite(matrix[i, j]):
                        ax.text(j, i, f"{matrix[i, j]:.2f}"[1:] if matrix[i, j] < 1 else "1",
                                ha="center", va="center", fontsize=9 if k <= 10 else 6.5,
                                color="white" if matrix[i, j] > 0.6 else "black")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("true class")
    fig.colorbar(image, ax=list(axes), fraction=0.015, pad=0.01, shrink=0.9)
    n = sum(bool(r["per_class"]) for r in runs)
    fig.suptitle(f"{printable(title)} ({n} seed{'s' * (n > 1)}; rows: fraction of each true class)", fontsize=10)
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
    return path


def confusion_plots(out_dir, pattern, runs, rows, groups):
    """confusion_<name>.png for what `pattern` names; a warning when it names nothing drawable."""
    paths = []
    for name, title, members in confusion_targets(pattern, runs, rows, groups):
        path = plot_confusion(os.path.join(out_dir, f"confusion_{slug(name)}.png"), title, members)
        if path is None:
            warn(f"--confusion {pattern!r}: {printable(title)} has no per-class results (runs made "
                 "before summary.json recorded them); no figure")
        paths.append(path)
    if not paths:
        warn(f"--confusion {pattern!r} matches no run folder and no finished group")
    return paths


# ---------------------------------------------------------------- main

# ---------------------------------------------------------------- a paper's table (--paper)

PAPER_COLUMNS = ("row", "column", "kind", "ours_mean", "ours_std", "n_seeds", "seeds", "from_part",
                 "paper", "difference", "status", "metric", "runs", "select", "select_mean", "paper_source")


def paper_columns(recipe):
    """The CSV's columns: PAPER_COLUMNS, then each further reference column's number,
    difference and source (NAME, NAME_difference, NAME_source)."""
    return PAPER_COLUMNS + tuple(f"{name}{suffix}" for name, _ in recipe.more_refs
                                 for suffix in ("", "_difference", "_source"))


def expected_settings(paper_run):
    """{dest: value} the recipe fixes for this run, as the script's own parser reads its
    flags (aliases normalised: sym -> symmetric, n_epoch from --epochs)."""
    import importlib

    words = paper_run.words()
    preset = importlib.import_module(paper_run.script).preset(words)
    cfg, _ = preset.parse(words)
    parser = preset.parser()
    dests = {a.dest for a in parser._actions for flag, _ in paper_run.flags if f"--{flag}" in a.option_strings}
    return {d: canonical(getattr(cfg, d)) for d in sorted(dests)}


def matching_group(paper_run, runs):
    """The runs of one recipe run: its script, the recipe's settings; among several groups
    of them (other settings, code or data) the one with the most finished seeds, the others
    named in a warning. [] when none."""
    want = expected_settings(paper_run)
    found = [r for r in runs if script_of(r) == paper_run.script
             and all(same(r["config"].get(k), v) for k, v in want.items())]
    if not found:
        return []
    groups = sorted(group_runs(found).values(), key=lambda g: (-len(g.done), g.gid))
    if len(groups) > 1:
        warn(f"{paper_run.script} {' '.join(paper_run.words())}: runs of {len(groups)} settings or "
             f"versions match; the table takes {groups[0].gid} ({len(groups[0].done)} seeds), not "
             + ", ".join(g.gid for g in groups[1:]))
    return groups[0].done


def paper_table(recipe, runs):
    """(cells, parts): the table of `recipe` from `runs`. A part is the mean and sample std
    over its finished seeds of its metric; a cell is the best of its parts' means."""
    from papers import cell_value

    parts = {}
    for paper_run in recipe.runs:
        done = matching_group(paper_run, runs)
        for part in paper_run.parts:
            values = [r["summary"][part.metric] for r in done if is_finite(r["summary"].get(part.metric))]
            seeds = [r["config"].get("seed", 0) for r in done if is_finite(r["summary"].get(part.metric))]
            mean, std = mean_std(values)
            select = part.select or part.metric
            chooser = mean_std([r["summary"][select] for r in done if is_finite(r["summary"].get(select))])[0]
            parts[(part.row, part.column, part.name)] = {
                "row": part.row, "column": part.column, "kind": f"part: {part.name}", "ours_mean": mean,
                "ours_std": std, "n_seeds": len(values), "seeds": " ".join(map(str, seeds)),
                "metric": part.metric, "runs": len(done), "status": "ok" if values else "missing",
                "select": select, "select_mean": chooser}
    cells = []
    for row in recipe.rows:
        for column in recipe.columns:
            names = recipe.parts().get((row, column), [])
            mine = [parts[(row, column, n)] for n in names]
            mean, best = cell_value({n: p["ours_mean"] for n, p in zip(names, mine)},
                                    {n: p["select_mean"] for n, p in zip(names, mine)})
            chosen = parts.get((row, column, best), {})
            missing = [n for n, p in zip(names, mine) if p["ours_mean"] is None]
            paper = recipe.paper_number(row, column)
            ref = recipe.refs.get((row, column))
            status = "missing" if mean is None else f"partial (no {', '.join(missing)})" if missing else "ok"
            cell = {"row": row, "column": column, "kind": "cell", "ours_mean": mean,
                    "ours_std": chosen.get("ours_std"), "n_seeds": chosen.get("n_seeds", 0),
                    "seeds": chosen.get("seeds", ""), "from_part": best if len(names) > 1 else None,
                    "paper": paper, "difference": None if mean is None or paper is None else mean - paper,
                    "status": status, "metric": chosen.get("metric"), "select": chosen.get("select"),
                    "select_mean": chosen.get("select_mean"), "paper_source": ref_text(ref)}
            for name, refs in recipe.more_refs:
                more = refs.get((row, column))
                number = None if more is None else more.number
                cell.update({name: number, f"{name}_difference": None if mean is None or number is None
                             else mean - number, f"{name}_source": ref_text(more)})
            cells.append(cell)
    return cells, list(parts.values())


def chooser_text(parts):
    """How a cell chooses among its parts, in words."""
    chosen_by = sorted({p["select"] for p in parts if p["select"] != p["metric"]})
    return f"mean {' / '.join(chosen_by)}, reported as its mean metric" if chosen_by else "mean"


def ref_text(ref):
    """Where a cell's reference number was read, or why it has none."""
    if ref is None:
        return "no reference recorded"
    return f"{ref.source.key}: {ref.at}" if ref.source is not None else ref.at


def paper_cell_text(cell, more=()):
    """ours / the reference number and our difference, then the same for each further
    reference column named in `more`."""
    ours = "missing" if cell["ours_mean"] is None else fmt_acc(cell["ours_mean"], cell["ours_std"]) + f" ({cell['n_seeds']})"
    texts = [ours]
    for number, diff in [("paper", "difference")] + [(name, f"{name}_difference") for name in more]:
        texts.append(("?" if cell[number] is None else f"{cell[number]:.2f}")
                     + ("" if cell[diff] is None else f" {cell[diff]:+.2f}"))
    return " / ".join(texts)


def where_read(cells, number, source):
    """Lines saying where each cell's reference number (the cells' key `number`) was read,
    then, grouped by reason, the cells without one (the key `source` says where or why)."""
    lines = [f"- {c['row']} / {c['column']}: {c[source]}" for c in cells if c[number] is not None]
    unread = {}
    for c in cells:
        if c[number] is None:
            unread.setdefault(c[source], []).append(f"{c['row']} / {c['column']}")
    return lines + [f"- {', '.join(names)}: {why}" for why, names in unread.items()]


def paper_markdown(recipe, cells, parts, show_parts):
    by = {(c["row"], c["column"]): c for c in cells}
    more = [name for name, _ in recipe.more_refs]
    then = "".join(f" / the {name} reference number and our difference" for name in more)
    lines = [f"# {recipe.name}: {recipe.paper}, {recipe.table}", "",
             "Each cell: ours, mean ± sample std over seeds (their number) / the reference number "
             f"(? where no source read gives one) and our difference{then}. A cell is the part with the best "
             f"{chooser_text(parts)} ({', '.join(sorted({p['kind'][6:] for p in parts}))} where several).", "",
             md_row([recipe.row_title or "row", *recipe.columns]),
             md_row(["---"] * (len(recipe.columns) + 1))]
    lines += [md_row([row] + [paper_cell_text(by[(row, col)], more) for col in recipe.columns])
              for row in recipe.rows]
    lines += ["", f"Reference numbers: {recipe.source}."]
    lines += [f"Reference numbers ({name}): {recipe.source_line(refs)}." for name, refs in recipe.more_refs]
    if recipe.notes:
        lines.append(recipe.notes)
    if recipe.sources():
        lines += ["", "Sources:"] + [f"- {s.key}: {s.cites} ({s.where})" for s in recipe.sources()]
    lines += ["", "Where each reference number was read:"] + where_read(cells, "paper", "paper_source")
    for name in more:
        lines += ["", f"Where each {name} reference number was read:"] + where_read(cells, name, f"{name}_source")
    missing = [c for c in cells if c["status"] != "ok"]
    if missing:
        lines += ["", f"{len(missing)} cell(s) missing or partial:"]
        lines += [f"- {c['row']} / {c['column']}: {c['status']}" for c in missing]
    if show_parts:
        lines += ["", "## Parts", "", md_row(["row", "column", "part", "mean ± std (seeds)", "metric"]),
                  md_row(["---"] * 5)]
        lines += [md_row([p["row"], p["column"], p["kind"][6:],
                          "missing" if p["ours_mean"] is None else f"{fmt_acc(p['ours_mean'], p['ours_std'])} ({p['n_seeds']})",
                          p["metric"]]) for p in parts]
    return "\n".join(lines) + "\n"


def write_paper(recipe, runs, out_dir, show_parts):
    """Write paper_<name>.md and .csv to out_dir; returns (markdown, cells)."""
    cells, parts = paper_table(recipe, runs)
    text = paper_markdown(recipe, cells, parts, show_parts)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, f"paper_{recipe.name}.md"), text)
    write_csv(os.path.join(out_dir, f"paper_{recipe.name}.csv"), map(writable, cells + (parts if show_parts else [])),
              paper_columns(recipe))
    return text, cells


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
    from papers.smoke import smoke_results

    runs = find_runs(results_dir)
    if not runs:
        raise UserError(f"{results_dir} holds no readable run folder (a folder with a "
                        "config.json): pass the --result_dir of your runs")
    smoke_results(runs)  # smoke runs and real runs are never mixed
    return runs


def write_outputs(results_dir, runs, out_dir, curves=(), confusion=(), match="exact"):
    """Write the tables and plots of `runs`; returns (rows, paired, unfinished, plot paths).
    `match`: how the curves and confusion patterns name groups (exact or substring)."""
    curves, confusion = ([Pattern(p, match == "substring") for p in patterns] for patterns in (curves, confusion))
    groups = group_runs(runs)
    rows, unfinished = group_rows(groups)
    paired = paired_rows(rows, groups)
    per_class = per_class_rows(rows, groups)
    os.makedirs(out_dir, exist_ok=True)
    write_table(os.path.join(out_dir, "summary.csv"), rows, FIXED_COLUMNS, CSV_TAIL)
    write_table(os.path.join(out_dir, "paired.csv"), paired, PAIRED_HEAD, PAIRED_TAIL)
    write_csv(os.path.join(out_dir, "per_class.csv"), map(writable, per_class), PER_CLASS_COLUMNS)
    write_csv(os.path.join(out_dir, "unfinished.csv"), map(writable, unfinished), UNFINISHED_COLUMNS)
    plots = plot_knobs(out_dir, rows, groups)
    for pattern in curves:
        name = slug(pattern)
        path = plot_curves(os.path.join(out_dir, f"curves_{name}.png"), pattern, rows, groups)
        if path is None:
            warn(f"--curves {pattern!r} matches no finished group with a readable metrics.csv")
        # Runs made before fit_clean/mem_noisy existed lack them: no plot, no warning.
        plots += [path, plot_mem_curves(os.path.join(out_dir, f"mem_curves_{name}.png"), pattern, rows, groups)]
    for pattern in confusion:
        plots += confusion_plots(out_dir, pattern, runs, rows, groups)
    plots = [p for p in plots if p]
    write_markdown(os.path.join(out_dir, "summary.md"), results_dir, rows, paired, per_class,
                   unfinished, plots)
    return rows, paired, unfinished, plots


def summarize(results_dir, out_dir, curves=(), confusion=(), match="exact"):
    """Write the tables and plots; returns (rows, unfinished, plot paths)."""
    rows, _, unfinished, plots = write_outputs(results_dir, find_runs(results_dir), out_dir, curves, confusion,
                                               match)
    return rows, unfinished, plots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", help="folder searched (recursively) for run folders")
    p.add_argument("--out", help="folder for summary.csv, summary.md and the plots (with --paper: for "
                                 "paper_NAME.md and .csv; default RESULTS_DIR/paper)")
    p.add_argument("--paper", metavar="NAME",
                   help="lay the runs out as a paper's table (a recipe of papers/: sweep.py paper --list), "
                        "with the reference numbers beside ours, each with its source")
    p.add_argument("--parts", action="store_true",
                   help="with --paper: also every part of a cell (GLS: direct and after warm-up)")
    p.add_argument("--curves", action="append", default=[], metavar="PATTERN",
                   help="plot test accuracy (and fit_clean, mem_noisy) per epoch of the groups "
                        "whose id or label is PATTERN (summary.csv's group and label columns; "
                        "--match substring: contains it); repeatable")
    p.add_argument("--confusion", action="append", default=[], metavar="PATTERN",
                   help="draw the test confusion matrix (best and last epoch, rows normalised, "
                        "mean over seeds) next to the noise's transition matrix, of the run "
                        "folder PATTERN (a path or a folder name) or of each group whose id or "
                        "label is PATTERN (--match substring: contains it); repeatable")
    p.add_argument("--match", choices=["exact", "substring"], default="exact",
                   help="how --curves and --confusion patterns name groups: the whole id or label, "
                        "or any part of it")
    p.add_argument("--status", action="store_true",
                   help="only list the runs by state (running, interrupted, failed, diverged, stale, "
                        "finished) with their folders; reads, writes nothing")
    args = p.parse_args(argv)
    if args.status:
        extra = [f for f, on in (("--out", args.out), ("--paper", args.paper), ("--parts", args.parts),
                                 ("--curves", args.curves), ("--confusion", args.confusion)) if on]
        if extra:
            p.error(f"--status only lists the runs: drop {' '.join(extra)}")
        if not os.path.isdir(args.results_dir):
            p.error(f"{args.results_dir} is not a folder: pass the --result_dir of your runs")
        from report.status import status_report
        print(printable(status_report(args.results_dir)))
        return 0
    if args.paper is not None:
        if args.curves or args.confusion:
            p.error(f"--{'curves' if args.curves else 'confusion'} draws plots of summarize.py's own tables, "
                    "not of a --paper table: run summarize.py RESULTS --out DIR with it for the plots")
        return main_paper(args)
    if args.out is None:
        args.out = os.path.join(args.results_dir, "summary")
    if args.parts:
        p.error("--parts goes with --paper NAME")
    try:
        check_out_dir(args.out)
        runs = load_results(args.results_dir)
        rows, paired, unfinished, plots = write_outputs(args.results_dir, runs, args.out,
                                                        args.curves, args.confusion, args.match)
    except UserError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up while writing
        print(f"error: cannot write to --out {printable(args.out)} ({exc.strerror or exc}): free "
              "space or pass another folder", file=sys.stderr)
        return 2
    print(printable(markdown_table(rows, paired) if rows else "no finished runs"))
    if unfinished:
        print(printable(f"{len(unfinished)} run(s) not finished, not averaged: see {args.out}/unfinished.csv"))
        for u in unfinished:
            print(printable(f"  {u['status']:>12}  {u['run_dir']}"))
    names = ["summary.csv", "summary.md", "paired.csv", "per_class.csv", "unfinished.csv"]
    for name in names + [os.path.basename(p) for p in plots]:
        print(printable(f"wrote {os.path.join(args.out, name)}"))
    return 0


def main_paper(args):
    """summarize.py RESULTS --paper NAME: the paper's table, printed and written."""
    from papers import get_recipe
    from papers.smoke import smoke_recipe, smoke_results

    out = args.out if args.out is not None else os.path.join(args.results_dir, "paper")
    try:
        recipe = get_recipe(args.paper)
        check_out_dir(out)
        runs = load_results(args.results_dir)
        if smoke_results(runs):
            recipe = smoke_recipe(recipe)  # its title says so
        text, cells = write_paper(recipe, runs, out, args.parts)
    except UserError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write to {printable(out)} ({exc.strerror or exc}): free space or pass "
              "another --out", file=sys.stderr)
        return 2
    print(printable(text))
    for ext in ("md", "csv"):
        print(printable(f"wrote {os.path.join(out, f'paper_{recipe.name}.{ext}')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
