"""summarize.py RESULTS --status: every run below RESULTS by state, read-only and fast.

A run's state comes from its summary.json; two states need a second look:
- running: only while a process holds the run folder's lock (utils/results.py); a
  summary that says "running" with no process behind it is a run that was killed before it
  could record why (SIGKILL, a node lost), shown as interrupted;
- stale: a finished or diverged run whose code, as recorded in its made_by, hashes
  otherwise in this checkout now (utils/identity.py), so that --if_exists auto and sweep.py
  would not reuse it. The data are not fingerprinted here (that reads every image):
  `--if_exists auto` checks them too.

Nothing is imported that needs torch, nothing is written, and each code version is hashed
once, so that thousands of runs take about a second.
"""
import collections
import fcntl
import os

from core.files import read_json_file
from utils import identity as ident

from .runs import walk_results

STATES = ("running", "interrupted", "failed", "diverged", "stale", "unknown", "finished")


def read_summary(folder):
    """The folder's summary.json (else config.json) as a dict, or None; a FIFO or device
    is never opened (core.files.read_json_file)."""
    for name in ("summary.json", "config.json"):
        obj = read_json_file(os.path.join(folder, name))[0]
        if obj is not None:
            return obj if name == "summary.json" else {"status": None, "made_by": obj.get("made_by")}
    return None


def is_locked(folder):
    """True while a process holds the run folder's lock (it trains into the folder now)."""
    try:
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the shared lock just taken
    return False


class CodeCheck:
    """Whether a run's recorded code is this checkout's: one hash per recorded file list."""

    def __init__(self):
        self.now = {}

    def changed(self, made_by):
        code = made_by.get("code") if isinstance(made_by, dict) else None
        if not isinstance(code, dict) or not isinstance(code.get("source_files"), list):
            return True  # made before runs recorded their code: it cannot be reused as is
        files = tuple(code["source_files"])
        if files not in self.now:
            paths = [os.path.join(ident.ROOT, f) for f in files]
            self.now[files] = (ident.source_identity(paths)["source_sha1"]
                               if all(os.path.isfile(p) for p in paths) else None)
        return self.now[files] != code.get("source_sha1")


def run_folders(results_dir):
    """Every folder below results_dir holding a config.json, each once (links followed,
    cycles skipped), in name order; folders whose name starts with "." are not searched."""
    return [folder for folder, names in walk_results(results_dir) if "config.json" in names]


def state_of(folder, codes):
    """The state of the run in `folder` (one of STATES); `codes`: a CodeCheck."""
    summary = read_summary(folder)
    status = (summary or {}).get("status")
    if status == "running":
        return "running" if is_locked(folder) else "interrupted"
    if status in ("finished", "diverged"):
        return "stale" if codes.changed(summary.get("made_by")) else status
    if status in ("interrupted", "failed"):
        return status
    return "running" if is_locked(folder) else "unknown"


def run_states(results_dir):
    """{state: [run folder, ...]} of every run below results_dir."""
    codes, states = CodeCheck(), collections.defaultdict(list)
    for folder in run_folders(results_dir):
        states[state_of(folder, codes)].append(folder)
    return states


NOTES = {"interrupted": "continue with the same command and --if_exists auto (or --resume)",
         "failed": "see the error in its summary.json; --if_exists auto starts it again",
         "stale": "made by other code than this checkout's: --if_exists auto and sweep.py refuse to "
                  "reuse it (--keep_stale, or retrain with --if_exists overwrite)",
         "unknown": "no readable summary.json: the run stopped before its first record, or the "
                    "folder is damaged"}


def status_report(results_dir):
    """The text of summarize.py --status."""
    states = run_states(results_dir)
    total = sum(len(v) for v in states.values())
    counts = ", ".join(f"{len(states[s])} {s}" for s in STATES if states.get(s))
    lines = [f"{os.path.abspath(results_dir)}: {total} run(s)" + (f": {counts}" if total else "")]
    for state in STATES:
        if states.get(state):
            note = f" ({NOTES[state]})" if state in NOTES else ""
            lines.append(f"\n{state}: {len(states[state])}{note}")
            lines.extend(f"  {folder}" for folder in states[state])
    return "\n".join(lines)
