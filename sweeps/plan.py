"""The runs of a sweep's command line: each run's command, the run it waits for, and its
folder, planned by the training layer (utils.plan.plan_script, the scripts' own planning,
so no script is run to read what it prints); then every check made before anything
starts: paths, data files, and runs made by other code or data."""
import itertools
import os
import shlex

from core.files import check_path_length, existing_ancestor
from errors import UserError

from . import SweepError
from .cli import GLS_MODES, check_log_folder, check_options, parse
from .grid import (built_in_axes, check_axes, check_tokens, grid_axis, load_script, method_grid,
                   refusal, required_scripts, routed, stage_words, tokenize, value)

# Room for the longest name a run writes in its folder: ".tmp<pid>-open_set_source.npy".
RUN_FILE_ROOM = 64


class Run:
    """One training command; `after`: the run (its warm-up) that must finish first. Filled in
    by resolve(): `plan` (utils.plan.RunPlan of its flags), `run_dir`, `log`. By prepare():
    `stale_config` (with --overwrite_stale, the digest of the stale run's config.json) and
    `kept` (finished or diverged: its folder holds the result that its script would keep,
    made by this code and data) and `made_by` (what the run would record now, where it
    was computed). A run of a kept plan (sweeps.confirm) has no `plan`."""

    def __init__(self, opts, script, flags, after=None):
        self.script, self.after = script, after
        self.command = [opts.python, script, *flags, "--if_exists", "auto"] + \
            (["--retry_diverged"] if opts.retry_diverged else []) + (["--keep_stale"] if opts.keep_stale else [])
        self.plan = self.run_dir = self.log = self.stale_config = self.kept = self.made_by = None

    @classmethod
    def restored(cls, entry):
        """A run of a kept plan (sweeps.confirm.keep's entry); `after` is set by the caller."""
        run = cls.__new__(cls)
        run.script, run.command, run.after = entry["script"], entry["command"], None
        run.run_dir, run.log, run.made_by = entry["run_dir"], entry["log"], entry["made_by"]
        run.plan = run.stale_config = run.kept = None
        return run


def build_runs(opts, tops, axes, common, stages):
    """Every run of the product of the axes, for each top script; the runs each one requires
    come first (repeated ones are dropped by resolve)."""
    runs = []

    def add(script, point, above):
        words = list(script.fixed)
        words += [w for t in common if routed(t, script, above, False) for w in t.words]
        words += [w for t in point if routed(t, script, above, True) for w in t.words]
        words += (stages[None] if above else []) + stages.get(script.name, [])
        after = None
        if script.requires:
            after = add(load_script(script.requires, words), point, [script, *above])
        run = Run(opts, f"{script.name}.py", words, after)
        runs.append(run)
        return run

    for point in itertools.product(*[axis.points for axis in axes]):
        for top in tops:
            add(top, [t for tokens in point for t in tokens], [])
    return runs


def resolve(runs, log_dir):
    """Give each run its plan and folder (utils.plan.plan_script, in this process) and its
    log; drop repeated runs. A run whose flags its script refuses stops the sweep before
    anything starts, with the script's own message."""
    from utils.plan import plan_script

    unique = {}
    for run in runs:
        name = run.script[:-len(".py")]
        try:
            run.plan = plan_script(name, run.command[2:])
        except UserError as exc:
            raise SweepError(f"{run.script} rejects its flags: {refusal(exc)}\n  {shlex.join(run.command[1:])}") \
                from None
        run.run_dir = run.plan.run_dir
        run.log = os.path.join(log_dir, name, os.path.basename(run.run_dir) + ".log")
        unique.setdefault(run.run_dir, run)
    for run in unique.values():
        if run.after:  # a repeated warm-up stands for its first copy
            run.after = unique[run.after.run_dir]
    return list(unique.values())


