"""What running a finished sweep again costs, with the code of another commit and with this
checkout, side by side in one sitting.

Each side (the other commit's files, written to a temporary folder with `git archive`, and
this checkout) trains the same sweep once into its own results folder: N tiny runs
(main_GLS_direct_train.py on digits, ResNet-18 of width 4, one epoch, over smooth rates
and seeds). Then the same sweep command is run again --repeats times on each side, in
turns, and timed: every run is finished, so all it does is confirm them. The medians,
per run, go to the JSON file with the machine's record.

The default "before" is d773804, the last commit whose sweep.py confirms a finished sweep
by starting each run's script: in the next one, babe0b2, the planning moved into
utils/plan.py and that sweep.py stops with an ImportError once any run folder exists.

  python bench/sweep_restart.py                          # 16 runs, against d773804
  python bench/sweep_restart.py --before HEAD~3 --smooth_rates "0.4 0 -2 -4" --seeds "0 1 2 3 4"
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from common import machine_record, run_command

import torch  # noqa: E402  (after common: it puts the project on the path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu", "--n_epoch", "1",
        "--batch_size", "256", "--test_batch_size", "512"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="d773804", help="the commit whose sweep.py is timed against this checkout's")
    p.add_argument("--smooth_rates", default="0.4 0 -2 -4", help="the sweep's smooth rates")
    p.add_argument("--seeds", default="0 1 2 3", help="the sweep's seeds (runs: smooth rates x seeds)")
    p.add_argument("--train_slots", type=int, default=1,
                   help="CPU slots of the pass that trains the runs (the timed passes use one)")
    p.add_argument("--repeats", type=int, default=3, help="timed confirmations per side (the median is kept)")
    p.add_argument("--work", help="folder for the other commit's files and both results (default: a temporary one)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "sweep_restart.json"),
                   help="where the figures go")
    return p.parse_args(argv)


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=True).stdout.strip()


def checkout(commit, folder):
    """The files of `commit` written into `folder` (git archive: no work tree is registered)."""
    os.makedirs(folder, exist_ok=True)
    archive = os.path.join(folder, "..", "before.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", commit], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    os.remove(archive)
    return folder


def sweep_command(code, results, args, slots=1):
    return [sys.executable, os.path.join(code, "sweep.py"), "main_GLS_direct_train.py",
            "--grid", f"smooth_rate={args.smooth_rates}", "--seeds", args.seeds, "--slots", str(slots), *TINY,
            "--result_dir", results]


def run_sweep(code, results, args, runs, slots=1):
    """Seconds the sweep command took; every run must have finished. The plans a sweep
    keeps (sweeps/confirm.py) go to a folder beside the results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "NOISY_LABELS_CACHE": os.path.join(os.path.dirname(os.path.abspath(results)), "cache")}
    start = time.perf_counter()
    proc = subprocess.run(sweep_command(code, results, args, slots), cwd=code, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or f"sweep: {runs} finished" not in proc.stdout:
        raise SystemExit(f"the sweep of {code} did not finish its {runs} runs:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def main(argv=None):
    args = parse_args(argv)
    runs = len(args.smooth_rates.split()) * len(args.seeds.split())
    work = args.work or tempfile.mkdtemp(prefix="sweep_restart_")
    sides = {"before": {"commit": git("rev-parse", args.before), "code": checkout(args.before, os.path.join(work, "before"))},
             "after": {"commit": git("rev-parse", "HEAD"), "code": ROOT,
                       "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}}
    for name, side in sides.items():
        side["results"] = os.path.join(work, f"results_{name}")
        side["train_s"] = run_sweep(side["code"], side["results"], args, runs, args.train_slots)
        side["confirm_s"] = []
        print(f"{name}: {runs} runs trained in {side['train_s']:.0f} s", flush=True)
    for _ in range(args.repeats):  # in turns, so that a change of the machine's load meets both
        for name, side in sides.items():
            side["confirm_s"].append(run_sweep(side["code"], side["results"], args, runs))
    record = {"runs": runs, "repeats": args.repeats, "sweep": " ".join(sweep_command("CODE", "RESULTS", args)[1:]),
              **machine_record(torch.device("cpu")), "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg()}
    for name, side in sides.items():
        median = statistics.median(side["confirm_s"])
        record[name] = {"commit": side["commit"], "confirm_s": [round(s, 3) for s in side["confirm_s"]],
                        "median_s": round(median, 3), "per_run_s": round(median / runs, 3),
                        "train_s": round(side["train_s"], 1),
                        **({"uncommitted_changes": side["uncommitted_changes"]} if name == "after" else {})}
    record["after_over_before"] = round(record["after"]["median_s"] / record["before"]["median_s"], 3)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
    for name in sides:
        print(f"{name} ({record[name]['commit'][:10]}): confirming {runs} finished runs took "
              f"{record[name]['median_s']:.2f} s (median of {args.repeats}), {record[name]['per_run_s']:.3f} s a run")
    print(f"after / before: {record['after_over_before']:.3f}; written to {args.json}")
    return record


if __name__ == "__main__":
    run_command(main)
