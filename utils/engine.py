"""The training engine: one loop for every script and every method.

run(cfg, script, method) takes a run from flags to results: data and noisy labels,
model, optimiser and lr plan, the epoch loop, evaluation, checkpoints, metrics and
summary (utils/results.py), resume, divergence and interruption.

Speed rules of the loop: data come from a DeviceLoader already on the device (on
Clothing1M from worker processes decoding JPEGs, data/clothing1m.py); the
step never copies to the host (metrics accumulate in device tensors and are read
once per epoch; the divergence flag is read every --print_freq steps); bf16
autocast and channels-last on CUDA.
"""
import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from data import hold_out_validation, prepare_data
from data.noise import transition_matrix
from errors import UserError
from models import build_model

from .results import load_checkpoint, open_run_folder, result_settings, run_dir

EXIT_DIVERGED = 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ---------------------------------------------------------------- set-up helpers

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


def resolve_precision(precision, device):
    """'auto' is bf16 on CUDA and fp32 on the CPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_for(device, precision):
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def speed_settings(device, precision):
    """The GPU path, shared with bench/throughput.py: (precision, autocast, channels_last).

    On CUDA: bf16 autocast unless --precision fp32, channels-last tensors (the layout of
    the tensor-core convolution kernels, so cuDNN inserts no transposes) and cuDNN
    autotuning (the batch shape never changes, so the search is paid once). The CPU
    keeps fp32 and the default layout.
    """
    precision = resolve_precision(precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return precision, autocast_for(device, precision), device.type == "cuda"


def lr_at(epoch, base_lr, milestones, gamma, n_epoch):
    """Step plan: base_lr * gamma^k after k milestones. Milestones are fractions of
    n_epoch, so the released plans (e.g. 40/80 of 120 epochs) scale with --n_epoch."""
    passed = sum(epoch >= round(m * n_epoch) for m in milestones)
    return base_lr * gamma ** passed


def capture_rng():
    """Every RNG state, as tensors and plain values (weights_only checkpoints load it)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainContext:
    """What the methods' hooks may use."""
    cfg: object
    device: torch.device
    model: torch.nn.Module
    num_classes: int
    noisy_labels: torch.Tensor      # (N,) on the device, the training rows' labels
    train_eval_loader: object       # the training rows without augmentation, in order
    autocast: object                # a zero-argument context-manager factory

    def predict(self, model):
        """predict() over the training rows without augmentation: all of them, except on
        Clothing1M, whose train_eval_loader covers the epoch's subset."""
        return predict(model, self.train_eval_loader, len(self.noisy_labels), self.num_classes,
                       self.device, self.autocast)


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


class Diverged(Exception):
    def __init__(self, epoch, step):
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step = epoch, step


class SignalGuard:
    """SIGINT/SIGTERM set a flag the loop reads between steps (a Python bool: no sync)."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in EXIT_SIGNAL}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- step and evaluation

def train_step(model, forward, optimizer, method, autocast, x, y, idx):
    """One optimiser step; returns the detached fp32 loss and the logits (no host sync).

    `forward` is the model or its torch.compile'd wrapper; hooks get the plain model.
    """
    with autocast():
        logits = forward(x)
    loss = method.loss(logits, y, idx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_step(model)
    return loss.detach().float(), logits.detach()


COMPILE_TOLERANCE = {"fp32": 0.01, "bf16": 0.1}


def check_compiled(model, forward, autocast, precision, x, y):
    """torch.compile must not change the gradients: on one batch, the compiled forward and
    backward (cross-entropy on y) against eager. A parameter fails when its gradient's
    relative error exceeds COMPILE_TOLERANCE[precision] and the error is at least 1% of the
    whole gradient's norm (so that near-zero gradients, rounded differently, do not count).
    The model is left as found: gradients cleared, BN statistics restored. One host sync.
    Raises UserError naming the worst parameters; returns the largest relative error."""
    buffers = [b.clone() for b in model.buffers()]
    grads = []
    for f in (model, forward):
        model.zero_grad(set_to_none=True)
        with autocast():
            logits = f(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        grads.append([p.grad.float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float)
                      for p in model.parameters()])
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
    model.zero_grad(set_to_none=True)
    eager, compiled = grads
    norms = torch.stack([g.norm() for g in eager])
    errors = torch.stack([(c - g).norm() for g, c in zip(eager, compiled)])
    relative = (errors / norms.clamp_min(1e-30)).tolist()
    floor = 0.01 * norms.norm().item()
    names = [n for n, _ in model.named_parameters()]
    tolerance = COMPILE_TOLERANCE[precision]
    bad = sorted(((r, n) for r, n, e in zip(relative, names, errors.tolist())
                  if not math.isfinite(r) or (r > tolerance and e >= floor)), reverse=True)
    if bad:
        worst = ", ".join(f"{n} ({r:.2g})" for r, n in bad[:3])
        raise UserError(
            f"torch.compile changed the gradients of {len(bad)} parameter(s) against eager mode on "
            f"the first batch (relative error, tolerance {tolerance:g} in {precision}): {worst}. "
            f"This is a bug of torch {torch.__version__}'s compiler for this model and device, not "
            "of the run: train without --compile.")
    return max(relative) if relative else 0.0


@torch.no_grad()
def evaluate(model, loader, autocast):
    """Top-1 accuracy in percent; one host sync at the end."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    total = 0
    for x, y, _ in loader:
        with autocast():
            correct += (model(x).argmax(1) == y).sum()
        total += len(y)
    model.train(was_training)
    return 100.0 * correct.item() / max(total, 1)


