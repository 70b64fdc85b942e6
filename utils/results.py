"""The results contract: one folder per run, every file written atomically.

<result_dir>/<script>/<dataset>-<noise>[<rate>]-<model>-<tag>-seed<seed>-<hash>/
    config.json        every argument of the run
    noisy_labels.npy   the noisy train labels (train order of the data set)
    noise.json         actual noise rate and empirical transition matrix
    metrics.csv        one row per epoch
    summary.json       status (running/finished/diverged/interrupted), best and last accuracy, ...
    last.pt, best.pt   checkpoints
    train_probs.npy    with --record_train_probs: the mean train-set softmax over the epochs
The name is a pure function of the script and the config (the hash covers every
argument that can change the result), so sweeps can find a run without running it.
"""
import csv
import hashlib
import io
import json
import os
import shutil

import torch

from data import RATE_FREE_NOISE
from errors import UserError

# Arguments that cannot change a run's result: left out of its name.
BOOKKEEPING = {"result_dir", "resume", "overwrite", "print_freq", "num_workers", "device",
               "gpu_id", "data_root", "print_run_dir", "ckpt_every", "progress"}


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


class RunFolder:
    def __init__(self, path):
        self.path = path

    def create(self):
        """Make the folder; with --overwrite, delete what it held first."""
        if getattr(self, "replace_existing", False):
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)

    def file(self, name):
        return os.path.join(self.path, name)

    def has(self, name):
        return os.path.exists(self.file(name))

    def write_json(self, name, obj):
        atomic_write_bytes(self.file(name), (json.dumps(obj, indent=2) + "\n").encode())

    def read_json(self, name):
        with open(self.file(name)) as f:
            return json.load(f)

    def write_csv(self, name, rows, columns):
        write_csv(self.file(name), rows, columns)

    def save_npy(self, name, array):
        import numpy as np
        buf = io.BytesIO()
        np.save(buf, array)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def save_checkpoint(self, name, state):
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def load_checkpoint(self, name, map_location="cpu"):
        return load_checkpoint(self.file(name), map_location)

    def status(self):
        """'finished', 'diverged', 'interrupted', 'running' (or crashed), or None if no summary."""
        if not self.has("summary.json"):
            return None
        try:
            return self.read_json("summary.json").get("status")
        except (OSError, ValueError):
            return None


def load_checkpoint(path, map_location="cpu"):
    """Our checkpoints hold tensors and plain Python values only: weights_only loading works."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); it is damaged or "
                        "not one of this project's checkpoints") from None


def open_run_folder(path, resume, overwrite):
    """Check what starting a run in `path` would do, refusing anything that loses results.

    Changes nothing on disk: call RunFolder.create() once the run's input has been
    validated, so a bad invocation neither leaves a folder behind nor deletes one.
    """
    folder = RunFolder(path)
    folder.replace_existing = False
    if not os.path.isdir(path) or not os.listdir(path):
        if resume:
            raise UserError(f"--resume given but {path} holds no run: drop --resume to start it")
        return folder
    status = folder.status()
    if overwrite:
        folder.replace_existing = True
        return folder
    if status == "finished":
        if resume:
            return folder  # nothing left to do; the engine reports it and exits 0
        raise UserError(f"{path} already holds a finished run. Pass --overwrite to replace it "
                        "(its results are deleted), or change --result_dir")
    if resume:
        if not folder.has("last.pt"):
            raise UserError(f"--resume given but {path} has no checkpoint (last.pt): the run "
                            "stopped before its first epoch ended; pass --overwrite to start again")
        return folder
    raise UserError(f"{path} holds an unfinished run (status: {status or 'unknown'}). "
                    "Pass --resume to continue it from its last checkpoint, or --overwrite "
                    "to start again")
