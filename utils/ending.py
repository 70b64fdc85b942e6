"""How a run ends: the signals that stop it, the end of its epoch loop, and what it prints then.

    SignalGuard   SIGINT/SIGTERM/SIGHUP: at once while the run prepares, between steps after
    RunEnding     around the epoch loop: a diverged loss, a signal, an operation without a
                  deterministic implementation under --deterministic; after it, a finished run
                  (collapsed or not). Each writes summary.json's status and prints its lines:
                  the error or warning, the `result:` line and `results: PATH`.

Exit codes: 0 finished, EXIT_DIVERGED, 128 + the signal's number (EXIT_SIGNAL). A failure
that escapes the loop is RunRecord's (utils/record.py).
"""
import contextlib
import math
import os
import re
import signal

import numpy as np

from core.device import device_name
from errors import UserError

from .metrics import Diverged
from .schema import best_results, result_line

EXIT_DIVERGED = 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
COLLAPSE_MARGIN = 0.1  # collapsed: the last accuracy is within 10% of the way from chance to 100%


class SignalGuard:
    """SIGINT/SIGTERM (and SIGHUP, unless nohup ignores it) while a run prepares end the
    process at once with 128 + the signal's number (nothing has been written; the run
    folder's lock is released on the way out). After defer(), they set a flag the loop
    reads between steps (a Python int: no sync): the run saves and ends as interrupted."""

    def __init__(self):
        self.signum = None
        self.deferred = False

    def defer(self):
        self.deferred = True

    def __enter__(self):
        self.previous = {}
        for s in EXIT_SIGNAL:
            if s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN:
                continue
            self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if not self.deferred:
            print(f"interrupted ({signal.Signals(signum).name}) before training started; nothing was "
                  "written", flush=True)
            raise SystemExit(EXIT_SIGNAL[signum])
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class RunEnding:
    """The end of a run's epoch loop (a context manager around it), then exit_code().

    Inside: Diverged is recorded (status diverged, where and what the loss was) and printed;
    an error raised while a signal stops the run is dropped (the signal reached the whole
    process group, and a DataLoader worker it caught while starting, before it ignores such
    signals, ends the epoch with an error): the run ends interrupted after its last complete
    epoch; under --deterministic, torch's error for an operation without a deterministic
    implementation becomes a UserError naming it (status failed). Any other error goes on to
    RunRecord, which marks the run failed.
    """

    def __init__(self, run, folder, guard, record):
        self.run, self.folder, self.guard, self.record = run, folder, guard, record
        self.code = None  # set when the loop ended the run (diverged)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, Diverged):
            self.diverged(exc)
            return True
        if not isinstance(exc, Exception):
            return False
        if self.guard.signum is not None:
            return True  # interrupted: exit_code() records it
        operation = nondeterministic_operation(exc) if self.run.cfg.deterministic else None
        if operation is None:
            return False
        self.record.write("failed", error=str(exc).splitlines()[0])
        raise UserError(f"--deterministic: {operation} has no deterministic implementation on "
                        f"{device_name(self.run.device)}, so the run stopped at epoch {self.run.epoch + 1}. "
                        "Train without --deterministic, or on a device where it has one") from None

    def diverged(self, d):
        run = self.run
        self.record.write("diverged", diverged_epoch=d.epoch, diverged_step=d.step, diverged_loss=d.loss)
        what = ("non-finite" if not math.isfinite(d.loss)
                else f"{d.loss:.4g}, beyond --loss_bound {run.cfg.loss_bound:g}")
        hint = run.method.divergence_hint(run.script)
        kept = (f"The checkpoint of epoch {run.epoch}, the last good one, is kept." if run.epoch
                else "No epoch completed, so there is no checkpoint.")
        print(f"error: the loss diverged at epoch {d.epoch}, step {d.step}: the batch loss was {what}. "
              f"{hint + ' ' if hint else ''}{kept}")
        self.code = self.print_result(EXIT_DIVERGED)

    def exit_code(self):
        """After the loop: the exit code of a diverged run, else the run ends interrupted (a
        signal stopped it) or finished, recorded and printed."""
        if self.code is not None:
            return self.code
        run, signum = self.run, self.guard.signum
        if signum is not None:
            self.record.write("interrupted")
            print(f"interrupted (signal {signum}) after {run.epoch} complete epochs; "
                  "continue with the same command and --if_exists auto (or --resume)")
            return self.print_result(EXIT_SIGNAL[signum])
        collapse = collapsed(run)
        self.record.write("finished", **collapse)
        if collapse["collapsed"]:
            print(f"warning: the run collapsed: its last test accuracy, {run.rows[-1]['test_acc']:.2f}%, is "
                  f"near chance ({collapse['chance_acc']:.2f}%, the largest test class). "
                  f"{run.method.divergence_hint(run.script)}".rstrip())
        return self.print_result(0)

    def print_result(self, code):
        print_result(best_results(self.run.rows), self.folder)
        return code


def print_result(values, folder):
    """The last lines of a run that trained or had trained: its `result:` line (of
    utils.schema.best_results' values) and `results: PATH`."""
    print(result_line(values))
    print(f"results: {os.path.abspath(folder.path)}")


def collapsed(run):
    """{"collapsed": bool, "chance_acc": %}: a finished run whose last test accuracy is closer to
    chance (the share of the largest test class) than COLLAPSE_MARGIN of the way to 100%."""
    labels = getattr(run.data, "test_labels", None)
    if labels is None or not run.rows:
        return {"collapsed": False}
    chance = float(100.0 * np.bincount(np.asarray(labels)).max() / len(labels))
    return {"collapsed": bool(run.rows[-1]["test_acc"] < chance + COLLAPSE_MARGIN * (100 - chance)),
            "chance_acc": round(chance, 3)}


@contextlib.contextmanager
def refusing_nondeterminism(enabled):
    """Under --deterministic, torch's error for an operation without a deterministic
    implementation becomes a UserError naming it (while the run prepares)."""
    try:
        yield
    except RuntimeError as exc:
        operation = nondeterministic_operation(exc) if enabled else None
        if operation is None:
            raise
        raise UserError(f"--deterministic: {operation} has no deterministic implementation on this "
                        "device (met before the first step; nothing was written). Train without "
                        "--deterministic, or on a device where it has one") from None


def nondeterministic_operation(exc):
    """The operation torch names in the error it raises under use_deterministic_algorithms
    ("put_ does not have a deterministic implementation, but you set ..."), else None."""
    match = re.search(r"(\S+) does not have a deterministic implementation", str(exc))
    return match.group(1) if match else None