# ---------------------------------------------------------------- the run

def noise_report(data, noisy):
    """noise.json: actual noise rate and empirical transition matrix of the labels, both
    None where the clean train labels are unknown (Clothing1M). Open-set noise keeps the
    labels and replaces images: the replaced fraction counts as noise."""
    if data.train_labels is None:
        return {"actual_noise_rate": None, "transition_matrix": None}
    wrong = np.asarray(data.train_labels) != np.asarray(noisy)
    report = {"transition_matrix": transition_matrix(data.train_labels, noisy, data.num_classes).tolist()}
    if "open_set_index" in data.noise_arrays:
        wrong[data.noise_arrays["open_set_index"]] = True
        report["open_set_fraction"] = len(data.noise_arrays["open_set_index"]) / len(wrong)
    return {"actual_noise_rate": float(wrong.mean()), **report}


def load_init_weights(model, path, cfg, noisy):
    """Start from another run's checkpoint (the warm-up), checking it fits this run."""
    ckpt = load_checkpoint(path)
    src = ckpt.get("config", {})
    for key in ("dataset", "model", "width"):
        if key in src and src[key] != getattr(cfg, key):
            raise UserError(f"{path} was trained with {key}={src[key]!r}, this run has "
                            f"{key}={getattr(cfg, key)!r}: pass a checkpoint of the same "
                            "data set and model (see --warmup_ckpt)")
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"{path} does not fit this model ({str(exc).splitlines()[0]}); "
                        "it was trained for another model or class count") from None
    labels_file = os.path.join(os.path.dirname(path), "noisy_labels.npy")
    if os.path.exists(labels_file) and not np.array_equal(np.load(labels_file), noisy):
        raise UserError(f"the run of {path} trained on other noisy labels than this run "
                        "(noise type, rate, seed or file differ): use the matching warm-up")
    return ckpt.get("epoch")


def config_dict(cfg):
    return dict(vars(cfg))


def check_resume_config(saved, current, path):
    saved, current = result_settings(saved), result_settings(current)
    changed = [k for k in set(saved) | set(current) if saved.get(k) != current.get(k)]
    if changed:
        raise UserError(f"--resume: {path} was started with other settings ({', '.join(sorted(changed))}); "
                        "resume with the original flags, or use --overwrite to start again")


