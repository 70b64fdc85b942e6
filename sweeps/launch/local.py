"""Running a sweep on this machine: slots (a GPU each, or CPU), a run started when a slot
is free and its warm-up has finished; a run whose folder already holds its result is
reported from the folder without starting a process."""
import collections
import os
import shlex
import signal
import subprocess
import shutil
import sys
import time

from core.args import format_duration
from errors import UserError

from . import OUTCOME, encode, launch_command, log_header, preload, record, shell_status, signal_quietly, start


def local_slots(opts):
    """CUDA_VISIBLE_DEVICES of each slot ('' for a CPU slot)."""
    if opts.slots:
        devices = ["cpu"] * opts.slots
    elif opts.gpus:
        devices = opts.gpus.split()
    else:
        devices = []
        if shutil.which("nvidia-smi"):
            query = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                   capture_output=True, text=True)
            devices = query.stdout.split() if query.returncode == 0 else []
        devices = devices or ["cpu"]
    return ["" if d == "cpu" else d for d in devices for _ in range(opts.runs_per_gpu or 1)]


def print_local_plan(runs, states=()):
    """--dry-run without --slurm: every run's command, in the order the sweep starts them, and
    the run it waits for; with `states` (preflight.run_states), where some run has started,
    each run's state."""
    import preflight

    order = {id(run): i + 1 for i, run in enumerate(runs)}
    shown = states if any(state != "not started" for state in states) else ()
    print(f"sweep: {len(runs)} runs" + (f" ({preflight.state_counts(shown)})" if shown else ""))
    for i, run in enumerate(runs, 1):
        after = f"  (after run {order[id(run.after)]})" if run.after is not None and id(run.after) in order else ""
        print(f"{i:4d}. " + (f"[{shown[i - 1]}] " if shown else "") + f"{shlex.join(run.command[1:])}{after}")


class Fresh:
    """Each run a fresh process (launch.start), waited for with os.wait."""

    def start(self, command, log, env):
        return start(command, log, env)

    def wait(self):
        pid, wait_status = os.wait()
        return pid, shell_status(os.waitstatus_to_exitcode(wait_status))

    def close(self):
        pass


def starter_for(slots, opts, threads, log_dir):
    """How the runs are started: on CPU slots forked from a preloading process (preload.py)
    unless --no_preload; on GPU slots each a fresh process."""
    if any(slots) or getattr(opts, "no_preload", False) or not preload.available():
        return Fresh()
    from ..cli import ROOT

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads}
    return preload.Preloaded(env, ROOT, start, os.path.join(log_dir, "preload.log"))


class Progress:
    """The "[k/N] ... about 12m left" prefix of each ended run: the time left is the sweep's
    time so far per ended run, times the runs not ended yet."""

    def __init__(self, total):
        self.total, self.ended, self.started = total, 0, time.time()

    def step(self):
        self.ended += 1
        left = self.total - self.ended
        if not left:
            return f"[{self.ended}/{self.total}]"
        eta = (time.time() - self.started) / self.ended * left
        return f"[{self.ended}/{self.total}, about {format_duration(eta)} left]"


