"""docs/EXTENDING.md, done as a researcher would: a copy of the repository gets exactly the
three files the guide shows (a method, a noise type, a data set) and no other edit; each
is found, trains, resumes after SIGTERM to the metrics of an uninterrupted run, and is
swept and summarised."""
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, read_csv, read_json

GUIDE = os.path.join(ROOT, "docs", "EXTENDING.md")
NEW_FILES = ("methods/ols.py", "data/uniform_noise.py", "data/mydata.py")


def guide_files():
    """{path: source} of the guide's code blocks that start with a `# path` line."""
    with open(GUIDE) as f:
        text = f.read()
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", text, re.S)
    return {path: source for path, source in blocks}


def file_digests(root):
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "results", "data_files")]
        for name in files:
            if not name.endswith(".pyc"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = hash(f.read())
    return out


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    base = tmp_path_factory.mktemp("extending")
    copy = base / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", "results", ".git", "__pycache__", "*.pyc"))
    before = file_digests(copy)
    files = guide_files()
    assert sorted(files) == sorted(NEW_FILES)
    for path, source in files.items():
        (copy / path).write_text(source)
    after = file_digests(copy)
    # the extension is the three new files and nothing else
    assert sorted(set(after) - set(before)) == sorted(NEW_FILES)
    assert {k: v for k, v in after.items() if k in before} == before
    data_root = base / "data_files"
    data_root.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data_root / "mydata.npz",
             train_images=rng.integers(0, 256, (160, 3, 32, 32), dtype=np.uint8),
             train_labels=rng.integers(0, 10, 160), test_images=rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8),
             test_labels=rng.integers(0, 10, 40))
    return copy, str(data_root), base


def run(copy, *argv, timeout=600):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=copy, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


def common(data_root, results):
    return ["--method", "ols", "--dataset", "mydata", "--data_root", data_root, "--noise_type", "uniform",
            "--noise_rate", "0.4", "--model", "resnet18", "--width", "4", "--batch_size", "32",
            "--device", "cpu", "--result_dir", results]


def test_the_three_extensions_are_found_and_documented(extended):
    copy, _, _ = extended
    listing = run(copy, "train.py", "--help")
    assert listing.returncode == 0 and "ols" in listing.stdout and "online label smoothing" in listing.stdout
    own = run(copy, "train.py", "--method", "ols", "--help")
    assert "--ols_alpha" in own.stdout and "(default: 0.5)" in own.stdout
    warmup = run(copy, "main_warmup.py", "--help")
    assert "uniform" in warmup.stdout and "mydata" in warmup.stdout
    foreign = run(copy, "train.py", "--method", "ols", "--smooth_rate", "0.4")
    assert foreign.returncode == 2 and "--smooth_rate is a flag of method gls" in foreign.stderr


def test_the_extensions_train_and_record_what_they_are(extended):
    copy, data_root, base = extended
    results = str(base / "results_train")
    proc = run(copy, "train.py", *common(data_root, results), "--n_epoch", "3")
    assert proc.returncode == 0, proc.stderr
    (folder,) = [os.path.join(results, "train", d) for d in os.listdir(os.path.join(results, "train"))]
    assert os.path.basename(folder).startswith("mydata-uniform0.4-resnet18-ols-a0.5-seed0-")
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "finished" and summary["method_name"] == "ols"
    assert summary["knobs"] == {"ols_alpha": 0.5} and summary["knob_baselines"] == {"ols_alpha": 1.0}
    assert summary["label"] == "OLS alpha=0.5" and summary["is_ce"] is False
    rows = read_csv(os.path.join(folder, "metrics.csv"))
    assert len(rows) == 3 and 0 < float(rows[-1]["ols_true_class_weight"]) <= 1
    noise = read_json(os.path.join(folder, "noise.json"))
    # uniform replacement flips (K - 1) / K of the replaced labels: about 0.36 of 160
    assert 0.2 < noise["actual_noise_rate"] < 0.5 and noise["provenance"]["generator"] == "uniform replacement"
    made = read_json(os.path.join(folder, "config.json"))["made_by"]["code"]["source_files"]
    assert set(NEW_FILES) <= set(made)


def metrics_without_time(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("epoch_time_s")
    return rows


def test_the_method_resumes_after_sigterm_to_the_uninterrupted_metrics(extended):
    copy, data_root, base = extended
    whole, cut = str(base / "whole"), str(base / "cut")
    assert run(copy, "train.py", *common(data_root, whole), "--n_epoch", "4").returncode == 0
    argv = [sys.executable, "train.py", *common(data_root, cut), "--n_epoch", "4"]
    proc = subprocess.Popen(argv, cwd=copy, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    metrics = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = [os.path.join(r, "metrics.csv") for r, _, f in os.walk(cut) if "metrics.csv" in f]
        if found and len(read_csv(found[0])) >= 2:
            metrics = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert metrics and proc.returncode in (0, 143)
    resumed = run(copy, "train.py", *common(data_root, cut), "--n_epoch", "4", "--if_exists", "auto")
    assert resumed.returncode == 0, resumed.stderr
    (reference,) = [os.path.join(r, "metrics.csv") for r, _, f in os.walk(whole) if "metrics.csv" in f]
    assert metrics_without_time(metrics) == metrics_without_time(reference)