def plan(argv):
    """(options, runs, log folder, sweep name): every run of the command line, checked, with
    its folder; nothing is written."""
    kind, opts, words = parse(argv)
    check_options(opts, kind)
    if kind == "paper":
        from .paper import plan_paper
        return plan_paper(opts, words)
    methods, method_axis = method_grid(kind, opts, words)
    if methods:
        tops = [load_script(kind, words, ["--method", m]) for m in methods]
    else:
        top_names = GLS_MODES[opts.mode] if kind == "gls" else ["noise_cifar_train"] if kind == "sln" else [kind]
        tops = [load_script(name, words) for name in top_names]
    scripts = required_scripts(tops, words)
    axes = built_in_axes(kind, opts, scripts) + [grid_axis(text, scripts) for text in opts.grid]
    checked = axes + ([method_axis] if method_axis else [])
    check_axes(checked)
    common = tokenize(words, scripts)
    check_tokens(common, checked, "the flags of the runs")
    runs = build_runs(opts, tops, axes, common, stage_words(opts, tops, scripts))
    name = f"sweep_{kind}"
    if methods:
        name += "_" + "-".join(methods)
    elif "--method" in tops[0].options:
        name += f"_{tops[0].method}"
    return finish_plan(opts, runs, common, name)


def finish_plan(opts, runs, common, name, result_dir="results"):
    """plan()'s result once the runs are built: their folders, and the log folder checked."""
    result_dir = next((value(t) for t in reversed(common) if t.dest == "result_dir"), result_dir)
    log_dir = opts.log_dir or os.path.join(result_dir, "sweep_logs", name)
    runs = resolve(runs, log_dir)
    if opts.log_dir is None:
        check_log_folder("the log folder (default of --log_dir)", log_dir)
    return opts, runs, log_dir, name


# ---------------------------------------------------------------- checks before anything starts

def check_paths(runs):
    """Every run's folder and log can be written: names within limits, no file in the way."""
    for run in runs:
        check_path_length("the run folder", run.run_dir, RUN_FILE_ROOM)
        check_path_length("the log", run.log)
        folder = existing_ancestor(os.path.dirname(run.log))
        if not os.path.isdir(folder) or os.path.isdir(run.log):
            raise SweepError(f"the log {run.log} cannot be written: {folder if not os.path.isdir(folder) else run.log} "
                             "is in the way; remove it or pass another --log_dir")


def prepare(argv):
    """(options, runs, log folder, name): the plan, every check, and the stale runs handled
    as the options say. Nothing is written or started."""
    from .launch import config_digest
    from .stale import stale_report, stale_runs

    opts, runs, log_dir, name = plan(argv)
    check_paths(runs)
    opts.missing = data_check(opts, runs)
    stale = stale_runs(runs, opts.retry_diverged)
    if stale and opts.keep_stale:
        print(f"sweep: {len(stale)} run(s) made by other code or data are kept deliberately (--keep_stale); "
              "each records it in its summary.json", flush=True)
    elif stale and opts.overwrite_stale:
        for run, _ in stale:
            run.stale_config = config_digest(run.run_dir)
        print(f"sweep: {len(stale)} run(s) made by other code or data are retrained (--overwrite_stale)", flush=True)
    elif stale and not (opts.dry_run and not opts.slurm):
        raise SweepError(stale_report(stale, len(runs)))
    opts.stale = stale
    return opts, runs, log_dir, name


def data_check(opts, runs):
    """The files that the runs which will train read, checked before anything starts (a
    smoke run makes its stand-in data first): a missing one stops the sweep, naming them
    all; a dry run only reports them. Returns the report (None when nothing is missing)."""
    import preflight

    if getattr(opts, "smoke", None) and not opts.dry_run:
        preflight.make_stand_ins(runs)
    done = () if opts.overwrite_stale else [
        run for run, state in zip(runs, preflight.run_states(runs))
        if state == "finished" or (state == "diverged" and not opts.retry_diverged)]
    missing = preflight.missing_data(runs, done)
    if getattr(opts, "smoke", None) and opts.dry_run:  # the smoke run makes these
        missing = {path: need for path, need in missing.items() if need[0].fake is None}
    report = preflight.missing_report(missing, len(runs)) if missing else None
    if report and not opts.dry_run:
        raise SweepError(report)
    return report
