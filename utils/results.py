"""The results contract: one folder per run, every file written atomically (core/files.py).

<result_dir>/<script>/<dataset>-<noise>[<rate>]-<model>-<tag>-seed<seed>-<hash>/
    config.json        every argument of the run, and made_by: the code, command, library
                       versions, device and data that made it (utils/identity.py)
    noisy_labels.npy   the noisy train labels (train order of the data set)
    noise.json         actual noise rate, empirical transition matrix, where the labels came from
    metrics.csv        one row per epoch
    summary.json       status (running/finished/diverged/interrupted/failed), best and last
                       values, per-class results, the method's tunable flags and label, made_by
    last.pt, best.pt   checkpoints (with what identifies the run's noisy labels and model)
    train_probs.npy    with --record_train_probs: the mean train-set softmax over the epochs
    tensorboard/       with --tensorboard: the metrics as TensorBoard event files
    error.log          the traceback of the error that stopped a failed run
    .lock              held (flock) by the one process that trains into the folder
The name is a pure function of the script and the config (the hash covers every
argument that can change the result), so sweeps can find a run without running it.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket

from core.files import RESTART, RunFolder, remove_leftovers, warn  # noqa: F401  (the names of the contract)
from errors import UserError

# Arguments that cannot change a run's result: left out of its name.
BOOKKEEPING = {"result_dir", "resume", "overwrite", "if_exists", "retry_diverged", "print_freq",
               "num_workers", "device", "gpu_id", "data_root", "print_run_dir", "ckpt_every",
               "progress", "tensorboard", "keep_stale", "made_by"}
LOCK_FILE = ".lock"
# What a run writes, and all that an overwrite deletes: anything else in the folder (another
# run's folder under a --result_dir inside this one, a user's notes) is left alone.
RESULT_FILES = ("config.json", "noisy_labels.npy", "noise.json", "metrics.csv", "summary.json",
                "last.pt", "best.pt", "best_val_loss.pt", "train_probs.npy", "val_index.npy",
                "open_set_index.npy", "open_set_source.npy", "error.log")
RESULT_FOLDERS = ("tensorboard",)


def result_settings(cfg):
    """The settings that can change a run's result: the config without bookkeeping and
    without unset optional flags (None, False), so a flag added to the code later with
    such a default neither renames existing run folders nor splits their groups."""
    return {k: v for k, v in sorted(cfg.items())
            if k not in BOOKKEEPING and v is not None and v is not False}


def run_name(cfg, tag):
    from data import noise_type  # here: deciding on a run folder needs no data set

    relevant = result_settings(cfg)
    digest = hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]
    noise = cfg["noise_type"]
    if noise_type(noise).uses_rate:
        noise += f"{cfg['noise_rate']:g}"
    return f"{cfg['dataset']}-{noise}-{cfg['model']}-{tag}-seed{cfg['seed']}-{digest}"


def run_dir(cfg, script, tag):
    return os.path.join(cfg["result_dir"], script, run_name(cfg, tag))


def run_entries(path):
    """The entries of a run folder that the run wrote (RESULT_FILES, RESULT_FOLDERS)."""
    return [n for n in RESULT_FILES + RESULT_FOLDERS if os.path.lexists(os.path.join(path, n))]


def noise_array_files(folder):
    """The arrays a noise type saved beside the labels (noise.json lists them)."""
    report = folder.read_json_or_none("noise.json") or {}
    names = report.get("arrays") if isinstance(report.get("arrays"), list) else []
    return [f"{n}.npy" for n in names if isinstance(n, str) and n.isidentifier()]


def clear(folder):
    """Delete what the run wrote (--if_exists overwrite); the lock and anything else stay."""
    for name in run_entries(folder.path) + noise_array_files(folder):
        if not os.path.lexists(folder.file(name)):
            continue
        path = folder.file(name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


# ---------------------------------------------------------------- one process per run folder

class RunLock:
    """An exclusive flock on <run folder>/.lock, held for the run's whole life.

    The kernel frees it when the process ends, even by SIGKILL, so no stale lock is left.
    A second process fails at once (no waiting) and is told who holds it. On release,
    what acquire() created (the lock file, the folder) is removed again when the folder
    holds nothing else, so a refused invocation leaves no trace.
    """

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd = None
        self.created_file = False
        self.created_folders = []  # the run folder and the parents made for it, deepest first

    def acquire(self):
        path = os.path.abspath(self.folder)
        while not os.path.exists(path):
            if os.path.islink(path):
                raise UserError(f"{path} is a symbolic link to nothing ({os.readlink(path)}): remove "
                                "the link or create its target, or change --result_dir")
            path = os.path.dirname(path)
        try:
            path = os.path.abspath(self.folder)
            while not os.path.exists(path):
                self.created_folders.append(path)
                path = os.path.dirname(path)
            if self.created_folders:
                os.makedirs(self.folder)
            while self.fd is None:
                fd, created = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise UserError(f"{self.folder} is in use by {holder}: two processes never "
                                    "write one run folder. Wait for that run to end (or stop it), "
                                    "or change --result_dir") from None
                # A process that gave the folder up may have unlinked the file between our
                # open and flock: then lock the file that is there now.
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self.fd, self.created_file = fd, created
                else:
                    os.close(fd)
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:
            self.release()
            raise UserError(f"cannot create or lock the run folder {self.folder} "
                            f"({exc.strerror or exc}): --result_dir must be a folder you can write to") from None
        return self

    def _open(self):
        while True:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                pass
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # unlinked in between: create it

    def release(self):
        """Unlock; remove the lock file and folder acquire() created if nothing else is there."""
        if os.path.isdir(self.folder) and set(os.listdir(self.folder)) <= {LOCK_FILE}:
            try:
                if self.created_file:
                    os.remove(self.path)
                for path in self.created_folders:
                    os.rmdir(path)  # only while empty: another run may have started beside
            except OSError:
                pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def claim_run_folder(path, if_exists, retry_diverged=False):
    """Lock the run folder for this process's life and decide, under the lock, what to do
    with what it holds. Yields (RunFolder, action); action is one of

        start      nothing there: a new run
        overwrite  delete the results, then a new run (--if_exists overwrite; with auto,
                   an unfinished run without a checkpoint, or a diverged one with
                   --retry_diverged)
        resume     continue from last.pt (--if_exists auto on an unfinished run)
        finished   --if_exists auto on a finished run: nothing to do
        diverged   --if_exists auto on a diverged run: a result, kept

    --if_exists refuse (the default) raises UserError on any folder that holds results,
    naming what to do instead. Nothing on disk changes here; the caller clears the folder for
    `overwrite` once its input has been checked.
    """
    lock = RunLock(path).acquire()
    try:
        folder = RunFolder(path)
        left = remove_leftovers(path)  # temporary files of a writer killed mid-write
        if left:
            warn(f"removed {len(left)} temporary file(s) a killed process left in {path}")
        yield folder, decide(folder, if_exists, retry_diverged)
    finally:
        lock.release()


def decide(folder, if_exists, retry_diverged):
    """The action for what the folder holds (see claim_run_folder). A run file that exists
    but is not a regular file (a folder, a device, a link) is damage that neither a resume
    nor a refusal message can work around."""
    if not run_entries(folder.path):
        return "start"
    if if_exists == "overwrite":
        return "overwrite"
    damaged = [n for n in RESULT_FILES if os.path.lexists(folder.file(n))
               and (os.path.islink(folder.file(n)) or not os.path.isfile(folder.file(n)))]
    if damaged:
        raise UserError(f"{folder.path}: {', '.join(damaged)} is not a regular file: the run folder is "
                        f"damaged; {RESTART}")
    status = folder.status()
    if if_exists == "auto":
        if status == "finished":
            return "finished"
        if status == "diverged":
            return "overwrite" if retry_diverged else "diverged"
        return "resume" if folder.has("last.pt") else "overwrite"
    path = folder.path
    if status == "finished":
        raise UserError(f"{path} already holds a finished run. Pass --if_exists auto to leave it "
                        "as it is, --if_exists overwrite to replace it (its results are deleted), "
                        "or change --result_dir")
    if status == "diverged":
        raise UserError(f"{path} holds a run that diverged (a result, kept). Pass --if_exists auto "
                        "--retry_diverged to train it again, or --if_exists overwrite")
    return_hint = ("--if_exists auto (or --resume) continues it from its last checkpoint; --if_exists "
                   "overwrite starts it again" if folder.has("last.pt") else "it has no checkpoint (last.pt) "
                   "to continue from: --if_exists auto or --if_exists overwrite starts it again")
    raise UserError(f"{path} holds an unfinished run (status: {status or 'unknown'}): {return_hint}")
