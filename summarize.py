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

What a run is comes from its own summary.json (the keys of utils/schema.py): method_name,
label, knobs {flag: value} (a knob: a method's tunable flag whose baseline value makes it
another method, e.g. GLS at smooth rate 0 is CE), knob_baselines {flag: value at which the
method is its baseline}, is_ce and comparable (the settings it shares with the CE run it is
paired with). Runs made before runs recorded these are listed and averaged, without knob
columns or pairing; the table says so. Runs whose code (made_by's source hash) or data
(fingerprint, noisy labels) differ are never averaged into one group.

Damaged input is skipped with a warning naming the folder (a config.json that is not a
JSON object: the run; a damaged summary.json: the run counts as unfinished; a malformed
metrics.csv: the run is left out of the curves; a folder reached a second time through a
symbolic link: skipped); bad arguments end with "error: ..." and exit status 2. Every
output is written atomically: a full disk leaves the previous file, never half of one.

    python summarize.py results --out results/summary --curves NLS --confusion "NLS r=-2"
    python summarize.py results --paper gls-cifar10 [--parts]    a paper's table (docs/PAPERS.md)
"""
import sys

from core.files import atomic_savefig
from report.cli import main as report_main
from report.cli import summarize
from report.figure_data import group_curve, knob_figures, lines_over
from report.groups import NO_RECORD, group_rows, group_runs
from report.paper import paper_markdown, paper_table
from report.runs import find_runs
from report.stats import t_interval
from utils.schema import ACCURACIES

# The report's names that code importing summarize uses (demo.py, sweep.py, the tests).
__all__ = ["ACCURACIES", "NO_RECORD", "atomic_savefig", "find_runs", "group_curve", "group_rows", "group_runs",
           "knob_figures", "lines_over", "main", "paper_markdown", "paper_table", "summarize", "t_interval"]


def main(argv=None):
    """summarize.py's command line (report/cli.py), with this docstring as its --help."""
    return report_main(argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
