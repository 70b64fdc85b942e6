#!/usr/bin/env python3
"""Sweeps of the GLS and SLN scripts, on this machine's GPUs/CPUs or as SLURM job arrays.

    python3 sweep.py gls --noise "symmetric:0.2 symmetric:0.4" --seeds "0 1 2" --gpus "0 1"
    python3 sweep.py sln --noise "sym:0.4 asym:0.4" --sigmas "0.1 1.0" --slots 2 --correction -1
    python3 sweep.py gls --slurm --sbatch_args "-p gpu --gres=gpu:1 --time=12:00:00" --array_parallel 16

Every run is started as `PYTHON SCRIPT FLAGS --if_exists auto`: the training script
decides, holding its run folder's lock, whether the run is done (exit 0 at once),
diverged (exit 3), to be resumed from last.pt or started over. The sweep keeps no state
of its own: after Ctrl-C, a crash, a reboot or a time limit, the same command completes
the sweep. Flags the sweep does not know go unchanged to every run.

Locally each slot is a GPU (pinned with CUDA_VISIBLE_DEVICES) or a share of the CPU
cores, and a GLS load run starts once its warm-up has finished. With --slurm each run is
one array task, warm-ups in a first array and the rest in a second that waits for it; a
task warned of its time limit stops its run (which saves) and requeues itself.
"""
import argparse
import collections
import contextlib
import ctypes
import importlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))

GLS_SMOOTH_RATES = "0.8 0.6 0.4 0.2 0.0 -0.2 -0.4 -0.6 -0.8 -1.0 -2.0 -4.0 -6.0 -8.0"  # the paper's
SLN_SIGMAS = "0.1 0.2 0.5 1.0"
OUTCOME = {0: "finished", 3: "diverged", 130: "interrupted", 143: "interrupted"}  # else "failed"

# A run that needs more than 11 time-limit slices should ask for a longer --time; the
# bound stops a run that cannot finish one epoch within a slice from cycling forever.
MAX_REQUEUES = 10
# sbatch --signal=B:USR1@LEAD. SLURM checks its jobs every 30 s and warns a task at the
# first check that finds at most LEAD + 30 s left, so a run gets LEAD to LEAD + 30 s to
# finish its step and write last.pt. Short limits (tests) get a sixth, at least 10 s.
SIGNAL_LEAD = 120


class SweepError(Exception):
    """Bad sweep options: reported as `error: ...`, exit status 2."""


# ---------------------------------------------------------------- options

VALUED = {"--smooth_rates", "--noise", "--mode", "--warmup_args", "--sigmas", "--seeds", "--log_dir",
          "--python", "--gpus", "--runs_per_gpu", "--slots", "--sbatch_args", "--array_parallel",
          "--max_requeues"}


