"""Where and how tensors run: the device, seeds, precision, and prediction over a loader."""
import contextlib
import os
import random
import warnings

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
    or CUDA_VISIBLE_DEVICES problem, or a job without a GPU), else None. CUDA_VISIBLE_DEVICES
    set to the empty string hides every GPU on purpose (as sweep.py's CPU slots do): no warning."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if requested == "auto" and device.type == "cpu" and torch.version.cuda is not None and visible != "":
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return (f"--device auto found no usable CUDA device{where} although this torch "
                f"{torch.__version__} was built for CUDA {torch.version.cuda}: training runs on the "
                "CPU, far slower. Check nvidia-smi and the job's GPU request, or pass --device cpu "
                "to mean it")
    return None


def cpu_name():
    """The CPU's model name as Linux reports it (/proc/cpuinfo), or None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
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
    """bf16 needs a GPU that has it (Ampere or newer); fp16 needs torch.amp.GradScaler
    (torch >= 2.3) and a device whose autocast computes in float16 (every CUDA GPU; the
    CPU in recent torch)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16: {device_name(device)} has no bf16; use --precision fp16 "
                        "(float16 with a gradient scaler) or fp32")
    if precision == "fp16" and not hasattr(torch.amp, "GradScaler"):
        raise UserError(f"--precision fp16 needs torch.amp.GradScaler, which torch {torch.__version__} "
                        "lacks: install torch 2.3 or newer, or use --precision fp32")
    if precision == "fp16" and device.type != "cuda" and not autocast_computes_in(device, torch.float16):
        raise UserError(f"--precision fp16: this torch {torch.__version__} has no float16 autocast on "
                        f"{device_name(device)}; use --precision fp32 (or bf16), or a newer torch")


def autocast_computes_in(device, dtype):
    """Whether a matmul under torch.autocast(device, dtype) comes out in `dtype`: autocast
    disables itself, with a warning, where the device has no such kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast(device.type, dtype=dtype):
            out = torch.ones(1, 1, device=device) @ torch.ones(1, 1, device=device)
    return out.dtype == dtype


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
    set_cublas_workspace(deterministic)
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # (off and already off, the call would change nothing but import torch's compiler
        # configuration, a second and a half at every run start)
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return autocast_for(device, precision), device.type == "cuda"


CUBLAS_DETERMINISTIC = ":4096:8"
_cublas_set_here = False


def set_cublas_workspace(deterministic):
    """CUBLAS_WORKSPACE_CONFIG=:4096:8, which deterministic cuBLAS needs (CUDA >= 10.2), for a
    deterministic run; taken back for a later run of the same process without the flag.
    A value the user set is left alone."""
    global _cublas_set_here
    if deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
        _cublas_set_here = True
    elif not deterministic and _cublas_set_here:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        _cublas_set_here = False


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
