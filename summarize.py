"""Tables and plots of many runs: summarize.py RESULTS_DIR --out OUT_DIR.

Finds every run folder under RESULTS_DIR (a folder holding config.json and
summary.json: the results contract, utils/results.py), groups the runs that differ
only by --seed, and writes to OUT_DIR:

    summary.csv, summary.md   per group: method, data set, noise, smooth rate or sigma,
                              seeds, mean and sample std (ddof=1) over seeds of the last
                              and best test accuracy (and the momentum model's, for
                              SLN-MO), mean actual noise rate
    unfinished.csv            every run that is not finished (running, interrupted,
                              diverged, failed, no summary): listed, never averaged
    acc_vs_smooth_rate.png    GLS runs: accuracy vs smooth rate, one line per noise
                              setting, error bars = sample std over seeds
    acc_vs_sigma.png          SLN runs: the same against sigma (dashed: momentum model)
    curves_<PATTERN>.png      with --curves PATTERN: test accuracy per epoch of every
                              group whose id contains PATTERN (mean over seeds, band = std)

    python summarize.py results --out results/summary --curves main_GLS_load
"""
import argparse
import csv
import hashlib
import json
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from utils.results import result_settings, write_csv  # noqa: E402

# Accuracy columns of summary.json that are averaged (percent); the _ema ones exist for
# runs with a momentum model (SLN-MO).
ACCURACIES = ("last_test_acc", "best_test_acc", "last_test_acc_ema", "best_test_acc_ema")
# Config keys shown in their own columns; other differing settings go to "other".
SHOWN = ("dataset", "noise_type", "noise_rate", "model", "n_epoch", "smooth_rate", "sigma", "seed")
SCRIPT_NAMES = {"main_warmup": "CE warm-up", "main_GLS_direct_train": "GLS direct",
                "main_GLS_load": "GLS after warm-up", "noise_cifar_train": "SLN"}


# ---------------------------------------------------------------- finding and grouping runs

def find_runs(results_dir):
    """Every folder below results_dir with a config.json, as dicts (summary None if missing)."""
    runs = []
    for folder, dirs, files in os.walk(results_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "config.json" not in files:
            continue
        run = {"folder": folder, "config": read_json(os.path.join(folder, "config.json")),
               "summary": None}
        if "summary.json" in files:
            run["summary"] = read_json(os.path.join(folder, "summary.json"))
        if run["config"] is not None:
            runs.append(run)
    return runs


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # a half-written or damaged file: the run counts as unfinished


def script_of(run):
    return (run["summary"] or {}).get("script") or os.path.basename(os.path.dirname(run["folder"]))


def method_of(run):
    return (run["summary"] or {}).get("method", "?")


def group_config(config):
    """The config without the seed and without the settings that cannot change a result."""
    return {k: v for k, v in result_settings(config).items() if k != "seed"}


def group_runs(runs):
    """{group id: [runs]} for runs whose script and config agree except for the seed.

    The method tag is a function of the config, so it needs no place in the key (and a
    run that died before writing summary.json still joins its group).
    """
    groups = {}
    for run in runs:
        key = json.dumps([script_of(run), group_config(run["config"])], sort_keys=True)
        groups.setdefault(key, []).append(run)
    named = {}
    for key, members in groups.items():
        members.sort(key=lambda r: (r["summary"] is None, r["config"].get("seed", 0)))
        c = members[0]["config"]
        digest = hashlib.sha1(key.encode()).hexdigest()[:6]
        gid = (f"{script_of(members[0])}/{c.get('dataset')}-{c.get('noise_type')}"
               f"{fmt_num(c.get('noise_rate'))}-{c.get('model')}-{method_of(members[0])}-{digest}")
        named[gid] = sorted(members, key=lambda r: r["config"].get("seed", 0))
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
            values = [r["summary"][name] for r in done if r["summary"].get(name) is not None]
            # A column only some seeds have would mix populations: report it only when all do.
            mean, std = mean_std(values) if len(values) == len(done) else (None, None)
            row[f"{name}_mean"], row[f"{name}_std"] = mean, std
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
    note = s.get("error") or (f"diverged at epoch {s['diverged_epoch']}" if "diverged_epoch" in s else "")
    return {"group": gid, "run_dir": run["folder"],
            "status": s.get("status", "unknown") if run["summary"] is not None else "no summary.json",
            "epochs_completed": s.get("epochs_completed", 0), "n_epoch": run["config"].get("n_epoch"),
            "last_test_acc": s.get("last_test_acc"), "note": note}


# ---------------------------------------------------------------- tables

CSV_COLUMNS = (["group", "script", "method", "dataset", "noise_type", "noise_rate", "smooth_rate",
                "sigma", "model", "n_epoch", "other", "n_seeds", "seeds", "n_not_averaged"]
               + [f"{a}_{s}" for a in ACCURACIES for s in ("mean", "std")]
               + ["actual_noise_rate_mean"])
UNFINISHED_COLUMNS = ["run_dir", "status", "epochs_completed", "n_epoch", "last_test_acc", "note", "group"]


def fmt_num(x):
    return "" if x is None else f"{x:g}"


def fmt_value(x):
    return " ".join(map(fmt_value, x)) if isinstance(x, list) else str(x)


def fmt_acc(mean, std):
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def markdown_table(rows):
    """The groups as a Markdown table (accuracies in %, mean ± sample std over seeds)."""
    ema = any(r["last_test_acc_ema_mean"] is not None for r in rows)
    head = ["method", "data", "noise", "r / sigma", "epochs", "seeds", "last acc", "best acc"]
    head += ["last acc (MO)", "best acc (MO)"] if ema else []
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
        noise = r["actual_noise_rate_mean"]
        cells += ["" if noise is None else f"{noise:.3f}", r["other"], f"`{r['group']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path, results_dir, rows, unfinished, plots):
    parts = [f"# Summary of {results_dir}", "",
             "Test accuracy in %: mean ± sample standard deviation (ddof=1) over the seeds of "
             "each group; only finished runs are averaged. MO: the momentum (EMA) model. "
             "Actual noise: fraction of flipped training labels.", "",
             markdown_table(rows) if rows else "No finished runs.", ""]
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
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_curve(run):
    """{column: [values from epoch 0]} of a run's metrics.csv (test_acc, test_acc_ema).

    Epoch 0 is summary.json's initial_test_acc, the accuracy before the first step (for
    a run started from the warm-up: the warm-up's); None where it was not recorded.
    """
    path = os.path.join(run["folder"], "metrics.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    curves = {col: [None] + [float(r[col]) for r in records]
              for col in ("test_acc", "test_acc_ema") if records and col in records[0]}
    if "test_acc" in curves:
        curves["test_acc"][0] = run["summary"].get("initial_test_acc")
    return curves


def plot_curves(path, pattern, groups):
    """Test accuracy per epoch of the groups whose id contains `pattern`: mean over the
    finished seeds, band = sample std; dashed: the momentum model."""
    chosen = [gid for gid in sorted(groups) if pattern in gid]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for i, gid in enumerate(chosen):
        done = [r for r in groups[gid] if finished(r)]
        curves = [read_curve(r) for r in done]
        for col, style in (("test_acc", "-"), ("test_acc_ema", "--")):
            series = [c[col] for c in curves if col in c]
            if not series:
                continue
            n = min(map(len, series))
            first = 0 if all(s[0] is not None for s in series) else 1
            per_epoch = [[s[e] for s in series] for e in range(first, n)]
            means = [statistics.fmean(v) for v in per_epoch]
            epochs = range(first, n)
            label = f"{gid} ({len(series)} seed{'s' * (len(series) > 1)})" + (" MO" if col.endswith("ema") else "")
            ax.plot(epochs, means, style, color=f"C{i % 10}", label=label)
            if len(series) > 1:
                stds = [statistics.stdev(v) for v in per_epoch]
                ax.fill_between(epochs, [m - s for m, s in zip(means, stds)],
                                [m + s for m, s in zip(means, stds)], color=f"C{i % 10}", alpha=0.15)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: before training)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"test accuracy per epoch: groups matching '{pattern}'")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main

