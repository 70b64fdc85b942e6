"""What sweep.py checks and shows before anything starts: the files every run reads (its data
set's and noise type's, data.data_files, and its script's other inputs, Preset.needs), the
state of every run folder (--dry-run), and the stand-in data of a smoke run
(sweep.py paper --smoke, papers/smoke.py). Nothing here starts a run."""
import os

# A run in one of these states exits at once when the sweep starts it: it reads no data.
DONE = ("finished", "diverged")


def run_config(run):
    """(preset, cfg) of a sweep's run, from its plan (utils.plan.RunPlan, made by sweeps.plan)."""
    return run.plan.preset, run.plan.cfg


def needed_files(run):
    """(cfg, [DataFile]) of what the run reads: its data, then its script's other inputs."""
    from data import data_files

    preset, cfg = run_config(run)
    return cfg, data_files(cfg) + (list(preset.needs(cfg)) if preset.needs is not None else [])


def missing_data(runs, skip=()):
    """{path: (DataFile, [runs])} of the files some run of `runs` reads that do not exist, in
    the order the runs need them; the runs in `skip` (finished ones) are not asked."""
    skip = {id(run) for run in skip}
    missing = {}
    for run in runs:
        if id(run) in skip:
            continue
        for need in needed_files(run)[1]:
            if not os.path.exists(need.path):
                missing.setdefault(os.path.abspath(need.path), (need, []))[1].append(run)
    return missing


def missing_report(missing, total):
    """The text naming every missing file once, what it is, which runs read it, how to get it."""
    lines = [f"{len(missing)} file(s) that the sweep's runs read are missing; no run was started:"]
    for path, (need, runs) in missing.items():
        lines += [f"  {path}", f"    {need.what}; read by {len(runs)} of the {total} runs",
                  f"    get it: {need.get}"]
    return "\n".join(lines)


def make_stand_ins(runs):
    """Write the stand-in of every missing file the runs read that has one (DataFile.fake),
    each once, data sets before the label files drawn from them. Returns the paths made."""
    made = []
    for run in runs:
        cfg, needs = needed_files(run)
        for need in needs:
            if need.fake is not None and not os.path.exists(need.path):
                need.fake(cfg)
                made.append(need.path)
    return made


def run_state(run_dir):
    """not started, finished, diverged, or unfinished (interrupted, failed, running or crashed)."""
    from core.files import RunFolder
    from utils.results import run_entries

    if not run_entries(run_dir):
        return "not started"
    status = RunFolder(run_dir).status()
    if status in DONE:
        return status
    return "unfinished: " + {"running": "running or crashed", None: "no summary yet"}.get(status, status)


def run_states(runs, stale=()):
    """[state] of each run; a stale one (made by other code or data) says so first."""
    stale = {id(run) for run in stale}
    return [("stale, " if id(run) in stale else "") + run_state(run.run_dir) for run in runs]


def state_counts(states):
    counts = {}
    for state in states:
        key = "stale" if state.startswith("stale") else state.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())
