"""bench/ as smoke tests (tiny, seconds: the speed figures live in docs/BENCHMARKS.md),
and the engine's GPU path: the bf16/channels-last step computes the fp32 step's loss,
and on CUDA the step never waits for the host."""
import copy
import json

import pytest
import torch

from conftest import run_cli
from data.loader import DeviceLoader
from methods import GLS, SLN
from models import build_model
from utils.engine import TrainContext, autocast_for, speed_settings, train_step

THROUGHPUT_KEYS = ("reference_img_s", "project_img_s", "speedup", "loader_reference_img_s",
                   "loader_project_img_s", "loader_speedup", "loader_overhead_frac",
                   "flops_per_image_forward", "flops_per_image_train")


def test_throughput_benchmark_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    # One thread: on a shared 2-core machine two threads per op can stall for whole time slices.
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
    precision, autocast, channels_last = speed_settings(torch.device("cpu"), "auto")
    assert (precision, channels_last) == ("fp32", False)
    with autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert speed_settings(torch.device("cpu"), "bf16")[0] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the host-sync check needs one")
@pytest.mark.parametrize("method_name", ["gls", "sln"])
def test_cuda_training_step_never_waits_for_the_host(method_name):
    device = torch.device("cuda")
    precision, autocast, channels_last = speed_settings(device, "auto")
    assert (precision, channels_last) == ("bf16", True)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.randint(0, 10, (256,)), 32, (0.5,) * 3, (0.25,) * 3, device,
                          train=True, channels_last=channels_last)
    model = build_model("wrn28_2", 10, 3, width=8).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    method = GLS(0.1) if method_name == "gls" else SLN(0.5, ema_decay=0.999)
    method.setup(TrainContext(cfg=None, device=device, model=model, num_classes=10,
                              noisy_labels=loader.labels, train_eval_loader=None, autocast=autocast))
    batches = iter(loader)
    train_step(model, model, opt, method, autocast, *next(batches))  # cuDNN autotuning may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync now raises
    try:
        for _ in range(3):
            train_step(model, model, opt, method, autocast, *next(batches))
    finally:
        torch.cuda.set_sync_debug_mode("default")