def summarize(results_dir, out_dir, curves=()):
    """Write the tables and plots; returns (rows, unfinished, plot paths)."""
    groups = group_runs(find_runs(results_dir))
    rows, unfinished = group_rows(groups)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "summary.csv"), rows, CSV_COLUMNS)
    write_csv(os.path.join(out_dir, "unfinished.csv"), unfinished, UNFINISHED_COLUMNS)
    plots = [plot_against(os.path.join(out_dir, "acc_vs_smooth_rate.png"), rows, groups,
                          "smooth_rate", "smooth rate r (symlog axis)", symlog=True),
             plot_against(os.path.join(out_dir, "acc_vs_sigma.png"), rows, groups, "sigma", "sigma")]
    for pattern in curves:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", pattern).strip("_") or "all"
        path = plot_curves(os.path.join(out_dir, f"curves_{slug}.png"), pattern, groups)
        if path is None:
            print(f"warning: --curves {pattern!r} matches no finished group", file=sys.stderr)
        plots.append(path)
    plots = [p for p in plots if p]
    write_markdown(os.path.join(out_dir, "summary.md"), results_dir, rows, unfinished, plots)
    return rows, unfinished, plots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", help="folder searched (recursively) for run folders")
    p.add_argument("--out", required=True, help="folder for summary.csv, summary.md and the plots")
    p.add_argument("--curves", action="append", default=[], metavar="PATTERN",
                   help="plot test accuracy per epoch of the groups whose id contains PATTERN "
                        "(ids are in summary.csv's group column); repeatable")
    args = p.parse_args(argv)
    if not os.path.isdir(args.results_dir):
        print(f"error: {args.results_dir} is not a folder", file=sys.stderr)
        return 2
    rows, unfinished, plots = summarize(args.results_dir, args.out, args.curves)
    print(markdown_table(rows) if rows else "no finished runs")
    if unfinished:
        print(f"{len(unfinished)} run(s) not finished, not averaged: see {args.out}/unfinished.csv")
        for u in unfinished:
            print(f"  {u['status']:>12}  {u['run_dir']}")
    for name in ["summary.csv", "summary.md", "unfinished.csv"] + [os.path.basename(p) for p in plots]:
        print(f"wrote {os.path.join(args.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
