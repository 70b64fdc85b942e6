"""utils/engine.py end to end on digits: the results contract, warm-up -> load,
reproducibility, the lr plan, the memorisation and calibration columns."""
import contextlib
import os

import numpy as np
import pytest
import torch

from conftest import TINY, read_csv, read_json, run_in_process
from data.loader import DeviceLoader
from utils.engine import EpochStats, evaluate, lr_at


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


@pytest.mark.parametrize("n_epoch", [1, 2])
def test_a_milestone_never_applies_at_epoch_0(n_epoch):
    """--n_epoch 1 of the warm-up plan trained at lr * gamma before: round(1/3) = 0."""
    assert lr_at(0, 0.1, [1 / 3, 2 / 3], 0.1, n_epoch) == pytest.approx(0.1)


def test_one_epoch_trains_at_the_first_lr(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1].split("results: ")[1]
    assert [float(r["lr"]) for r in read_csv(os.path.join(folder, "metrics.csv"))] == [0.1]


# ---------------------------------------------------------------- memorisation and calibration

def test_memorisation_identities_hold_every_epoch_of_a_noisy_run(warm_then_load):
    """train_acc = (1-rho) fit_clean + rho mem_noisy and train_acc_true = (1-rho) fit_clean +
    rho fix_noisy, rho the fraction of wrong labels among the samples trained (all of them)."""
    _, warm, _ = warm_then_load
    rho = read_json(os.path.join(warm, "summary.json"))["actual_noise_rate"]
    rows = read_csv(os.path.join(warm, "metrics.csv"))
    for r in rows:
        v = {k: float(r[k]) for k in ("train_acc", "train_acc_true", "fit_clean", "mem_noisy", "fix_noisy")}
        assert v["train_acc"] == pytest.approx((1 - rho) * v["fit_clean"] + rho * v["mem_noisy"], abs=1e-9)
        assert v["train_acc_true"] == pytest.approx((1 - rho) * v["fit_clean"] + rho * v["fix_noisy"], abs=1e-9)
        assert 0 <= v["mem_noisy"] + v["fix_noisy"] <= 100  # two disjoint outcomes of a wrong label
    summary = read_json(os.path.join(warm, "summary.json"))
    best = rows[summary["best_epoch"] - 1]
    for column in ("test_ece", "test_conf", "test_loss", "mem_noisy", "fit_clean"):
        assert summary[f"last_{column}"] == pytest.approx(float(rows[-1][column]))
        assert summary[f"best_epoch_{column}"] == pytest.approx(float(best[column]))


def test_stats_count_the_cells_of_hand_made_batches():
    """EpochStats against counts made by hand: 6 samples, 3 with a wrong label, one of them an
    open-set image (true label -1), over two batches."""
    true = torch.tensor([0, 1, 2, 0, 1, -1])
    noisy = torch.tensor([0, 1, 0, 2, 1, 2])          # wrong: samples 2, 3, 5
    pred = torch.tensor([0, 2, 0, 0, 1, 2])          # 2 memorised (0), 3 fixed (0), 5 memorised (2)
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5
    stats = EpochStats(torch.device("cpu"), true)
    for step, idx in enumerate((torch.tensor([4, 0, 2]), torch.tensor([5, 1, 3]))):
        stats.add(step, torch.tensor(1.0), logits[idx], noisy[idx], idx)
    row = stats.row()
    assert row["train_acc"] == pytest.approx(100 * 4 / 6)        # samples 0, 2, 4, 5 fit their label
    assert row["train_acc_true"] == pytest.approx(100 * 3 / 6)   # 0, 3, 4 fit the truth
    assert row["fit_clean"] == pytest.approx(100 * 2 / 3)        # clean 0, 1, 4: 0 and 4
    assert row["mem_noisy"] == pytest.approx(100 * 2 / 3)        # wrong 2, 3, 5: 2 and 5
    assert row["fix_noisy"] == pytest.approx(100 * 1 / 3)        # 3
    assert row["train_loss"] == pytest.approx(1.0)


class FixedLogits(torch.nn.Module):
    """A 'model' whose outputs are rows of a fixed table, in the order the loader yields
    them (the eval loader is in order)."""

    def __init__(self, table):
        super().__init__()
        self.table, self.start = table, 0

    def forward(self, x):
        out = self.table[self.start:self.start + len(x)]
        self.start = (self.start + len(x)) % len(self.table)
        return out


def test_evaluation_loss_confidence_and_ece_against_an_independent_computation():
    rng = np.random.default_rng(0)
    n, k = 500, 10
    logits = rng.normal(size=(n, k)) * rng.uniform(0.2, 4, size=(n, 1))
    labels = rng.integers(0, k, n)
    logits[np.arange(n), labels] += rng.uniform(0, 3, n)  # better than chance, some confident
    loader = DeviceLoader(np.zeros((n, 1, 2, 2), np.uint8), labels, 64, (0.5,), (0.5,), "cpu", train=False)
    got = evaluate(FixedLogits(torch.tensor(logits, dtype=torch.float32)), loader, contextlib.nullcontext)
    # independently, in float64 numpy: 15 bins (b/15, (b+1)/15]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    correct = pred == labels
    ece = 0.0
    for b in range(15):
        members = (conf > b / 15) & (conf <= (b + 1) / 15)
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    assert got["acc"] == pytest.approx(100 * correct.mean())
    assert got["conf"] == pytest.approx(100 * conf.mean(), rel=1e-5)
    assert got["ece"] == pytest.approx(100 * ece, rel=1e-4)
    assert got["loss"] == pytest.approx(-np.log(p[np.arange(n), labels]).mean(), rel=1e-5)
    assert 1 < got["ece"] < 60  # neither calibrated by accident nor degenerate


def test_a_last_batch_of_one_sample_joins_the_batch_before(tmp_path, capsys):
    """Digits: 1437 = 4 * 359 + 1. The single sample would make BatchNorm fail on ResNet's
    1x1 feature maps; it is trained in a batch of 5 instead, every epoch."""
    loader = DeviceLoader(np.zeros((9, 1, 8, 8), np.uint8), np.arange(9), 4, (0.5,), (0.5,), "cpu", train=True)
    sizes = [len(y) for _, y, _ in loader]
    assert sizes == [4, 5] and len(loader) == 2
    argv = [*TINY, "--batch_size", "4", "--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1].split("results: ")[1]
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"
