"""Sweeps of the training scripts (sweep.py is the entry point, docs/SWEEPS.md the manual).

    cli.py        the sweep's own options and their checks
    grid.py       the flags of the runs: axes, tokens, which script each flag goes to
    plan.py       the runs of a command line, each with its folder (utils.plan), and the
                  checks before anything starts
    paper.py      `sweep.py paper NAME`: a paper table's recipe (papers/) as runs
    stale.py      runs whose folder holds a result made by other code or data
    confirm.py    a sweep's plan kept from its last start: running a finished sweep again
                  confirms its runs from their folders without planning it
    launch/       running the runs: local.py on this machine's slots, slurm.py as job
                  arrays; each has one launch(runs, opts, log_dir, name) entry

The sweep plans every run through the training layer's own planning function
(utils.plan.plan_script), so it never runs a script to read what it prints.
"""
from errors import UserError


class SweepError(UserError):
    """Bad sweep options: reported as `error: ...`, exit status 2, nothing started."""
