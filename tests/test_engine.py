"""utils/engine.py end to end on digits: the results contract, warm-up -> load,
reproducibility, the lr plan."""
import os

import numpy as np
import pytest

from conftest import TINY, read_csv, read_json, run_in_process
from utils.engine import lr_at


def run_dir_of(module, argv, capsys):
    assert run_in_process(module, argv + ["--print_run_dir"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def warm_then_load(tmp_path_factory):
    """A 4-epoch CE warm-up, then 2 epochs of NLS from its best checkpoint."""
    results = str(tmp_path_factory.mktemp("results"))
    common = TINY + ["--noise_rate", "0.4", "--result_dir", results]
    assert run_in_process("main_warmup", common + ["--n_epoch", "4"]) == 0
    assert run_in_process("main_GLS_load", common + ["--n_epoch", "2", "--smooth_rate", "-2",
                                                     "--lr", "0.01"]) == 0
    warm = [os.path.join(results, "main_warmup", d) for d in os.listdir(os.path.join(results, "main_warmup"))]
    load = [os.path.join(results, "main_GLS_load", d) for d in os.listdir(os.path.join(results, "main_GLS_load"))]
    assert len(warm) == 1 and len(load) == 1
    return results, warm[0], load[0]


def test_results_contract_is_complete(warm_then_load):
    _, warm, load = warm_then_load
    for folder in (warm, load):
        for name in ("config.json", "noisy_labels.npy", "noise.json", "metrics.csv",
                     "summary.json", "last.pt", "best.pt"):
            assert os.path.exists(os.path.join(folder, name)), name
    summary = read_json(os.path.join(warm, "summary.json"))
    rows = read_csv(os.path.join(warm, "metrics.csv"))
    assert summary["status"] == "finished" and summary["epochs_completed"] == 4
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"epoch", "lr", "train_loss", "train_acc", "test_acc"} <= set(rows[0])
    accs = [float(r["test_acc"]) for r in rows]
    assert summary["best_test_acc"] == pytest.approx(max(accs))
    assert summary["best_epoch"] == 1 + accs.index(max(accs))
    assert summary["last_test_acc"] == pytest.approx(accs[-1])
    noisy = np.load(os.path.join(warm, "noisy_labels.npy"))
    assert len(noisy) == 1437
    assert 0.35 < summary["actual_noise_rate"] < 0.45
    assert read_json(os.path.join(warm, "noise.json"))["actual_noise_rate"] == summary["actual_noise_rate"]
    assert summary["config"]["noise_rate"] == 0.4 and summary["wall_time_s"] > 0
    assert read_json(os.path.join(warm, "config.json")) == summary["config"]


def test_load_starts_from_the_warmup_weights(warm_then_load):
    _, warm, load = warm_then_load
    warm_summary = read_json(os.path.join(warm, "summary.json"))
    load_summary = read_json(os.path.join(load, "summary.json"))
    assert load_summary["init_from"] == os.path.join(warm, "best.pt")
    # The loaded network, evaluated before its first step, is the warm-up's best epoch.
    assert load_summary["initial_test_acc"] == pytest.approx(warm_summary["best_test_acc"])
    assert warm_summary["best_test_acc"] > 30  # a trained network, not a fresh one (10%)
    assert np.array_equal(np.load(os.path.join(warm, "noisy_labels.npy")),
                          np.load(os.path.join(load, "noisy_labels.npy")))


def test_last_line_names_the_run_folder(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "1", "--result_dir", str(tmp_path)]
    folder = run_dir_of("main_GLS_direct_train", argv, capsys)
    assert run_in_process("main_GLS_direct_train", argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"results: {folder}"
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"


def test_same_seeds_give_identical_metrics(tmp_path):
    rows = []
    for name in ("a", "b"):
        argv = TINY + ["--n_epoch", "2", "--smooth_rate", "0.4", "--result_dir", str(tmp_path / name)]
        assert run_in_process("main_GLS_direct_train", argv) == 0
        (folder,) = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / name) for f in fs if f == "metrics.csv"]
        rows.append([{k: v for k, v in r.items() if k != "epoch_time_s"} for r in read_csv(folder)])
    assert rows[0] == rows[1]


def test_noise_seed_not_training_seed_sets_the_labels(tmp_path, capsys):
    def labels(*extra):
        argv = TINY + ["--n_epoch", "1", "--result_dir", str(tmp_path), *extra]
        assert run_in_process("main_warmup", argv) == 0
        folder = capsys.readouterr().out.strip().splitlines()[-1].split("results: ")[1]
        return np.load(os.path.join(folder, "noisy_labels.npy"))
    base = labels()
    assert np.array_equal(base, labels("--seed", "5"))
    assert not np.array_equal(base, labels("--noise_seed", "5"))


def test_validation_split_gives_honest_selection(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "2", "--val_fraction", "0.1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1].split("results: ")[1]
    summary = read_json(os.path.join(folder, "summary.json"))
    rows = read_csv(os.path.join(folder, "metrics.csv"))
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert summary["test_acc_at_best_val"] == pytest.approx(float(best["test_acc"]))
    val_index = np.load(os.path.join(folder, "val_index.npy"))
    assert len(val_index) == pytest.approx(144, abs=5) and len(np.unique(val_index)) == len(val_index)


@pytest.mark.parametrize("n_epoch,milestones,expected", [
    (120, [1 / 3, 2 / 3], {0: 0.1, 39: 0.1, 40: 0.01, 79: 0.01, 80: 0.001, 119: 0.001}),
    (200, [0.5, 0.75], {99: 0.1, 100: 0.01, 149: 0.01, 150: 0.001}),
    (60, [1 / 3, 2 / 3], {19: 0.1, 20: 0.01, 40: 0.001}),
    (100, [], {0: 0.1, 99: 0.1}),
])
def test_lr_plan_scales_with_epochs(n_epoch, milestones, expected):
    for epoch, lr in expected.items():
        assert lr_at(epoch, 0.1, milestones, 0.1, n_epoch) == pytest.approx(lr)