def run(cfg, script, method, init_from=None):
    """Train one run; returns the process exit code (0, or EXIT_DIVERGED / signal codes)."""
    config = config_dict(cfg)
    path = run_dir(config, script, method.tag)
    if getattr(cfg, "print_run_dir", False):
        print(path)
        return 0
    folder = open_run_folder(path, cfg.resume, cfg.overwrite)
    if folder.status() == "finished":
        print(f"{path} already finished; nothing to resume")
        print(f"results: {path}")
        return 0

    device = pick_device(cfg.device)
    precision, autocast, channels_last = speed_settings(device, cfg.precision)
    seed_everything(cfg.seed)

    data, noisy = prepare_data(cfg)
    model = build_model(cfg.model, data.num_classes, data.in_channels, cfg.width,
                        pretrained=not getattr(cfg, "no_pretrained", False),
                        pretrained_path=getattr(cfg, "pretrained_path", None)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if init_from:
        load_init_weights(model, init_from, cfg, noisy)
    # Only now, with flags, data and warm-up checked, does the run touch its folder.
    folder.create()
    noise = noise_report(data, noisy)
    if cfg.resume:
        check_resume_config(folder.read_json("config.json"), config, path)
        if not np.array_equal(np.load(folder.file("noisy_labels.npy")), noisy):
            raise UserError(f"--resume: the noisy labels made now differ from {path}/noisy_labels.npy")
    else:
        folder.write_json("config.json", config)
        folder.save_npy("noisy_labels.npy", noisy)
        folder.write_json("noise.json", noise)
        for name, array in data.noise_arrays.items():  # noise beyond labels, e.g. open-set images
            folder.save_npy(f"{name}.npy", array)
    noise_rate = noise["actual_noise_rate"]
    if getattr(cfg, "val_fraction", 0.0):
        noisy, val_index = hold_out_validation(data, noisy, cfg.val_fraction, cfg.noise_seed)
        if not cfg.resume:
            folder.save_npy("val_index.npy", val_index)

    forward = torch.compile(model) if getattr(cfg, "compile", False) else model
    unchecked_compile = forward is not model  # checked against eager on the first batch
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    noisy_t = torch.as_tensor(noisy, device=device)
    train_loader = data.train_loader(noisy_t, cfg.batch_size, device, cfg.seed, channels_last)
    eval_splits = {"test": data.eval_loader("test", cfg.test_batch_size, device, channels_last)}
    if data.has_val:
        eval_splits["val"] = data.eval_loader("val", cfg.test_batch_size, device, channels_last)
    ctx = TrainContext(cfg, device, model, data.num_classes, noisy_t,
                       data.eval_loader("train", cfg.test_batch_size, device, channels_last,
                                        labels=noisy_t), autocast)
    method.setup(ctx)

    def evaluate_all():
        """{'test_acc': .., 'val_acc': .., 'test_acc_ema': ..} for the model and the method's."""
        models = {"": model, **{f"_{k}": m for k, m in method.eval_models().items()}}
        return {f"{split}_acc{suffix}": evaluate(m, loader, autocast)
                for suffix, m in models.items() for split, loader in eval_splits.items()}

    state = {"epoch": 0, "rows": [], "wall_time_s": 0.0, "initial": None}
    if getattr(cfg, "record_train_probs", False):  # the sum over epochs of the train softmax
        state["train_probs_sum"] = torch.zeros(len(noisy_t), data.num_classes, dtype=torch.float64)
    if cfg.resume:
        ckpt = folder.load_checkpoint("last.pt", map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        method.load_state_dict(ckpt["method"])
        state = ckpt["state"]
        restore_rng(ckpt["rng"])
        print(f"resuming {path} after epoch {state['epoch']}")
    else:
        state["initial"] = evaluate_all()

    summary = {"status": "running", "script": script, "run_dir": path, "method": method.tag,
               "dataset": cfg.dataset, "noise_type": cfg.noise_type, "noise_rate": cfg.noise_rate,
               "model": cfg.model, "seed": cfg.seed, "n_epoch": cfg.n_epoch,
               "actual_noise_rate": noise_rate, "device": device_name(device),
               "precision": precision, "torch_version": torch.__version__,
               "init_from": init_from}

    def write_summary(status, **extra):
        summary.update(summarize_rows(state["rows"]), status=status,
                       epochs_completed=state["epoch"], wall_time_s=round(state["wall_time_s"], 3),
                       initial_test_acc=(state["initial"] or {}).get("test_acc"), **extra)
        summary["config"] = config
        folder.write_json("summary.json", summary)

    write_summary("running")
    bound = cfg.loss_bound if cfg.loss_bound and cfg.loss_bound > 0 else math.inf
    exit_code = 0
    with SignalGuard() as guard:
        try:
            for epoch in range(state["epoch"], cfg.n_epoch):
                started = time.time()
                lr = lr_at(epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # set_epoch first: on Clothing1M it picks the epoch's subset, which label
                # correction (start_epoch) predicts over.
                train_loader.set_epoch(epoch)
                method.start_epoch(epoch, ctx)
                model.train()
                totals = torch.zeros(2, device=device)  # loss sum, correct: read once per epoch
                count = 0
                bad_step = torch.full((), -1, dtype=torch.int64, device=device)
                batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.n_epoch}",
                               leave=False, disable=None)
                for step, (x, y, idx) in enumerate(batches):
                    if guard.signum is not None:
                        break
                    if unchecked_compile:
                        check_compiled(model, forward, autocast, precision, x, y)
                        unchecked_compile = False
                    loss, logits = train_step(model, forward, optimizer, method, autocast, x, y, idx)
                    with torch.no_grad():
                        ok = torch.isfinite(loss) & (loss.abs() <= bound)
                        bad_step = torch.where((bad_step < 0) & ~ok, step, bad_step)
                        totals += torch.stack([loss * len(y), (logits.argmax(1) == y).sum().float()])
                    count += len(y)
                    if (step + 1) % cfg.print_freq == 0 and bad_step.item() >= 0:
                        raise Diverged(epoch + 1, bad_step.item())
                if guard.signum is not None:
                    break
                if bad_step.item() >= 0:
                    raise Diverged(epoch + 1, bad_step.item())
                loss_sum, correct = totals.tolist()
                row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / count,
                       "train_acc": 100.0 * correct / count, **evaluate_all()}
                if "train_probs_sum" in state:
                    logits, _ = ctx.predict(model)
                    state["train_probs_sum"] += torch.softmax(logits.double(), dim=1).cpu()
                row["epoch_time_s"] = round(time.time() - started, 3)
                state["rows"].append(row)
                state["epoch"] = epoch + 1
                state["wall_time_s"] += time.time() - started
                print(format_row(row, cfg.n_epoch), flush=True)
                save_epoch(folder, cfg, model, optimizer, method, state, config)
                write_summary("running")
        except Diverged as d:
            write_summary("diverged", diverged_epoch=d.epoch, diverged_step=d.step)
            print(f"error: the loss diverged at epoch {d.epoch}, step {d.step} (non-finite or "
                  f"|loss| > --loss_bound {cfg.loss_bound:g}). Negative smooth rates can diverge "
                  "from scratch: start from the CE warm-up (main_GLS_load.py) or use a milder "
                  "smooth rate. The last good epoch's checkpoint is kept.")
            exit_code = EXIT_DIVERGED
        except BaseException as exc:
            write_summary("failed", error=f"{exc.__class__.__name__}: {exc}")
            raise
        else:
            if guard.signum is not None:
                write_summary("interrupted")
                print(f"interrupted (signal {guard.signum}) after {state['epoch']} complete epochs; "
                      f"continue with the same command and --resume")
                exit_code = EXIT_SIGNAL[guard.signum]
            else:
                write_summary("finished")
    print(f"results: {path}")
    return exit_code


