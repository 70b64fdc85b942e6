"""Training throughput: the released data pipeline against the project's, side by side.

One process, one model, one batch size, the same synthetic CIFAR-shaped data (random
uint8 HWC images, 10 classes) for both pipelines:

  reference  the released code's way: a Dataset of HWC uint8 images, each turned into a
             PIL image and put through RandomCrop(32, padding=4), RandomHorizontalFlip,
             ToTensor, Normalize; a shuffling torch DataLoader (4 workers on a GPU, as
             released; 2 on a CPU); an fp32 model; the loss copied to the host every step.
  project    data.loader.DeviceLoader and the method's train_step with the engine's own
             settings (core.device.speed_settings: fp32 as the papers, or bf16 autocast with
             --precision bf16; channels-last and cuDNN autotuning on CUDA).

Measured for each: the loader alone and the full training step, in images/s, timed after
a warm-up (CUDA events on a GPU). Each round measures all four, in reverse order every
other round, and the median over rounds is reported with its min and max, because the
load of a busy machine drifts. Two things favour the reference: worker start-up at
each epoch is left out of its timing, and it shares the process-wide cuDNN settings
(autotuning; TF32 convolutions, torch's default) with the project.

Measured (docs/BENCHMARKS.md has every figure, machine and command), 2026-11-21, on a
2-core AMD EPYC VM with other processes running (1-minute load 3-6), torch 2.15.0, --quick
(ResNet-18 width 8, batch 128, one thread), three runs: the project's loader 15.7x-29.1x
the reference's images/s and 0.7-0.8% of a step; the training step 1.02x-1.38x the
reference's. GPU: not measured yet; the second command below measures it.

  python bench/throughput.py --device cpu --quick --json bench_cpu.json
  python bench/throughput.py --device cuda --model resnet34 --json bench_resnet34.json

The cost of each method's training relative to cross-entropy (its step, its passes at the
start of an epoch, the evaluation of its extra models) is bench/method_cost.py's:

  python bench/method_cost.py --width 8 --epochs 3 --json bench/results/method_step_cpu.json
"""
import argparse
import copy
import json
import statistics

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

# common (beside this file) also puts the project's root on sys.path for the imports below.
from common import (MEAN, NUM_CLASSES, STD, images_per_second, machine_record, project_loader,
                    project_forward, project_step, run_command, synthetic_cifar)
from core.device import PRECISIONS, pick_device, speed_settings
from methods.gls import GLS
from models import build_model
from utils.metrics import EpochStats

# Dense bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets (the data sheets'
# headline figures are with 2:4 sparsity, twice these). First matching name wins.
BF16_DENSE_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                          ("H200 NVL", 835.0), ("H200", 989.0), ("A100", 312.0)]
PEAK_SOURCE = "NVIDIA data sheet, dense bf16 tensor-core peak (no sparsity)"


# ---------------------------------------------------------------- the reference pipeline

