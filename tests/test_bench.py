"""bench/ as smoke tests (tiny, seconds: the speed figures live in docs/BENCHMARKS.md),
and the engine's GPU path: the bf16/channels-last step computes the fp32 step's loss,
torch.compile is checked against eager, and on CUDA the step never waits for the host."""
import contextlib
import copy
import json

import pytest
import torch

from conftest import TINY, read_csv, read_json, run_cli, run_in_process
from data.loader import DeviceLoader
from methods.gls import GLS
from methods.sln import SLN
from models import build_model
from errors import UserError
from core.device import autocast_for, speed_settings
from utils.compile_check import check_compiled
from utils.metrics import EpochStats
from utils.state import RunState


def train_step(model, forward, optimizer, method, autocast, x, y, idx, scaler=None):
    """The method's step as the engine takes it, on a RunState around one model."""
    run = RunState.for_model(model, optimizer, x.device, forward=forward, scaler=scaler, autocast=autocast)
    return method.train_step(run, x, y, idx)

THROUGHPUT_KEYS = ("reference_img_s", "project_img_s", "speedup", "loader_reference_img_s",
                   "loader_project_img_s", "loader_speedup", "loader_overhead_frac",
                   "flops_per_image_forward", "flops_per_image_train")


def test_throughput_benchmark_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    # One thread: on a busy 2-core machine two threads per op can stall for whole time slices.
    proc = run_cli("bench/throughput.py", "--device", "cpu", "--model", "resnet18", "--width", "4",
                   "--batch_size", "16", "--n_images", "64", "--warmup", "1", "--steps", "2",
                   "--rounds", "1", "--workers", "0", "--threads", "1", "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    for key in THROUGHPUT_KEYS:
        assert r[key] > 0, key
    assert r["speedup"] == pytest.approx(r["project_img_s"] / r["reference_img_s"])
    assert r["loader_speedup"] == pytest.approx(r["loader_project_img_s"] / r["loader_reference_img_s"])
    assert r["flops_per_image_train"] > 2 * r["flops_per_image_forward"]  # backward ~ 2x forward
    assert (r["model"], r["width"], r["batch_size"], r["precision"]) == ("resnet18", 4, 16, "fp32")
    assert r["device"] and r["torch_version"] == torch.__version__
    assert r["peak_fraction"] is None  # a CPU has no bf16 tensor-core peak in the table
    assert "loader alone" in proc.stdout and "training step" in proc.stdout


def test_concurrency_benchmark_runs_processes_together(tmp_path):
    out = tmp_path / "concurrency.json"
    proc = run_cli("bench/concurrency.py", "--device", "cpu", "--quick", "--runs", "2", "--json", out)
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(out.read_text())["results"]
    assert r["runs"] == 2 and len(r["per_run_img_s"]) == 2
    assert r["aggregate_img_s"] > 0 and all(v > 0 for v in r["per_run_img_s"])


def cpu_bf16_autocast():
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    except RuntimeError:
        return False


@pytest.mark.skipif(not cpu_bf16_autocast(), reason="this torch build has no bf16 autocast on the CPU")
@pytest.mark.parametrize("name", ["resnet18", "wrn28_2"])
def test_bf16_channels_last_step_computes_the_fp32_loss(name):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model = build_model(name, 10, 3, width=8)
    x, y, idx = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)), torch.arange(16)

    def step(precision, memory_format):
        m = copy.deepcopy(model).to(memory_format=memory_format)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        return train_step(m, m, opt, GLS(0.1), autocast_for(cpu, precision), x.contiguous(memory_format=memory_format), y, idx)

    loss32, logits32 = step("fp32", torch.contiguous_format)
    loss16, logits16 = step("bf16", torch.channels_last)
    assert logits16.dtype == torch.bfloat16 and logits32.dtype == torch.float32  # autocast really ran
    assert loss16.dtype == torch.float32  # the loss is always computed in fp32 (loss.py)
    # bf16 keeps 8 significant bits (rounding error 2^-9 per op); through 20-odd layers the
    # logits drift by ~1%, the batch-mean loss by ~0.1% (measured): 1% leaves a 10x margin.
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
    assert torch.allclose(logits16.float(), logits32, atol=0.05)


def test_speed_settings_keep_the_cpu_in_fp32():
    autocast, channels_last = speed_settings(torch.device("cpu"), "fp32")
    assert channels_last is False
    with autocast():
        assert not torch.is_autocast_enabled("cpu")
    with speed_settings(torch.device("cpu"), "bf16")[0]():
        assert torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the host-sync check needs one")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method_name", ["gls", "sln"])
def test_cuda_training_step_never_waits_for_the_host(method_name, precision):
    """The engine's step and its bookkeeping (EpochStats) run without a host sync."""
    device = torch.device("cuda")
    autocast, channels_last = speed_settings(device, precision)
    assert channels_last
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.randint(0, 10, (256,)), 32, (0.5,) * 3, (0.25,) * 3, device,
                          train=True, channels_last=channels_last)
    model = build_model("wrn28_2", 10, 3, width=8).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    method = GLS(0.1) if method_name == "gls" else SLN(0.5, ema_decay=0.999)
    method.setup(RunState.for_model(model, opt, device, num_classes=10, noisy_labels=loader.labels,
                                    autocast=autocast))
    batches = iter(loader)
    stats = EpochStats(device, loader.labels)
    train_step(model, model, opt, method, autocast, *next(batches))  # cuDNN autotuning may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync now raises
    try:
        for step in range(3):
            x, y, idx = next(batches)
            loss, logits = train_step(model, model, opt, method, autocast, x, y, idx)
            stats.add(step, loss, logits, y, idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------- torch.compile against eager

def half_gradient_forward(model, name):
    """A stand-in for a miscompiled model: the same logits, but parameter `name` gets half
    its gradient (0.5 w + 0.5 w.detach() has w's value and half its derivative)."""
    def forward(x):
        params = dict(model.named_parameters())
        w = params[name]
        return torch.func.functional_call(model, {**params, name: 0.5 * w + 0.5 * w.detach()}, x)
    return forward


def test_compile_check_names_a_wrong_gradient_and_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, width=8)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    before = copy.deepcopy(model.state_dict())
    assert check_compiled(model, model, contextlib.nullcontext, "fp32", x, y) == 0.0
    name = "layers.1.0.shortcut.0.weight"  # the kind of tensor torch 2.15's CPU compiler got wrong
    with pytest.raises(UserError, match=rf"1 parameter\(s\).*{name} \(0\.5\).*without --compile"):
        check_compiled(model, half_gradient_forward(model, name), contextlib.nullcontext, "fp32", x, y)
    # Neither check moved the BN statistics or left gradients behind.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_compile_check_ignores_errors_in_gradients_too_small_to_matter():
    """The final BN bias's gradient is scaled by 1/2 but made tiny first: below 1% of the
    whole gradient's norm, its relative error does not fail the check."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, width=8)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    name = "layers.3.1.bn2.bias"
    tiny = dict(model.named_parameters())[name]
    tiny.register_hook(lambda g: g * 1e-6)
    assert check_compiled(model, half_gradient_forward(model, name), contextlib.nullcontext, "fp32", x, y) \
        == pytest.approx(0.5)


def test_a_run_whose_compiled_gradients_are_wrong_stops_before_its_first_step(tmp_path, monkeypatch):
    import utils.engine
    monkeypatch.setattr(utils.engine.torch, "compile",
                        lambda model: half_gradient_forward(model, "linear.weight"))
    argv = TINY + ["--n_epoch", "1", "--compile", "--result_dir", str(tmp_path)]
    with pytest.raises(UserError, match=r"linear\.weight \(0\.5\).*train without --compile"):
        run_in_process("main_GLS_direct_train", argv)
    (folder,) = (tmp_path / "main_GLS_direct_train").iterdir()
    summary = read_json(folder / "summary.json")
    assert summary["status"] == "failed" and "torch.compile changed the gradients" in summary["error"]
    assert summary["epochs_completed"] == 0 and not (folder / "last.pt").exists()


def test_compiled_run_trains_like_the_eager_run(tmp_path):
    """--compile end to end on the CPU (inductor; about a minute to compile): the first batch's
    gradients pass the check, and two epochs of full-batch training end where eager's do."""
    import torch._inductor.config
    torch._inductor.config.compile_threads = 1  # its worker pool can stall on 2 busy cores
    argv = TINY + ["--n_epoch", "2", "--batch_size", "2048", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv + ["--compile"]) == 0
    assert run_in_process("main_GLS_direct_train", argv) == 0
    runs = {read_json(f / "config.json")["compile"]: read_csv(f / "metrics.csv")
            for f in (tmp_path / "main_GLS_direct_train").iterdir()}
    compiled, eager = runs[True], runs[False]
    assert len(compiled) == len(eager) == 2
    assert compiled[0]["train_loss"] == eager[0]["train_loss"]  # the same first forward
    for a, b in zip(compiled, eager):  # after a step, float rounding may differ slightly
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)
        assert float(a["test_acc"]) == pytest.approx(float(b["test_acc"]), abs=1.0)


def test_identity_bench_times_the_fingerprint_of_the_data_it_made(tmp_path):
    """bench/identity.py writes its figures; its data are the size asked for."""
    out = tmp_path / "identity.json"
    proc = run_cli("bench/identity.py", "--images", "500", "--image_size", "8", "--rounds", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = read_json(out)
    assert result["data_bytes"] == 500 * 3 * 8 * 8 + 100 * 3 * 8 * 8 + 600 * 8
    assert len(result["data_fingerprint_s"]) == 2 and all(t > 0 for t in result["data_fingerprint_s"])
    assert result["source_files"] > 10