def build_parser():
    top = argparse.ArgumentParser(prog="sweep.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sweeps = top.add_subparsers(dest="sweep", required=True, metavar="{gls,sln}")
    epilog = ("Every other flag goes unchanged to each run, e.g. --dataset cifar100 --n_epoch 50 "
              "--result_dir results/c100. Relative paths are relative to the repository root.")
    # allow_abbrev=False: a run's --seed must not be taken for the sweep's --seeds.
    gls = sweeps.add_parser("gls", allow_abbrev=False, epilog=epilog,
                            help="GLS over smooth rates: main_warmup.py, main_GLS_load.py, "
                                 "main_GLS_direct_train.py")
    gls.add_argument("--smooth_rates", default=GLS_SMOOTH_RATES, help=f"default the paper's: {GLS_SMOOTH_RATES}")
    gls.add_argument("--noise", default="symmetric:0.2", metavar="'TYPE:RATE ...'",
                     help="--noise_type/--noise_rate settings, e.g. 'symmetric:0.4 pairflip:0.2'")
    gls.add_argument("--mode", default="load", choices=["load", "direct", "both"],
                     help="load: CE warm-up, then GLS from it (default); direct: from scratch; both")
    gls.add_argument("--warmup_args", default="", metavar="'FLAGS'",
                     help="flags for the warm-up runs only, e.g. '--n_epoch 30 --lr 0.1'")
    sln = sweeps.add_parser("sln", allow_abbrev=False, epilog=epilog,
                            help="SLN over sigmas: noise_cifar_train.py")
    sln.add_argument("--sigmas", default=SLN_SIGMAS, help=f"default {SLN_SIGMAS}")
    sln.add_argument("--noise", default="sym:0.4", metavar="'MODE:RATE ...'",
                     help="--noise_mode/--noise_rate settings, e.g. 'sym:0.4 asym:0.4'")
    for p in (gls, sln):
        p.add_argument("--seeds", default="0", help="training seeds, e.g. '0 1 2'")
        p.add_argument("--retry_diverged", action="store_true",
                       help="start diverged runs over (by default a diverged run is a result)")
        p.add_argument("--log_dir", help="per-run logs, outcomes.tsv, SLURM task files "
                                         "(default <result_dir>/sweep_logs/sweep_<gls|sln>)")
        p.add_argument("--python", default=sys.executable, help="interpreter of the runs")
        g = p.add_argument_group("on this machine")
        g.add_argument("--gpus", help="GPUs to use, e.g. '0 1 2 3'; 'cpu' entries are CPU slots "
                                      "(default: every GPU nvidia-smi lists, else one CPU slot)")
        g.add_argument("--runs_per_gpu", type=positive_int, default=1, help="runs at a time per GPU")
        g.add_argument("--slots", type=positive_int, help="N CPU slots sharing the cores")
        g = p.add_argument_group("SLURM")
        g.add_argument("--slurm", action="store_true", help="submit job arrays instead")
        g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                       help="write the task files and print the sbatch commands; submit nothing")
        g.add_argument("--sbatch_args", default="", metavar="'OPTIONS'",
                       help="e.g. '-p gpu --gres=gpu:1 --cpus-per-task=4 --time=12:00:00'")
        g.add_argument("--array_parallel", type=positive_int, help="at most N tasks of an array at a time")
        g.add_argument("--max_requeues", type=natural_int, default=MAX_REQUEUES,
                       help=f"times a task warned of its time limit requeues itself (default {MAX_REQUEUES})")
    return top


def positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return int(text)


