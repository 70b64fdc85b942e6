"""Runs on CPU slots started from a process that has imported torch and the project once.

A short run spends most of its time importing: torch, its compiler (the optimiser's first
step imports it) and the project take about 4 s on a 2-core machine, where a smoke run
trains for 1 s. The preloading process (`serve`, started as `python -m
sweeps.launch.preload`) imports them once, never runs a tensor operation, and forks a child
for each run. The child is what a started script would be: its own process group
(setsid), its log as stdout and stderr, no stdin, the run's environment and folder,
SIGTERM when its parent dies, `sys.argv` and `__main__` as for `python script.py ...`, its
command line in `ps` (setproctitle), the same exit status (a death by signal included),
atexit handlers run. It trains with torch's threads set to the run's OMP_NUM_THREADS.

The sweep (`Preloaded`) sends a request per run and reads back each child's pid and exit
status. Before each start it checks the files the preloading process imported (and their
folders, where plug-ins are added): when one changed, a new preloading process takes
over, so that a run always executes the code its folder records. GPU slots, and
`sweep.py --no_preload`, start each run as a fresh process (launch.start).

Protocol: JSON lines. Sweep -> server: {"argv", "log", "env", "cwd"}. Server -> sweep:
{"ready": files} once, then {"started": pid} per request and {"ended": pid, "code":
os.waitstatus_to_exitcode(status)} per child.
"""
import atexit
import io
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback

from . import LIBC, die_with_parent, run_env, script_path, shell_status, write_log_header

READY_TIMEOUT_S = 300
PR_SET_NAME = 15


def available():
    """Can runs be forked from a preloading process here (Linux: fork and a parent-death signal)?"""
    return LIBC is not None and hasattr(os, "fork")


# ---------------------------------------------------------------- the preloading process

def preload():
    """Import what every run imports: torch with its compiler stack (imported by the
    optimiser's construction), the engine and command line, every plug-in, and the modules
    the data sets declare that their loading imports (DatasetSpec.imports)."""
    import importlib

    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.optim  # noqa: F401

    import utils.cli  # noqa: F401
    import utils.engine  # noqa: F401
    from data import dataset_names, dataset_spec
    from methods import methods

    methods()
    import models  # noqa: F401

    for name in dataset_names():
        for module in dataset_spec(name).imports:
            try:
                importlib.import_module(module)
            except ImportError:  # the run that needs it says so, as it would unpreloaded
                pass


def loaded_files(root):
    """{path: [mtime_ns, size]} of the project's imported files and of their folders."""
    paths = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = os.path.abspath(path)
        if path.startswith(root + os.sep) and os.sep + ".venv" + os.sep not in path[len(root):]:
            paths.update((path, os.path.dirname(path)))
    return {path: signature(path) for path in sorted(paths)}


