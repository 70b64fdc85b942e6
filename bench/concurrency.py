"""Aggregate training throughput of 1, 2, 4 runs sharing one GPU.

A WRN-28-2 step at batch 128 is small work for a large GPU (1.5M parameters, 1.29
GFLOPs per image forward and backward, bench/throughput.py counts them): one run may
leave the GPU partly idle, and the sweeps (14 smooth rates x noise settings) could
then put several runs on each GPU. This measures whether that pays: for each K in
--runs, K processes start
together, each with its own model, DeviceLoader and synthetic CIFAR-shaped data, as K
independent sweep runs would; each warms up, all are released at once through a
barrier, and each times its own steps (CUDA events on a GPU). The aggregate is all their
images over the span from the first start to the last end.

The default workload is the SLN runs' (docs/REPRODUCTION.md): WRN-28-2, batch 128, SGD momentum
0.9 and weight decay 5e-4, SLN with sigma 0.5 and its momentum model (SLN-MO).

  python bench/concurrency.py --device cuda --json concurrency_h100.json
  python bench/concurrency.py --device cpu --quick          # a smoke test, not a speed figure

GPU figures: not measured yet (docs/BENCHMARKS.md).
"""
import argparse
import json
import multiprocessing as mp
import queue

import torch

# common (beside this file) also puts the project's root on sys.path for the imports below.
from common import (NUM_CLASSES, machine_record, project_forward, project_loader, project_step,
                    run_command, synthetic_cifar, timed_run)
from core.device import PRECISIONS, pick_device, speed_settings
from methods.gls import GLS
from methods.sln import SLN
from models import build_model
from utils.metrics import EpochStats
from utils.state import RunState


def make_method(name, model, labels, device, autocast):
    if name == "gls":
        return GLS(smooth_rate=0.1)
    method = SLN(sigma=0.5, ema_decay=0.999)  # SLN-MO; no label correction inside a timing
    method.setup(RunState.for_model(model, None, device, noisy_labels=labels, num_classes=NUM_CLASSES,
                                    autocast=autocast))
    return method


def one_run(rank, args, barrier, results):
    """One training process: build, warm up, wait for the others, time its own steps."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision
    autocast, channels_last = speed_settings(device, precision)
    torch.manual_seed(rank)
    images, labels = synthetic_cifar(args.n_images, seed=rank)
    loader = project_loader(images, labels, args.batch_size, device, channels_last, seed=rank)
    model = build_model(args.model, NUM_CLASSES, 3, args.width).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    forward = project_forward(model, loader, autocast, precision, args.compile)
    method = make_method(args.method, model, loader.labels, device, autocast)
    stats = EpochStats(device, loader.labels)  # the engine's per-step bookkeeping
    step = project_step(model, forward, optimizer, method, autocast, stats, precision)
    run = timed_run(loader, step, args.warmup, args.steps, device,
                    before_timing=lambda: barrier.wait(timeout=args.timeout))
    results.put({"rank": rank, "precision": precision, "finite": bool(torch.isfinite(stats.loss_sum)), **run})


def measure(k, args):
    """K runs at once; returns their aggregate and per-run images/s."""
    # CUDA cannot be initialised in a forked child; on a CPU, fork spares each run the
    # seconds of importing torch again (the parent itself runs no torch op).
    ctx = mp.get_context("spawn" if args.device.startswith("cuda") else "fork")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=one_run, args=(rank, args, barrier, results)) for rank in range(k)]
    for p in procs:
        p.start()
    runs = []
    try:
        for _ in range(k):
            runs.append(results.get(timeout=args.timeout))
    except queue.Empty:
        raise RuntimeError(f"{k - len(runs)} of {k} runs gave no result within {args.timeout}s") from None
    finally:
        for p in procs:
            p.join(timeout=args.timeout)
    if not all(r["finite"] for r in runs):
        raise RuntimeError("a run's loss went non-finite: the timings are meaningless")
    span = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    per_run = [r["images"] / r["seconds"] for r in sorted(runs, key=lambda r: r["rank"])]
    return {"runs": k, "aggregate_img_s": sum(r["images"] for r in runs) / span,
            "per_run_img_s": per_run, "span_s": span, "precision": runs[0]["precision"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (all runs on this one device)")
    p.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4], help="numbers of concurrent runs")
    p.add_argument("--model", default="wrn28_2")
    p.add_argument("--width", type=int, default=None, help="first-stage channels (default: the paper's)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--method", default="sln", choices=["sln", "gls"])
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--n_images", type=int, default=None, help="per run (default 50,000; 512 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per run (default 30; 1 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 300; 2 with --quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per run (default 1 on a CPU, torch's default on CUDA)")
    p.add_argument("--quick", action="store_true", help="a tiny model and 2 steps: a smoke test")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the runs")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.width = args.width or 4
        args.batch_size = min(args.batch_size, 32)
    for key, full, quick in (("n_images", 50_000, 512), ("warmup", 30, 1), ("steps", 300, 2)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.threads is None and not args.device.startswith("cuda"):
        args.threads = 1  # K runs share the cores: one thread each, not K x all of them
    if args.warmup + args.steps > args.n_images // args.batch_size:
        p.error("--warmup + --steps must fit in one epoch of --n_images / --batch_size batches")
    return args


def main(argv=None):
    args = parse_args(argv)
    results = [measure(k, args) for k in args.runs]
    single = next((r["aggregate_img_s"] for r in results if r["runs"] == 1), None)
    record = {**machine_record(pick_device(args.device)), "model": args.model, "width": args.width,
              "batch_size": args.batch_size, "method": args.method, "compile": args.compile,
              "steps": args.steps, "warmup": args.warmup, "threads_per_run": args.threads,
              "quick": args.quick, "results": results}
    width = "" if args.width is None else f" width {args.width}"
    print(f"{args.model}{width}, batch {args.batch_size}, {args.method}, {record['device']}, "
          f"torch {record['torch_version']}, {results[0]['precision']}, {args.steps} timed steps per run")
    print(f"{'runs':>5}{'aggregate img/s':>18}{'vs 1 run':>10}{'per run img/s':>30}")
    for r in results:
        gain = f"{r['aggregate_img_s'] / single:.2f}x" if single else "-"
        per = ", ".join(f"{v:.0f}" for v in r["per_run_img_s"])
        print(f"{r['runs']:>5}{r['aggregate_img_s']:>18.0f}{gain:>10}{per:>30}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    run_command(main)
