"""The training cost of each method relative to cross-entropy, on the engine's own run.

Each method is prepared as train.py prepares a run (utils.engine.prepare: the data, the
noisy labels, the networks and the method's set-up) and then trained for a few epochs
the way the engine trains one, every hook timed on its own:

  step         one call of the method's train_step with the engine's per-step bookkeeping
               (the median over an epoch's steps), and the sum over the epoch: a method
               that trains on batches of its own (DivideMix's labelled and unlabelled
               subsets, each network in turn; PES's confident subset) takes another
               number of steps per epoch than the run's loader has batches.
  start_epoch  the method's passes at the start of an epoch (DivideMix's loss pass of both
               networks and its GMM fit, PES's confident selection), in seconds per epoch.
  evaluation   the engine's test evaluation of every model the method reports (the
               second network, the weight averages), in seconds per epoch.
  one-off      PES's refinement epoch (its re-initialised stages trained for T2 + T3
               passes), once per run.

On a CPU the figures are CPU seconds of the process (one torch thread by default), so
that the load of a shared machine slows the benchmark down without changing them much;
on a GPU they are device seconds. The first epoch is not counted (warm-up: allocations, the first convolutions); the
figures are medians over the other epochs. Methods with a warm-up phase of plain
cross-entropy get it shortened so that the timed epochs are in their main phase
(PHASE_FLAGS): a phase's cost per epoch does not depend on how many epochs it lasts.

Measured (docs/BENCHMARKS.md has the table, machine and command):

  python bench/method_cost.py --json bench/results/method_step_cpu.json
  python bench/method_cost.py --methods "gce dividemix" --width 4 --epochs 2
"""
import argparse
import json
import statistics
import tempfile
import time
import types

import torch

# common (beside this file) also puts the project's root on sys.path for the imports below.
from common import Timer, machine_record, run_command
from methods import methods
from utils.engine import evaluate_all, lr_at, prepare
from utils.metrics import EpochStats
from utils.plan import plan_script

CE = "ce"
CE_FLAGS = ["--method", "gls", "--smooth_rate", "0"]
# Flags a method needs to run at all (T-Revision's held-out split), and the shortened
# warm-up phases: the main phase starts at the second epoch (PES: its refinement is the
# second epoch, its main phase the third).
PHASE_FLAGS = {
    "dividemix": ["--warm_up", "1"],
    "pes": ["--T1", "1"],
    "cores": ["--cores_warmup", "1", "--cores_beta_warmup", "0"],
    "elr_plus": ["--elr_plus_warmup", "0"],
    "fdiv": ["--warmup", "0"],
    "trevision": ["--val_fraction", "0.1", "--revision_epochs", "1"],
}
ONE_OFF_EPOCH = {"pes": 1}  # the epoch index of a method's one-off pass, not counted as its main phase


def method_flags(name):
    return CE_FLAGS if name == CE else ["--method", name, *PHASE_FLAGS.get(name, [])]


def method_argv(name, args):
    return [*method_flags(name), "--dataset", args.dataset, "--model", args.model, "--width", str(args.width),
            "--batch_size", str(args.batch_size), "--test_batch_size", "512", "--weight_decay", "0",
            "--noise_type", "symmetric", "--noise_rate", "0.4", "--n_epoch", str(args.epochs),
            "--lr", "0.02", "--momentum", "0.9", "--no-nesterov", "--lr_milestones",
            "--device", args.device, "--seed", "0"]


def prepared_run(argv, folder):
    """The RunState train.py would train for these flags (nothing is written to `folder`)."""
    plan = plan_script("train", argv)
    cfg = plan.cfg
    run = prepare(cfg, dict(vars(cfg)), plan.script, plan.method, types.SimpleNamespace(path=folder),
                  "start", None)
    return run, plan.method


def seconds(device, work):
    """The seconds `work()` takes: on a CPU the process's CPU time (time.process_time), which
    a busy machine's other processes do not inflate as they do the wall-clock time; on a GPU
    the device time (CUDA events)."""
    cpu = time.process_time()
    with Timer(device) as t:
        result = work()
    return (t.seconds if device.type == "cuda" else time.process_time() - cpu), result


def begin_epoch(run, epoch, lr):
    """What the engine does before an epoch's start_epoch: every network's lr (CORES divides
    it in start_epoch, from the epoch's own value), the loaders' epoch."""
    groups = [g for net in run.networks.values() for g in net.optimizer.param_groups]
    for group in groups:
        group["lr"] = lr
    for loader in (run.train_loader, run.train_aug_loader):
        loader.set_epoch(epoch)


