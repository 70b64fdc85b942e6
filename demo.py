"""The offline demo (`make demo`): what noise does to training, and what GLS and SLN do
about it, on digits with 40% symmetric noise, in about three minutes on a free 2-core CPU.

    python demo.py            # reuses the finished runs under results/demo
    python demo.py --fresh    # deletes results/demo first and trains everything again
    python demo.py --result_dir results/demo-other   # another folder, e.g. for another torch

Runs, 3 seeds each, on 2 CPU slots (sweep.py), then summarize.py (tables, paired
differences, memorisation curves in results/demo/summary):
- the CE warm-up, 60 epochs: it first fits the clean labels, then memorises the noisy
  ones (mem_noisy climbs) and its test accuracy falls from its best;
- from the warm-up's best checkpoint, 40 epochs of CE (r = 0, the baseline), PLS
  (r = 0.4) and NLS (r = -0.4);
- from scratch, 60 epochs of CE and of SLN (sigma 0.5), both with a momentum model.
Every difference is paired by seed (same noisy labels, same initial weights) against its
baseline: mean and 95% t-interval over the 3 seeds.

The released protocols are sized for CIFAR on a GPU; the demo keeps their losses and
changes only what makes a 1,437-image set show the effects in a few minutes:
- ResNet-18 at width 16: wide enough to memorise the ~580 wrong labels within 60 epochs,
  small enough for a CPU (width 8 had fit only 11% of them after 80 epochs);
- lr 0.02 constant with momentum 0.9, batch 128, no weight decay, for the warm-up and
  the from-scratch runs: at this rate CE starts memorising after about 40 epochs;
- after the warm-up, lr 0.005 instead of the release's 1e-6 (which moves nothing in 40
  digits epochs); at lr 0.005, r = -1 and r = -2 collapse within 40 epochs (test
  accuracy 26% and 20% in trials), so NLS runs at r = -0.4;
- SLN at sigma 0.5 (the paper's CIFAR-10 value for asym and dependent noise): sigma 1.0
  reached 61% in 60 epochs here; momentum-model decay 0.99 (0.999 averages over ~1000
  steps, more than the 720 of the run).
"""
import argparse
import csv
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import summarize

ROOT = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join("results", "demo")
SEEDS = "0 1 2"
COMMON = ["--dataset", "digits", "--model", "resnet18", "--width", "16", "--batch_size", "128",
          "--test_batch_size", "512", "--weight_decay", "0"]


def sweeps(results):
    """The demo's two sweep command lines, writing under `results`."""
    gls = ["sweep.py", "gls", "--slots", "2", "--seeds", SEEDS, "--mode", "load",
           "--noise", "symmetric:0.4", "--smooth_rates", "0.0 0.4 -0.4",
           "--warmup_args", "--n_epoch 60 --lr 0.02 --momentum 0.9 --lr_milestones",
           *COMMON, "--n_epoch", "40", "--lr", "0.005", "--result_dir", results]
    sln = ["sweep.py", "sln", "--slots", "2", "--seeds", SEEDS, "--noise", "sym:0.4", "--sigmas", "0.0 0.5",
           *COMMON, "--num_class", "10", "--epochs", "60", "--lr", "0.02", "--ema_decay", "0.99",
           "--correction", "-1", "--result_dir", results]
    return gls, sln


def environment():
    """One line naming what the numbers depend on: torch, the CPU and the kernels torch picked."""
    import torch

    from core.device import cpu_name
    capability = torch.backends.cpu.get_cpu_capability()
    cpu = cpu_name() or platform.processor() or platform.machine()
    return (f"torch {torch.__version__}, {cpu} (ATen CPU kernels: {capability}), "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}")

# (row label, script, method tag, column suffix: "" the model, "_ema" its momentum model)
ROWS = [
    ("CE warm-up (60 ep)", "main_warmup", "ce", ""),
    ("after warm-up: CE, r=0 (baseline)", "main_GLS_load", "r0", ""),
    ("after warm-up: PLS, r=0.4", "main_GLS_load", "r0.4", ""),
    ("after warm-up: NLS, r=-0.4", "main_GLS_load", "r-0.4", ""),
    ("from scratch: CE (baseline)", "noise_cifar_train", "slnmo-sigma0", ""),
    ("from scratch: SLN, sigma=0.5", "noise_cifar_train", "slnmo-sigma0.5", ""),
    ("  momentum model of CE (baseline)", "noise_cifar_train", "slnmo-sigma0", "_ema"),
    ("  momentum model of SLN (SLN-MO)", "noise_cifar_train", "slnmo-sigma0.5", "_ema"),
]
CURVES = ["main_warmup", "main_GLS_load", "noise_cifar_train"]  # every group of each script (substring)


def run_sweep(command):
    print("$ python3 " + " ".join(f"'{w}'" if " " in w else w for w in command), flush=True)
    return subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]]).returncode


def read_table(path, keep=lambda row: True):
    """{(script, method tag): row} of one of summarize.py's CSV files."""
    with open(path, newline="") as f:
        return {(r["script"], r["method"]): r for r in csv.DictReader(f) if keep(r)}


