"""What each figure shows, without drawing it (plots.py draws): the lines of a knob figure,
a group's mean curve over seeds, and the groups or run folder a --curves or --confusion
pattern names. A knob is a method's tunable flag (docs/ARCHITECTURE.md)."""
import json
import math
import os
import re

import numpy as np

from .groups import knob_order, varying_keys
from .runs import metrics_of
from .values import fmt_num, fmt_value, is_number, printable, short_data_version, short_hash

# Per-epoch plots of --curves: (metrics.csv column, line style, legend tag).
ACC_CURVES = (("test_acc", "-", ""), ("test_acc_ema", "--", " MO"))
MEM_CURVES = (("fit_clean", "-", " fit_clean"), ("mem_noisy", "--", " mem_noisy"))
# Epoch 0 of a curve, where summary.json recorded it (before the first step).
INITIAL = {"test_acc": "initial_test_acc"}


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
            labels = {k: f"{v}, {part} {(short_hash if part == 'code' else short_data_version)(configs[k][index])}"
                      for k, v in labels.items()}
    return [(labels[k], lines[k]) for k in sorted(lines, key=labels.get)]


def method_title(rows, groups, method):
    """The method's readable name (summary.json's method_title), else its --method name."""
    record = groups[rows[0]["group"]].record or {}
    return record.get("method_title") or method


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
