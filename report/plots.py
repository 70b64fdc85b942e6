"""The figures: accuracy against each knob (a method's tunable flag), curves per epoch and
confusion matrices. The only module that imports matplotlib; the report imports it only
when it draws a figure."""
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from core.files import atomic_savefig, warn  # noqa: E402
from utils.schema import PER_CLASS_EPOCHS  # noqa: E402

from .figure_data import (ACC_CURVES, MEM_CURVES, confusion_targets, group_curve, knob_figures,  # noqa: E402
                          legend_names, lines_over, matching_rows, method_title, slug)
from .per_class import mean_confusion, mean_transition  # noqa: E402
from .values import fmt_num, printable  # noqa: E402

# A knob axis is logarithmic beyond [-1, 1] when its values reach past this (GLS's smooth
# rates run from 0.8 to -8); knobs within [-2, 2] stay linear.
SYMLOG_BEYOND = 2.0


def draw_figures(out_dir, runs, rows, groups, curves, confusion):
    """Every figure of a report: accuracy against each knob, and the curves and confusion
    matrices of the --curves and --confusion patterns (figure_data.Pattern); the paths
    written."""
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
    return [p for p in plots if p]


def plot_knobs(out_dir, rows, groups):
    """acc_vs_<knob>_<method>.png for every (method, knob); the paths written."""
    paths = []
    for (method, knob), members in sorted(knob_figures(rows).items()):
        path = os.path.join(out_dir, f"acc_vs_{slug(knob)}_{slug(method)}.png")
        paths.append(plot_against(path, members, groups, knob, method))
    return paths


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
