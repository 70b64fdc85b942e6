"""summary.json through a run's life, and the record of what stopped it.

    RunRecord         summary.json from the moment the run folder is claimed to the run's
                      end; around all of it, the failure recorder (status failed, error.log)
    keep_result       --if_exists auto on a finished or diverged run: kept, or refused as
                      made by other code or data (--keep_stale keeps it, recorded)
"""
import os
import sys
import traceback

import torch

from core.device import device_name
from core.files import atomic_write_text, file_error
from errors import RunFailed, UserError

from . import identity as ident
from .ending import EXIT_DIVERGED, print_result
from .plan import Identities
from .schema import KEPT_STALE, best_results, header, kept_stale_entry


def keep_result(cfg, script, method, folder, action):
    """--if_exists auto on a finished or diverged run: kept when the same code and data would
    make it again (or with --keep_stale, recorded); a stale one is refused, nothing changed."""
    saved = folder.read_json("config.json")  # a damaged one is an error naming it
    current = Identities().made_by(cfg, script, method)
    changes = ident.what_changed(saved.get("made_by"), current) if current else []
    if changes:
        if not cfg.keep_stale:
            raise UserError(stale_message(folder.path, action, changes))
        record_kept_stale(folder, changes, current)
        print(f"{folder.path}: kept deliberately (--keep_stale) although " + "; ".join(changes))
    if action == "finished":
        print(f"{folder.path} already finished; nothing to do")
        print_result(folder.summary() or {}, folder)
        return 0
    print(f"{folder.path} diverged earlier (a result, kept); --retry_diverged trains it again")
    print(f"results: {os.path.abspath(folder.path)}")
    return EXIT_DIVERGED


def stale_message(path, action, changes):
    what = {"finished": "a finished", "diverged": "a diverged", "resume": "an unfinished"}[action]
    return (f"{path} holds {what} run made by other code or data than this command would use now:\n  "
            + "\n  ".join(changes)
            + "\nRetrain it with --if_exists overwrite, or keep the old result deliberately with "
              "--if_exists auto --keep_stale (the decision is recorded in its summary.json)")


def record_kept_stale(folder, changes, current):
    """summary.json's record of the decision to keep a finished or diverged result that
    `current` (made_by now) would make otherwise."""
    summary = folder.read_json_or_none("summary.json") or {}
    summary[KEPT_STALE] = summary.get(KEPT_STALE, []) + [kept_stale_entry(changes, current)]
    folder.write_json("summary.json", summary)


