"""summary.json's per_class results (utils/metrics.py, utils/engine.py): the test confusion
matrix and accuracy per class, and fit_clean / mem_noisy per true class, at the best and the
last epoch; against hand-made counts and an independent numpy computation on digits."""
import contextlib

import numpy as np
import pytest
import torch

from conftest import TINY, InterruptedGLS, parse_flags, read_csv, read_json, run_in_process
from data.digits import load_digits_split
from data.loader import DeviceLoader
from methods.gls import GLS
from models import build_model
from utils.engine import run
from utils.metrics import EpochStats, evaluate
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")

# Symmetric 40% noise: every class has clean and wrongly labelled samples. The lr rises
# fivefold for the last epoch, which knocks the accuracy down: the best epoch (3) is not the last.
ARGV = TINY + ["--noise_rate", "0.4", "--n_epoch", "4", "--smooth_rate", "0.2", "--lr", "0.05",
               "--lr_milestones", "0.75", "--lr_gamma", "5"]


# ---------------------------------------------------------------- the counting, by hand

def test_train_counts_per_true_class_of_hand_made_batches():
    """6 samples of 3 classes over two batches; sample 5 is an open-set image (true -1)."""
    true = torch.tensor([0, 1, 2, 0, 1, -1])
    noisy = torch.tensor([0, 1, 0, 2, 1, 2])   # wrong: 2 (class 2), 3 (class 0), 5 (no class)
    pred = torch.tensor([0, 2, 0, 0, 1, 2])    # 0 fits, 1 misses, 2 memorised, 3 not, 4 fits, 5 memorised
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5
    stats = EpochStats(torch.device("cpu"), true)
    for step, idx in enumerate((torch.tensor([4, 0, 2]), torch.tensor([5, 1, 3]))):
        stats.add(step, torch.tensor(1.0), logits[idx], noisy[idx], idx)
    assert stats.per_class() == {
        "train_fit_clean": [100.0, 50.0, None],   # class 0: sample 0; class 1: 1 and 4; class 2: none clean
        "train_n_clean": [1, 2, 0],
        "train_mem_noisy": [0.0, None, 100.0],    # class 0: sample 3 fixed; class 2: sample 2 memorised
        "train_n_noisy": [1, 0, 1]}
    # the global columns still count the open-set image among the wrong labels
    assert stats.row()["mem_noisy"] == pytest.approx(100 * 2 / 3)
    unknown = EpochStats(torch.device("cpu"), None)
    unknown.add(0, torch.tensor(1.0), logits, noisy, torch.arange(6))
    assert unknown.per_class() == {} and unknown.row()["train_acc"] == pytest.approx(100 * 4 / 6)