def read_results(out):
    """summary.csv, and paired.csv's rows against each group's knob baseline (r = 0 after
    the warm-up, sigma = 0 from scratch): the baselines of the demo's table."""
    return (read_table(os.path.join(out, "summary.csv")),
            read_table(os.path.join(out, "paired.csv"), lambda r: r["baseline_kind"] == "knob"))


def mean_sd(row, name):
    mean, sd = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if not mean:
        return "n/a"
    return f"{float(mean):.1f}" + (f" ± {float(sd):.1f}" if sd else "")


def paired_cell(pair, name):
    """'+d [lo, hi]' of the paired difference to the baseline, '' for a baseline."""
    if pair is None or not pair.get(f"{name}_diff_mean"):
        return ""
    d, lo, hi = (float(pair[f"{name}_diff_{k}"]) for k in ("mean", "ci_low", "ci_high"))
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def print_table(summary, paired):
    print("| run | last acc | best acc | last mem_noisy | last ECE | last acc - baseline, 95% CI |")
    print("|---|---|---|---|---|---|")
    missing = []
    for label, script, method, suffix in ROWS:
        row = summary.get((script, method))
        if row is None:
            missing.append(label)
            print(f"| {label} | n/a | n/a | n/a | n/a | |")
            continue
        pair = paired.get((script, method))
        mem = mean_sd(row, "last_mem_noisy") if not suffix else "–"
        ece = mean_sd(row, "last_test_ece") if not suffix else "–"
        print(f"| {label} | {mean_sd(row, 'last_test_acc' + suffix)} | {mean_sd(row, 'best_test_acc' + suffix)} | "
              f"{mem} | {ece} | {paired_cell(pair, 'last_test_acc' + suffix)} |")
    return missing


def wrong_labels(results):
    """The number of wrongly labelled training images of the demo's noise (from noise.json)."""
    import numpy as np
    for path in sorted(glob.glob(os.path.join(results, "main_warmup", "*", "noise.json"))):
        with open(path) as f:
            rate = json.load(f).get("actual_noise_rate")
        labels = os.path.join(os.path.dirname(path), "noisy_labels.npy")
        if rate is not None and os.path.exists(labels):
            return round(rate * len(np.load(labels)))
    return None


def memorisation(results, script, method):
    """Mean over seeds of (best epoch, mem_noisy there, last mem_noisy, best test acc, last)."""
    values = []
    for path in glob.glob(os.path.join(results, script, "*", "summary.json")):
        with open(path) as f:
            s = json.load(f)
        if s.get("status") == "finished" and s.get("method") == method and "last_mem_noisy" in s:
            values.append((s["best_epoch"], s["best_epoch_mem_noisy"], s["last_mem_noisy"],
                           s["best_test_acc"], s["last_test_acc"]))
    return [sum(v) / len(v) for v in zip(*values)] if values else None


def print_memorisation(results):
    print("\nMemorisation (mean over seeds): at the epoch of best test accuracy, then at the last epoch")
    for label, script, method, suffix in ROWS:
        m = None if suffix else memorisation(results, script, method)
        if m:
            print(f"  {label}: mem_noisy {m[1]:.1f}% at epoch {m[0]:.0f} (test {m[3]:.1f}%), "
                  f"{m[2]:.1f}% at the end (test {m[4]:.1f}%)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true", help="delete the demo's results first and train everything again")
    p.add_argument("--result_dir", default=RESULTS, help="where the demo's runs and tables go")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    results = args.result_dir
    if args.fresh and os.path.isdir(results):
        shutil.rmtree(results)
    started = time.time()
    print(__doc__.split("\n\n")[0] + "\n")
    print(f"Finished runs under {results} are reused (python demo.py --fresh trains again).\n")
    failed = [" ".join(c[:2]) for c in sweeps(results) if run_sweep(c) != 0]

    out = os.path.join(results, "summary")
    _, unfinished, plots = summarize.summarize(results, out, curves=CURVES, match="substring")
    summary, paired = read_results(out)
    wrong = wrong_labels(results)
    print(f"\nDigits, 40% symmetric noise ({wrong} of 1,437 training labels wrong), ResNet-18 width 16; "
          f"test accuracy, mem_noisy (share of the wrongly labelled training images predicted as their "
          f"wrong label) and ECE in %, mean ± sd over seeds {SEEDS.replace(' ', ', ')}; differences "
          f"paired by seed:")
    print(f"Made with {environment()}.\n")
    missing = print_table(summary, paired)
    print_memorisation(results)
    print(f"\nfull tables: {out}/summary.md, {out}/paired.csv; plots:")
    for path in plots:
        print(f"  {path}")
    if unfinished:
        print(f"{len(unfinished)} run(s) did not finish and are not in the table: {out}/unfinished.csv")
    print(f"demo took {time.time() - started:.0f}s")
    if failed or missing:
        print(f"error: sweeps with unfinished runs: {failed}; rows without results: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
