"""What a recipe's runs cost: epochs, FLOPs and estimated GPU-hours, before anything runs.

FLOPs of a run: 3 x the forward FLOPs of one image (forward + backward) for every training
image of every epoch, plus one forward per evaluated image and model (the test split; on
Clothing1M the val and test splits; SLN's momentum model is a second model), plus, from
the label correction on, one forward over the training images per epoch. Forward FLOPs
are counted by torch.utils.flop_counter on one image through the run's model (2 per
multiply-add; convolutions and matrix products, not BN or ReLU).

Time: the FLOPs over a throughput. Measured where a benchmark of the run's model exists:
bench/throughput.py --json FILE (its achieved_tflops_project, on 32x32 images, the same
model, width and precision); otherwise ASSUMED_TFLOPS, an assumption said as such.
"""
import functools
import glob
import json
import os

# 40% of an A100's dense TF32 tensor-core peak (156 TFLOP/s, NVIDIA's data sheet): fp32
# training on CUDA runs its convolutions in TF32 (PyTorch's default).
A100_TF32_PEAK_TFLOPS = 156.0
ASSUMED_FRACTION = 0.4
ASSUMED_TFLOPS = ASSUMED_FRACTION * A100_TF32_PEAK_TFLOPS
ASSUMPTION = (f"assumed {ASSUMED_TFLOPS:.1f} TFLOP/s: {ASSUMED_FRACTION:.0%} of an A100's dense "
              f"TF32 peak ({A100_TF32_PEAK_TFLOPS:g} TFLOP/s)")
# Images a run evaluates per epoch and model, by data set (train images come from the data).
EVAL_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "digits": 360, "clothing1m": 14_313 + 10_526}
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "digits": 1_437}
DEFAULT_BENCH = "bench_*.json"  # in the repository root, as bench/throughput.py's examples write them


def train_images(cfg):
    if cfg.dataset == "clothing1m":
        return cfg.num_per_class * 14  # a fresh class-balanced subset each epoch
    return TRAIN_IMAGES.get(cfg.dataset)


def image_shape(cfg):
    from data import dataset_spec
    spec = dataset_spec(cfg.dataset)
    size = cfg.image_size if cfg.dataset == "clothing1m" else spec.image_size
    return spec.num_classes, spec.in_channels, size


@functools.lru_cache(maxsize=None)
def forward_flops(model, width, num_classes, channels, size):
    """FLOPs of one image's forward pass through the model, as the flop counter counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import build_model
    net = build_model(model, num_classes, channels, width).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, channels, size, size))
    return counter.get_total_flops()


def run_flops(cfg, method):
    """(training images x epochs, total FLOPs) of one run, or None where the data set's
    size is not known here."""
    n_train, n_eval = train_images(cfg), EVAL_IMAGES.get(cfg.dataset)
    if n_train is None or n_eval is None:
        return None
    fwd = forward_flops(cfg.model, cfg.width, *image_shape(cfg))
    models = 2 if getattr(method, "ema_decay", 0) else 1
    corrected = 0
    if getattr(method, "correction", None) is not None:
        corrected = cfg.n_epoch - method.correction
    flops = cfg.n_epoch * (3 * fwd * n_train + models * fwd * n_eval) + corrected * fwd * n_train
    return n_train * cfg.n_epoch, flops


def read_benches(paths):
    """[(path, result)] of bench/throughput.py's JSON files; a file that is not one is a
    UserError naming it."""
    from errors import UserError
    found = []
    for path in paths:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as exc:
            raise UserError(f"--bench {path}: cannot be read as JSON ({exc}); pass a file "
                            "bench/throughput.py --json wrote") from None
        if not isinstance(result, dict) or not isinstance(result.get("achieved_tflops_project"), (int, float)):
            raise UserError(f"--bench {path} is not a result of bench/throughput.py (it lacks "
                            "achieved_tflops_project); pass a file bench/throughput.py --json wrote")
        found.append((path, result))
    return found


def default_benches(root):
    return sorted(glob.glob(os.path.join(root, DEFAULT_BENCH)))


def throughput(cfg, benches):
    """(FLOP/s, basis): the benchmark of this run's model, width and precision on 32x32
    images where one was given, else the assumption."""
    from models import canonical_model
    size = image_shape(cfg)[2]
    for path, b in benches:
        if (size == 32 and canonical_model(b.get("model")) == cfg.model and b.get("width") == cfg.width
                and b.get("precision", "fp32") == cfg.precision and b["achieved_tflops_project"] > 0):
            tflops = b["achieved_tflops_project"]
            return tflops * 1e12, f"measured {tflops:.1f} TFLOP/s on {b.get('device', '?')} ({path})"
    return ASSUMED_TFLOPS * 1e12, ASSUMPTION


def estimate(planned, benches):
    """Lines that say the runs, epochs and estimated GPU-hours of `planned`: [(script, cfg,
    method)], one per run."""
    by_script, total_runs, total_epochs, total_s, unknown = {}, 0, 0, 0.0, 0
    bases = set()
    for script, cfg, method in planned:
        row = by_script.setdefault(script, {"runs": 0, "epochs": set(), "seconds": 0.0, "models": {},
                                            "unknown": 0})
        row["runs"] += 1
        row["epochs"].add(cfg.n_epoch)
        row["models"].setdefault(cfg.model, None)
        total_runs += 1
        total_epochs += cfg.n_epoch
        cost = run_flops(cfg, method)
        if cost is None:
            row["unknown"] += 1
            unknown += 1
            continue
        rate, basis = throughput(cfg, benches)
        bases.add(basis)
        row["seconds"] += cost[1] / rate
        row["models"][cfg.model] = forward_flops(cfg.model, cfg.width, *image_shape(cfg))
        total_s += cost[1] / rate
    lines = [f"{total_runs} runs, {total_epochs:,} epochs in all; estimated {total_s / 3600:,.1f} GPU-hours"
             + (f" (and {unknown} runs of a data set whose size is not known here: not estimated)" if unknown else "")]
    for script, row in by_script.items():
        epochs = "/".join(str(e) for e in sorted(row["epochs"]))
        # each model with the FLOPs of one image's forward pass (where its data set's size is known)
        if len(row["models"]) == 1:
            (model, fwd), = row["models"].items()
            models = model + (f", {fwd / 1e9:.2f} GFLOP a forward image" if fwd else "")
        else:
            models = ", ".join(model + (f" {fwd / 1e9:.2f}" if fwd else "") for model, fwd in row["models"].items())
            models += " GFLOP a forward image" if any(row["models"].values()) else ""
        lines.append(f"  {script}.py: {row['runs']} runs x {epochs} epochs, {models}: "
                     f"{row['seconds'] / 3600:,.1f} GPU-hours")
    for basis in sorted(bases):
        label = "measured" if basis.startswith("measured") else "ASSUMPTION"
        lines.append(f"  throughput ({label}): {basis}")
    return lines
