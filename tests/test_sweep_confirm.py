"""A finished sweep run again is confirmed from its kept plan (sweeps/confirm.py): without
planning it and without torch, and only while everything the plan was computed from is
unchanged; else the sweep is planned as before and decides as before."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import data
import sweep as sweeper
import utils.plan
from conftest import ROOT
from sweeps import confirm
from sweeps.launch import local

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu",
        "--batch_size", "256", "--test_batch_size", "512", "--n_epoch", "1"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NOISY_LABELS_CACHE", str(folder))
    return folder


def here(capsys, *args):
    code = sweeper.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def no_planning(monkeypatch):
    """Planning a run or starting one fails the test."""
    monkeypatch.setattr(utils.plan, "plan_script", lambda *a, **k: pytest.fail("the sweep was planned"))
    monkeypatch.setattr(local, "start", lambda *a, **k: pytest.fail("a finished run was started"))


def count_planning(monkeypatch):
    calls = []
    real = utils.plan.plan_script
    monkeypatch.setattr(utils.plan, "plan_script", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def kept_lines(out):
    return [line for line in out.splitlines() if line.startswith("[")]


@pytest.fixture
def finished(tmp_path, cache, capsys):
    """(argv, results) of a finished two-run sweep, its plan kept."""
    results = tmp_path / "results"
    argv = ["train.py", "--method", "gls", "--grid", "smooth_rate=0 0.4", "--slots", "1", *FAST,
            "--result_dir", results]
    code, out, err = here(capsys, *argv)
    assert code == 0 and "sweep: 2 finished" in out, out + err
    assert len(os.listdir(cache / "sweeps")) == 1
    return [str(a) for a in argv], results


def test_a_finished_sweep_is_confirmed_without_planning_and_reports_as_planned(finished, capsys, monkeypatch):
    argv, results = finished
    # the same command planned: the reference of what the confirmation must print and log
    with monkeypatch.context() as m:
        m.setattr(confirm, "kept_plan", lambda argv: None)
        code, planned, _ = here(capsys, *argv)
    assert code == 0
    outcomes = results / "sweep_logs" / "sweep_train_gls" / "outcomes.tsv"
    planned_outcomes = outcomes.read_text()

    no_planning(monkeypatch)
    code, out, err = here(capsys, *argv)
    assert code == 0, out + err
    assert out == planned
    assert len(kept_lines(out)) == 2 and all("finished (kept, exit 0)" in line for line in kept_lines(out))
    assert outcomes.read_text() == planned_outcomes
    for run_dir in {line.rsplit(" ", 1)[1] for line in kept_lines(out)}:
        log = results / "sweep_logs" / "sweep_train_gls" / "train" / (os.path.basename(run_dir) + ".log")
        assert log.read_text().count("already finished; nothing to do") == 2  # planned, then kept


def test_the_confirmation_imports_no_torch(finished):
    argv, _ = finished
    probe = ("import sys; import sweeps.main as m; code = m.main(sys.argv[1:]); "
             "print('TORCH', 'torch' in sys.modules, code)")
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "sweep: 2 finished" in proc.stdout and "TORCH False 0" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("change", ["code", "library", "run folder gone", "made by other code", "other command"])
def test_anything_else_plans_the_sweep(finished, capsys, monkeypatch, change):
    argv, results = finished
    run_dirs = sorted(str(p) for p in (results / "train").iterdir())
    if change == "code":
        monkeypatch.setattr(confirm, "code_digest", lambda: "0" * 40)
    elif change == "library":
        monkeypatch.setattr(confirm, "library_versions", lambda: {"torch": "0.1"})
    elif change == "run folder gone":
        shutil.rmtree(run_dirs[0])
    elif change == "made by other code":
        path = os.path.join(run_dirs[1], "config.json")
        config = json.load(open(path))
        config["made_by"]["code"]["source_sha1"] = "0" * 40
        json.dump(config, open(path, "w"))
    elif change == "other command":
        argv = argv + ["--lr", "0.05"]
    assert confirm.confirmed(argv) is None
    calls = count_planning(monkeypatch)
    code, out, err = here(capsys, *argv)
    assert calls, "the sweep was not planned"
    if change == "made by other code":
        assert code == 2 and "made by other code or data" in err
    elif change in ("code", "library"):
        assert code == 0 and len(kept_lines(out)) == 2 and all("kept" in line for line in kept_lines(out))
    else:  # a run to train: it is trained
        assert code == 0 and any("finished (exit 0" in line for line in kept_lines(out)), out + err


def digits_noise_file(path, rate=0.4, seed=0):
    labels = data.load_dataset("digits").train_labels
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(len(labels)) < rate, rng.integers(0, 10, len(labels)), labels)
    with open(path, "w") as f:
        f.write("label,label_noisy\n" + "".join(f"{a},{b}\n" for a, b in zip(labels, noisy)))


def test_a_changed_input_file_plans_the_sweep_and_the_plan_sees_it(tmp_path, cache, capsys, monkeypatch):
    labels = tmp_path / "labels.csv"
    digits_noise_file(labels)
    argv = [str(a) for a in ["train.py", "--method", "gls", "--smooth_rate", "0", "--slots", "1", *FAST,
                             "--noise_file", labels, "--result_dir", tmp_path / "results"]]
    assert here(capsys, *argv)[0] == 0
    assert confirm.confirmed(argv) is not None
    digits_noise_file(labels, seed=1)  # other noisy labels under the same name
    assert confirm.confirmed(argv) is None
    code, _, err = here(capsys, *argv)
    assert code == 2 and "noisy labels" in err and "made by other code or data" in err


def test_no_plan_is_kept_where_a_change_could_not_be_seen(tmp_path, cache, capsys, monkeypatch):
    """A data set that does not name its files keeps no plan: its sweep is always planned."""
    spec = data.dataset_spec("digits")
    monkeypatch.setattr(data, "dataset_spec", lambda name: dataclasses.replace(spec, files=None))
    argv = ["train.py", "--method", "gls", "--smooth_rate", "0", "--slots", "1", *FAST,
            "--result_dir", tmp_path / "results"]
    assert here(capsys, *argv)[0] == 0
    assert not (cache / "sweeps").exists() or not os.listdir(cache / "sweeps")


def test_a_cache_folder_that_cannot_be_written_changes_nothing_else(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NOISY_LABELS_CACHE", str(blocker))
    argv = ["train.py", "--method", "gls", "--smooth_rate", "0", "--slots", "1", *FAST,
            "--result_dir", tmp_path / "results"]
    code, out, err = here(capsys, *argv)
    assert code == 0 and "sweep: 1 finished" in out, out + err
    calls = count_planning(monkeypatch)
    code, out, _ = here(capsys, *argv)
    assert code == 0 and calls and "finished (kept, exit 0)" in out
    assert blocker.read_text() == ""


def test_a_damaged_cache_file_is_planned_over(finished, cache, capsys, monkeypatch):
    argv, _ = finished
    (path,) = (cache / "sweeps").iterdir()
    path.write_text("{not json")
    calls = count_planning(monkeypatch)
    code, out, _ = here(capsys, *argv)
    assert code == 0 and calls and len(kept_lines(out)) == 2
    json.loads(path.read_text())  # kept again, whole
