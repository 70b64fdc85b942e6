"""summarize.py's command line (its usage is summarize.py's docstring): the tables and plots
of a results folder, a paper's table (--paper) or the runs by state (--status)."""
import argparse
import os
import sys

from core.files import check_output_folder, write_csv
from errors import UserError

from .figure_data import Pattern, knob_figures
from .groups import group_rows, group_runs
from .pairing import paired_rows
from .per_class import per_class_rows
from .runs import find_runs, load_results
from .tables import (CSV_TAIL, FIXED_COLUMNS, PAIRED_HEAD, PAIRED_TAIL, PER_CLASS_COLUMNS, UNFINISHED_COLUMNS,
                     markdown_table, writable, write_markdown, write_table)
from .values import printable


def check_out_folder(out):
    """Refuse an --out that cannot take the tables, before anything is written: what every
    tool refuses of a folder it writes in (core.files.check_output_folder), and a run folder."""
    fix = "pass a folder (it is created if missing)" if os.path.isfile(out) else "pass another folder"
    check_output_folder("--out", out, fix=fix)
    if os.path.exists(os.path.join(out, "config.json")):
        raise UserError(f"--out {out} is a run folder (it holds config.json): pass another folder")


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
    plots = []
    if curves or confusion or knob_figures(rows):  # matplotlib is imported only to draw
        from .plots import draw_figures

        plots = draw_figures(out_dir, runs, rows, groups, curves, confusion)
    write_markdown(os.path.join(out_dir, "summary.md"), results_dir, rows, paired, per_class,
                   unfinished, plots)
    return rows, paired, unfinished, plots


def summarize(results_dir, out_dir, curves=(), confusion=(), match="exact"):
    """Write the tables and plots; returns (rows, unfinished, plot paths)."""
    rows, _, unfinished, plots = write_outputs(results_dir, find_runs(results_dir), out_dir, curves, confusion,
                                               match)
    return rows, unfinished, plots


def main(argv=None, usage=None):
    """summarize.py's command line; `usage`: its --help text (summarize.py's docstring)."""
    p = argparse.ArgumentParser(description=usage, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        from .status import status_report

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
        check_out_folder(args.out)
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

    from .paper import write_paper

    out = args.out if args.out is not None else os.path.join(args.results_dir, "paper")
    try:
        recipe = get_recipe(args.paper)
        check_out_folder(out)
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
