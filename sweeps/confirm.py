"""Running a finished sweep again without planning it: its plan, kept from the last start.

Planning a sweep imports every script, method and data set it names (torch among them)
and works out each run's folder and what would make it now (utils.plan). When every run
of the sweep has ended, that is all the work there is, and it is most of the time the
command takes. So each start on this machine that plans a sweep keeps the plan in a
cache file: every run's command, folder, log and made_by, with what it was computed from:

    the command line, the current folder and the Python that runs the sweep;
    the content of every .py file of the project (the scripts and every package);
    the versions of the libraries a plan depends on (VERSIONED);
    the size and times of every file the runs read: their data sets' and noise types'
    files (data.data_files), the scripts' other inputs (Preset.needs), --noise_file and
    the methods' outside inputs, and, for a paper recipe, the benchmarks its estimate reads.

The same command looks its plan up (`confirmed`). It is used only when all of that is
unchanged and every run folder holds a result its script would keep at once (finished,
or diverged without --retry_diverged), recorded as made by the kept made_by: then the
sweep reports each run from its folder, as it does after planning. Anything else (a run
to start or resume, a run made by other code or data, a changed file, another command)
plans the sweep as before. A plan is kept only where every run's data could be read to
identify it and every data set names its files, so that a change to them is seen.

The cache decides nothing a result depends on: deleting it costs one planning. It lives
in $NOISY_LABELS_CACHE, else $XDG_CACHE_HOME/noisy-labels, else ~/.cache/noisy-labels
(its sweeps/ folder); a cache folder that cannot be written keeps no plan and changes
nothing else.
"""
import hashlib
import importlib.metadata
import json
import os
import sys

from errors import UserError

from .cli import ROOT, check_log_folder, check_options, parse

VERSION = 1  # of the cache file's layout
# The libraries whose version a plan depends on: torch and torchvision build the models,
# numpy draws the noise, scikit-learn ships the digits data.
VERSIONED = ("torch", "torchvision", "numpy", "scikit-learn")


def cache_folder():
    base = os.environ.get("NOISY_LABELS_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "noisy-labels")
    return os.path.join(base, "sweeps")


def cache_path(argv):
    """The cache file of a command line (run from this folder, by this Python)."""
    key = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "python": sys.executable})
    return os.path.join(cache_folder(), hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest() + ".json")


def code_digest(root=ROOT):
    """sha1 of every .py file of the project: the scripts in `root` and every package below
    it (a folder with an __init__.py), by path and content."""
    digest = hashlib.sha1()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode("utf-8", "surrogateescape") + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.sha1(f.read()).digest())
    return digest.hexdigest()


def library_versions():
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def signature(path):
    """[size, mtime_ns, ctime_ns, inode] of a file or folder, None where there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def bench_files(opts):
    """The benchmark files a paper recipe's estimate reads (sweeps.paper.paper_report)."""
    if getattr(opts, "recipe", None) is None:
        return []
    from papers.cost import default_benches

    return list(opts.bench) if getattr(opts, "bench", None) else default_benches(ROOT)


def fast_path_applies(opts):
    """A start on this machine's slots: not a dry run, not SLURM, not a smoke run."""
    return not (opts.dry_run or opts.slurm or getattr(opts, "smoke", None))


# ---------------------------------------------------------------- keeping a plan

def watched_files(run):
    """The files a run reads whose change would change its made_by, or None where a change
    could not be seen (its data could not be read to identify them, its data set does not
    name its files, an outside input is gone): then no plan is kept."""
    from data import dataset_spec

    import preflight

    inputs = (run.made_by.get("inputs") or {}).values()
    if not run.made_by.get("data") or any(entry.get("sha1") is None for entry in inputs):
        return None
    cfg, needs = preflight.needed_files(run)
    if dataset_spec(cfg.dataset).files is None:
        return None
    paths = [need.path for need in needs]
    if getattr(cfg, "noise_file", None):
        paths.append(cfg.noise_file)
    return paths + [entry["path"] for entry in inputs]


def keep(argv, opts, runs, log_dir, name, report):
    """Keep the plan of a sweep about to start on this machine (see the module's doc): every
    run's made_by is computed now, as its script would record it."""
    if not fast_path_applies(opts):
        return None
    from .stale import RunIdentities

    now = RunIdentities()
    watched = {}
    for run in runs:
        if run.made_by is None:
            run.made_by = now.made_by(run)
        paths = watched_files(run)
        if paths is None:
            return None
        watched.update({os.path.abspath(p): signature(p) for p in paths})
    watched.update({os.path.abspath(p): signature(p) for p in bench_files(opts)})
    index = {id(run): i for i, run in enumerate(runs)}
    record = {"version": VERSION, "code": code_digest(), "libraries": library_versions(), "watched": watched,
              "log_dir": log_dir, "name": name, "report": report,
              "runs": [{"script": run.script, "command": run.command, "run_dir": run.run_dir, "log": run.log,
                        "after": index[id(run.after)] if run.after is not None else None, "made_by": run.made_by}
                       for run in runs]}
    path = cache_path(argv)
    partial = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "w") as f:
            json.dump(record, f)
        os.replace(partial, path)
    except OSError:
        return None
    finally:  # nothing half-written is left, whatever stopped it
        if os.path.lexists(partial):
            os.remove(partial)
    return path


# ---------------------------------------------------------------- using it

def kept_plan(argv):
    """The record keep() wrote for this command line, if everything it was computed from is
    unchanged; else None."""
    try:
        with open(cache_path(argv)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return None
    if record.get("libraries") != library_versions() or record.get("code") != code_digest():
        return None
    if any(signature(path) != sig for path, sig in record["watched"].items()):
        return None
    return record


def confirmed(argv):
    """(options, runs, log folder, name, report) of a sweep whose every run has ended as
    its kept plan says (the module's doc), each run's `kept` set as the stale check sets
    it; None where the sweep must be planned."""
    from .plan import Run, check_paths
    from .stale import stale_runs

    try:
        kind, opts, _ = parse(argv)
        check_options(opts, kind)
    except UserError:  # planning the sweep reports it
        return None
    if not fast_path_applies(opts):
        return None
    record = kept_plan(argv)
    if record is None:
        return None
    runs = [Run.restored(entry) for entry in record["runs"]]
    for run, entry in zip(runs, record["runs"]):
        run.after = runs[entry["after"]] if entry["after"] is not None else None
    stale = stale_runs(runs, opts.retry_diverged, made_by=lambda run: run.made_by)
    if stale or not all(run.kept for run in runs):
        return None
    check_paths(runs)
    if opts.log_dir is None:
        check_log_folder("the log folder (default of --log_dir)", record["log_dir"])
    opts.stale, opts.missing = [], None
    return opts, runs, record["log_dir"], record["name"], record["report"]