def last_error_line(log):
    """Why a run failed, from its log: the last line that starts with "error:", else the
    last line that is not empty (a traceback's last line names the exception)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 65536))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError as exc:
        return f"(its log {log} cannot be read: {exc.strerror})"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [f"(its log {log} is empty)"])[-1]


def kept_result(run, retry_diverged):
    """The exit status the run's script would end with at once (0 finished, 3 diverged) for
    a run whose folder holds its result (run.kept, found by the stale check), decided as the
    script decides, holding the folder's lock, and the lines the script would print
    appended to the run's log; None when the folder no longer holds that result or another
    process holds it: then the script is started and decides."""
    from utils.schema import result_line
    from utils.results import claim_run_folder

    try:
        with claim_run_folder(run.run_dir, "auto", retry_diverged) as (folder, action):
            if action != run.kept:
                return None
            path = os.path.abspath(folder.path)
            if action == "finished":
                lines, code = [f"{folder.path} already finished; nothing to do", result_line(folder.summary() or {})], 0
            else:
                lines, code = [f"{folder.path} diverged earlier (a result, kept); --retry_diverged trains it again"], 3
    except UserError:
        return None
    os.makedirs(os.path.dirname(run.log), exist_ok=True)
    with open(run.log, "ab") as out:
        out.write(encode(log_header(run.command, "none (not started: the sweep read the result from the "
                                                 "run folder)") + "\n".join([*lines, f"results: {path}"]) + "\n"))
    return code


def launch(runs, opts, log_dir, name=None):
    """Run on the slots: a run starts when a slot is free and its warm-up (if any) has
    finished; SIGINT/SIGTERM stop every run (they save) and the sweep. Returns the sweep's
    exit status: 0 when every run finished."""
    slots = local_slots(opts)
    # CPU runs side by side would each start a thread per core and slow each other down.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // max(slots.count(""), 1)))
    outcomes = os.path.join(log_dir, "outcomes.tsv")
    open(outcomes, "w").close()
    print(f"sweep: {len(runs)} runs on {len(slots)} slot(s) [{' '.join(s or 'cpu' for s in slots)}], "
          f"logs in {log_dir}", flush=True)

    starter = starter_for(slots, opts, threads, log_dir)
    pending, free = list(runs), list(slots)
    progress = Progress(len(runs))
    running = {}  # pid -> (run, command, slot, process, start time)
    exit_of = {}  # run folder -> exit status
    stopping = []

    def stop(signum, frame):
        if not stopping:
            print(f"sweep: {signal.Signals(signum).name}: stopping {len(running)} run(s); they save "
                  "their state, and the same command resumes them", file=sys.stderr, flush=True)
        stopping.append(signum)
        for pid in list(running):
            signal_quietly(pid, signal.SIGTERM)

    def ended(run, command, code, how):
        exit_of[run.run_dir] = code
        outcome = OUTCOME.get(code, "failed")
        record(outcomes, outcome, code, command, run.run_dir, run.log)
        why = "" if code == 0 else f"\n      {last_error_line(run.log)}"
        print(f"{progress.step()} {outcome} ({how}): {run.run_dir}{why}", flush=True)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for run in list(pending):
                if stopping:
                    break
                if run.after and run.after.run_dir not in exit_of:
                    continue  # its warm-up has not ended yet
                if run.after and exit_of[run.after.run_dir] != 0:
                    pending.remove(run)
                    record(outcomes, "skipped-dependency", "-", run.command, run.run_dir, run.log)
                    print(f"{progress.step()} skipped-dependency (its warm-up did not finish): {run.run_dir}",
                          flush=True)
                    continue
                code = kept_result(run, opts.retry_diverged) if run.kept else None
                if code is not None:
                    pending.remove(run)
                    ended(run, run.command, code, f"kept, exit {code}")
                    continue
                if not free:
                    continue
                pending.remove(run)
                slot = free.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot}
                if not slot:
                    env["OMP_NUM_THREADS"] = threads
                command = launch_command(run.command, run.run_dir, run.stale_config)
                proc = starter.start(command, run.log, env)
                running[proc.pid] = (run, command, slot, proc, time.time())
                if stopping:  # the signal came while it started
                    signal_quietly(proc.pid, signal.SIGTERM)
            if not running:
                break
            pid, code = starter.wait()  # a signal runs its handler, then the wait goes on
            if pid not in running:
                continue
            run, command, slot, proc, started = running.pop(pid)
            proc.returncode = code
            free.append(slot)
            ended(run, command, code, f"exit {code}, {time.time() - started:.0f}s")
    finally:
        starter.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for run in pending:
        record(outcomes, "not-started", "-", run.command, run.run_dir, run.log)
    with open(outcomes, "rb") as f:
        tally = collections.Counter(line.split(b"\t")[0].decode() for line in f)
    print("sweep: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
          + f"; see {outcomes}", flush=True)
    if stopping:
        return 128 + stopping[0]
    return 0 if set(tally) == {"finished"} else 1
