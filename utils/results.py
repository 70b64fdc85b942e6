"""The results contract: one folder per run, every file written atomically.

<result_dir>/<script>/<dataset>-<noise>[<rate>]-<model>-<tag>-seed<seed>-<hash>/
    config.json        every argument of the run
    noisy_labels.npy   the noisy train labels (train order of the data set)
    noise.json         actual noise rate, empirical transition matrix, where the labels came from
    metrics.csv        one row per epoch
    summary.json       status (running/finished/diverged/interrupted/failed), best and last values
    last.pt, best.pt   checkpoints (with what identifies the run's noisy labels and model)
    train_probs.npy    with --record_train_probs: the mean train-set softmax over the epochs
    .lock              held (flock) by the one process that trains into the folder
The name is a pure function of the script and the config (the hash covers every
argument that can change the result), so sweeps can find a run without running it.
"""
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import sys

import torch

from data.noise import RATE_FREE_NOISE
from errors import UserError

# Arguments that cannot change a run's result: left out of its name.
BOOKKEEPING = {"result_dir", "resume", "overwrite", "if_exists", "retry_diverged", "print_freq",
               "num_workers", "device", "gpu_id", "data_root", "print_run_dir", "ckpt_every",
               "progress"}
LOCK_FILE = ".lock"
# The way on from a damaged run folder, or one that does not belong to the flags given.
RESTART = "start the run again with --if_exists overwrite"


def result_settings(cfg):
    """The settings that can change a run's result: the config without bookkeeping and
    without unset optional flags (None, False), so a flag added to the code later with
    such a default neither renames existing run folders nor splits their groups."""
    return {k: v for k, v in sorted(cfg.items())
            if k not in BOOKKEEPING and v is not None and v is not False}


def run_name(cfg, tag):
    relevant = result_settings(cfg)
    digest = hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]
    noise = cfg["noise_type"]
    if noise not in RATE_FREE_NOISE:
        noise += f"{cfg['noise_rate']:g}"
    return f"{cfg['dataset']}-{noise}-{cfg['model']}-{tag}-seed{cfg['seed']}-{digest}"


def run_dir(cfg, script, tag):
    return os.path.join(cfg["result_dir"], script, run_name(cfg, tag))


def atomic_write_bytes(path, data):
    """Write to a temporary file beside `path`, fsync, then rename over it.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv(path, rows, columns):
    """Rows (dicts) as CSV with these columns, atomically: keys outside `columns` are
    left out; missing keys and None are written as empty fields."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_json_file(path):
    """A JSON object from `path`, or None with what is wrong when it is missing, damaged or
    not an object: (obj, None) or (None, "is missing" / "is not readable JSON (...)" /
    "holds a JSON list, not an object")."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, ValueError) as exc:
        return None, f"is not readable JSON ({exc.__class__.__name__})"
    if not isinstance(obj, dict):
        return None, f"holds a JSON {type(obj).__name__}, not an object"
    return obj, None


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


class RunFolder:
    def __init__(self, path):
        self.path = path

    def file(self, name):
        return os.path.join(self.path, name)

    def has(self, name):
        return os.path.exists(self.file(name))

    def contents(self):
        """The folder's entries other than the lock file ([] when it does not exist)."""
        if not os.path.isdir(self.path):
            return []
        return sorted(n for n in os.listdir(self.path) if n != LOCK_FILE)

    def clear(self):
        """Delete every result in the folder (--if_exists overwrite); the lock stays."""
        for name in self.contents():
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def write_json(self, name, obj):
        atomic_write_bytes(self.file(name), (json.dumps(obj, indent=2) + "\n").encode())

    def read_json(self, name):
        """The JSON object in `name`; a damaged or missing file is a UserError naming it."""
        obj, problem = read_json_file(self.file(name))
        if obj is None:
            raise UserError(f"{self.file(name)} {problem}: the run folder is damaged; {RESTART}")
        return obj

    def write_csv(self, name, rows, columns):
        write_csv(self.file(name), rows, columns)

    def save_npy(self, name, array):
        import numpy as np
        buf = io.BytesIO()
        np.save(buf, array)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def load_npy(self, name):
        import numpy as np
        try:
            return np.load(self.file(name), allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{self.file(name)} is missing: the run folder is damaged; {RESTART}") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.file(name)} cannot be read ({exc}): the run folder is damaged; "
                            f"{RESTART}") from None

    def save_checkpoint(self, name, state):
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def load_checkpoint(self, name, map_location="cpu"):
        return load_checkpoint(self.file(name), map_location, fix=RESTART)

    def status(self):
        """'finished', 'diverged', 'interrupted', 'running' (or crashed), 'failed', or None
        when there is no readable summary."""
        summary, _ = read_json_file(self.file("summary.json"))
        return None if summary is None else summary.get("status")


def load_checkpoint(path, map_location="cpu", fix="pass a checkpoint written by this project"):
    """Our checkpoints hold tensors and plain Python values only: weights_only loading works.
    A missing or unreadable file is a UserError ending with `fix`, the caller's way on."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist: {fix}") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); it is damaged or "
                        f"not one of this project's checkpoints: {fix}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds a {type(ckpt).__name__}, not one of this "
                        f"project's checkpoints: {fix}")
    return ckpt


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
        if RunFolder(self.folder).contents() == []:
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
    naming the way on. Nothing on disk changes here; the caller clears the folder for
    `overwrite` once its input has been checked.
    """
    lock = RunLock(path).acquire()
    try:
        folder = RunFolder(path)
        yield folder, decide(folder, if_exists, retry_diverged)
    finally:
        lock.release()


# The files a run writes; any of them that exists but is not a regular file (a folder, a
# device) is damage that neither a resume nor a refusal message can work around.
RESULT_FILES = ("config.json", "noisy_labels.npy", "noise.json", "metrics.csv", "summary.json",
                "last.pt", "best.pt", "train_probs.npy", "val_index.npy")


def decide(folder, if_exists, retry_diverged):
    if not folder.contents():
        return "start"
    if if_exists == "overwrite":
        return "overwrite"
    damaged = [n for n in RESULT_FILES if os.path.lexists(folder.file(n)) and not os.path.isfile(folder.file(n))]
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
    return_hint = ("--if_exists auto (or --resume) continues it from its last checkpoint"
                   if folder.has("last.pt") else "it has no checkpoint (last.pt) to continue from")
    raise UserError(f"{path} holds an unfinished run (status: {status or 'unknown'}): {return_hint}; "
                    "--if_exists overwrite starts it again")
