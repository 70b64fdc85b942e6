"""Precision and determinism (core/device.py, utils/engine.py): fp16 with its gradient scaler,
the loss in fp32 under autocast, bf16 refused where a GPU lacks it, --deterministic and
--precision fp32_strict set, recorded and reset; an operation without a deterministic
implementation stops the run naming it.

What only a GPU can check (not here): cuDNN's TF32 and autotuning actually used or not,
CUBLAS_WORKSPACE_CONFIG taking effect, fp16 overflow handling by the scaler on real fp16
kernels, and bit-identical repeated CUDA runs under --deterministic."""
import contextlib
import os

import numpy as np
import pytest
import torch

import core.device
from conftest import TINY, InterruptedGLS, parse_flags, read_csv, read_json, run_in_process
from core.device import check_precision, speed_settings
from errors import UserError
from loss import gls_loss, sln_targets, soft_cross_entropy
from methods.gls import GLS
from models import build_model
from utils.engine import run
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def initial_scaler():
    return torch.amp.GradScaler("cpu").state_dict()


@pytest.fixture(autouse=True)
def default_settings():
    """Every test leaves torch's process-wide settings as a run without the flags does."""
    yield
    speed_settings(CPU, "fp32", deterministic=False)


# ---------------------------------------------------------------- the loss under fp16

def huge_fp16_logits():
    """fp16 logits near its largest value (65504): log-softmax in fp16 overflows to -inf."""
    logits = torch.tensor([[60000.0, -60000.0, 0.0], [-30000.0, 20000.0, 50000.0]], dtype=torch.float16)
    return logits, torch.tensor([0, 1])


def reference_gls(logits, labels, r):
    """(1 - r) * (-log p_y) + r * mean_k(-log p_k) in float64 numpy."""
    z = logits.double().numpy()
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    nll = -log_p[np.arange(len(z)), labels.numpy()]
    return ((1 - r) * nll + r * (-log_p.mean(1))).mean()


def test_negative_smoothing_on_huge_fp16_logits_is_computed_in_fp32():
    logits, labels = huge_fp16_logits()
    naive = torch.log_softmax(logits, dim=1)  # what the loss would meet in fp16
    assert not torch.isfinite(naive).all()
    for context in (contextlib.nullcontext, lambda: torch.autocast("cpu", dtype=torch.float16)):
        with context():
            loss = gls_loss(logits, labels, smooth_rate=-8.0)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert loss.item() == pytest.approx(reference_gls(logits, labels, -8.0), rel=1e-6)


def test_sln_loss_on_huge_fp16_logits_is_computed_in_fp32():
    logits, labels = huge_fp16_logits()
    targets = sln_targets(labels, 3, sigma=1.0, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.float16):
        loss = soft_cross_entropy(logits, targets)
    z = logits.double()
    expected = -(targets.double() * torch.log_softmax(z, dim=1)).sum(1).mean()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_fp16_step_autocasts_the_model_and_returns_an_fp32_loss():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 1, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    autocast, _ = speed_settings(CPU, "fp16")
    state = RunState.for_model(model, opt, CPU, scaler=scaler, autocast=autocast)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss, logits = GLS(-8.0).train_step(state, x, y, torch.arange(16))
    assert logits.dtype == torch.float16 and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert scaler.state_dict() != initial_scaler()  # the step went through the scaler (grown or backed off)


# ---------------------------------------------------------------- an fp16 run on the CPU


def test_an_fp16_run_on_the_cpu_resumes_exactly(tmp_path):
    try:
        check_precision(CPU, "fp16")
    except UserError as exc:
        pytest.skip(f"this torch cannot run fp16 on the CPU: {exc}")
    # width 4: fp16 convolutions on a CPU are slow
    argv = [*TINY, "--width", "4", "--n_epoch", "2", "--precision", "fp16", "--smooth_rate", "-1", "--lr", "0.02"]

    def train(where, stop=None, *extra):
        cfg = parse_flags("main_GLS_direct_train", *argv, "--result_dir", str(tmp_path / where), *extra)
        method = GLS.from_config(cfg) if stop is None else InterruptedGLS(cfg.smooth_rate, cfg.wa, cfg.wb, stop=stop)
        return run(cfg, "main_GLS_direct_train", method)

    assert train("whole") == 0
    assert train("parts", 1) == 143
    assert train("parts", None, "--resume") == 0
    (whole,) = (tmp_path / "whole" / "main_GLS_direct_train").iterdir()
    (parts,) = (tmp_path / "parts" / "main_GLS_direct_train").iterdir()
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert timeless(read_csv(parts / "metrics.csv")) == timeless(read_csv(whole / "metrics.csv"))
    a, b = (torch.load(f / "last.pt", weights_only=True) for f in (whole, parts))
    assert a["scaler"] == b["scaler"] != initial_scaler()  # the scaler's state moved, and came back
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert read_json(parts / "summary.json")["precision"] == "fp16"


