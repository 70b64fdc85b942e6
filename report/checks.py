"""Damaged input: what the report accepts of a run's config.json and summary.json.

A value of the wrong kind (a hand edit, a truncated file) is dropped with a warning naming
the run folder, so that a mean never turns NaN and a table never crashes; what makes a run
unusable is returned as a sentence (the caller skips the run with it).
"""
import math

import numpy as np

from core.files import warn
from utils.schema import (COLLAPSED, KEPT_STALE, METHOD_RECORD, METHOD_RECORD_OPTIONAL, NUMBERS, PER_CLASS_COUNTS,
                          PER_CLASS_EPOCHS, PER_CLASS_RATES, STRINGS)

from .values import canonical, is_count, is_finite, is_number, is_scalar, safe_text


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
    for key in STRINGS:
        if key in summary and not isinstance(summary[key], str):
            warn(f"{folder}: summary.json {key} is {summary[key]!r}, not a string; ignored")
            del summary[key]
        elif key in summary:
            summary[key] = safe_text(summary[key])
    for key in NUMBERS:
        value = summary.get(key)
        if value is not None and not is_finite(value):
            del summary[key]
            warn(f"{folder}: summary.json {key} is {value!r}, not a finite number; ignored, so "
                 f"its group reports no mean of {key}")
    for key, kind, what in ((COLLAPSED, bool, "true/false"), (KEPT_STALE, list, "a list")):
        if key in summary and not isinstance(summary[key], kind):
            warn(f"{folder}: summary.json {key} is {summary[key]!r}, not {what}; ignored")
            del summary[key]
    return summary


def read_method_record(folder, summary):
    """What the run recorded about its method (utils/schema.py): {method_name, label, knobs
    (its tunable flags), knob_baselines, is_ce, comparable, method_title}, numbers in
    canonical form; None for a run made before runs recorded
    it, or (with a warning) one whose record is damaged."""
    if not any(k in summary for k in METHOD_RECORD + METHOD_RECORD_OPTIONAL):
        return None
    problem = record_problem(summary)
    if problem:
        warn(f"{folder}: summary.json {problem}; the run is averaged, but gets no knob "
             "columns and is not paired (rerun it to rewrite its summary.json)")
        return None
    knobs = {safe_text(k): canonical(v) for k, v in summary["knobs"].items()}
    return {"method_name": safe_text(summary["method_name"]), "label": safe_text(summary["label"]),
            "knobs": knobs, "knob_baselines": {k: canonical(summary["knob_baselines"][k]) for k in knobs},
            "is_ce": summary["is_ce"], "comparable": canonical(summary.get("comparable")),
            "method_title": (safe_text(summary["method_title"]) if isinstance(summary.get("method_title"), str)
                             else None)}


def record_problem(summary):
    """What is wrong with a summary's record of its method, or None."""
    missing = [k for k in METHOD_RECORD if k not in summary]
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
        checked = checked_per_class_entry(entry)
        if isinstance(checked, str):
            warn(f"{folder}: summary.json per_class.{which} {checked}; left out of the per-class tables")
            continue
        out[which] = checked
    return out or None


def checked_per_class_entry(entry):
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


def square_matrix(value):
    """A JSON list of K lists of K finite numbers as an array, else None."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(r, list) and len(r) == len(value) and all(is_finite(x) for x in r) for r in value):
        return None
    return np.array(value, dtype=float)