def save_epoch(folder, cfg, model, optimizer, method, state, config):
    """metrics.csv (and train_probs.npy) every epoch; last.pt every --ckpt_every epochs and at the end;
    best.pt when the selection accuracy improves: validation accuracy where the run has
    a validation split, else test accuracy (the papers' choice)."""
    rows = state["rows"]
    columns = list(rows[0].keys())
    folder.write_csv("metrics.csv", rows, columns)
    row = rows[-1]
    key = "val_acc" if "val_acc" in row else "test_acc"
    if all(row[key] > r[key] for r in rows[:-1]):
        folder.save_checkpoint("best.pt", {"model": model.state_dict(), "epoch": row["epoch"],
                                           "test_acc": row["test_acc"], "selected_by": key,
                                           "config": config})
    if "train_probs_sum" in state:  # --record_train_probs: the mean over the epochs so far
        folder.save_npy("train_probs.npy", (state["train_probs_sum"] / state["epoch"]).numpy())
    if state["epoch"] % max(cfg.ckpt_every, 1) == 0 or state["epoch"] == cfg.n_epoch:
        folder.save_checkpoint("last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "method": method.state_dict(), "state": state, "rng": capture_rng(),
            "epoch": state["epoch"], "config": config})


def summarize_rows(rows):
    """best/last of every *_acc column; for a val split, test accuracy at the best val epoch."""
    if not rows:
        return {}
    out = {}
    for column in rows[0]:
        split, sep, suffix = column.partition("_acc")
        if not sep or split not in ("test", "val"):
            continue
        best = max(rows, key=lambda r: r[column])  # the first epoch that reaches the maximum
        out[f"best_{split}_acc{suffix}"] = best[column]
        out[f"last_{split}_acc{suffix}"] = rows[-1][column]
        if column == "test_acc":
            out["best_epoch"] = best["epoch"]
        if split == "val":
            out[f"best_val_epoch{suffix}"] = best["epoch"]
            out[f"test_acc_at_best_val{suffix}"] = best[f"test_acc{suffix}"]
    return out


def format_row(row, n_epoch):
    accs = " ".join(f"{k} {v:.2f}" for k, v in row.items() if "_acc" in k)
    return (f"epoch {row['epoch']}/{n_epoch} lr {row['lr']:.3g} loss {row['train_loss']:.4f} "
            f"{accs} ({row['epoch_time_s']:.1f}s)")


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