def natural_int(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 0")
    return int(text)


def parse(argv):
    """(options, flags for the runs). `--opt VALUE` is joined into `--opt=VALUE` first,
    so that a value that looks like a flag (--sbatch_args --time=5) stays a value."""
    argv, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in VALUED and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    opts, passed = build_parser().parse_known_args(joined)
    return opts, passed + rest


def is_number(text, kind=float):
    try:
        kind(text)
        return True
    except ValueError:
        return False


def numbers(text, option, kind=float):
    """The words of a list option, checked to be numbers (kept as written)."""
    words = text.split()
    if not words:
        raise SweepError(f"{option} is empty")
    for word in words:
        if not is_number(word, kind):
            raise SweepError(f"{option} {text!r}: {word!r} is not {'an integer' if kind is int else 'a number'}")
    return words


def noise_settings(text, example):
    """[(type, rate)] of --noise 'TYPE:RATE ...'."""
    settings = []
    for setting in text.split():
        kind, _, rate = setting.partition(":")
        if not kind or not is_number(rate):
            raise SweepError(f"--noise {setting}: write TYPE:RATE, e.g. {example}")
        settings.append((kind, rate))
    if not settings:
        raise SweepError("--noise is empty")
    return settings


def flag_value(flags, name, default):
    """The value of --name in the runs' flags (the last one wins, as in argparse)."""
    value = default
    for i, word in enumerate(flags):
        if word == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif word.startswith(name + "="):
            value = word[len(name) + 1:]
    return value


# ---------------------------------------------------------------- runs

class Run:
    """One training command; `after` is the run (its warm-up) that must finish first."""

    def __init__(self, opts, script, flags, after=None):
        self.script, self.after = script, after
        self.command = [opts.python, script, *flags, "--if_exists", "auto"] + \
            (["--retry_diverged"] if opts.retry_diverged else [])
        self.run_dir = self.log = None


def gls_runs(opts, flags):
    rates = numbers(opts.smooth_rates, "--smooth_rates")
    runs = []
    for noise_type, rate in noise_settings(opts.noise, "symmetric:0.4"):
        for seed in numbers(opts.seeds, "--seeds", int):
            common = [*flags, "--noise_type", noise_type, "--noise_rate", rate, "--seed", seed]
            warmup = None
            if opts.mode != "direct":
                warmup = Run(opts, "main_warmup.py", common + shlex.split(opts.warmup_args))
                runs.append(warmup)
            for r in rates:
                if opts.mode != "direct":
                    runs.append(Run(opts, "main_GLS_load.py", common + ["--smooth_rate", r], after=warmup))
                if opts.mode != "load":
                    runs.append(Run(opts, "main_GLS_direct_train.py", common + ["--smooth_rate", r]))
    return runs


def sln_runs(opts, flags):
    sigmas = numbers(opts.sigmas, "--sigmas")
    return [Run(opts, "noise_cifar_train.py", [*flags, "--noise_mode", mode, "--noise_rate", rate,
                                               "--seed", seed, "--sigma", sigma])
            for mode, rate in noise_settings(opts.noise, "sym:0.4")
            for seed in numbers(opts.seeds, "--seeds", int) for sigma in sigmas]


def resolve(runs, log_dir):
    """Give each run its folder, from the script's own --print_run_dir called in this
    process (one torch import for the whole sweep), and its log; drop repeated runs.
    A run whose flags the script rejects stops the sweep before anything starts."""
    from errors import UserError

    unique = {}
    for run in runs:
        out, err, reason = io.StringIO(), io.StringIO(), None
        try:
            module = importlib.import_module(run.script[:-len(".py")])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = module.main(run.command[2:] + ["--print_run_dir"])
        except SystemExit as exc:  # argparse's way to reject a flag; its message is in err
            code = exc.code
        except UserError as exc:
            code, reason = 2, str(exc)
        except ImportError as exc:
            raise SweepError(f"cannot import {run.script} ({exc}): run the sweep with the "
                             "project's Python, e.g. .venv/bin/python sweep.py") from None
        if code:
            lines = err.getvalue().strip().splitlines()
            last = ([line for line in lines if line.startswith("error: ")] or lines or [f"exit status {code}"])[-1]
            reason = reason or last.split("error: ", 1)[-1]  # without argparse's "PROG: error: "
            raise SweepError(f"{run.script} rejects its flags: {reason}\n  {shlex.join(run.command[1:])}")
        run.run_dir = out.getvalue().strip().splitlines()[-1]
        run.log = os.path.join(log_dir, run.script[:-len(".py")], os.path.basename(run.run_dir) + ".log")
        unique.setdefault(run.run_dir, run)
    for run in unique.values():
        if run.after:  # a repeated warm-up stands for its first copy
            run.after = unique[run.after.run_dir]
    return list(unique.values())


# ---------------------------------------------------------------- one run

LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def start(command, log, env):
    """Start a run in its own process group, output appended to its log. The kernel
    sends it SIGTERM (it saves and stops) when this process dies, even by kill -9."""
    parent = os.getpid()

    def die_with_parent():  # in the child, between fork and exec
        if LIBC is not None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} "
                  f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}\n"
                  f"=== {shlex.join(command)}\n")
        out.flush()
        return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)