class FixedLogits(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table, self.start = table, 0

    def forward(self, x):
        out = self.table[self.start:self.start + len(x)]
        self.start += len(x)
        return out


def test_confusion_matrix_of_evaluate_against_numpy():
    rng = np.random.default_rng(1)
    n, k = 300, 7
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += rng.uniform(0, 2, n)
    loader = DeviceLoader(np.zeros((n, 1, 2, 2), np.uint8), labels, 64, (0.5,), (0.5,), "cpu", train=False)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    got = evaluate(FixedLogits(torch.tensor(logits, dtype=torch.float32)), loader, contextlib.nullcontext,
                   confusion=confusion)
    expected = np.zeros((k, k), np.int64)
    np.add.at(expected, (labels, logits.argmax(1)), 1)
    assert np.array_equal(confusion.numpy(), expected)
    assert got["acc"] == pytest.approx(100 * np.trace(expected) / n)


# ---------------------------------------------------------------- a digits run

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("per_class")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert run_in_process("main_GLS_direct_train", ARGV + ["--result_dir", str(results)]) == 0
    torch.set_num_threads(threads)
    (folder,) = (results / "main_GLS_direct_train").iterdir()
    return folder, read_json(folder / "summary.json"), read_csv(folder / "metrics.csv")


def test_summary_has_exactly_the_per_class_format(digits_run):
    _, summary, rows = digits_run
    per_class = summary["per_class"]
    assert list(per_class) == ["best", "last"]
    assert per_class["best"]["epoch"] == summary["best_epoch"]
    assert per_class["last"]["epoch"] == len(rows) == 4
    for record in per_class.values():
        assert list(record) == ["epoch", "test_acc", "test_confusion", "train_fit_clean", "train_n_clean",
                                "train_mem_noisy", "train_n_noisy"]
        assert len(record["test_acc"]) == 10 and np.array(record["test_confusion"]).shape == (10, 10)
        assert all(isinstance(v, int) for row in record["test_confusion"] for v in row)


def test_a_best_epoch_before_the_last_is_kept_as_it_was(digits_run):
    """The run's best epoch lies before its last (the assertion that makes this test bite):
    best then holds that epoch's record, not the last one's."""
    _, summary, rows = digits_run
    best, last = summary["per_class"]["best"], summary["per_class"]["last"]
    accs = [float(r["test_acc"]) for r in rows]
    assert best["epoch"] == 1 + accs.index(max(accs)) < last["epoch"]
    assert best["test_confusion"] != last["test_confusion"]


def test_confusion_and_accuracy_per_class_recomputed_from_the_checkpoints(digits_run):
    """best.pt holds the best epoch's weights, last.pt the last's: their test predictions,
    computed here with the model alone (normalisation and counting in numpy), give the
    recorded confusion matrices and accuracies."""
    folder, summary, rows = digits_run
    train_x, _, test_x, test_y = load_digits_split()
    mean, std = train_x.mean() / 255, train_x.std() / 255
    x = torch.tensor((test_x / 255.0 - mean) / std, dtype=torch.float32)
    for which, name in (("best", "best.pt"), ("last", "last.pt")):
        model = build_model("resnet18", 10, 1, 8)
        model.load_state_dict(torch.load(folder / name, weights_only=True)["model"])
        with torch.no_grad():
            pred = model.eval()(x).argmax(1).numpy()
        expected = np.zeros((10, 10), np.int64)
        np.add.at(expected, (test_y, pred), 1)
        record = summary["per_class"][which]
        assert np.array_equal(np.array(record["test_confusion"]), expected), which
        per_class = 100.0 * np.diag(expected) / expected.sum(1)
        assert record["test_acc"] == pytest.approx(per_class.tolist())
        assert float(rows[record["epoch"] - 1]["test_acc"]) == pytest.approx(100.0 * (pred == test_y).mean())


def test_train_counts_per_class_are_the_labels_and_add_up_to_the_global_columns(digits_run):
    """n_clean[c] = #{true = c, noisy = c}, n_noisy[c] = #{true = c, noisy != c} (numpy, from
    the run's labels); sum_c pct[c] * n[c] / sum_c n[c] is metrics.csv's fit_clean / mem_noisy."""
    folder, summary, rows = digits_run
    _, train_y, _, _ = load_digits_split()
    noisy = np.load(folder / "noisy_labels.npy")
    n_clean = np.bincount(train_y[noisy == train_y], minlength=10)
    n_noisy = np.bincount(train_y[noisy != train_y], minlength=10)
    assert n_noisy.min() > 0 and n_clean.min() > 0
    for record in summary["per_class"].values():
        assert record["train_n_clean"] == n_clean.tolist()
        assert record["train_n_noisy"] == n_noisy.tolist()
        row = rows[record["epoch"] - 1]
        for column, n in (("fit_clean", n_clean), ("mem_noisy", n_noisy)):
            pct = np.array(record[f"train_{column}"], dtype=float)
            assert (pct * n).sum() / n.sum() == pytest.approx(float(row[column]), abs=1e-9), column


# ---------------------------------------------------------------- resume


def test_the_best_epochs_record_survives_a_resume(digits_run, tmp_path):
    """Stopped after the best epoch and resumed, the run ends with the uninterrupted run's
    per_class, although the resumed process never evaluated the best epoch."""
    _, summary, _ = digits_run
    stop = summary["per_class"]["best"]["epoch"]  # the 0-based epoch after the best one
    cfg = parse_flags("main_GLS_direct_train", *ARGV, "--result_dir", str(tmp_path))
    method = InterruptedGLS(cfg.smooth_rate, cfg.wa, cfg.wb, stop=stop)
    assert run(cfg, "main_GLS_direct_train", method) == 143
    (folder,) = (tmp_path / "main_GLS_direct_train").iterdir()
    assert read_json(folder / "summary.json")["epochs_completed"] == stop
    resumed = parse_flags("main_GLS_direct_train", *ARGV, "--result_dir", str(tmp_path), "--resume")
    assert run(resumed, "main_GLS_direct_train", GLS.from_config(resumed)) == 0
    assert read_json(folder / "summary.json")["per_class"] == summary["per_class"]


def test_progress_carries_the_per_class_records_and_tolerates_older_checkpoints():
    state = RunState(rows=[{"test_acc": 50.0}])
    state.record_per_class({"epoch": 1})
    state.rows.append({"test_acc": 40.0})
    state.record_per_class({"epoch": 2})
    assert state.per_class == {"best": {"epoch": 1}, "last": {"epoch": 2}}
    again = RunState()
    again.load_progress(state.progress())
    assert again.per_class == state.per_class
    old = {k: v for k, v in state.progress().items() if k != "per_class"}
    again.load_progress(old)
    assert again.per_class == {}
