"""--tensorboard (utils.metrics.TensorBoardLog): the event files, read back with TensorBoard's
own reader, hold metrics.csv (every column, one value per epoch), across an interruption
and resume."""
import os
import signal
import sys

import pytest
import torch

from conftest import TINY, parse_flags, read_csv, read_json, run_in_process
from errors import UserError
from methods.sln import SLN
from utils.engine import run

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the tensorboard package (requirements.txt) is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = "noise_cifar_train"
ARGV = TINY + ["--epochs", "4", "--noise_mode", "sym", "--noise_rate", "0.4", "--sigma", "0.5",
               "--ema_decay", "0.9", "--lr", "0.02", "--tensorboard"]


class TwoNetworkSLN(SLN):
    """SLN-MO (columns _ema) with a second network trained beside it on the noisy labels
    (columns _net2), a method column of its own, and SIGTERM or SIGINT as epoch `stop`
    (0-based) starts, as a scheduler or a user would send."""

    def __init__(self, *args, stop=None, signum=signal.SIGTERM, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop, self.signum, self.epoch = stop, signum, None

    def setup(self, run):
        super().setup(run)
        run.add_network("net2")

    def start_epoch(self, epoch, run):
        super().start_epoch(epoch, run)
        self.epoch = epoch
        if epoch == self.stop:
            signal.raise_signal(self.signum)

    def train_step(self, run, x, y, idx):
        net2 = run.networks["net2"]
        with run.autocast():
            logits = net2.forward(x)
        run.minimize(torch.nn.functional.cross_entropy(logits.float(), y), "net2")
        return super().train_step(run, x, y, idx)

    def epoch_columns(self):
        return {"epoch_share": 1.0 / (self.epoch + 1)}


def train(result_dir, *extra, **method_kwargs):
    cfg = parse_flags(SCRIPT, *ARGV, "--result_dir", str(result_dir), *extra)
    method = TwoNetworkSLN(cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch, **method_kwargs)
    code = run(cfg, SCRIPT, method)
    (folder,) = (result_dir / SCRIPT).iterdir()
    return code, folder


def read_events(folder):
    """{tag: [(step, value), ...]} as TensorBoard shows them (orphaned steps purged)."""
    reader = event_accumulator.EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def assert_events_equal_metrics(folder):
    rows = read_csv(folder / "metrics.csv")
    events = read_events(folder)
    assert set(events) == set(rows[0]) - {"epoch"}
    for tag, points in events.items():
        assert [step for step, _ in points] == [int(r["epoch"]) for r in rows], tag  # one value a step
        # event files store scalars as float32
        assert [v for _, v in points] == pytest.approx([float(r[tag]) for r in rows], rel=1e-6, abs=1e-6), tag
    return rows, events


def timeless(rows):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def test_event_files_hold_metrics_csv_with_lr_momentum_model_second_network_and_method_columns(tmp_path):
    code, folder = train(tmp_path)
    assert code == 0
    rows, events = assert_events_equal_metrics(folder)
    assert len(rows) == 4
    for tag in ("lr", "train_loss", "test_acc", "test_acc_ema", "test_acc_net2", "test_ece_net2",
                "fit_clean", "mem_noisy", "epoch_share"):
        assert tag in events, tag
    assert [v for _, v in events["epoch_share"]] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_and_resumed_run_continues_the_curves_without_duplicate_steps(tmp_path, signum, code):
    """Checkpoints every 2 epochs; the signal lands as epoch 4 starts, after the events of
    epoch 3 were written but before its checkpoint: the resumed run trains epoch 3 again
    and the reader shows it once. Both equal an uninterrupted run's metrics."""
    assert train(tmp_path / "whole", "--ckpt_every", "2")[0] == 0
    stopped, folder = train(tmp_path / "parts", "--ckpt_every", "2", stop=3, signum=signum)
    assert stopped == code
    assert read_json(folder / "summary.json")["epochs_completed"] == 3
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 2
    assert [step for step, _ in read_events(folder)["test_acc"]] == [1, 2, 3]
    assert train(tmp_path / "parts", "--ckpt_every", "2", "--resume")[0] == 0
    rows, _ = assert_events_equal_metrics(folder)
    (whole,) = (tmp_path / "whole" / SCRIPT).iterdir()
    assert timeless(rows) == timeless(read_csv(whole / "metrics.csv"))


def test_tensorboard_turned_on_at_a_resume_writes_the_earlier_epochs_first(tmp_path):
    argv = [a for a in ARGV if a != "--tensorboard"]
    cfg = parse_flags(SCRIPT, *argv, "--result_dir", str(tmp_path))
    method = TwoNetworkSLN(cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch, stop=2)
    assert run(cfg, SCRIPT, method) == 143
    (folder,) = (tmp_path / SCRIPT).iterdir()
    assert not (folder / "tensorboard").exists()  # off by default
    assert train(tmp_path, "--resume")[0] == 0
    rows, _ = assert_events_equal_metrics(folder)
    assert len(rows) == 4


def test_without_the_tensorboard_package_the_run_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes its import fail
    with pytest.raises(UserError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        run_in_process("main_GLS_direct_train", TINY + ["--n_epoch", "1", "--tensorboard",
                                                         "--result_dir", str(tmp_path)])
    scripts = tmp_path / "main_GLS_direct_train"
    assert not scripts.exists() or os.listdir(scripts) == []
