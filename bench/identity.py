"""What a run's identity costs at its start: the data fingerprint and the source hash.

Every run hashes its data as loaded (training images and labels, test images and labels:
utils/identity.py: data_fingerprint) and the project sources it imports (the parsed
syntax trees, so comments and formatting do not count: source_identity), so that a result
made by other data or code is never reused as new. This times both once per round on
synthetic data of CIFAR's size (50,000 + 10,000 images of 32x32x3 uint8) and, with
--images, any other count.

  python bench/identity.py --json identity_cpu.json
  python bench/identity.py --images 1000000 --image_size 64   # a larger data set

A run pays each once, before its first epoch.
"""
import argparse
import json
import os
import time

import numpy as np

from common import machine_record, run_command

import torch  # noqa: E402  (after common: it puts the project on the path)
from utils import identity  # noqa: E402


class Arrays:
    """The attributes data_fingerprint reads, as a loaded data set has them."""

    def __init__(self, n_train, n_test, size, seed=0):
        rng = np.random.default_rng(seed)
        self.train_images = rng.integers(0, 256, (n_train, 3, size, size), dtype=np.uint8)
        self.train_labels = rng.integers(0, 10, n_train)
        self.test_images = rng.integers(0, 256, (n_test, 3, size, size), dtype=np.uint8)
        self.test_labels = rng.integers(0, 10, n_test)

    def nbytes(self):
        return sum(a.nbytes for a in vars(self).values())


def seconds(work, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50_000, help="training images (test: a fifth as many)")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    data = Arrays(args.images, args.images // 5, args.image_size)
    scripts = [os.path.join(identity.ROOT, name) for name in
               ("main_GLS_direct_train.py", "noise_cifar_train.py", "train.py")]
    data_times = seconds(lambda: identity.data_fingerprint(data), args.rounds)
    def source_hash():  # once a process: the parsed files are cached, as in a run
        identity.parsed.cache_clear()
        identity.source_identity(scripts)
    code_times = seconds(source_hash, args.rounds)
    files = len(identity.source_identity(scripts)["source_files"])
    result = {"machine": machine_record(torch.device("cpu")), "data_bytes": data.nbytes(),
              "data_fingerprint_s": data_times, "source_hash_s": code_times, "source_files": files}
    mb = data.nbytes() / 1e6
    print(f"data fingerprint, {args.images:,} + {args.images // 5:,} images ({mb:,.1f} MB): "
          f"median {sorted(data_times)[len(data_times) // 2]:.3f} s, {mb / min(data_times):,.0f} MB/s at best")
    print(f"source hash, {files} files (parsed syntax trees): median {sorted(code_times)[len(code_times) // 2]:.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    run_command(main)
