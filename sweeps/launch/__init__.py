"""Running a sweep's planned runs. Each launcher has one entry, launch(runs, opts, log_dir,
name) -> exit status: local.py on this machine's slots, slurm.py as SLURM job arrays.
What they share is here: starting a run's process with its log, the outcomes.tsv record,
and the command a run is started with."""
import ctypes
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from ..cli import ROOT

OUTCOME = {0: "finished", 3: "diverged", 130: "interrupted", 143: "interrupted"}  # else "failed"

LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def config_digest(run_dir):
    """sha1 of a run folder's config.json (None without one): what --overwrite_stale replaces."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def launch_command(command, run_dir, stale_config):
    """The command to start now. A run that --overwrite_stale retrains gets --if_exists
    overwrite only while its folder still holds the stale result the sweep found (the same
    config.json): a restarted sweep or a requeued SLURM task then resumes the retraining."""
    if stale_config is None or config_digest(run_dir) != stale_config:
        return command
    return command[:len(command) - command[::-1].index("--if_exists") - 1] + ["--if_exists", "overwrite"]


def log_header(command, devices):
    """The two lines that open each attempt in a run's log."""
    return (f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} "
            f"CUDA_VISIBLE_DEVICES={devices}\n=== {shlex.join(command)}\n")


def die_with_parent(parent):
    """A preexec_fn: the kernel sends the child SIGTERM (it saves and stops) when `parent`
    dies, even by kill -9."""
    def preexec():  # in the child, between fork and exec
        if LIBC is not None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def script_path(command):
    """The script of a run's command by its path in this checkout: relative paths in its
    flags mean the current folder, as for a script started by hand."""
    return command[1] if os.path.isabs(command[1]) else os.path.join(ROOT, command[1])


def run_env(env):
    """A run's environment: it writes into its log UTF-8, keeping the bytes of a name that is
    not UTF-8 (a strict locale would end the run with UnicodeEncodeError when it prints its
    folder)."""
    return {**env, "PYTHONIOENCODING": "utf-8:surrogateescape"}


def write_log_header(command, log, env):
    """Open an attempt in the run's log: its two header lines."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "ab") as out:  # bytes: a path may hold any byte but "/" and NUL
        out.write(encode(log_header(command, env.get("CUDA_VISIBLE_DEVICES", "unset"))))


def start(command, log, env):
    """Start a run in its own process group, output appended to its log. The kernel
    sends it SIGTERM (it saves and stops) when this process dies, even by kill -9."""
    env = run_env(env)
    write_log_header(command, log, env)
    with open(log, "ab") as out:
        return subprocess.Popen([command[0], script_path(command), *command[2:]], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent(os.getpid()))


def encode(text):
    """Text with the bytes of non-UTF-8 file names (decoded by Python as surrogates) restored."""
    return text.encode("utf-8", "surrogateescape")


def shell_status(returncode):
    """An exit status as the shell shows it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def record(outcomes, outcome, code, command, run_dir, log):
    """One line of outcomes.tsv (appended: each line is a single small write)."""
    with open(outcomes, "ab") as f:
        f.write(encode(f"{outcome}\t{code}\t{shlex.join(command)}\t{run_dir}\t{log}\n"))


def signal_quietly(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass
