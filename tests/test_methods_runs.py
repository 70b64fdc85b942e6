"""The baseline methods through train.py: --help, their flags and refusals, the columns they
add, and exact resume after SIGTERM (digits, ResNet-18 at width 4, a few epochs)."""
import os
import signal

import pytest
import torch

import numpy as np

from conftest import parse_flags, read_csv, read_json, run_cli
from data import load_dataset
from errors import UserError
from methods import get_method
from utils.engine import run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu",
         "--noise_rate", "0.4", "--lr", "0.05", "--batch_size", "256", "--test_batch_size", "512"]


def interrupted(method_cls, stop):
    """A subclass of method_cls whose process receives SIGTERM (as a scheduler sends it) as
    epoch `stop` (0-based) starts: the engine saves after the previous epoch and ends."""
    class Interrupted(method_cls):
        def start_epoch(self, epoch, run_state):
            super().start_epoch(epoch, run_state)
            if epoch == stop:
                signal.raise_signal(signal.SIGTERM)
    return Interrupted


def train(argv, method_cls=None):
    """train.py's flags parsed and checked, then the engine in this process; (code, folder)."""
    cfg = parse_flags("train", *argv)
    cls = method_cls or get_method(cfg.method)
    code = run(cfg, "train", cls.from_config(cfg))
    return code, [os.path.join(cfg.result_dir, "train", d) for d in os.listdir(os.path.join(cfg.result_dir, "train"))]


def timeless(rows):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def assert_sigterm_resume_is_exact(method, extra, tmp_path, n_epoch=4, stop=2):
    """Interrupted at epoch `stop` and resumed, the run ends with the metrics, summary values
    and last.pt (networks and method state) of a run never interrupted; returns its rows."""
    argv = ["--method", method, *SMALL, "--n_epoch", str(n_epoch), *extra]
    code, (whole,) = train(argv + ["--result_dir", str(tmp_path / "whole")])
    assert code == 0
    parts_argv = argv + ["--result_dir", str(tmp_path / "parts")]
    code, (parts,) = train(parts_argv, interrupted(get_method(method), stop))
    assert code == 143
    summary = read_json(os.path.join(parts, "summary.json"))
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == stop
    code, _ = train(parts_argv + ["--resume"])
    assert code == 0
    rows = read_csv(os.path.join(whole, "metrics.csv"))
    assert len(rows) == n_epoch and timeless(read_csv(os.path.join(parts, "metrics.csv"))) == timeless(rows)
    a, b = (read_json(os.path.join(f, "summary.json")) for f in (whole, parts))
    assert a["status"] == b["status"] == "finished"
    assert {k: v for k, v in a.items() if k.startswith(("best_", "last_"))} == \
           {k: v for k, v in b.items() if k.startswith(("best_", "last_"))}
    ca, cb = (torch.load(os.path.join(f, "last.pt"), weights_only=True) for f in (whole, parts))
    for name in ca["model"]:
        assert torch.equal(ca["model"][name], cb["model"][name]), name
    for net in ca["networks"]:
        for name, value in ca["networks"][net]["model"].items():
            assert torch.equal(value, cb["networks"][net]["model"][name]), (net, name)
    for key, value in ca["method"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, cb["method"][key]), key
    return rows, ca


# ---------------------------------------------------------------- the command line

FLAGS = {"gce": ["--q", "(default: 0.7)"],
         "elr": ["--elr_lambda", "--elr_beta", "3 on CIFAR-10"],
         "coteaching": ["--forget_rate", "expected fraction of wrong labels", "half of it for CIFAR-10 asym",
                        "--num_gradual", "(default: 10)", "--exponent", "(default: 1.0)"],
         "coteaching_plus": ["--forget_rate", "--init_epoch", "5 on cifar100", "--ce_on_softmax, --no-ce_on_softmax"],
         "jocor": ["--forget_rate", "--co_lambda", "0.85 on cifar100"],
         "forward": ["--transition {true,estimate}", "(default: true)", "--estimate_from RUN",
                     "--anchor_percentile", "default: 97"]}


def test_help_lists_the_methods_and_each_shows_its_flags_with_defaults():
    out = run_cli("train.py", "--help")
    assert out.returncode == 0
    for name in FLAGS:
        assert f"\n  {name} " in out.stdout, name
    for name, expected in FLAGS.items():
        out = run_cli("train.py", "--method", name, "--help")
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        for piece in expected:
            assert piece in text, (name, piece)


def test_a_flag_of_another_method_is_refused_with_exit_2(tmp_path):
    out = run_cli("train.py", "--method", "elr", "--q", "0.5", "--dataset", "digits",
                  "--result_dir", tmp_path)
    assert out.returncode == 2
    assert "--q is a flag of method gce, not of this run's method elr" in out.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra,expected", [
    (["--method", "gce", "--q", "1.5"], "--q 1.5 is outside [0, 1]"),
    (["--method", "elr", "--elr_lambda", "-1"], "--elr_lambda -1.0 must be >= 0"),
    (["--method", "elr", "--elr_beta", "1"], "--elr_beta 1.0 is outside [0, 1)"),
    (["--method", "coteaching", "--forget_rate", "1"], "--forget_rate 1.0 is outside [0, 1)"),
    (["--method", "coteaching", "--num_gradual", "-1"], "--num_gradual -1 must be >= 0"),
    (["--method", "coteaching", "--exponent", "0"], "--exponent 0.0 must be > 0"),
    (["--method", "forward", "--transition", "estimate"], "--transition estimate needs --estimate_from RUN"),
    (["--method", "forward", "--estimate_from", "x"], "--estimate_from applies to --transition estimate"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *extra, *SMALL)
    assert expected in str(err.value)


