"""How long `sweep.py paper NAME --smoke` takes for every recipe on this machine: each
recipe's smoke sweep into a folder of its own, timed from the command's start to its end
(planning, the stand-in data, every run, the table). The JSON gets, per recipe, the
seconds, the runs and how many finished, and whether the table has a smoke result in
every cell, with the machine's record.

  python bench/paper_smoke.py                          # every recipe, 2 CPU slots
  python bench/paper_smoke.py --recipes "sln-cifar10 gls-cifarn" --seeds 0
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from common import machine_record, run_command

import torch  # noqa: E402  (after common: it puts the project on the path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    from papers import recipes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=" ".join(sorted(recipes())), help="the recipes (default: every one)")
    p.add_argument("--slots", type=int, default=2, help="CPU slots")
    p.add_argument("--seeds", help="the sweep's --seeds (default: each recipe's own)")
    p.add_argument("--work", help="folder for the smoke results (default: a temporary one)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "paper_smoke_cpu.json"),
                   help="where the figures go")
    return p.parse_args(argv)


def smoke(name, folder, args):
    command = [sys.executable, os.path.join(ROOT, "sweep.py"), "paper", name, "--smoke", "--slots", str(args.slots),
               "--result_dir", folder, *(["--seeds", args.seeds] if args.seeds else [])]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tally = re.findall(r"^sweep: (\d+) runs on", proc.stdout, re.M)
    ended = re.findall(r"^sweep: (.*); see ", proc.stdout, re.M)  # "sweep: 3 failed, 669 finished; see ..."
    outcomes = {k: int(n) for n, k in (part.split(" ", 1) for part in ended[-1].split(", "))} if ended else {}
    table = os.path.join(folder, "paper", f"paper_{name}.csv")
    cells = []
    if os.path.exists(table):
        with open(table) as f:
            cells = list(csv.DictReader(f))
    return {"command": " ".join(command[1:]), "exit": proc.returncode, "seconds": round(seconds, 1),
            "runs": int(tally[0]) if tally else None, "finished": outcomes.get("finished", 0), "outcomes": outcomes,
            "cells": len(cells), "cells_with_a_smoke_result": sum(1 for c in cells if c.get("ours_mean")),
            "tail": proc.stdout[-600:] + proc.stderr[-600:] if proc.returncode else ""}


def main(argv=None):
    args = parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="paper_smoke_")
    record = {**machine_record(torch.device("cpu")), "cpu_count": os.cpu_count(), "slots": args.slots,
              "recipes": {}}
    for name in args.recipes.split():
        result = smoke(name, os.path.join(work, name), args)
        record["recipes"][name] = result
        print(f"{name}: {result['finished']}/{result['runs']} runs finished, {result['cells_with_a_smoke_result']}"
              f"/{result['cells']} cells, {result['seconds']:.0f} s (exit {result['exit']})", flush=True)
    record["load_average"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
    print(f"written to {args.json}")
    failed = [name for name, r in record["recipes"].items() if r["exit"] != 0]
    if failed:
        raise SystemExit(f"the smoke sweep of {', '.join(failed)} did not end with exit 0 (see {args.json})")
    return record


if __name__ == "__main__":
    run_command(main)