class RunRecord:
    """summary.json of a run, from the moment its folder is claimed to the end of the run, and
    the failure recorder around all of it (run() reads top to bottom inside it).

    An exception that escapes (a bug in any hook of a method, a file or folder the run cannot
    write, anything after the run's first file was written) marks the run `failed`: summary.json
    gets the error, error.log the traceback, and the exception becomes one line, RunFailed
    (exit 1: the error, where in the code it was raised, and what to do next), or the UserError it
    was (exit 2). `--if_exists auto` then continues the run from its last checkpoint, or starts
    it again. Before the folder is written: a refusal (UserError) or a signal leaves it as it
    was; a crash marks an unfinished run failed (a new one gets a summary.json that says so),
    and leaves a finished or diverged result untouched.
    """

    def __init__(self, folder, action, config, script, method):
        self.folder, self.action, self.run, self.written, self.failed = folder, action, None, False, False
        self.epoch = None  # the epoch being trained (1-based), for the message
        earlier = folder.read_json_or_none("summary.json") if action != "start" else None
        self.kept_result = (earlier or {}).get("status") in ("finished", "diverged")
        self.summary = {**(earlier or {}), "script": script, "run_dir": folder.path, "method": method.tag,
                        "method_name": method.name, "config": config}

    def start(self, run, comparable):
        """The summary's header, from the prepared run; `comparable`: the settings that pair
        it with a CE run of another script (utils.cli.comparable_settings)."""
        cfg, method = run.cfg, run.method
        self.run = run
        self.summary = header(cfg, run.script, self.folder.path, method, comparable=comparable,
                              actual_noise_rate=run.noise_report["actual_noise_rate"],
                              device=device_name(run.device), precision=cfg.precision,
                              torch_version=torch.__version__, init_from=run.init_from)

    def write(self, status, **extra):
        run, summary = self.run, self.summary
        if run is not None:
            summary.update(best_results(run.rows), epochs_completed=run.epoch,
                           wall_time_s=round(run.wall_time_s, 3),
                           initial_test_acc=(run.initial or {}).get("test_acc"))
            if run.kept_stale_log:
                summary[KEPT_STALE] = run.kept_stale_log
            if run.per_class.get("best"):  # None when resumed from a checkpoint that predates it
                summary["per_class"] = run.per_class
            summary["config"], summary["made_by"] = run.config, run.made_by
        summary.update(status=status, **extra)
        self.failed = status == "failed"
        self.folder.write_json("summary.json", summary)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        if not self.written and isinstance(exc, (UserError, KeyboardInterrupt, SystemExit)):
            return False  # a refusal or a signal before the first file: nothing was written
        if not self.written and self.kept_result:  # a crash never replaces a result
            if not isinstance(exc, Exception):
                return False
            raise RunFailed(self.failure_message(exc, tb, record=False)) from exc
        if isinstance(exc, UserError) and not isinstance(exc, RunFailed):
            self.record_failure(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False  # the message already names the problem and the fix
        if not isinstance(exc, Exception):  # a signal out of the loop's reach: marked, then as it was
            self.record_failure(f"{kind.__name__}: {exc}")
            return False
        raise RunFailed(self.failure_message(exc, tb)) from exc

    def record_failure(self, error, traceback_text=None):
        """status failed with `error` (unless the run recorded its failure itself) and the traceback
        in error.log; '' or what kept them from being written."""
        problems = []
        if traceback_text is not None:
            try:
                atomic_write_text(self.folder.file("error.log"), traceback_text)
            except OSError as exc:
                problems.append(f"error.log: {exc.strerror or exc}")
        if not self.failed:
            try:
                self.write("failed", error=error)
            except Exception as exc:  # a full disk, or what broke the summary in the first place
                problems.append(f"summary.json: {getattr(exc, 'strerror', None) or exc}")
        return "; ".join(problems)

    def failure_message(self, exc, tb, record=True):
        """One line: what failed, when, where in the code, and what to do next."""
        run = self.run
        when = (f"in epoch {self.epoch}" if self.epoch else f"before epoch {run.epoch + 1}" if self.written
                else "before training started")
        if isinstance(exc, OSError):
            what = file_error(exc, self.folder.path)
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        head = f"{what}{code_location(tb)}: the run {self.folder.path} stopped {when}"
        if not record:
            return f"{head}; the {self.summary.get('status')} result in its folder is untouched. Fix the cause, then rerun"
        problem = self.record_failure(what, "".join(traceback.format_exception(type(exc), exc, tb)))
        kept = ("its summary.json says failed and error.log holds the traceback" if not problem
                else f"this could not be recorded in the run folder ({problem})")
        return f"{head}; {kept}. Fix the cause, then rerun the same command with --if_exists auto"


def code_location(tb):
    """' (at methods/gce.py:57, in epoch_columns)': the innermost frame outside Python and the
    installed libraries: the method's code, or the engine's."""
    installed = tuple(os.path.join(p, "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    frames = [f for f in traceback.extract_tb(tb)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(installed)]
    if not frames:
        return ""
    frame, path = frames[-1], os.path.abspath(frames[-1].filename)
    shown = os.path.relpath(path, ident.ROOT) if path.startswith(os.path.join(ident.ROOT, "")) else path
    return f" (at {shown}:{frame.lineno}, in {frame.name})"
