"""What a run prints as it goes: each epoch's line with the time left, and its result line."""
import json
import os

from conftest import TINY, run_cli
from core.args import format_duration
from utils.metrics import format_row
from utils.schema import result_line


def rows_with_times(times):
    return [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "test_acc": 50.0, "epoch_time_s": t}
            for i, t in enumerate(times)]


def test_the_time_left_is_the_mean_of_the_last_five_epochs_times_the_epochs_left():
    rows = rows_with_times([100.0, 10.0, 20.0, 30.0, 40.0, 50.0])  # the first is left out
    assert format_row(rows, 10).endswith("(50.0s; 2m00s left)")  # 4 epochs x 30 s
    assert format_row(rows, 6).endswith("(50.0s)")                # the last epoch: nothing left
    assert [format_duration(s) for s in (0.4, 59, 60, 3599, 3600, 7620)] == \
        ["0s", "59s", "1m00s", "59m59s", "1h00m", "2h07m"]


def test_the_result_line_names_best_and_last_of_each_model():
    values = {"best_test_acc": 91.234, "last_test_acc": 90.0, "best_epoch": 7,
              "best_test_acc_ema": 92.0, "last_test_acc_ema": 91.5}
    assert result_line(values) == ("result: test accuracy best 91.23 (epoch 7), last 90.00; "
                                   "momentum model: best 92.00, last 91.50")
    assert result_line({}) == "result: no epoch completed"


def test_a_run_ends_with_its_result_and_its_folder(tmp_path):
    out = run_cli("train.py", "--method", "sln", "--sigma", "0.5", *TINY, "--width", "4", "--n_epoch", "2",
                  "--noise_rate", "0.4", "--result_dir", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    folder = lines[-1].removeprefix("results: ")
    with open(os.path.join(folder, "summary.json")) as f:
        s = json.load(f)
    assert lines[-2] == (f"result: test accuracy best {s['best_test_acc']:.2f} (epoch {s['best_epoch']}), "
                         f"last {s['last_test_acc']:.2f}; momentum model: best {s['best_test_acc_ema']:.2f}, "
                         f"last {s['last_test_acc_ema']:.2f}")
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert epoch_lines[0].startswith("epoch 1/2") and epoch_lines[0].endswith("s left)")
    assert epoch_lines[1].startswith("epoch 2/2") and "left" not in epoch_lines[1]


def test_a_sweep_says_why_a_run_failed_from_its_log(tmp_path):
    import sweep
    log = tmp_path / "run.log"
    log.write_text("epoch 1/2 ...\nerror: --noise_file x: no such file\nTraceback (most recent call last):\n"
                   "  File ...\nKeyError: 'q'\n")
    assert sweep.last_error_line(str(log)) == "error: --noise_file x: no such file"
    log.write_text("Traceback (most recent call last):\n  File ...\nKeyError: 'q'\n\n")
    assert sweep.last_error_line(str(log)) == "KeyError: 'q'"
    assert sweep.last_error_line(str(tmp_path / "gone.log")).startswith("(its log ")


def test_a_cpu_chosen_on_purpose_gets_no_cuda_warning(monkeypatch):
    import torch
    from core.device import cpu_fallback_warning
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a sweep's CPU slot
    assert cpu_fallback_warning("auto", torch.device("cpu")) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU asked for and not found
    assert "CUDA_VISIBLE_DEVICES='0'" in cpu_fallback_warning("auto", torch.device("cpu"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "found no usable CUDA device" in cpu_fallback_warning("auto", torch.device("cpu"))


def test_a_rate_where_a_wrong_label_outnumbers_the_true_one_is_warned_and_marked(tmp_path):
    from data.noise import majority_wrong_classes
    # An independent reading of the three matrices: the true label keeps 1 - r; pairflip and
    # asym give r to one partner, symmetric r / (K - 1) to each other class.
    assert majority_wrong_classes("pairflip", 0.5, 10) == []
    assert majority_wrong_classes("pairflip", 0.55, 10) == list(range(10))
    assert majority_wrong_classes("asym", 0.6, 10) == [2, 3, 4, 5, 9]  # the classes asym moves
    assert majority_wrong_classes("symmetric", 0.9, 10) == []           # 0.1 against 0.1 each
    assert majority_wrong_classes("symmetric", 0.95, 10) == list(range(10))
    out = run_cli("train.py", "--method", "gce", *TINY, "--width", "4", "--n_epoch", "1",
                  "--noise_type", "pairflip", "--noise_rate", "0.95", "--result_dir", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "a wrong label is now more likely than the true one" in out.stderr
    folder = out.stdout.strip().splitlines()[-1].removeprefix("results: ")
    with open(os.path.join(folder, "noise.json")) as f:
        assert json.load(f)["provenance"]["wrong_label_majority"] == list(range(10))


def test_the_negative_smoothing_hint_names_what_the_user_is_not_running_already():
    from methods.gls import GLS
    nls = GLS(wa=0.0, wb=1.0, smooth_rate=-2.0)
    direct, load = nls.divergence_hint("main_GLS_direct_train"), nls.divergence_hint("main_GLS_load")
    assert "main_warmup.py, then main_GLS_load.py" in direct
    assert "main_GLS_load.py" not in load and "even from the CE warm-up" in load
    assert GLS(wa=0.0, wb=1.0, smooth_rate=0.4).divergence_hint("main_GLS_load") == ""
