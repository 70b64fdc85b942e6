"""Bad input is a clear error that destroys nothing; divergence and interruption end a run
cleanly; --resume reproduces an uninterrupted run exactly; Ctrl-C at any moment ends with 130."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, read_csv, read_json, run_cli, run_in_process
from errors import RunFailed, UserError
from utils.results import RunFolder


def user_error(module, argv):
    """The message of the UserError a script raises for argv (what run_main prints)."""
    with pytest.raises(UserError) as err:
        run_in_process(module, argv)
    return str(err.value)


def folder_digest(folder):
    h = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode())
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    results = str(tmp_path_factory.mktemp("finished"))
    argv = TINY + ["--n_epoch", "1", "--result_dir", results]
    assert run_in_process("main_GLS_direct_train", argv) == 0
    (folder,) = [os.path.join(results, "main_GLS_direct_train", d)
                 for d in os.listdir(os.path.join(results, "main_GLS_direct_train"))]
    return argv, results, folder


@pytest.mark.parametrize("extra,expected", [
    (["--noise_rate", "1.2"], "--noise_rate 1.2 is outside [0, 1)"),
    (["--noise_rate", "-0.1"], "--noise_rate -0.1 is outside [0, 1)"),
    (["--smooth_rate", "1.5"], "--smooth_rate 1.5 is above 1"),
    (["--n_epoch", "0"], "--n_epoch/--epochs 0 must be at least 1"),
    (["--model", "vgg16"], "--model 'vgg16' is unknown"),
    (["--lr_milestones", "50"], "--lr_milestones [50.0] must be fractions"),
    (["--val_fraction", "0.7"], "--val_fraction 0.7 is outside [0, 0.5)"),
    (["--noise_type", "pairflip", "--dataset", "cifar100"], "pairflip"),
    (["--noise_type", "banana"], "unknown noise type 'banana'"),
    (["--record_train_probs", "--val_fraction", "0.1"], "--record_train_probs predicts every training image"),
    (["--resume", "--overwrite"], "contradict each other"),
    (["--device", "cuda:7", "--seed", "9"], "--device cuda:7"),
])
def test_bad_input_is_a_clear_error_and_destroys_nothing(finished_run, extra, expected):
    argv, results, folder = finished_run
    before = folder_digest(folder)
    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    message = user_error("main_GLS_direct_train", argv + extra)
    assert expected in message
    assert folder_digest(folder) == before
    assert os.listdir(os.path.join(results, "main_GLS_direct_train")) == [os.path.basename(folder)]


def test_rerunning_a_finished_run_refuses_unless_overwrite(finished_run):
    argv, _, folder = finished_run
    before = folder_digest(folder)
    assert "already holds a finished run. Pass --if_exists auto" in user_error("main_GLS_direct_train", argv)
    assert folder_digest(folder) == before


def test_unfinished_folder_without_resume_refuses_with_hint(tmp_path):
    argv = TINY + ["--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv) == 0
    (folder,) = [os.path.join(tmp_path, "main_warmup", d) for d in os.listdir(tmp_path / "main_warmup")]
    summary = read_json(os.path.join(folder, "summary.json"))
    RunFolder(folder).write_json("summary.json", {**summary, "status": "interrupted"})
    assert "--if_exists auto (or --resume) continues it" in user_error("main_warmup", argv)
    os.remove(os.path.join(folder, "last.pt"))
    assert "it has no checkpoint (last.pt) to continue from" in user_error("main_warmup", argv)


def test_bad_input_on_the_command_line_exits_2_without_traceback(tmp_path):
    out = run_cli("main_warmup.py", *TINY, "--noise_rate", "1.5", "--result_dir", tmp_path)
    assert out.returncode == 2
    assert "error: --noise_rate 1.5 is outside [0, 1)" in out.stderr
    assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "main_warmup")


def test_warmup_checkpoint_of_another_model_is_refused(tmp_path):
    common = TINY + ["--noise_rate", "0.4", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", common + ["--n_epoch", "1"]) == 0
    (warm,) = [os.path.join(tmp_path, "main_warmup", d) for d in os.listdir(tmp_path / "main_warmup")]
    ckpt = os.path.join(warm, "best.pt")
    msg = user_error("main_GLS_load", common + ["--warmup_ckpt", ckpt, "--width", "16"])
    assert "width=8" in msg and "width=16" in msg
    msg = user_error("main_GLS_load", common + ["--warmup_ckpt", ckpt, "--model", "wrn28_2"])
    assert "model='resnet18'" in msg
    # Another noise setting: no matching warm-up to find, and the error says how to make one.
    msg = user_error("main_GLS_load", TINY + ["--noise_rate", "0.2", "--result_dir", str(tmp_path)])
    assert "no finished warm-up run" in msg and "python3 main_warmup.py --dataset digits" in msg
    assert not os.path.exists(tmp_path / "main_GLS_load")


def test_a_loss_beyond_the_bound_stops_the_run_as_diverged(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "3", "--result_dir", str(tmp_path), "--loss_bound", "0.5"]
    assert run_in_process("main_GLS_direct_train", argv) == 3
    out = capsys.readouterr().out
    # It names what diverged, and blames no negative smooth rate: this one is positive.
    assert "diverged at epoch 1, step 0: the batch loss was" in out and "beyond --loss_bound 0.5" in out
    assert "warm-up" not in out and "Negative smoothing" not in out
    assert run_in_process("main_GLS_direct_train", argv + ["--smooth_rate", "-2"]) == 3
    assert "Negative smoothing is unbounded below" in capsys.readouterr().out
    folder = out.strip().splitlines()[-1].split("results: ")[1]
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "diverged"
    assert (summary["diverged_epoch"], summary["diverged_step"]) == (1, 0)
    assert summary["epochs_completed"] == 0


def test_a_run_that_diverges_at_its_first_step_says_it_has_no_checkpoint(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "2", "--result_dir", str(tmp_path), "--loss_bound", "0.5"]
    assert run_in_process("main_GLS_direct_train", argv) == 3
    out = capsys.readouterr().out
    assert "No epoch completed, so there is no checkpoint." in out and "is kept" not in out
    argv = TINY + ["--n_epoch", "3", "--result_dir", str(tmp_path / "late"), "--lr", "1e30", "--loss_bound", "0",
                   "--print_freq", "1"]
    assert run_in_process("main_GLS_direct_train", argv) == 3
    out = capsys.readouterr().out
    assert "diverged at epoch 1" in out and "No epoch completed" in out


@pytest.mark.parametrize("width", ["100000", "2000000"])
def test_an_absurd_width_names_the_memory_it_needs(tmp_path, width):
    msg = user_error("main_GLS_direct_train", TINY[:-4] + ["--model", "resnet18", "--width", width,
                                                           "--device", "cpu", "--result_dir", str(tmp_path)])
    assert f"--width {width} has" in msg and "GiB for weights, gradients and optimiser state" in msg
    assert "use a smaller --width" in msg and os.listdir(tmp_path) == []


def test_a_non_finite_loss_stops_the_run_as_diverged(tmp_path, capsys):
    # An absurd learning rate overflows the weights after the first step: the loss turns
    # non-finite, which no bound setting (0 disables the bound) lets through.
    argv = TINY + ["--n_epoch", "3", "--result_dir", str(tmp_path), "--lr", "1e30",
                   "--loss_bound", "0"]
    assert run_in_process("main_GLS_direct_train", argv) == 3
    folder = capsys.readouterr().out.strip().splitlines()[-1].split("results: ")[1]
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert summary["diverged_step"] >= 1


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    import utils.results as results
    argv = TINY + ["--n_epoch", "3", "--result_dir", str(tmp_path)]
    real_replace, calls = os.replace, []

    def crash_on_second_last_pt(src, dst):
        if dst.endswith("last.pt"):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError("disk full (simulated)")
        real_replace(src, dst)
    monkeypatch.setattr(results.os, "replace", crash_on_second_last_pt)
    with pytest.raises(RunFailed, match="simulated") as err:  # the OSError, told in one line
        run_in_process("main_GLS_direct_train", argv)
    assert isinstance(err.value.__cause__, OSError)
    monkeypatch.setattr(results.os, "replace", real_replace)
    (folder,) = [os.path.join(tmp_path, "main_GLS_direct_train", d)
                 for d in os.listdir(tmp_path / "main_GLS_direct_train")]
    assert [f for f in os.listdir(folder) if ".tmp" in f] == []
    assert RunFolder(folder).load_checkpoint("last.pt")["epoch"] == 1
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "failed"
    assert run_in_process("main_GLS_direct_train", argv + ["--resume"]) == 0
    assert read_json(os.path.join(folder, "summary.json"))["epochs_completed"] == 3


# ---------------------------------------------------------------- interruption and resume

def kill_after_epochs(script, argv, epochs, sig=signal.SIGTERM):
    """Start a run, send `sig` once metrics.csv has `epochs` rows; return (code, folder)."""
    folder = subprocess.run([sys.executable, script, *argv, "--print_run_dir"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.Popen([sys.executable, script, *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(folder, "metrics.csv")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(read_csv(metrics)) >= epochs:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, folder, out, err


def comparable(rows):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def assert_resume_matches_uninterrupted(script, argv, tmp_path):
    killed = argv + ["--result_dir", str(tmp_path / "killed")]
    code, folder, out, err = kill_after_epochs(script, killed, 2)
    assert code == 143, (out, err)
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "interrupted", err
    n_epoch = summary["n_epoch"]
    assert 2 <= summary["epochs_completed"] < n_epoch
    assert "--resume" in out
    resumed = run_cli(script, *killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"run folder: {folder} (resumed after epoch" in resumed.stdout
    full = run_cli(script, *argv, "--result_dir", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    full_folder = full.stdout.strip().splitlines()[-1].split("results: ")[1]
    a, b = read_csv(os.path.join(folder, "metrics.csv")), read_csv(os.path.join(full_folder, "metrics.csv"))
    assert len(a) == n_epoch and comparable(a) == comparable(b)
    if os.path.exists(os.path.join(full_folder, "train_probs.npy")):  # --record_train_probs
        assert np.array_equal(*(np.load(os.path.join(f, "train_probs.npy")) for f in (folder, full_folder)))
    sa, sb = (read_json(os.path.join(f, "summary.json")) for f in (folder, full_folder))
    assert sa["status"] == sb["status"] == "finished"
    for key in sa:
        if key.startswith(("best_", "last_")) or key == "initial_test_acc":
            assert sa[key] == sb[key], key
    return a


def test_sigterm_then_resume_equals_an_uninterrupted_gls_run(tmp_path):
    assert_resume_matches_uninterrupted(
        "main_GLS_direct_train.py", TINY + ["--n_epoch", "8", "--smooth_rate", "-1", "--record_train_probs"],
        tmp_path)


def test_sigterm_then_resume_equals_an_uninterrupted_sln_mo_lc_run(tmp_path):
    # Label correction from the second epoch (0-based 1): it is active when the kill lands,
    # so the corrected targets, sigma = 0 and the momentum model must all survive resume.
    rows = assert_resume_matches_uninterrupted(
        "noise_cifar_train.py",
        TINY + ["--epochs", "8", "--noise_mode", "sym", "--noise_rate", "0.4", "--sigma", "0.5",
                "--correction", "1", "--ema_decay", "0.9", "--lr", "0.01"], tmp_path)
    assert "test_acc_ema" in rows[0]


# ---------------------------------------------------------------- Ctrl-C at any moment

@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0, 2.0, 3.5])
def test_ctrl_c_at_any_moment_of_start_up_ends_with_130_and_no_traceback(tmp_path, delay):
    """SIGINT while the script imports torch, parses the flags, loads the data or trains: exit
    130, no traceback; before training nothing is written. (Within the interpreter's own first
    milliseconds, before the script's first line runs, Python itself reports the interrupt.)"""
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main_GLS_direct_train.py"), *TINY,
                             "--n_epoch", "30", "--result_dir", str(results)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    # 130 as the shell reports it: exit status 130, or (while Python starts) the signal's own end
    assert proc.returncode in (130, -signal.SIGINT), (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    if "epoch 1/30" not in out:  # stopped before training: nothing was written
        assert not results.exists() or not any(f for _, _, f in os.walk(results)), (out, err)
