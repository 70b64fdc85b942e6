"""The training engine: one loop for every script and every method.

run(cfg, script, method) takes a run from flags to results: it claims the run folder
(utils/results.py: one process per folder, --if_exists), prepares data, noisy labels,
model, optimiser and loaders (prepare_run: everything that can refuse, before the first
file is written), then trains epoch by epoch (train_one_epoch), evaluates, and writes
metrics, summary and checkpoints; divergence and signals end it cleanly.

Speed rules of the loop: data come from a DeviceLoader already on the device (on
Clothing1M from worker processes decoding JPEGs, data/clothing1m.py); the step never
copies to the host: metrics accumulate in device tensors (EpochStats) read once per
epoch, the divergence flag every --print_freq steps. bf16 autocast only with
--precision bf16; channels-last and cuDNN autotuning on CUDA.
"""
import contextlib
import hashlib
import math
import random
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import hold_out_validation, prepare_data
from data.noise import RATE_FREE_NOISE, transition_matrix
from errors import UserError
from models import build_model

from .results import RESTART, claim_run_folder, load_checkpoint, result_settings, run_dir

EXIT_DIVERGED = 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
ECE_BINS = 15


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


def autocast_for(device, precision):
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def speed_settings(device, precision):
    """The GPU path, shared with bench/throughput.py: (precision, autocast, channels_last).

    The papers trained in fp32, and so does the default (--precision fp32; on CUDA with
    the TF32 convolutions PyTorch allows by default); --precision bf16 autocasts. On CUDA:
    channels-last tensors (the layout of the tensor-core convolution kernels, so cuDNN
    inserts no transposes) and cuDNN autotuning (the batch shape never changes, so the
    search is paid once). The CPU keeps the default layout.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return precision, autocast_for(device, precision), device.type == "cuda"


def lr_at(epoch, base_lr, milestones, gamma, n_epoch):
    """Step plan: base_lr * gamma^k after k milestones. Milestones are fractions of
    n_epoch, so the released plans (e.g. 40/80 of 120 epochs) scale with --n_epoch; a
    milestone that rounds to epoch 0 moves to epoch 1 (the first epoch is at base_lr)."""
    passed = sum(epoch >= max(1, round(m * n_epoch)) for m in milestones)
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
    train_eval_loader: object       # the training rows in order, without augmentation
    autocast: object                # a zero-argument context-manager factory
    train_aug_loader: object = None  # the same rows in order with the training augmentation

    def predict(self, model, augment=False):
        """predict() over the training rows, without augmentation or (augment=True) with a
        fresh crop and flip each epoch: all of them, except on Clothing1M, whose loaders
        cover the epoch's subset."""
        loader = self.train_aug_loader if augment else self.train_eval_loader
        return predict(model, loader, len(self.noisy_labels), self.num_classes,
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
    def __init__(self, epoch, step, loss):
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


class SignalGuard:
    """SIGINT/SIGTERM (and SIGHUP, unless nohup ignores it) set a flag the loop reads
    between steps (a Python int: no sync); the run then saves and ends as interrupted."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self.previous = {}
        for s in EXIT_SIGNAL:
            if s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN:
                continue
            self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- step, epoch, evaluation

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


class EpochStats:
    """One epoch's training metrics, accumulated on the device from the logits the step
    already has: no extra pass over the data and no host sync until row().

    Each sample falls in one of 8 cells, code = clean + 2 * fits_noisy + 4 * fits_true
    (clean: its noisy label is the true one; fits_*: the prediction equals that label);
    the cells' counts give every column. `true_labels` None (Clothing1M) counts train_acc
    only; a true label of -1 (an open-set image: no class of the data set) is never hit.
    """

    def __init__(self, device, true_labels=None, loss_bound=math.inf):
        self.true, self.bound = true_labels, loss_bound
        self.loss_sum = torch.zeros((), device=device)
        self.counts = torch.zeros(8, dtype=torch.int64, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), device=device)

    @torch.no_grad()
    def add(self, step, loss, logits, labels, idx):
        first_bad = (self.bad_step < 0) & ~(torch.isfinite(loss) & (loss.abs() <= self.bound))
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss, self.bad_loss)
        self.loss_sum += loss * len(labels)
        pred = logits.argmax(1)
        code = 2 * (pred == labels)
        if self.true is not None:
            true = self.true[idx]
            code = code + (labels == true) + 4 * (pred == true)
        self.counts.scatter_add_(0, code, torch.ones_like(code))

    def check(self, epoch):
        """Raise Diverged if a step's loss was non-finite or beyond the bound (one sync)."""
        step = self.bad_step.item()
        if step >= 0:
            raise Diverged(epoch, step, self.bad_loss.item())

    def row(self):
        """train_loss, train_acc and, with true labels, train_acc_true, fit_clean,
        mem_noisy, fix_noisy (percent; None where no sample falls in the group)."""
        c = self.counts.tolist()
        n = sum(c)
        part = lambda test: sum(v for k, v in enumerate(c) if test(k))  # noqa: E731
        pct = lambda a, b: 100.0 * a / b if b else None  # noqa: E731
        row = {"train_loss": self.loss_sum.item() / n, "train_acc": pct(part(lambda k: k & 2), n)}
        if self.true is not None:
            n_clean = part(lambda k: k & 1)
            row.update(train_acc_true=pct(part(lambda k: k & 4), n),
                       fit_clean=pct(part(lambda k: k & 1 and k & 2), n_clean),
                       mem_noisy=pct(part(lambda k: not k & 1 and k & 2), n - n_clean),
                       fix_noisy=pct(part(lambda k: not k & 1 and k & 4), n - n_clean))
        return row


def train_one_epoch(model, forward, optimizer, method, loader, autocast, stats, epoch, guard,
                    check_every, desc=""):
    """Train one epoch of `loader`; returns False when a signal stopped it between steps.
    Raises Diverged (checked every `check_every` steps and at the end)."""
    model.train()
    for step, (x, y, idx) in enumerate(tqdm(loader, desc=desc, leave=False, disable=None)):
        if guard.signum is not None:
            return False
        loss, logits = train_step(model, forward, optimizer, method, autocast, x, y, idx)
        stats.add(step, loss, logits, y, idx)
        if (step + 1) % check_every == 0:
            stats.check(epoch)
    stats.check(epoch)
    return True


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
        F.cross_entropy(logits.float(), y).backward()
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
def evaluate(model, loader, autocast, n_bins=ECE_BINS):
    """acc (top-1), loss (mean cross-entropy), conf (mean max-softmax) and ece (expected
    calibration error over `n_bins` equal-width confidence bins, bin b holding the
    confidences in (b/n, (b+1)/n]: sum_b |correct_b - conf_b| / N), all but loss in
    percent. Accumulated on the device; one host sync at the end."""
    was_training = model.training
    model.eval()
    device = loader.device
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # correct, loss, confidence
    bins = torch.zeros(2, n_bins, device=device, dtype=torch.float64)  # correct, confidence
    n = 0
    for x, y, _ in loader:
        with autocast():
            logits = model(x).float()
        conf, pred = torch.softmax(logits, dim=1).max(dim=1)
        correct = (pred == y).double()
        totals += torch.stack([correct.sum(), F.cross_entropy(logits, y, reduction="sum").double(),
                               conf.double().sum()])
        b = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
        bins.index_add_(1, b, torch.stack([correct, conf.double()]))
        n += len(y)
    model.train(was_training)
    correct, loss, conf, ece = torch.cat([totals, (bins[0] - bins[1]).abs().sum()[None]]).tolist()
    n = max(n, 1)
    return {"acc": 100.0 * correct / n, "loss": loss / n, "conf": 100.0 * conf / n,
            "ece": 100.0 * ece / n}


# ---------------------------------------------------------------- noisy labels and checkpoints

def noise_report(data, noisy, provenance):
    """noise.json: where the labels came from, actual noise rate and empirical transition
    matrix (both None where the clean train labels are unknown: Clothing1M). Open-set
    noise keeps the labels and replaces images: the replaced fraction counts as noise."""
    report = {"provenance": provenance}
    if data.train_labels is None:
        return {"actual_noise_rate": None, "transition_matrix": None, **report}
    wrong = np.asarray(data.train_labels) != np.asarray(noisy)
    report["transition_matrix"] = transition_matrix(data.train_labels, noisy, data.num_classes).tolist()
    if "open_set_index" in data.noise_arrays:
        wrong[data.noise_arrays["open_set_index"]] = True
        report["open_set_fraction"] = len(data.noise_arrays["open_set_index"]) / len(wrong)
    return {"actual_noise_rate": float(wrong.mean()), **report}


def true_train_labels(data):
    """The true label of every training image (train order), -1 where the image belongs to
    no class of the data set (open-set noise); None when unknown (Clothing1M)."""
    if data.train_labels is None:
        return None
    true = np.array(data.train_labels, dtype=np.int64)
    true[data.noise_arrays.get("open_set_index", [])] = -1
    return true


def label_identity(cfg, noisy, provenance):
    """What identifies the labels and model a checkpoint was trained with; stored in every
    checkpoint and compared when another run starts from it (main_GLS_load.py)."""
    return {"dataset": cfg.dataset, "noise_type": cfg.noise_type,
            "noise_rate": None if cfg.noise_type in RATE_FREE_NOISE else cfg.noise_rate,
            "noise_seed": cfg.noise_seed if provenance.get("source") == "generated" else None,
            "noise_file_md5": provenance.get("md5"),
            "labels_sha1": hashlib.sha1(np.asarray(noisy, dtype=np.int64).tobytes()).hexdigest(),
            "val_fraction": cfg.val_fraction, "model": cfg.model, "width": cfg.width}


def load_init_weights(model, path, identity):
    """Start from another run's checkpoint (the warm-up), refusing one trained on other
    noisy labels, another data set or another model."""
    fix = "pass another --warmup_ckpt, or train the warm-up again with main_warmup.py"
    ckpt = load_checkpoint(path, fix=fix)
    if not isinstance(ckpt.get("identity"), dict):
        raise UserError(f"{path} holds no record of the noisy labels and model it was trained "
                        "with (it was not written by this version of main_warmup.py): train the "
                        "warm-up again with main_warmup.py")
    src = ckpt["identity"]
    for key in ("dataset", "model", "width", "val_fraction"):
        if src.get(key) != identity[key]:
            raise UserError(f"{path} was trained with {key}={src.get(key)!r}, this run has "
                            f"{key}={identity[key]!r}: pass a checkpoint of the same data set, "
                            "model and split (see --warmup_ckpt)")
    if src.get("labels_sha1") != identity["labels_sha1"]:
        differ = [f"{k} {src.get(k)!r} vs {v!r}" for k, v in identity.items()
                  if k != "labels_sha1" and src.get(k) != v]
        raise UserError(f"{path} was trained on other noisy labels than this run's "
                        f"({', '.join(differ) or 'same flags, other labels'}): start from the "
                        "warm-up of the same noise (see --warmup_ckpt)")
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UserError(f"{path} does not fit this model ({str(exc).splitlines()[0]}); "
                        f"it was trained for another model or class count: {fix}") from None


def config_dict(cfg):
    return dict(vars(cfg))


def changed_settings(saved, current):
    saved, current = result_settings(saved), result_settings(current)
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def load_resume_state(folder, config, noisy, identity):
    """last.pt of the run to resume, after checking that the folder, and the checkpoint
    itself, belong to these flags and labels. Every problem is a UserError, raised before
    anything is written."""
    changed = changed_settings(folder.read_json("config.json"), config)
    if changed:
        raise UserError(f"{folder.path} was started with other settings ({', '.join(changed)}): "
                        f"resume with the original flags, or {RESTART}")
    if not np.array_equal(folder.load_npy("noisy_labels.npy"), noisy):
        raise UserError(f"the noisy labels made now differ from {folder.file('noisy_labels.npy')}: "
                        f"the label file or code changed since the run started; {RESTART}")
    path = folder.file("last.pt")
    ckpt = folder.load_checkpoint("last.pt")
    missing = [k for k in ("model", "optimizer", "method", "state", "rng", "config", "identity") if k not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it is not a complete checkpoint of this run; {RESTART}")
    if not isinstance(ckpt["config"], dict) or changed_settings(ckpt["config"], config) or \
            not isinstance(ckpt["identity"], dict) or ckpt["identity"].get("labels_sha1") != identity["labels_sha1"]:
        raise UserError(f"{path} is the checkpoint of another run (other settings or noisy labels): {RESTART}")
    state = ckpt["state"]
    if not (isinstance(state, dict) and isinstance(state.get("epoch"), int) and isinstance(state.get("rows"), list)
            and 0 <= state["epoch"] <= config["n_epoch"] and len(state["rows"]) == state["epoch"]):
        raise UserError(f"{path} holds no consistent training state: {RESTART}")
    return ckpt


def restore_run(r, method, folder):
    """Load the resumed run's weights, optimiser, method state and every RNG state (last, so
    that nothing after it draws); a checkpoint that does not fit is a UserError."""
    ckpt = r.resume_from
    try:
        r.model.load_state_dict(ckpt["model"])
        r.optimizer.load_state_dict(ckpt["optimizer"])
        method.load_state_dict(ckpt["method"])
        restore_rng(ckpt["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(f"{folder.file('last.pt')} does not fit this run ({str(exc).splitlines()[0]}); "
                        f"{RESTART}") from None
    return ckpt["state"]


# ---------------------------------------------------------------- the run

@dataclass
class Run:
    """The pieces of one run, made by prepare_run before anything is written."""
    cfg: object
    config: dict
    device: torch.device
    precision: str
    autocast: object
    data: object
    noisy: np.ndarray           # every training image's noisy label (train order)
    noise: dict                 # noise.json
    identity: dict
    model: torch.nn.Module
    forward: object
    optimizer: object
    train_loader: object
    eval_splits: dict
    ctx: TrainContext
    stats_labels: object        # true labels of the training rows, on the device, or None
    val_index: object = None
    resume_from: dict = None


def prepare_run(cfg, config, method, init_from, resume_folder):
    """Data, noisy labels, model, optimiser, loaders and the method's set-up: everything
    that can refuse the run, before its folder is written. `resume_folder` is the run's
    folder when it is resumed (its config, labels and last.pt are checked)."""
    device = pick_device(cfg.device)
    precision, autocast, channels_last = speed_settings(device, cfg.precision)
    seed_everything(cfg.seed)
    data, noisy, provenance = prepare_data(cfg)
    identity = label_identity(cfg, noisy, provenance)
    model = build_model(cfg.model, data.num_classes, data.in_channels, cfg.width,
                        pretrained=not getattr(cfg, "no_pretrained", False),
                        pretrained_path=getattr(cfg, "pretrained_path", None)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if init_from:
        load_init_weights(model, init_from, identity)
    resume_from = load_resume_state(resume_folder, config, noisy, identity) if resume_folder else None
    noise = noise_report(data, noisy, provenance)
    true = true_train_labels(data)
    train_noisy, val_index = noisy, None
    if cfg.val_fraction:
        train_noisy, val_index = hold_out_validation(data, noisy, cfg.val_fraction, cfg.noise_seed)
        if true is not None:
            true = np.delete(true, val_index)

    forward = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    noisy_t = torch.as_tensor(train_noisy, device=device)
    train_loader = data.train_loader(noisy_t, cfg.batch_size, device, cfg.seed, channels_last)
    eval_splits = {"test": data.eval_loader("test", cfg.test_batch_size, device, channels_last)}
    if data.has_val:
        eval_splits["val"] = data.eval_loader("val", cfg.test_batch_size, device, channels_last)
    ctx = TrainContext(cfg, device, model, data.num_classes, noisy_t,
                       train_loader.in_order(cfg.test_batch_size, augment=False), autocast,
                       train_loader.in_order(cfg.test_batch_size, augment=True))
    method.setup(ctx)
    stats_labels = None if true is None else torch.as_tensor(true, device=device)
    return Run(cfg, config, device, precision, autocast, data, noisy, noise, identity, model,
               forward, optimizer, train_loader, eval_splits, ctx, stats_labels, val_index, resume_from)


def run(cfg, script, method, init_from=None):
    """Train one run; returns the process exit code (0, or EXIT_DIVERGED / signal codes)."""
    config = config_dict(cfg)
    path = run_dir(config, script, method.tag)
    if cfg.print_run_dir:
        print(path)
        return 0
    with SignalGuard() as guard, claim_run_folder(path, cfg.if_exists, cfg.retry_diverged) as (folder, action):
        if action == "finished":
            print(f"{path} already finished; nothing to do")
            print(f"results: {path}")
            return 0
        if action == "diverged":
            print(f"{path} diverged earlier (a result, kept); --retry_diverged trains it again")
            print(f"results: {path}")
            return EXIT_DIVERGED
        r = prepare_run(cfg, config, method, init_from, folder if action == "resume" else None)
        if action == "resume":
            state = restore_run(r, method, folder)
            print(f"resuming {path} after epoch {state['epoch']}")
        else:  # the accuracy before the first step; it also reads every evaluation image once
            state = new_state(r, evaluate_all(r, method))
        if guard.signum is not None:  # stopped while preparing: nothing written yet
            return EXIT_SIGNAL[guard.signum]
        # Only now, with flags, data, labels and checkpoints checked, is the folder written.
        if action == "overwrite":
            folder.clear()
        if action != "resume":
            folder.write_json("config.json", config)
            folder.save_npy("noisy_labels.npy", r.noisy)
            folder.write_json("noise.json", r.noise)
            for name, array in r.data.noise_arrays.items():  # noise beyond labels, e.g. open-set images
                folder.save_npy(f"{name}.npy", array)
            if r.val_index is not None:
                folder.save_npy("val_index.npy", r.val_index)
        return train(r, script, method, init_from, folder, guard, state)


def evaluate_all(r, method):
    """{'test_acc': .., 'test_ece': .., 'test_acc_ema': ..} for the model and the method's."""
    models = {"": r.model, **{f"_{k}": m for k, m in method.eval_models().items()}}
    return {f"{split}_{metric}{suffix}": value
            for suffix, m in models.items() for split, loader in r.eval_splits.items()
            for metric, value in evaluate(m, loader, r.autocast).items()}


def new_state(r, initial):
    """The training state of a new run (what last.pt carries forward)."""
    state = {"epoch": 0, "rows": [], "wall_time_s": 0.0, "initial": initial}
    if r.cfg.record_train_probs:  # the sum over epochs of the train softmax
        state["train_probs_sum"] = torch.zeros(len(r.ctx.noisy_labels), r.data.num_classes,
                                               dtype=torch.float64)
    return state


def train(r, script, method, init_from, folder, guard, state):
    """The epoch loop of a prepared run, writing its folder as it goes."""
    cfg, model = r.cfg, r.model
    summary = {"status": "running", "script": script, "run_dir": folder.path, "method": method.tag,
               "dataset": cfg.dataset, "noise_type": cfg.noise_type, "noise_rate": cfg.noise_rate,
               "model": cfg.model, "seed": cfg.seed, "n_epoch": cfg.n_epoch,
               "actual_noise_rate": r.noise["actual_noise_rate"], "device": device_name(r.device),
               "precision": r.precision, "torch_version": torch.__version__, "init_from": init_from}

    def write_summary(status, **extra):
        summary.update(summarize_rows(state["rows"]), status=status,
                       epochs_completed=state["epoch"], wall_time_s=round(state["wall_time_s"], 3),
                       initial_test_acc=(state["initial"] or {}).get("test_acc"), **extra)
        summary["config"] = r.config
        folder.write_json("summary.json", summary)

    write_summary("running")
    bound = cfg.loss_bound if cfg.loss_bound > 0 else math.inf
    try:
        for epoch in range(state["epoch"], cfg.n_epoch):
            started = time.time()
            lr = lr_at(epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch)
            for group in r.optimizer.param_groups:
                group["lr"] = lr
            # set_epoch first: on Clothing1M it picks the epoch's subset, which label
            # correction (start_epoch) predicts over.
            r.train_loader.set_epoch(epoch)
            r.ctx.train_aug_loader.set_epoch(epoch)
            if r.forward is not model and epoch == state["epoch"]:
                x, y, _ = next(iter(r.train_loader))  # the batch the epoch starts with
                check_compiled(model, r.forward, r.autocast, r.precision, x, y)
            method.start_epoch(epoch, r.ctx)
            stats = EpochStats(r.device, r.stats_labels, bound)
            if not train_one_epoch(model, r.forward, r.optimizer, method, r.train_loader, r.autocast,
                                   stats, epoch + 1, guard, cfg.print_freq,
                                   desc=f"epoch {epoch + 1}/{cfg.n_epoch}"):
                break
            row = {"epoch": epoch + 1, "lr": lr, **stats.row(), **evaluate_all(r, method)}
            if "train_probs_sum" in state:
                logits, _ = r.ctx.predict(model)
                state["train_probs_sum"] += torch.softmax(logits.double(), dim=1).cpu()
            row["epoch_time_s"] = round(time.time() - started, 3)
            state["rows"].append(row)
            state["epoch"] = epoch + 1
            state["wall_time_s"] += time.time() - started
            print(format_row(row, cfg.n_epoch), flush=True)
            save_epoch(folder, cfg, r, method, state)
            write_summary("running")
    except Diverged as d:
        write_summary("diverged", diverged_epoch=d.epoch, diverged_step=d.step, diverged_loss=d.loss)
        what = "non-finite" if not math.isfinite(d.loss) else f"{d.loss:.4g}, beyond --loss_bound {cfg.loss_bound:g}"
        hint = method.divergence_hint()
        print(f"error: the loss diverged at epoch {d.epoch}, step {d.step}: the batch loss was {what}. "
              f"{hint + ' ' if hint else ''}The last good epoch's checkpoint is kept.")
        print(f"results: {folder.path}")
        return EXIT_DIVERGED
    except Exception as exc:
        if guard.signum is None:
            write_summary("failed", error=f"{exc.__class__.__name__}: {exc}")
            raise
        # The signal that stops the run reached the whole process group: a DataLoader
        # worker it caught while starting (before it ignores such signals) ends the epoch
        # with an error. The run stops as interrupted after its last complete epoch.
    except BaseException as exc:
        write_summary("failed", error=f"{exc.__class__.__name__}: {exc}")
        raise
    if guard.signum is not None:
        write_summary("interrupted")
        print(f"interrupted (signal {guard.signum}) after {state['epoch']} complete epochs; "
              "continue with the same command and --if_exists auto (or --resume)")
        print(f"results: {folder.path}")
        return EXIT_SIGNAL[guard.signum]
    write_summary("finished")
    print(f"results: {folder.path}")
    return 0


def save_epoch(folder, cfg, r, method, state):
    """metrics.csv (and train_probs.npy) every epoch; last.pt every --ckpt_every epochs and at the end;
    best.pt when the selection accuracy improves: validation accuracy where the run has
    a validation split, else test accuracy (the papers' choice); the momentum model's
    where the method has one (SLN-MO: it is the model the release reports, and its
    Clothing1M script saves both networks when the momentum model's val accuracy improves)."""
    rows = state["rows"]
    folder.write_csv("metrics.csv", rows, list(rows[0].keys()))
    row = rows[-1]
    extra = method.eval_models()
    key = ("val_acc" if "val_acc" in row else "test_acc") + ("_ema" if "ema" in extra else "")
    if all(row[key] > r_[key] for r_ in rows[:-1]):
        folder.save_checkpoint("best.pt", {
            "model": r.model.state_dict(), "epoch": row["epoch"], "test_acc": row["test_acc"],
            "selected_by": key, "eval_models": {k: m.state_dict() for k, m in extra.items()},
            "identity": r.identity, "config": r.config})
    if "train_probs_sum" in state:  # --record_train_probs: the mean over the epochs so far
        folder.save_npy("train_probs.npy", (state["train_probs_sum"] / state["epoch"]).numpy())
    if state["epoch"] % cfg.ckpt_every == 0 or state["epoch"] == cfg.n_epoch:
        folder.save_checkpoint("last.pt", {
            "model": r.model.state_dict(), "optimizer": r.optimizer.state_dict(),
            "method": method.state_dict(), "state": state, "rng": capture_rng(),
            "epoch": state["epoch"], "identity": r.identity, "config": r.config})


# Columns reported at the last epoch and at the best epoch (of test_acc, or of
# test_acc_ema for the momentum model's columns) in summary.json.
EPOCH_COLUMNS = ("test_loss", "test_conf", "test_ece", "train_acc_true", "fit_clean", "mem_noisy",
                 "fix_noisy")


def summarize_rows(rows):
    """best/last of every *_acc column; for a val split, test accuracy at the best val epoch;
    last and best-epoch values of the calibration and memorisation columns."""
    if not rows:
        return {}
    out = {}
    for column in rows[0]:
        split, sep, suffix = column.partition("_acc")
        if not sep or split not in ("test", "val"):
            continue
        best = max(rows, key=lambda row: row[column])  # the first epoch that reaches the maximum
        out[f"best_{split}_acc{suffix}"] = best[column]
        out[f"last_{split}_acc{suffix}"] = rows[-1][column]
        if column == "test_acc":
            out["best_epoch"] = best["epoch"]
        if split == "val":
            out[f"best_val_epoch{suffix}"] = best["epoch"]
            out[f"test_acc_at_best_val{suffix}"] = best[f"test_acc{suffix}"]
    for column in rows[0]:
        base, suffix = (column[:-4], "_ema") if column.endswith("_ema") else (column, "")
        if base in EPOCH_COLUMNS:
            best = max(rows, key=lambda row: row[f"test_acc{suffix}"])
            out[f"last_{column}"] = rows[-1][column]
            out[f"best_epoch_{column}"] = best[column]
    return out


def format_row(row, n_epoch):
    accs = " ".join(f"{k} {v:.2f}" for k, v in row.items() if "_acc" in k and v is not None)
    return (f"epoch {row['epoch']}/{n_epoch} lr {row['lr']:.3g} loss {row['train_loss']:.4f} "
            f"{accs} ({row['epoch_time_s']:.1f}s)")


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