def test_elr_defaults_follow_the_data_set_and_an_explicit_value_shares_the_folder():
    cfg = parse_flags("train", "--method", "elr", *SMALL)
    assert (cfg.elr_lambda, cfg.elr_beta) == (3.0, 0.7)
    cfg100 = parse_flags("train", "--method", "elr", "--dataset", "cifar100")
    assert (cfg100.elr_lambda, cfg100.elr_beta) == (7.0, 0.9)
    typed = parse_flags("train", "--method", "elr", *SMALL, "--elr_lambda", "3", "--elr_beta", "0.7")
    assert vars(typed) == vars(cfg)


# ---------------------------------------------------------------- runs

def test_gce_q0_trains_exactly_as_cross_entropy(tmp_path):
    """gce at q 0 (its knob baseline) and gls at smooth rate 0 (plain CE) end bit-identical."""
    _, (gce,) = train(["--method", "gce", "--q", "0", *SMALL, "--n_epoch", "2", "--result_dir", str(tmp_path / "a")])
    _, (gls,) = train(["--method", "gls", "--smooth_rate", "0", *SMALL, "--n_epoch", "2",
                       "--result_dir", str(tmp_path / "b")])
    assert timeless(read_csv(os.path.join(gce, "metrics.csv"))) == timeless(read_csv(os.path.join(gls, "metrics.csv")))
    summary = read_json(os.path.join(gce, "summary.json"))
    assert summary["is_ce"] and summary["knobs"] == {"q": 0.0} and summary["method"] == "ce"


def test_elr_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows, last = assert_sigterm_resume_is_exact("elr", [], tmp_path)
    targets = last["method"]["targets"]
    # every row was visited each epoch: its target is a mix of probability vectors, mass
    # 1 - beta^(visits) with 4 visits, beta 0.7
    assert targets.shape == (1437, 10)
    assert torch.allclose(targets.sum(1), torch.full((1437,), 1 - 0.7 ** 4), atol=1e-5)


def test_coteaching_follows_its_schedule_and_counts_what_it_keeps(tmp_path):
    """Per epoch: forget_rate is R(e) = 0.4 (e + 1) / 2, then 0.4 (num_gradual 3); the kept
    fraction is sum over the batches of int((1 - R) B) / N, counted here from the batch
    sizes (1437 images, batches of 256: five full and one of 157); the peer is evaluated."""
    code, (folder,) = train(["--method", "coteaching", *SMALL, "--n_epoch", "4", "--num_gradual", "3",
                             "--result_dir", str(tmp_path)])
    assert code == 0
    rows = read_csv(os.path.join(folder, "metrics.csv"))
    rates = [0.2, 0.4, 0.4, 0.4]
    sizes = [256] * 5 + [157]
    for row, rate in zip(rows, rates):
        assert float(row["forget_rate"]) == pytest.approx(rate)
        kept = sum(int((1 - rate) * b) for b in sizes)
        assert float(row["kept_fraction"]) == pytest.approx(kept / 1437, rel=1e-12)
        assert 0 < float(row["kept_clean_fraction"]) <= 1 and 0 < float(row["kept_clean_fraction_peer"]) <= 1
        assert row["test_acc_peer"] and row["test_acc_peer"] != row["test_acc"]  # two networks
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["knobs"] == {"forget_rate": 0.4} and "best_test_acc_peer" in summary


def test_coteaching_keeping_everything_keeps_the_clean_share_of_the_labels(tmp_path):
    """forget_rate 0: every sample is kept, so the clean share among the kept is one minus
    the actual noise rate of noise.json, every epoch, for both networks."""
    code, (folder,) = train(["--method", "coteaching", *SMALL, "--n_epoch", "2", "--forget_rate", "0",
                             "--result_dir", str(tmp_path)])
    assert code == 0
    clean = 1 - read_json(os.path.join(folder, "noise.json"))["actual_noise_rate"]
    for row in read_csv(os.path.join(folder, "metrics.csv")):
        assert float(row["kept_fraction"]) == 1.0
        assert float(row["kept_clean_fraction"]) == pytest.approx(clean, rel=1e-12)
        assert float(row["kept_clean_fraction_peer"]) == pytest.approx(clean, rel=1e-12)


def test_coteaching_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows, last = assert_sigterm_resume_is_exact("coteaching", ["--num_gradual", "3"], tmp_path)
    assert set(last["networks"]) == {"peer"} and "test_acc_peer" in rows[0]
    # the kept samples of the last epochs hold more clean labels than the labels do
    clean = 1 - read_json(os.path.join(tmp_path / "whole" / "train", os.listdir(tmp_path / "whole" / "train")[0],
                                       "noise.json"))["actual_noise_rate"]
    assert float(rows[-1]["kept_clean_fraction"]) > clean


def test_forward_true_on_human_noise_names_the_estimate_instead():
    with pytest.raises(UserError) as err:
        parse_flags("train", "--method", "forward", "--dataset", "cifar10", "--noise_type", "worst")
    assert "--transition estimate --estimate_from RUN" in str(err.value)


def test_forward_true_uses_the_runs_counted_noise_matrix(tmp_path):
    code, (folder,) = train(["--method", "forward", *SMALL, "--n_epoch", "1", "--result_dir", str(tmp_path)])
    assert code == 0
    noisy = np.load(os.path.join(folder, "noisy_labels.npy"))
    clean = load_dataset("digits").train_labels
    counts = np.zeros((10, 10))
    for t, n in zip(clean, noisy):
        counts[t, n] += 1
    T = torch.load(os.path.join(folder, "last.pt"), weights_only=True)["method"]["transition"].numpy()
    np.testing.assert_allclose(T, counts / counts.sum(1, keepdims=True), rtol=1e-6)
    assert abs(np.diag(T).mean() - 0.6) < 0.03  # 40% symmetric noise
