"""summary.csv, paired.csv, per_class.csv, unfinished.csv and summary.md: the columns and
the Markdown of the rows that groups.py, pairing.py and per_class.py make."""
import os

from core.files import atomic_write_text, write_csv
from utils.schema import ACCURACIES, LAST_VALUES

from .groups import NO_RECORD
from .per_class import per_class_markdown
from .values import fmt_acc, fmt_knob, fmt_num, md_row, safe_text

# The columns of summary.csv (FIXED_COLUMNS, a column per knob, CSV_TAIL), of paired.csv
# (PAIRED_HEAD, a column per knob, PAIRED_TAIL), of per_class.csv and of unfinished.csv.
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
    """The column of a knob in the tables: its name, unless the tables have a column of that name."""
    return f"knob_{name}" if name in TAKEN else name


def knob_columns(rows):
    return [knob_column(k) for k in sorted({k for r in rows for k in r["knobs"]})]


def writable(row):
    """The row with its strings writable as UTF-8 (safe_text)."""
    return {k: safe_text(v) if isinstance(v, str) else v for k, v in row.items()}


def with_knob_cells(row):
    """The row with a cell per knob (knob_column names), its strings writable."""
    return writable({**row, **{knob_column(k): v for k, v in row["knobs"].items()}})


def write_table(path, rows, head, tail):
    write_csv(path, [with_knob_cells(r) for r in rows], head + knob_columns(rows) + tail)


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
    versions = [f"code {row['code'] or 'unknown'}" if row["code_split"] else "",
             f"data {row['data'] or 'unknown'}" if row["data_split"] else ""]
    return ", ".join(filter(None, versions))


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


def write_markdown(path, results_dir, rows, paired, per_class, unfinished, plots):
    """summary.md: the groups' table and its notes, the paired differences, the per-class
    tables, the runs not averaged and the plots written."""
    lines = [f"# Summary of {results_dir}", "",
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
        lines += [note, ""]
    lines += ["## Paired differences", ""] + paired_markdown(paired) + [""]
    if per_class:
        lines += ["## Per class", "", "Test accuracy per true class, and on the training set "
                  "per true class fit_clean (predicted = label, among the correct labels) and "
                  "mem_noisy (predicted = noisy label, among the wrong labels), in %, mean over "
                  "the seeds that recorded them (per_class.csv).", ""]
        lines += per_class_markdown(per_class)
    lines += ["## Runs not averaged", ""]
    if unfinished:
        lines += ["| run | status | epochs | last acc | note |", "|---|---|---|---|---|"]
        lines += [md_row([f"`{u['run_dir']}`", u["status"], f"{u['epochs_completed']}/{u['n_epoch']}",
                          "" if u["last_test_acc"] is None else format(u["last_test_acc"], ".2f"), u["note"]])
                  for u in unfinished]
    else:
        lines.append("None: every run found is finished.")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    atomic_write_text(path, safe_text("\n".join(lines) + "\n"))
