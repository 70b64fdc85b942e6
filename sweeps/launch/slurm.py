"""Running a sweep as SLURM job arrays: one task file per level of warm-ups and one for the
rest, each array waiting for the one before; and the array task's runtime (`sweep.py _task
FILE`), which starts one run, forwards SLURM's signals to it and requeues itself before
the time limit."""
import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time

from .. import SweepError
from ..cli import MAX_REQUEUES, ROOT, natural_int, split_words
from . import OUTCOME, launch_command, record, shell_status, signal_quietly, start

# sbatch --signal=B:USR1@LEAD. SLURM checks its jobs every 30 s and warns a task at the
# first check that finds at most LEAD + 30 s left, so a run gets LEAD to LEAD + 30 s to
# finish its step and write last.pt. Short limits (tests) get a sixth, at least 10 s.
SIGNAL_LEAD = 120


def time_limit_s(sbatch_args):
    """Seconds of the --time (-t) among the sbatch options, or None (none, or unlimited)."""
    value = None
    words = split_words(sbatch_args, "--sbatch_args")
    for i, word in enumerate(words):
        if word in ("-t", "--time") and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--time="):
            value = word[len("--time="):]
        elif word.startswith("-t") and len(word) > 2:
            value = word[2:]
    if value is None or value.upper() in ("INFINITE", "UNLIMITED"):
        return None
    days, dash, clock = value.rpartition("-")  # SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
    try:
        fields = [int(p) for p in clock.split(":")]
        if dash:
            fields = (fields + [0, 0])[:3]
        elif len(fields) == 1:
            fields = [0, fields[0], 0]
        elif len(fields) == 2:
            fields = [0, *fields]
        hours, minutes, seconds = fields
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    except ValueError:
        raise SweepError(f"--sbatch_args: cannot read the time limit {value!r}") from None


