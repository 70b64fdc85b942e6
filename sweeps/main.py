"""sweep.py's main: plan, check, then run on this machine or submit to SLURM. A sweep whose
runs have all ended is confirmed from its kept plan without planning it (sweeps.confirm)."""
import os
import signal
import sys

from errors import UserError

from . import SweepError
from .cli import parse
from .confirm import confirmed, keep
from .launch import local, slurm
from .paper import paper_report, recipe_listing
from .plan import prepare
from .stale import stale_report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_task"]:
        return slurm.run_task(argv[1:])
    try:
        if argv[:1] == ["paper"] and parse(argv)[1].list:
            extra = " ".join(w for w in argv[1:] if w != "--list")
            if extra:
                raise SweepError(f"--list lists the recipes and runs nothing, so {extra} would do nothing: "
                                 "drop it (sweep.py paper NAME --dry-run shows a recipe's runs)")
            print(recipe_listing())
            return 0
        # Ctrl-C while planning ends the sweep, even where a library's import swallows the
        # KeyboardInterrupt (a bare except): the handler also records it.
        interrupted = []

        def on_sigint(signum, frame):
            interrupted.append(signum)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            found = confirmed(argv)  # every run has ended, as a kept plan says: no planning
            if found:
                opts, runs, log_dir, name, report = found
            else:
                opts, runs, log_dir, name = prepare(argv)
                report = paper_report(opts) if getattr(opts, "paper", None) else None
            if interrupted:
                raise KeyboardInterrupt
            if not found:
                keep(argv, opts, runs, log_dir, name, report)
        except KeyboardInterrupt:
            print("interrupted before any run started; nothing was written", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGINT, previous)
        if report:
            print(report, flush=True)
        if opts.dry_run and not opts.slurm:
            from preflight import run_states
            local.print_local_plan(runs, run_states(runs, [run for run, _ in opts.stale]))
            if opts.stale and not (opts.keep_stale or opts.overwrite_stale):
                print(f"a start would stop here: {stale_report(opts.stale, len(runs))}")
        if opts.dry_run and opts.missing:
            print(f"a start would stop here: {opts.missing}", flush=True)
        if opts.dry_run and not opts.slurm:
            print("dry run: nothing started, nothing written")
            return 0
        os.makedirs(log_dir, exist_ok=True)
        code = (slurm if opts.slurm else local).launch(runs, opts, log_dir, name)
        if getattr(opts, "smoke", None):
            if opts.slurm:
                print(f"when the arrays have ended: python3 summarize.py {opts.smoke} --paper {opts.recipe}")
            else:
                import summarize
                code = summarize.main([opts.smoke, "--paper", opts.recipe]) or code
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