def shell_status(returncode):
    """An exit status as the shell shows it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def record(outcomes, outcome, code, command, run_dir, log):
    """One line of outcomes.tsv (appended: each line is a single small write)."""
    with open(outcomes, "a") as f:
        f.write(f"{outcome}\t{code}\t{shlex.join(command)}\t{run_dir}\t{log}\n")


def signal_quietly(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


# ---------------------------------------------------------------- on this machine

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
    return ["" if d == "cpu" else d for d in devices for _ in range(opts.runs_per_gpu)]


def run_local(runs, opts, log_dir):
    """Run on the slots: a run starts when a slot is free and its warm-up (if any) has
    finished; SIGINT/SIGTERM stop every run (they save) and the sweep."""
    slots = local_slots(opts)
    # CPU runs side by side would each start a thread per core and slow each other down.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // max(slots.count(""), 1)))
    outcomes = os.path.join(log_dir, "outcomes.tsv")
    open(outcomes, "w").close()
    print(f"sweep: {len(runs)} runs on {len(slots)} slot(s) [{' '.join(s or 'cpu' for s in slots)}], "
          f"logs in {log_dir}", flush=True)

    pending, free = list(runs), list(slots)
    running = {}  # pid -> (run, slot, process, start time)
    exit_of = {}  # run folder -> exit status
    stopping = []

    def stop(signum, frame):
        if not stopping:
            print(f"sweep: {signal.Signals(signum).name}: stopping {len(running)} run(s); they save "
                  "their state, and the same command resumes them", file=sys.stderr, flush=True)
        stopping.append(signum)
        for pid in list(running):
            signal_quietly(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for run in list(pending):
                if stopping or not free:
                    break
                if run.after and run.after.run_dir not in exit_of:
                    continue  # its warm-up has not ended yet
                pending.remove(run)
                if run.after and exit_of[run.after.run_dir] != 0:
                    record(outcomes, "skipped-dependency", "-", run.command, run.run_dir, run.log)
                    print(f"skipped-dependency (its warm-up did not finish): {run.run_dir}", flush=True)
                    continue
                slot = free.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot}
                if not slot:
                    env["OMP_NUM_THREADS"] = threads
                proc = start(run.command, run.log, env)
                running[proc.pid] = (run, slot, proc, time.time())
                if stopping:  # the signal came while it started
                    signal_quietly(proc.pid, signal.SIGTERM)
            if not running:
                break
            pid, wait_status = os.wait()  # a signal runs its handler, then the wait goes on
            if pid not in running:
                continue
            run, slot, proc, started = running.pop(pid)
            proc.returncode = code = shell_status(os.waitstatus_to_exitcode(wait_status))
            free.append(slot)
            exit_of[run.run_dir] = code
            outcome = OUTCOME.get(code, "failed")
            record(outcomes, outcome, code, run.command, run.run_dir, run.log)
            print(f"{outcome} (exit {code}, {time.time() - started:.0f}s): {run.run_dir}", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for run in pending:
        record(outcomes, "not-started", "-", run.command, run.run_dir, run.log)
    with open(outcomes) as f:
        tally = collections.Counter(line.split("\t")[0] for line in f)
    print("sweep: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
          + f"; see {outcomes}", flush=True)
    if stopping:
        return 128 + stopping[0]
    return 0 if set(tally) == {"finished"} else 1


# ---------------------------------------------------------------- SLURM

def time_limit_s(sbatch_args):
    """Seconds of the --time (-t) among the sbatch options, or None (none, or unlimited)."""
    value = None
    words = shlex.split(sbatch_args)
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
        parts = [int(p) for p in clock.split(":")]
        if dash:
            parts = (parts + [0, 0])[:3]
        elif len(parts) == 1:
            parts = [0, parts[0], 0]
        elif len(parts) == 2:
            parts = [0, *parts]
        hours, minutes, seconds = parts
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    except ValueError:
        raise SweepError(f"--sbatch_args: cannot read the time limit {value!r}") from None


def signal_lead(sbatch_args):
    limit = time_limit_s(sbatch_args)
    return SIGNAL_LEAD if limit is None else min(SIGNAL_LEAD, max(10, limit // 6))


def submit_slurm(runs, opts, log_dir, name, lead):
    """Write one task file per stage (warm-ups, then the rest) and submit each as a job
    array whose task i runs `sweep.py _task FILE` for line i; the second array starts
    when every task of the first has ended (afterany: a failed warm-up fails only the
    runs that need it, with the script's message)."""
    stages = []  # (stage, task file, number of tasks)
    for stage, stage_runs in (("warmup", [r for r in runs if r.script == "main_warmup.py"]),
                              ("runs", [r for r in runs if r.script != "main_warmup.py"])):
        if stage_runs:
            tasks = os.path.abspath(os.path.join(log_dir, f"tasks_{stage}.jsonl"))
            with open(tasks, "w") as f:
                for run in stage_runs:
                    f.write(json.dumps({"command": run.command, "run_dir": run.run_dir,
                                        "log": os.path.abspath(run.log)}) + "\n")
            stages.append((stage, tasks, len(stage_runs)))

    def sbatch(stage, tasks, n, after):
        task = [opts.python, os.path.join(ROOT, "sweep.py"), "_task", tasks,
                "--max_requeues", str(opts.max_requeues)]
        return ["sbatch", "--parsable", f"--job-name={name}-{stage}",
                f"--array=0-{n - 1}" + (f"%{opts.array_parallel}" if opts.array_parallel else ""),
                "--requeue", "--open-mode=append", f"--signal=B:USR1@{lead}", f"--chdir={ROOT}",
                f"--output={os.path.abspath(log_dir)}/slurm-%A_%a.out", *shlex.split(opts.sbatch_args),
                *([f"--dependency=afterany:{after}"] if after else []), "--wrap", "exec " + shlex.join(task)]

    open(os.path.join(log_dir, "outcomes.tsv"), "w").close()
    print(f"sweep: {len(runs)} runs in {len(stages)} SLURM job array(s) "
          f"({', '.join(f'{n} {stage}' for stage, _, n in stages)}); task files and logs in {log_dir}")
    if opts.dry_run:
        print("dry run, nothing submitted; to submit:")
        after = None
        for stage, tasks, n in stages:
            line = shlex.join(sbatch(stage, tasks, n, after and "ID"))
            print(f"{stage}=$({line.replace('afterany:ID', f'afterany:${{{after}%%;*}}')})")
            after = stage
        return 0
    if not shutil.which("sbatch"):
        raise SweepError("sbatch not found: run this on the cluster's login node (or use --dry-run)")
    after = None
    for stage, tasks, n in stages:
        result = subprocess.run(sbatch(stage, tasks, n, after), capture_output=True, text=True)
        if result.returncode != 0:
            raise SweepError(f"sbatch failed: {result.stderr.strip()}")
        after = result.stdout.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        print(f"submitted job array {after}: {n} {stage} task(s)", flush=True)
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
    os.chdir(ROOT)
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
    proc = start(task["command"], task["log"], dict(os.environ))
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
    record(os.path.join(os.path.dirname(args.tasks), "outcomes.tsv"), outcome, code, task["command"],
           task["run_dir"], task["log"])
    print(f"{time.strftime('%F %T')} {outcome} (exit {code})", flush=True)
    return code


# ---------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_task"]:
        return run_task(argv[1:])
    opts, flags = parse(argv)
    os.chdir(ROOT)
    name = f"sweep_{opts.sweep}"
    log_dir = opts.log_dir or os.path.join(flag_value(flags, "--result_dir", "results"), "sweep_logs", name)
    try:
        if opts.dry_run and not opts.slurm:
            raise SweepError("--dry-run goes with --slurm")
        lead = signal_lead(opts.sbatch_args)
        runs = resolve(gls_runs(opts, flags) if opts.sweep == "gls" else sln_runs(opts, flags), log_dir)
        os.makedirs(log_dir, exist_ok=True)
        if opts.slurm:
            return submit_slurm(runs, opts, log_dir, name, lead)
        return run_local(runs, opts, log_dir)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
