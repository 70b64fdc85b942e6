"""Each group against its baselines, seed by seed: the knob baseline (the same script and
settings with every knob, a method's tunable flag, at the value that makes the method its
baseline, e.g. smooth rate 0) and the CE baseline (the plain cross-entropy run with the
same settings it records as shared with CE, `comparable`, whichever script made it)."""
import json

from utils.schema import ACCURACIES

from .runs import finished_by_seed, method_of
from .stats import t_interval, values_of
from .values import fmt_knob, same, short_data_version, short_hash


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
        other = ", ".join(sorted(f"code {short_hash(g.code)}, data {short_data_version(g.data)}" for g in candidates))
        return None, (f"baseline runs ({wanted}) exist only with other code or data ({other}): "
                      "rerun them with this code")
    return None, f"no baseline runs ({wanted}, every other setting equal)"


def ce_baseline(group, groups):
    """(CE group or None, note): a group whose runs train as plain cross-entropy (is_ce) with
    the settings it shares with CE (`comparable`) equal to this one's and the same data,
    whichever script made it; None for a group that is itself CE.

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
