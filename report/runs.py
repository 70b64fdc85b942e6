"""Finding the run folders below a results folder and reading each into a run: the dict
{folder, config, summary, problem, record, per_class, code, data} the tables are made of.

A run folder is a folder holding config.json (the results contract, utils/results.py).
`walk_results` is the one walk of a results tree: the tables and --status both use it.
"""
import csv
import json
import math
import os
import stat

import numpy as np

from core.files import read_json_file, warn
from errors import UserError

from .checks import checked_per_class, checked_summary, config_problem, read_method_record
from .values import safe_text


def walk_results(results_dir, warn=None):
    """(folder, names of its entries) of every folder below results_dir, depth first in name
    order: the one walk of a results tree.

    Symbolic links to folders are followed, and every folder is visited once: a second path
    to one (a link cycle, or a link to a folder visited already) is skipped, and so is a
    link that leads nowhere and a folder that cannot be read. Folders whose name starts
    with "." are not searched. `warn(message)`, where given, is told of each skip.
    """
    say = warn or (lambda message: None)
    seen, stack = {}, [results_dir]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            say(f"cannot read {folder} ({exc.strerror}): skipped")
            continue
        if (st.st_dev, st.st_ino) in seen:
            say(f"skipping {folder}: it leads to {seen[st.st_dev, st.st_ino]}, which is read "
                "already (a link cycle, or a second link to one folder)")
            continue
        seen[st.st_dev, st.st_ino] = folder
        try:
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError as exc:
            say(f"cannot read {folder} ({exc.strerror}): skipped")
            continue
        yield folder, {e.name for e in entries}
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not os.path.exists(entry.path):
                say(f"skipping {entry.path}: a symbolic link to nothing ({os.readlink(entry.path)})")
            elif entry.is_dir():
                subfolders.append(entry.path)
        stack.extend(reversed(subfolders))  # depth first, in name order


def find_runs(results_dir):
    """Every readable run below results_dir (a run folder: it holds config.json), as the
    dicts of load_run, with a warning for each folder skipped (walk_results) and for each
    folder with a summary.json but no config.json."""
    runs = []
    for folder, names in walk_results(results_dir, warn):
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
    return runs


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


def load_run(folder, has_summary):
    """The run in `folder` as a dict: folder, config, summary (None if missing or damaged),
    problem (what is damaged), record (its method, or None), per_class, code and data
    (its identity, None where unrecorded); None (with a warning) when config.json is unusable."""
    config, problem = read_json_file(os.path.join(folder, "config.json"))
    problem = problem or config_problem(config)
    if problem:
        warn(f"skipping {folder}: config.json {problem}; restore it (every run writes one "
             "at its start) or move the folder out of the results")
        return None
    run = {"folder": folder, "config": config, "summary": None, "problem": None,
           "record": None, "per_class": None}
    if has_summary:
        summary, problem = read_json_file(os.path.join(folder, "summary.json"))
        if problem:
            # Not averaged, but listed: the run's numbers cannot be trusted.
            warn(f"{folder}: summary.json {problem}; the run is listed as unfinished "
                 "(rerun it with --if_exists overwrite to rewrite it)")
            run["problem"] = f"summary.json {problem}"
        else:
            run["summary"] = checked_summary(folder, summary)
            run["record"] = read_method_record(folder, summary)
            run["per_class"] = checked_per_class(folder, summary.get("per_class"))
    run["code"], run["data"] = identity_of(folder, config, run["summary"])
    return run


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
    return safe_text(sha), None if data is None else safe_text(json.dumps(data, sort_keys=True))


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


def script_of(run):
    return (run["summary"] or {}).get("script") or os.path.basename(os.path.dirname(run["folder"]))


def method_of(run):
    return (run["summary"] or {}).get("method", "?")


def finished(run):
    return (run["summary"] or {}).get("status") == "finished"


def finished_by_seed(runs):
    """{seed: run} of the finished runs (the first, where a seed has copies)."""
    by_seed = {}
    for run in runs:
        if finished(run):
            by_seed.setdefault(run["config"].get("seed", 0), run)
    return by_seed
