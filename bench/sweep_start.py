"""What starting a sweep's short runs costs on CPU slots: the code of another commit (each
run a fresh process), this checkout with --no_preload (each run a fresh process) and this
checkout as it starts them by default (forked from one preloading process,
sweeps/launch/preload.py), side by side in one sitting.

Each pass trains the same sweep into a results folder of its own: N tiny runs
(main_GLS_direct_train.py on digits, ResNet-18 of width 4, one epoch, over smooth rates and
seeds) on --slots CPU slots. The passes go in turns, --repeats times, so that a change of
the machine's load meets every side; the medians, whole and per run, go to the JSON file
with the machine's record. The runs' metrics.csv of the three sides are compared too: apart
from their time columns they must be identical.

The default "before" is 42c5824, the last commit before the preloading process and the
lazy imports of torchvision and scipy.stats.

  python bench/sweep_start.py                        # 8 runs on 2 slots, 3 passes a side
  python bench/sweep_start.py --seeds "0 1 2 3" --slots 1
"""
import argparse
import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine_record, run_command
from sweep_restart import TINY, checkout, git

import torch  # noqa: E402  (after common: it puts the project on the path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="42c5824", help="the commit whose sweep.py is timed against this checkout's")
    p.add_argument("--smooth_rates", default="0.4 0 -2 -4", help="the sweep's smooth rates")
    p.add_argument("--seeds", default="0 1", help="the sweep's seeds (runs: smooth rates x seeds)")
    p.add_argument("--slots", type=int, default=2, help="CPU slots")
    p.add_argument("--repeats", type=int, default=3, help="passes per side (the median is kept)")
    p.add_argument("--work", help="folder for the other commit's files and the results (default: a temporary one)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "sweep_start.json"),
                   help="where the figures go")
    return p.parse_args(argv)


def sweep_command(code, results, args, extra=()):
    return [sys.executable, os.path.join(code, "sweep.py"), "main_GLS_direct_train.py",
            "--grid", f"smooth_rate={args.smooth_rates}", "--seeds", args.seeds, "--slots", str(args.slots),
            *TINY, "--result_dir", results, *extra]


def run_sweep(code, results, args, runs, extra):
    """Seconds the sweep took to train its runs into `results`; every run must have finished."""
    env = {**os.environ, "NOISY_LABELS_CACHE": os.path.join(os.path.dirname(os.path.abspath(results)), "cache")}
    env.pop("OMP_NUM_THREADS", None)  # the sweep gives each slot its share of the cores
    start = time.perf_counter()
    proc = subprocess.run(sweep_command(code, results, args, extra), cwd=code, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or f"sweep: {runs} finished" not in proc.stdout:
        raise SystemExit(f"the sweep of {code} did not finish its {runs} runs:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def metrics(results):
    """{run folder name: metrics.csv rows without their time columns}."""
    out = {}
    for path in sorted(glob.glob(os.path.join(results, "**", "metrics.csv"), recursive=True)):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = [
                {k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]
    return out


def main(argv=None):
    args = parse_args(argv)
    runs = len(args.smooth_rates.split()) * len(args.seeds.split())
    work = args.work or tempfile.mkdtemp(prefix="sweep_start_")
    before = checkout(args.before, os.path.join(work, "before"))
    sides = {"before": {"commit": git("rev-parse", args.before), "code": before, "extra": []},
             "fresh": {"commit": git("rev-parse", "HEAD"), "code": ROOT, "extra": ["--no_preload"]},
             "preloaded": {"commit": git("rev-parse", "HEAD"), "code": ROOT, "extra": []}}
    for side in sides.values():
        side["seconds"] = []
    for i in range(args.repeats):
        for name, side in sides.items():
            results = os.path.join(work, f"results_{name}_{i}")
            side["seconds"].append(run_sweep(side["code"], results, args, runs, side["extra"]))
            side.setdefault("metrics", metrics(results))
            print(f"pass {i + 1}, {name}: {runs} runs in {side['seconds'][-1]:.1f} s", flush=True)
    same = all(side["metrics"] == sides["before"]["metrics"] for side in sides.values())
    if not same or len(sides["before"]["metrics"]) != runs:
        raise SystemExit("the sides' metrics.csv differ: " + ", ".join(
            f"{name} {len(side['metrics'])} runs" for name, side in sides.items()))
    record = {"runs": runs, "slots": args.slots, "repeats": args.repeats,
              "sweep": " ".join(sweep_command("CODE", "RESULTS", args)[1:]),
              "metrics_identical": same, **machine_record(torch.device("cpu")), "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(),
              "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
    for name, side in sides.items():
        median = statistics.median(side["seconds"])
        record[name] = {"commit": side["commit"], "flags": side["extra"],
                        "seconds": [round(s, 2) for s in side["seconds"]], "median_s": round(median, 2),
                        "per_run_s": round(median / runs, 3)}
    for name in ("fresh", "preloaded"):
        record[f"{name}_over_before"] = round(record[name]["median_s"] / record["before"]["median_s"], 3)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
    for name in sides:
        print(f"{name}: {runs} runs on {args.slots} slot(s) in {record[name]['median_s']:.1f} s "
              f"(median of {args.repeats}), {record[name]['per_run_s']:.2f} s a run")
    print(f"fresh / before {record['fresh_over_before']:.2f}, preloaded / before "
          f"{record['preloaded_over_before']:.2f}; metrics identical; written to {args.json}")
    return record


if __name__ == "__main__":
    run_command(main)
