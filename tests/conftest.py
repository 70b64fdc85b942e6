"""Shared test helpers: fixture writers in the exact real formats, script runners."""
import errno
import os

# One torch thread per test process (and the scripts it starts), unless the environment
# says otherwise: `make test` runs two pytest workers, and the SLURM tests' jobs beside them,
# on two cores. Two threads each would make the small models of the tests many times
# slower, waiting on each other, not faster. Set before torch is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import atexit
import pickle
import shutil
import tempfile

# The plans that sweeps keep (sweeps/confirm.py) go to a folder of this test process, not
# to the user's cache, and the scripts the tests start inherit it.
os.environ["NOISY_LABELS_CACHE"] = tempfile.mkdtemp(prefix="noisy-labels-cache-")
atexit.register(shutil.rmtree, os.environ["NOISY_LABELS_CACHE"], ignore_errors=True)
import signal
import subprocess
import sys

import numpy as np
import pytest

from methods.gls import GLS
from methods.sln import SLN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real label files (CIFAR-N, the SLN release's CSVs, Clothing1M's lists) are not part of
# the repository: tests that need them read them from NOISY_LABELS_DATA or, unset, from the
# folder beside the checkout that holds them.
LABEL_DATA = os.environ.get("NOISY_LABELS_DATA") or os.path.join(ROOT, os.pardir, "shared", "data")
# The smallest model that still learns digits: keeps every end-to-end test fast.
TINY = ["--dataset", "digits", "--model", "resnet18", "--width", "8", "--device", "cpu"]


def pytest_collection_modifyitems(config, items):
    """The SLURM tests wait minutes on the cluster: collect them first, so that with
    pytest-xdist (make test) the other files run on the other worker meanwhile."""
    items.sort(key=lambda item: "test_slurm.py" not in item.nodeid)


def real_label_file(*parts):
    """A real label file from the folder NOISY_LABELS_DATA names, or skip the test saying why."""
    path = os.path.join(LABEL_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found: set NOISY_LABELS_DATA to a folder holding the real label "
                    "files (CIFAR-N, SLN, Clothing1M)")
    return path


def write_fake_cifar(root, name="cifar10", n_train=100, n_test=50, labels=None, seed=0):
    """Write a CIFAR folder exactly as the python-version archive extracts it.

    Pickles (protocol 2, latin1-readable) with `data` uint8 (N, 3072) channel-major and
    `labels` (CIFAR-10, five train batches) or `fine_labels`/`coarse_labels` (CIFAR-100).
    Returns (train_images NCHW, train_labels) as written.
    """
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    train_x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    train_y = rng.integers(0, k, n_train) if labels is None else np.asarray(labels)
    test_x = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, k, n_test)

    def dump(path, x, y, extra):
        entry = {"data": x.reshape(len(x), 3072), "filenames": [f"img_{i}.png" for i in range(len(x))],
                 **extra(list(map(int, y)))}
        with open(path, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
            dump(os.path.join(folder, f"data_batch_{i + 1}"), train_x[part], train_y[part],
                 lambda y: {"labels": y, "batch_label": f"training batch {i + 1} of 5"})
        dump(os.path.join(folder, "test_batch"), test_x, test_y, lambda y: {"labels": y})
        meta = {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072}
        with open(os.path.join(folder, "batches.meta"), "wb") as f:
            pickle.dump(meta, f, protocol=2)
    else:
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        labels100 = lambda y: {"fine_labels": y, "coarse_labels": [c // 5 for c in y]}
        dump(os.path.join(folder, "train"), train_x, train_y, labels100)
        dump(os.path.join(folder, "test"), test_x, test_y, labels100)
        meta = {"fine_label_names": [f"f{c}" for c in range(100)], "coarse_label_names": [f"c{c}" for c in range(20)]}
        with open(os.path.join(folder, "meta"), "wb") as f:
            pickle.dump(meta, f, protocol=2)
    return train_x, train_y


def parse_flags(module, *argv):
    """A script's flags, parsed and checked as its main() does (a UserError when refused)."""
    import importlib
    return importlib.import_module(module).preset(list(argv)).parse(list(argv))[0]


def run_in_process(module, argv):
    """Run a script's main(argv) in this process; returns its exit code."""
    import importlib
    return importlib.import_module(module).main(argv)


def run_cli(script, *args, timeout=300):
    """Run a script as users do; returns the CompletedProcess (stdout, stderr, returncode)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def read_json(path):
    import json
    with open(path) as f:
        return json.load(f)


def read_csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def one_thread():
    """Two threads on a busy 2-core machine run small models many times slower.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class InterruptedSLN(SLN):
    """methods.sln.SLN that receives SIGINT as epoch `stop` starts, as a user's Ctrl-C would:
    the engine stops after the previous epoch, and --resume must continue exactly."""

    def __init__(self, *args, stop, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop

    def start_epoch(self, epoch, run):
        super().start_epoch(epoch, run)
        if epoch == self.stop:
            signal.raise_signal(signal.SIGINT)


class InterruptedGLS(GLS):
    """methods.gls.GLS whose process receives `signum` (SIGTERM, as a scheduler sends) as epoch
    `stop` (0-based) starts: the engine stops after the previous epoch."""

    def __init__(self, *args, stop, signum=signal.SIGTERM, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop, self.signum = stop, signum

    def start_epoch(self, epoch, run):
        if epoch == self.stop:
            signal.raise_signal(self.signum)


def fail_writing(monkeypatch, name, times=None):
    """The atomic writes of a file called `name` fail as on a full disk: a third of the data
    written to the temporary file, which is then gone, and ENOSPC. `times`: only the first
    that many fail (None: every one)."""
    import core.files
    real, failed = core.files.atomic_write_bytes, []

    def full(path, data):
        if os.path.basename(path) == name and (times is None or len(failed) < times):
            failed.append(path)
            tmp = core.files.temporary_name(path)
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 3])
            os.remove(tmp)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
        return real(path, data)
    monkeypatch.setattr(core.files, "atomic_write_bytes", full)