def signature(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def serve():
    """The preloading process's loop: fork a run per request line on stdin, report each
    child's pid and exit status on stdout; end when stdin closes and no child is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's: it stops the runs
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The messages go out on a private copy of stdout; what an import prints goes to stderr.
    channel = os.dup(1)
    os.dup2(2, 1)
    preload()

    def send(message):
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(channel, data):]

    send({"ready": loaded_files(root)})
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children, pending, reading = set(), b"", True
    while reading or children:
        ready, _, _ = select.select([0, wake_r] if reading else [wake_r], [], [], 5.0)
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            send({"ended": pid, "code": os.waitstatus_to_exitcode(status)})
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                reading = False
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = fork_run(json.loads(line), (wake_r, wake_w, channel))
                children.add(pid)
                send({"started": pid})


def fork_run(request, own_fds):
    pid = os.fork()
    if pid:
        return pid
    try:
        child(request, own_fds)  # never returns
    except BaseException:
        traceback.print_exc()  # into the run's log once it is open, else the preloading process's
        sys.stderr.flush()
    finally:
        os._exit(70)


def child(request, own_fds):
    """The run, in the forked child, set up as launch.start sets up a started script."""
    parent = os.getppid()
    os.setsid()
    die_with_parent(parent)()  # SIGTERM when the preloading process dies
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh Python
    for fd in own_fds:
        os.close(fd)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8",
                                  errors="surrogateescape")
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    name_process([sys.executable, *request["argv"]])  # before the environment changes: it moves it
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    threads = request["env"].get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch
        torch.set_num_threads(int(threads))
    script, *_ = request["argv"]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    os._exit(run_script(script))


def name_process(command):
    """Show the run's command in ps and /proc/PID/cmdline, as for a started script (else they
    would show the preloading process's)."""
    try:
        import setproctitle
    except ImportError:
        LIBC.prctl(PR_SET_NAME, os.fsencode(os.path.basename(command[1]))[:15])
        return
    # a path's bytes that are not UTF-8 are shown replaced
    setproctitle.setproctitle(shlex.join(command).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def run_script(script):
    """Run the script as `python script` would and return its exit status."""
    import runpy

    interrupted, code = False, 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    finish()
    if interrupted:  # as Python ends on an uncaught KeyboardInterrupt: by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def finish():
    """What the interpreter does at its end: wait for the threads, run atexit, flush."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:
            traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------- the sweep's side

class Server:
    """One preloading process, as the sweep sees it."""

    def __init__(self, env, root, log):
        self.log = log
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "sweeps.launch.preload"], cwd=root, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True, preexec_fn=die_with_parent(os.getpid()))
        self.fd, self.buffer, self.runs, self.files = self.proc.stdout.fileno(), b"", set(), None

    def messages(self, block_s=None):
        """The messages that have arrived ([] at the end of the process's output: None)."""
        if block_s is not None:
            ready, _, _ = select.select([self.fd], [], [], block_s)
            if not ready:
                return []
        data = os.read(self.fd, 65536)
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def wait_ready(self):
        """True when the process has preloaded; False (and it is ended) when it could not."""
        deadline = time.time() + READY_TIMEOUT_S
        while time.time() < deadline:
            messages = self.messages(block_s=max(0.0, deadline - time.time()))
            if messages is None:
                break
            for message in messages:
                if "ready" in message:
                    self.files = message["ready"]
                    return True
        self.close(kill=True)
        return False

    def current(self):
        """Are the files it imported unchanged?"""
        return all(signature(path) == sig for path, sig in self.files.items())

    def request(self, command, log, env):
        self.proc.stdin.write(json.dumps({"argv": command[1:], "log": log, "env": env,
                                          "cwd": os.getcwd()}).encode() + b"\n")
        self.proc.stdin.flush()

    def close(self, kill=False):
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if kill:
            self.proc.kill()
            self.proc.wait()

    def why_not(self):
        """The last line the process wrote to its log, if any."""
        try:
            with open(self.log, "rb") as f:
                return [line for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()][-1:]
        except OSError:
            return []


class Started:
    """What the local launcher keeps of a started run (as of a subprocess.Popen)."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None


class Preloaded:
    """Starting runs from preloading processes, waiting for them, falling back to fresh
    processes (launch.start) where a preloading process cannot start."""

    def __init__(self, env, root, fresh_start, log):
        self.env, self.root, self.fresh_start, self.log = env, root, fresh_start, log
        self.server, self.servers, self.exits, self.fresh, self.failed = None, [], [], {}, False

    def start(self, command, log, env):
        if command[0] != sys.executable or not self._server():
            proc = self.fresh_start(command, log, env)
            self.fresh[proc.pid] = proc
            return proc
        env = run_env(env)
        write_log_header(command, log, env)
        self.server.request([command[0], script_path(command), *command[2:]], os.path.abspath(log), env)
        while True:
            messages = self.server.messages()
            if messages is None:  # it ended between two runs: the run goes to a fresh process
                self._gone(self.server)
                self.server = None
                return self.start(command, log, env)
            pid = self._take(self.server, messages)
            if pid is not None:
                return Started(pid)

    def _server(self):
        if self.failed:
            return False
        if self.server is not None and not self.server.current():
            self.server.close()  # it ends when its runs have ended
            self.server = None
        if self.server is None:
            server = Server(self.env, self.root, self.log)
            if not server.wait_ready():
                why = server.why_not()
                print("sweep: the preloading process did not start" + (f" ({why[0]})" if why else "")
                      + f"; each run starts as a fresh process (its log: {self.log})", file=sys.stderr, flush=True)
                self.failed = True
                return False
            self.server = server
            self.servers.append(server)
        return True

    def _take(self, server, messages):
        """Record the messages; the pid of a "started" among them, if any."""
        started = None
        for message in messages:
            if "started" in message:
                started = message["started"]
                server.runs.add(started)
            elif "ended" in message:
                server.runs.discard(message["ended"])
                self.exits.append((message["ended"], shell_status(message["code"])))
        return started

    def _gone(self, server):
        """A preloading process ended: its runs, if any were left, were sent SIGTERM."""
        for pid in sorted(server.runs):
            self.exits.append((pid, 128 + signal.SIGTERM))
        server.runs.clear()
        if server in self.servers:
            self.servers.remove(server)
        server.close()
        server.proc.wait()

    def wait(self):
        """(pid, exit status as the shell shows it) of the next run to end."""
        while not self.exits:
            for pid, proc in list(self.fresh.items()):
                if proc.poll() is not None:
                    del self.fresh[pid]
                    self.exits.append((pid, shell_status(proc.returncode)))
            if self.exits:
                break
            live = [s for s in self.servers if s.runs or s is self.server]
            if not live and not self.fresh:
                raise RuntimeError("waiting for a run, but none is running")
            ready, _, _ = select.select([s.fd for s in live], [], [], 0.5 if self.fresh else None)
            for server in [s for s in live if s.fd in ready]:
                messages = server.messages()
                if messages is None:
                    self._gone(server)
                    if server is self.server:
                        self.server = None
                else:
                    self._take(server, messages)
        return self.exits.pop(0)

    def close(self):
        for server in self.servers:
            server.close()
        for server in self.servers:
            try:
                server.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.proc.kill()


if __name__ == "__main__":
    serve()
