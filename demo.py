"""The offline demo (`make demo`): GLS and SLN on digits with 40% symmetric noise,
through the sweep scripts and summarize.py, in about two minutes on a free 2-core CPU.

    python demo.py            # reuses the finished runs under results/demo
    python demo.py --fresh    # deletes results/demo first and trains everything again

Runs (2 seeds each, 2 CPU slots): the CE warm-up, then CE (r=0), PLS (r=0.4) and NLS
(r=-2) from it (scripts/sweep_gls.sh --mode load); SLN with its momentum model
(scripts/sweep_sln.sh). Then summarize.py writes the tables and plots to
results/demo/summary and this prints the comparison.

The released protocols are sized for CIFAR on a GPU, so the demo changes a few
hyperparameters (flags, printed below) to fit digits and the time budget:
- a small ResNet-18 (--width 8), few epochs;
- after the warm-up, lr 1e-3 instead of the release's 1e-6, which moves nothing in
  10 digits epochs;
- SLN: sigma 0.2 instead of CIFAR-10's 1.0, batch 64, lr 0.02, momentum-model decay
  0.9: with sigma 1.0 the network learned next to nothing in 20 epochs here (about
  40% test accuracy at best), and decay 0.999 averages over ~1000 steps, more than the
  whole run's 460.
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import time

import summarize

ROOT = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join("results", "demo")
SEEDS = "0 1"
COMMON = ["--dataset", "digits", "--model", "resnet18", "--width", "8"]

GLS_SWEEP = ["scripts/sweep_gls.sh", "--slots", "2", "--seeds", SEEDS, "--mode", "load",
             "--noise", "symmetric:0.4", "--smooth_rates", "0.0 0.4 -2.0",
             "--warmup_args", "--n_epoch 15 --lr 0.1",
             *COMMON, "--n_epoch", "10", "--lr", "0.001", "--result_dir", RESULTS]
SLN_SWEEP = ["scripts/sweep_sln.sh", "--slots", "2", "--seeds", SEEDS,
             "--noise", "sym:0.4", "--sigmas", "0.2",
             *COMMON, "--num_class", "10", "--epochs", "20", "--batch_size", "64", "--lr", "0.02",
             "--ema_decay", "0.9", "--correction", "-1", "--result_dir", RESULTS]

# (row label, script, method tag, accuracy column prefix, training described)
ROWS = [
    ("CE warm-up", "main_warmup", "ce", "", "CE 15 ep, lr 0.1 (x0.1 at 1/3, 2/3)"),
    ("CE after warm-up (r=0)", "main_GLS_load", "r0", "", "+10 ep, lr 1e-3"),
    ("PLS r=0.4 after warm-up", "main_GLS_load", "r0.4", "", "+10 ep, lr 1e-3"),
    ("NLS r=-2 after warm-up", "main_GLS_load", "r-2", "", "+10 ep, lr 1e-3"),
    ("SLN sigma=0.2", "noise_cifar_train", "slnmo-sigma0.2", "", "from scratch 20 ep, batch 64, lr 0.02"),
    ("SLN-MO sigma=0.2", "noise_cifar_train", "slnmo-sigma0.2", "_ema", "momentum model of the same runs"),
]


def run_sweep(command):
    print("$ " + " ".join(f"'{w}'" if " " in w else w for w in command), flush=True)
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", *command], cwd=ROOT, env=env).returncode


def cell(row, name):
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if not mean:
        return "n/a"
    return f"{float(mean):.2f}" + (f" ± {float(std):.2f}" if std else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true", help=f"delete {RESULTS} first and train everything again")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    if args.fresh and os.path.isdir(RESULTS):
        shutil.rmtree(RESULTS)
    started = time.time()
    print(__doc__.split("\n\n")[0] + "\n")
    print(f"Finished runs under {RESULTS} are reused (python demo.py --fresh trains again).\n")
    failed = [c[0] for c in (GLS_SWEEP, SLN_SWEEP) if run_sweep(c) != 0]

    out = os.path.join(RESULTS, "summary")
    rows, unfinished, plots = summarize.summarize(RESULTS, out, curves=["main_GLS_load", "noise_cifar_train"])
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        table = {(r["script"], r["method"]): r for r in csv.DictReader(f)}

    print("\nDigits, 40% symmetric noise, ResNet-18 width 8; test accuracy (%), "
          "mean ± sample std over seeds " + SEEDS.replace(" ", ","))
    print("| method | seeds | last acc | best acc | training |\n|---|---|---|---|---|")
    missing = []
    for label, script, method, suffix, training in ROWS:
        row = table.get((script, method))
        if row is None:
            missing.append(label)
            print(f"| {label} | 0 | n/a | n/a | {training} |")
            continue
        print(f"| {label} | {row['n_seeds']} | {cell(row, 'last_test_acc' + suffix)} | "
              f"{cell(row, 'best_test_acc' + suffix)} | {training} |")
    print(f"\nfull table: {out}/summary.md; plots:")
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