def signal_lead(sbatch_args):
    limit = time_limit_s(sbatch_args)
    return SIGNAL_LEAD if limit is None else min(SIGNAL_LEAD, max(10, limit // 6))


def slurm_stages(runs):
    """[(array name, runs)] in submission order: the runs others need first, a level per
    array (warm-ups), then the rest ("runs"), each array waiting for the one before."""
    level = {}
    for run in reversed(runs):  # a run's warm-up comes before it in the list
        level.setdefault(run, 0)
        if run.after:
            level[run.after] = max(level.get(run.after, 0), level[run] + 1)
    top = max(level.values(), default=0)
    names = {0: "runs", **{k: "warmup" if top == 1 else f"warmup{k}" for k in range(1, top + 1)}}
    return [(names[k], [r for r in runs if level[r] == k]) for k in range(top, -1, -1)
            if any(level[r] == k for r in runs)]


def launch(runs, opts, log_dir, name):
    """Write one task file per array (warm-ups, then the rest) and submit each as a job
    array whose task i runs `sweep.py _task FILE` for line i; each array starts when
    every task of the one before has ended (afterany: a failed warm-up fails only the
    runs that need it, with the script's message). --dry-run prints the sbatch commands."""
    lead = signal_lead(opts.sbatch_args)
    arrays = []  # (array name, task file, number of tasks)
    for array, array_runs in slurm_stages(runs):
        tasks = os.path.abspath(os.path.join(log_dir, f"tasks_{array}.jsonl"))
        with open(tasks, "w") as f:
            for run in array_runs:
                task = {"command": run.command, "run_dir": run.run_dir, "log": os.path.abspath(run.log)}
                f.write(json.dumps({**task, **({"stale_config": run.stale_config} if run.stale_config else {})}) + "\n")
        arrays.append((array, tasks, len(array_runs)))

    def sbatch(array, tasks, n, after):
        task = [opts.python, os.path.join(ROOT, "sweep.py"), "_task", tasks,
                "--max_requeues", str(MAX_REQUEUES if opts.max_requeues is None else opts.max_requeues)]
        return ["sbatch", "--parsable", f"--job-name={name}-{array}",
                f"--array=0-{n - 1}" + (f"%{opts.array_parallel}" if opts.array_parallel else ""),
                "--requeue", "--open-mode=append", f"--signal=B:USR1@{lead}", f"--chdir={os.getcwd()}",
                f"--output={os.path.abspath(log_dir)}/slurm-%A_%a.out", *shlex.split(opts.sbatch_args),
                *([f"--dependency=afterany:{after}"] if after else []), "--wrap", "exec " + shlex.join(task)]

    open(os.path.join(log_dir, "outcomes.tsv"), "w").close()
    print(f"sweep: {len(runs)} runs in {len(arrays)} SLURM job array(s) "
          f"({', '.join(f'{n} {array}' for array, _, n in arrays)}); task files and logs in {log_dir}")
    if opts.dry_run:
        print("dry run, nothing submitted; to submit:")
        after = None
        for array, tasks, n in arrays:
            line = shlex.join(sbatch(array, tasks, n, after and "ID"))
            print(f"{array}=$({line.replace('afterany:ID', f'afterany:${{{after}%%;*}}')})")
            after = array
        return 0
    if not shutil.which("sbatch"):
        raise SweepError("sbatch not found: run this on the cluster's login node (or use --dry-run)")
    after = None
    for array, tasks, n in arrays:
        result = subprocess.run(sbatch(array, tasks, n, after), capture_output=True, text=True)
        if result.returncode != 0:
            raise SweepError(f"sbatch failed: {result.stderr.strip()}")
        after = result.stdout.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        print(f"submitted job array {after}: {n} {array} task(s)", flush=True)
    return 0


def job_state(job_id):
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    return dict(w.split("=", 1) for w in result.stdout.split() if "=" in w).get("JobState")


def run_task(argv):
    """One array task (`sweep.py _task FILE`): run line SLURM_ARRAY_TASK_ID of FILE.

    SLURM's warning before the time limit (USR1, to this process only) and its SIGTERM
    (scancel, the limit itself, pre-emption) reach the run as SIGTERM: it saves and exits
    143. After the warning the task requeues itself, unless the job is being cancelled
    or has been requeued --max_requeues times, and the requeued task resumes the run."""
    p = argparse.ArgumentParser(prog="sweep.py _task")
    p.add_argument("tasks")
    p.add_argument("--max_requeues", type=natural_int, default=MAX_REQUEUES)
    args = p.parse_args(argv)
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    with open(args.tasks) as f:
        task = json.loads(f.read().splitlines()[index])
    job = os.environ["SLURM_JOB_ID"]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    got, proc = [], None

    def forward(signum, frame):
        got.append(signum)
        print(f"{time.strftime('%F %T')} {signal.Signals(signum).name}: stopping the run", flush=True)
        if proc is not None:
            signal_quietly(proc.pid, signal.SIGTERM)

    for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    print(f"{time.strftime('%F %T')} task {index} (job {job}, restart {restarts}) on "
          f"{socket.gethostname()}: {task['run_dir']}", flush=True)
    command = launch_command(task["command"], task["run_dir"], task.get("stale_config"))
    proc = start(command, task["log"], dict(os.environ))
    if got:  # a signal came while it started
        signal_quietly(proc.pid, signal.SIGTERM)
    code = shell_status(proc.wait())
    outcome = OUTCOME.get(code, "failed")
    if code in (130, 143) and signal.SIGUSR1 in got:
        state = job_state(job)
        if restarts >= args.max_requeues:
            print(f"not requeued: requeued {restarts} times already (--max_requeues "
                  f"{args.max_requeues}); submit the sweep again to go on")
        elif state != "RUNNING":
            print(f"not requeued: the job is {state}")
        else:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            print(f"scontrol requeue {job}: exit {result.returncode} {result.stderr.strip()}")
            outcome = "requeued" if result.returncode == 0 else outcome
    record(os.path.join(os.path.dirname(args.tasks), "outcomes.tsv"), outcome, code, command,
           task["run_dir"], task["log"])
    print(f"{time.strftime('%F %T')} {outcome} (exit {code})", flush=True)
    return code