# ---------------------------------------------------------------- refusals

def fake_cuda_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    return torch.device("cuda")


def test_bf16_on_a_gpu_without_it_is_refused_naming_fp16(monkeypatch):
    cuda = fake_cuda_without_bf16(monkeypatch)
    with pytest.raises(UserError, match=r"--precision bf16: Tesla V100-SXM2-16GB has no bf16; use --precision fp16"):
        check_precision(cuda, "bf16")
    check_precision(cuda, "fp16")  # float16 autocast exists on every CUDA GPU
    check_precision(cuda, "fp32")


def test_a_bf16_run_on_a_gpu_without_it_writes_nothing(monkeypatch, tmp_path):
    cuda = fake_cuda_without_bf16(monkeypatch)
    monkeypatch.setattr("utils.engine.pick_device", lambda name: cuda)
    with pytest.raises(UserError, match="use --precision fp16"):
        run_in_process("main_GLS_direct_train", [*TINY, "--n_epoch", "1", "--precision", "bf16",
                                                 "--result_dir", str(tmp_path)])
    scripts = tmp_path / "main_GLS_direct_train"
    assert not scripts.exists() or os.listdir(scripts) == []


def test_fp16_is_refused_where_autocast_has_no_float16(monkeypatch):
    monkeypatch.setattr(core.device.torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    with pytest.raises(UserError, match="no float16 autocast on cpu; use --precision fp32"):
        check_precision(CPU, "fp16")


# ---------------------------------------------------------------- --deterministic, fp32_strict

def test_deterministic_sets_every_switch_and_a_later_call_without_it_resets_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    for device in (CPU, torch.device("cuda")):  # the settings need no GPU to be set
        speed_settings(device, "fp32", deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        speed_settings(device, "fp32", deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.benchmark == (device.type == "cuda")  # autotuning on CUDA only
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_cublas_setting_of_the_user_is_left_alone(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    speed_settings(CPU, "fp32", deterministic=True)
    speed_settings(CPU, "fp32", deterministic=False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("precision, tf32_convolutions", [("fp32", True), ("fp32_strict", False)])
def test_fp32_strict_turns_tf32_off_for_convolutions_and_matmuls(precision, tf32_convolutions):
    speed_settings(torch.device("cuda"), precision)
    assert torch.backends.cudnn.allow_tf32 == tf32_convolutions
    assert not torch.backends.cuda.matmul.allow_tf32


def test_the_run_records_deterministic_and_precision_and_the_next_run_resets_them(tmp_path, capsys):
    argv = [*TINY, "--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv + ["--deterministic", "--precision", "fp32_strict"]) == 0
    assert torch.are_deterministic_algorithms_enabled()
    assert run_in_process("main_GLS_direct_train", argv) == 0
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.allow_tf32
    folders = [line.split("results: ")[1] for line in capsys.readouterr().out.splitlines()
               if line.startswith("results: ")]
    records = [(read_json(os.path.join(f, "summary.json")), read_json(os.path.join(f, "config.json")))
               for f in folders]
    assert [(s["deterministic"], s["precision"]) for s, _ in records] == [(True, "fp32_strict"), (False, "fp32")]
    assert [(c["deterministic"], c["precision"]) for _, c in records] == [(True, "fp32_strict"), (False, "fp32")]
    assert folders[0] != folders[1]  # different settings, different run folders


class GLSWithPut(GLS):
    """GLS whose loss also calls Tensor.put_ (accumulate=False), which has no deterministic
    implementation on the CPU either."""

    def loss(self, logits, labels, indices):
        torch.zeros(4).put_(torch.tensor([0]), torch.tensor([1.0]))
        return super().loss(logits, labels, indices)


def test_an_operation_without_a_deterministic_implementation_stops_the_run_naming_it(tmp_path):
    argv = [*TINY, "--n_epoch", "1", "--result_dir", str(tmp_path)]
    cfg = parse_flags("main_GLS_direct_train", *argv, "--deterministic")
    with pytest.raises(UserError) as err:
        run(cfg, "main_GLS_direct_train", GLSWithPut.from_config(cfg))
    assert str(err.value).startswith("--deterministic: put_ has no deterministic implementation on cpu, so the "
                                     "run stopped at epoch 1. Train without --deterministic")
    (folder,) = (tmp_path / "main_GLS_direct_train").iterdir()
    summary = read_json(folder / "summary.json")
    assert summary["status"] == "failed" and summary["error"].startswith("put_ does not have a deterministic")
    cfg = parse_flags("main_GLS_direct_train", *argv)  # the same method trains without the flag
    assert run(cfg, "main_GLS_direct_train", GLSWithPut.from_config(cfg)) == 0