def time_epochs(run, method):
    """Per epoch: start_epoch seconds, the seconds of each train_step, evaluation seconds."""
    cfg, device = run.cfg, run.device
    epochs = []
    for epoch in range(cfg.n_epoch):
        begin_epoch(run, epoch, lr_at(epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch,
                                      cfg.cosine_lr_min))
        start_s, _ = seconds(device, lambda: method.start_epoch(epoch, run))
        stats = EpochStats(device, run.true_labels)
        for net in run.networks.values():
            net.model.train()
        steps = []
        for step, (x, y, idx) in enumerate(run.train_loader):
            def work():
                loss, logits = method.train_step(run, x, y, idx)
                stats.add(step, loss, logits, y, idx)
            steps.append(seconds(device, work)[0])
        stats.check(epoch + 1)  # a diverged step would make the timings meaningless
        method.epoch_columns()
        eval_s, columns = seconds(device, lambda: evaluate_all(run))
        epochs.append({"epoch": epoch, "start_epoch_s": start_s, "steps": len(steps),
                       "train_s": sum(steps), "median_step_s": statistics.median(steps) if steps else 0.0,
                       "eval_s": eval_s, "eval_models": sum(k.startswith("test_acc") for k in columns)})
    return epochs


def measure(name, args, folder):
    run, method = prepared_run(method_argv(name, args), folder)
    base_batches = len(run.train_loader.base if hasattr(run.train_loader, "base") else run.train_loader)
    epochs = time_epochs(run, method)
    one_off = ONE_OFF_EPOCH.get(name)
    timed = [e for e in epochs[1:] if e["epoch"] != one_off]
    med = lambda key: statistics.median(e[key] for e in timed)  # noqa: E731
    record = {"method": name, "flags": " ".join(method_flags(name)),
              "batches_per_epoch": base_batches, "steps_per_epoch": med("steps"),
              "s_per_step": med("median_step_s"), "train_s_per_epoch": med("train_s"),
              "extra_s_per_epoch": med("start_epoch_s"), "eval_s_per_epoch": med("eval_s"),
              "eval_models": timed[-1]["eval_models"],
              "one_off_s": None if one_off is None else epochs[one_off]["train_s"] + epochs[one_off]["start_epoch_s"],
              "epochs": epochs}
    record["epoch_s"] = record["train_s_per_epoch"] + record["extra_s_per_epoch"] + record["eval_s_per_epoch"]
    return record


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all",
                   help='methods to time besides CE (always timed first), e.g. "gce dividemix"; all: every '
                        "method of methods/")
    p.add_argument("--dataset", default="digits", help="a data set train.py can load here (default: digits)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=int, default=16, help="first-stage channels (default 16)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5,
                   help="epochs per method; the first is not counted (default 5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    names = sorted(n for n in methods() if n != "gls") if args.methods == "all" else args.methods.split()
    unknown = [n for n in names if n not in methods() or n == "gls"]
    if unknown:
        p.error(f"unknown method(s) {' '.join(unknown)}: choose among {' '.join(sorted(methods()))} "
                "(CE, gls --smooth_rate 0, is always timed)")
    needed = 2 + max(ONE_OFF_EPOCH.get(n, 0) for n in names) if names else 2
    if args.epochs < needed:
        p.error(f"--epochs {args.epochs}: at least {needed} (the first epoch is not counted"
                + (", nor PES's refinement epoch)" if "pes" in names else ")"))
    args.names = [CE] + [n for n in names if n != CE]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.names:
            record = measure(name, args, folder)
            results.append(record)
            print_row(record, results[0])
    ce = results[0]
    for r in results:
        r["ratio_to_ce"] = r["s_per_step"] / ce["s_per_step"]
        r["epoch_ratio_to_ce"] = r["epoch_s"] / ce["epoch_s"]
    out = {**machine_record(torch.device(args.device)), "dataset": args.dataset, "model": args.model,
           "width": args.width, "batch_size": args.batch_size, "epochs": args.epochs,
           "timed": "median over epochs 2.. of each method's run (PES: 3..)",
           "seconds": "CPU time of the process" if args.device == "cpu" else "device time (CUDA events)", "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")
    return out


def print_row(r, ce):
    if r is ce:
        print(f"{'method':<16}{'s/step':>9}{'x CE':>7}{'steps':>7}{'train s/ep':>11}{'start s/ep':>11}"
              f"{'eval s/ep':>10}{'epoch x CE':>11}{'one-off s':>10}")
    one_off = "" if r["one_off_s"] is None else f"{r['one_off_s']:.2f}"
    print(f"{r['method']:<16}{r['s_per_step']:>9.4f}{r['s_per_step'] / ce['s_per_step']:>7.2f}"
          f"{r['steps_per_epoch']:>7g}{r['train_s_per_epoch']:>11.2f}{r['extra_s_per_epoch']:>11.3f}{r['eval_s_per_epoch']:>10.3f}"
          f"{r['epoch_s'] / ce['epoch_s']:>11.2f}{one_off:>10}", flush=True)


if __name__ == "__main__":
    run_command(main)
