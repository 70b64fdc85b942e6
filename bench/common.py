"""What the benchmarks share: synthetic CIFAR-shaped data, the project's loader and
step as the engine runs them, timing, and the record of the machine.

Kept free of torchvision and PIL (the reference pipeline's, bench/throughput.py), so
each of bench/concurrency.py's processes starts quickly.
"""
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch

# Run as `python bench/<script>.py`: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.cifar import SPECS  # noqa: E402
from data.loader import DeviceLoader  # noqa: E402
from core.args import run_main  # noqa: E402
from core.device import cpu_name  # noqa: E402
from utils.compile_check import check_compiled  # noqa: E402
from utils.state import RunState  # noqa: E402

MEAN, STD = SPECS["cifar10"]["mean"], SPECS["cifar10"]["std"]
NUM_CLASSES = 10


def run_command(main):
    """A benchmark's main() as a command: what main returns is for callers in Python (the
    command's results are its JSON file); bad input ends, as in the scripts, with the
    message and exit status 2."""
    def command():
        main()
        return 0
    run_main(command)


# ---------------------------------------------------------------- data

def synthetic_cifar(n, seed=0):
    """n random CIFAR-shaped images, uint8 (n, 32, 32, 3) as the CIFAR pickles decode, and labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, n)


def project_loader(images_hwc, labels, batch_size, device, channels_last, seed=0):
    images = torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous()
    return DeviceLoader(images, labels, batch_size, MEAN, STD, device, train=True,
                        seed=seed, channels_last=channels_last)


# ---------------------------------------------------------------- the project's step and timing

def project_forward(model, batches, autocast, precision, compile_model):
    """The model, or with `compile_model` its torch.compile'd wrapper, checked against eager on
    the first batch (utils.compile_check): timing a miscompiled model means nothing."""
    if not compile_model:
        return model
    forward = torch.compile(model)
    x, y, _ = next(iter(batches))
    check_compiled(model, forward, autocast, precision, x, y)
    return forward


def project_step(model, forward, optimizer, method, autocast, stats, precision="fp32"):
    """The engine's step (the method's train_step on a RunState) and its per-step bookkeeping
    (utils.metrics.EpochStats: metrics accumulate on the device, no sync)."""
    device = stats.device
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    run = RunState.for_model(model, optimizer, device, forward=forward, scaler=scaler, autocast=autocast,
                             method=method)

    def step(batch):
        loss, logits = method.train_step(run, *batch)
        stats.add(0, loss, logits, batch[1], batch[2])
    return step


class Timer:
    """Seconds spent in a block after the device is idle: CUDA events on a GPU (device
    time, recorded on the stream), perf_counter on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.t0


def timed_run(batches, work, warmup, steps, device, before_timing=None):
    """Run `work(batch)` over `warmup` untimed then `steps` timed batches of a fresh
    iterator (one epoch: no worker restart inside the timed part). `before_timing` is
    called between the two (a barrier, for runs that must start together).
    Returns images, device seconds, and the wall-clock start and end of the timed part."""
    it = iter(batches)
    for _ in range(warmup):
        work(next(it))
    if before_timing is not None:
        before_timing()
    count = 0
    with Timer(device) as timer:
        start = time.time()
        for _ in range(steps):
            batch = next(it)
            work(batch)
            count += len(batch[1])
    return {"images": count, "seconds": timer.seconds, "start": start, "end": time.time()}


def images_per_second(batches, work, warmup, steps, device):
    run = timed_run(batches, work, warmup, steps, device)
    return run["images"] / run["seconds"]


# ---------------------------------------------------------------- the record

def device_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_name() or platform.processor() or "cpu"
    return f"{model} ({os.cpu_count()} cores)"


def machine_record(device):
    return {"device": device_description(device), "torch_version": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv)}