class ReferenceCIFAR(torch.utils.data.Dataset):
    """torchvision's CIFAR10.__getitem__ as the released code uses it: PIL per image."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i]), i


def reference_loader(images_hwc, labels, batch_size, workers):
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    return torch.utils.data.DataLoader(ReferenceCIFAR(images_hwc, labels, transform),
                                       batch_size=batch_size, shuffle=True, num_workers=workers)


def reference_step(model, optimizer, method, device):
    def step(batch):
        x, y, idx = (t.to(device) for t in batch)  # released: Variable(images).cuda()
        loss = method.loss(model(x), y, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # released: the loss read on the host every step, so the GPU drains
    return step


# ---------------------------------------------------------------- model cost

def flops_per_image(model, in_shape):
    """(forward, forward+backward) FLOPs per image of the convolutions and matmuls, as
    torch.utils.flop_counter counts them (2 per multiply-add; BN and ReLU not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    m = copy.deepcopy(model).float().to("cpu", memory_format=torch.contiguous_format).train()
    x = torch.randn(2, *in_shape)
    with FlopCounterMode(display=False) as forward:
        m(x)
    with FlopCounterMode(display=False) as both:
        m(x).sum().backward()
    return forward.get_total_flops() / 2, both.get_total_flops() / 2


def bf16_peak_tflops(device_name):
    for name, peak in BF16_DENSE_PEAK_TFLOPS:
        if name in device_name:
            return peak
    return None


# ---------------------------------------------------------------- the benchmark

def summarize(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": [round(v, 1) for v in values]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N")
    p.add_argument("--model", default=None, help="default resnet34 (resnet18 with --quick)")
    p.add_argument("--width", type=int, default=None, help="first-stage channels (default: the paper's; 8 with --quick)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="the project path's precision, as the engine's flag (reference: fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the project's model")
    p.add_argument("--workers", type=int, default=None,
                   help="reference DataLoader workers (default 4 on CUDA as released, 2 on a CPU)")
    p.add_argument("--n_images", type=int, default=None,
                   help="synthetic training set size (default 50,000 on CUDA, 4,096 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches before each timing")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 with --quick on a CPU)")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak, when its name is not in the table")
    p.add_argument("--quick", action="store_true",
                   help="a narrow model, few steps and, on a CPU, one thread: under a minute on a "
                        "2-core CPU, where two threads per op stall whenever the machine "
                        "is oversubscribed (docs/BENCHMARKS.md)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.model is None:
        args.model = "resnet18" if args.quick else "resnet34"
        args.width = args.width or (8 if args.quick else None)
    defaults = {"threads": 1 if args.quick and not cuda else None,
                "workers": 4 if cuda else 2,
                "n_images": 50_000 if cuda else 4096,
                "warmup": 20 if cuda else 1,
                "steps": (100 if args.quick else 300) if cuda else (4 if args.quick else 10)}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    batches = args.n_images // args.batch_size
    if args.warmup + args.steps > batches:
        p.error(f"--warmup {args.warmup} + --steps {args.steps} exceed the {batches} batches of "
                f"--n_images {args.n_images}: timing must stay inside one epoch")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision
    autocast, channels_last = speed_settings(device, precision)
    torch.manual_seed(0)
    images, labels = synthetic_cifar(args.n_images)

    ref_model = build_model(args.model, NUM_CLASSES, 3, args.width).to(device)
    model = copy.deepcopy(ref_model)  # same initial weights for both pipelines
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    sgd = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)  # GLS direct, as released
    ref_opt = torch.optim.SGD(ref_model.parameters(), **sgd)
    opt = torch.optim.SGD(model.parameters(), **sgd)
    method = GLS(smooth_rate=0.1)  # the GLS scripts' default loss, the same for both
    ref_batches = reference_loader(images, labels, args.batch_size, args.workers)
    dev_batches = project_loader(images, labels, args.batch_size, device, channels_last)
    stats = EpochStats(device, dev_batches.labels)  # the engine's per-step bookkeeping
    to_device = lambda batch: [t.to(device) for t in batch]  # the loader's job ends on the device
    loader_steps = args.n_images // args.batch_size - args.warmup  # the epoch's full batches
    forward = project_forward(model, dev_batches, autocast, precision, args.compile)
    measurements = {
        "loader_reference": (ref_batches, to_device, loader_steps),
        "loader_project": (dev_batches, lambda batch: None, loader_steps),
        "reference": (ref_batches, reference_step(ref_model, ref_opt, method, device), args.steps),
        "project": (dev_batches, project_step(model, forward, opt, method, autocast, stats, precision),
                    args.steps),
    }
    runs = {key: [] for key in measurements}
    for r in range(args.rounds):
        dev_batches.set_epoch(r)
        # odd rounds go in the reverse order, so a drift of the machine's load favours neither
        for key in (list(measurements) if r % 2 == 0 else reversed(measurements)):
            batches, work, steps = measurements[key]
            runs[key].append(images_per_second(batches, work, args.warmup, steps, device))
    if not torch.isfinite(stats.loss_sum):
        raise RuntimeError("the project's training loss went non-finite: the timings are meaningless")

    med = {k: summarize(v)["median"] for k, v in runs.items()}
    fwd_flops, train_flops = flops_per_image(ref_model, (3, 32, 32))
    peak, peak_source = args.peak_tflops, "--peak_tflops"
    if peak is None and device.type == "cuda":
        peak, peak_source = bf16_peak_tflops(torch.cuda.get_device_name(device)), PEAK_SOURCE
    achieved = train_flops * med["project"] / 1e12
    result = {
        **machine_record(device), "torchvision_version": torchvision.__version__,
        "model": args.model, "width": args.width, "batch_size": args.batch_size,
        "precision": precision, "reference_precision": "fp32", "channels_last": channels_last,
        "compile": args.compile, "reference_workers": args.workers, "n_images": args.n_images,
        "warmup": args.warmup, "steps": args.steps, "loader_steps": loader_steps,
        "rounds": args.rounds, "quick": args.quick,
        "reference_img_s": med["reference"], "project_img_s": med["project"],
        "speedup": med["project"] / med["reference"],
        "loader_reference_img_s": med["loader_reference"], "loader_project_img_s": med["loader_project"],
        "loader_speedup": med["loader_project"] / med["loader_reference"],
        # the loader's time per image over a whole step's time per image
        "loader_overhead_frac": med["project"] / med["loader_project"],
        "epoch_50k_s_project": 50_000 / med["project"], "epoch_50k_s_reference": 50_000 / med["reference"],
        "flops_per_image_forward": fwd_flops, "flops_per_image_train": train_flops,
        "achieved_tflops_project": achieved, "achieved_tflops_reference": train_flops * med["reference"] / 1e12,
        # measured against the bf16 peak whatever --precision: the distance to the hardware
        "bf16_peak_tflops": peak, "peak_source": peak_source if peak else None,
        "peak_fraction": achieved / peak if peak else None,
        "spread": {k: summarize(v) for k, v in runs.items()},
        # both pipelines of a round ran within seconds of each other, under the same load
        "speedup_per_round": [p / q for p, q in zip(runs["project"], runs["reference"])],
        "loader_speedup_per_round": [p / q for p, q in zip(runs["loader_project"], runs["loader_reference"])],
    }
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def print_table(r):
    s = r["spread"]
    width = "" if r["width"] is None else f" width {r['width']}"
    print(f"{r['model']}{width}, batch {r['batch_size']}, {r['device']}, torch {r['torch_version']}, "
          f"project {r['precision']}{' channels-last' if r['channels_last'] else ''}"
          f"{' compiled' if r['compile'] else ''}; reference fp32, {r['reference_workers']} workers; "
          f"median of {r['rounds']} rounds [min, max]")
    print(f"{'images/s':<22}{'reference':>26}{'project':>26}{'ratio':>8}")
    for label, key in (("loader alone", "loader_"), ("training step", "")):
        ref, proj = s[f"{key}reference"], s[f"{key}project"]
        cell = lambda d: f"{d['median']:.0f} [{d['min']:.0f}, {d['max']:.0f}]"
        per_round = r[f"{key}speedup_per_round"]
        print(f"{label:<22}{cell(ref):>26}{cell(proj):>26}{proj['median'] / ref['median']:>7.1f}x"
              f" [{min(per_round):.1f}, {max(per_round):.1f}] per round")
    print(f"loader share of the project's step: {100 * r['loader_overhead_frac']:.1f}%")
    line = (f"FLOPs/image: {r['flops_per_image_forward'] / 1e6:.1f} M forward, "
            f"{r['flops_per_image_train'] / 1e6:.1f} M forward+backward; project achieves "
            f"{r['achieved_tflops_project']:.3g} TFLOP/s")
    if r["peak_fraction"] is not None:
        line += f" = {100 * r['peak_fraction']:.1f}% of the {r['bf16_peak_tflops']:g} TFLOP/s dense bf16 peak"
    print(line)


if __name__ == "__main__":
    run_command(main)
