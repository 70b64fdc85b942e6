"""Where and how tensors run: the device, seeds, precision, and prediction over a loader."""
import contextlib
import os
import random

import numpy as np
import torch

from errors import UserError

PRECISIONS = ("fp32", "fp32_strict", "bf16", "fp16")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(name="auto"):
    """'auto': the first visible CUDA device (CUDA_VISIBLE_DEVICES decides), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for CUDA but no CUDA device is visible; "
                            "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def cpu_fallback_warning(requested, device):
    """The warning for --device auto landing on the CPU with a torch built for CUDA (a driver
    or CUDA_VISIBLE_DEVICES problem, or a job without a GPU), else None."""
    if requested == "auto" and device.type == "cpu" and torch.version.cuda is not None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return (f"--device auto found no usable CUDA device{where} although this torch "
                f"{torch.__version__} was built for CUDA {torch.version.cuda}: training runs on the "
                "CPU, far slower. Check nvidia-smi and the job's GPU request, or pass --device cpu "
                "to mean it")
    return None


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def autocast_for(device, precision):
    """A zero-argument context-manager factory: autocast for bf16/fp16, else nothing."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def check_precision(device, precision):
    """bf16 needs a GPU that has it (Ampere or newer); fp16's gradient scaler needs a device
    whose autocast has float16."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16: {device_name(device)} has no bf16; use --precision fp16 "
                        "(float16 with a gradient scaler) or fp32")


def speed_settings(device, precision, deterministic=False):
    """The GPU path, shared with bench/throughput.py: (autocast, channels_last).

    The papers trained in fp32, and so does the default (--precision fp32; on CUDA with
    the TF32 convolutions PyTorch allows by default); fp32_strict turns TF32 off for
    convolutions and matmuls; bf16 and fp16 autocast. On CUDA: channels-last tensors (the
    layout of the tensor-core convolution kernels, so cuDNN inserts no transposes) and
    cuDNN autotuning (the batch shape never changes, so the search is paid once), unless
    `deterministic`: then no autotuning, deterministic algorithms only (an operation that
    has none raises an error naming it), and the cuBLAS workspace setting they need.
    The CPU keeps the default layout.
    """
    check_precision(device, precision)
    strict = precision == "fp32_strict"
    torch.backends.cudnn.allow_tf32 = not strict
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default; fp32 matmuls stay fp32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return autocast_for(device, precision), device.type == "cuda"


@torch.no_grad()
def predict(model, loader, n_rows, num_classes, device, autocast=contextlib.nullcontext):
    """fp32 logits (n_rows, K) of `model` in eval mode on the (x, y, row index) batches of
    `loader`, and the (n_rows,) mask of the rows it yielded. No host sync."""
    was_training = model.training
    model.eval()
    logits = torch.zeros(n_rows, num_classes, device=device)
    seen = torch.zeros(n_rows, dtype=torch.bool, device=device)
    for x, _, idx in loader:
        with autocast():
            logits[idx] = model(x).float()
        seen[idx] = True
    model.train(was_training)
    return logits, seen
