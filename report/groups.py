"""Grouping runs: runs that differ only by their seed, made by one code version on one
data version, are one group, and each group with finished runs is one row of summary.csv.
"""
import hashlib
import json
from dataclasses import dataclass

from core.files import warn
from utils.schema import ACCURACIES, COLLAPSED, KEPT_STALE, LAST_VALUES

from .runs import finished, method_of, script_of
from .stats import mean_std, values_of
from .values import canonical, fmt_num, fmt_value, is_number, safe_text, short_data_version, short_hash

# Settings that have columns of their own in the tables (besides the method's knobs: its
# tunable flags, see docs/ARCHITECTURE.md); other differing settings go to "other".
# `method` is train.py's --method, which the label shows.
SETTING_COLUMNS = ("dataset", "noise_type", "noise_rate", "model", "n_epoch", "seed", "method")


@dataclass
class Group:
    """Runs that differ only by the seed, made by one code version on one data version.

    config: the settings (canonical, without seed and bookkeeping); record: the method's
    record (checks.read_method_record) of its runs, None for runs made before runs recorded it."""
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


def group_config(config):
    """The config without the seed and without the settings that cannot change a result."""
    from utils.results import result_settings  # imported here: utils.results imports torch

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
        gid = safe_text(f"{script_of(first)}/{c.get('dataset')}-{c.get('noise_type')}"
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
           "code": short_hash(group.code), "data": short_data_version(group.data),
           "n_collapsed": sum(r["summary"].get(COLLAPSED) is True for r in done),
           "n_kept_stale": sum(bool(r["summary"].get(KEPT_STALE)) for r in done),
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


def knob_order(knobs):
    """Sorts knob values numerically (strings after numbers)."""
    return tuple((k, (0, v, "") if is_number(v) else (1, 0, str(v))) for k, v in sorted(knobs.items()))


def add_other_settings(rows, groups):
    """row['other']: the settings, beyond SETTING_COLUMNS and the knobs, in which this
    group differs from other groups of the same script and method (e.g. 'lr=0.01')."""
    for row in rows:
        alike = [r for r in rows if (r["script"], r["method_name"]) == (row["script"], row["method_name"])]
        configs = [groups[r["group"]].config for r in alike]
        hidden = set(SETTING_COLUMNS) | {k for r in alike for k in r["knobs"]}
        row["other"] = fmt_settings(groups[row["group"]].config, varying_keys(configs, hidden))


def varying_keys(configs, hidden=()):
    """The keys, but `hidden`, whose values are not the same in all `configs` (sorted)."""
    keys = sorted({k for c in configs for k in c} - set(hidden))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def fmt_settings(config, keys):
    return " ".join(f"{k}={fmt_value(config.get(k))}" for k in keys)


def unfinished_row(gid, run):
    """The row of unfinished.csv of a run that is not finished: its status and why."""
    s = run["summary"] or {}
    note = (run["problem"] or s.get("error")
            or (f"diverged at epoch {s['diverged_epoch']}" if "diverged_epoch" in s else ""))
    status = ("damaged summary.json" if run["problem"]
              else "no summary.json" if run["summary"] is None else s.get("status", "unknown"))
    return {"group": gid, "run_dir": run["folder"], "status": status,
            "epochs_completed": s.get("epochs_completed", 0), "n_epoch": run["config"].get("n_epoch"),
            "last_test_acc": s.get("last_test_acc"), "note": note}
