"""The training engine: one run, from flags to results, for every script and every method.

    run(cfg, script, method)
      claim the run folder      one process per folder; --if_exists decides what it holds
      prepare                   data, noisy labels, networks, loaders, the method: every
                                check that can refuse the run, before a file is written
      begin                     write the folder's config and labels, or load last.pt
      train                     epoch by epoch: the method's steps, evaluation, metrics.csv
                                (and TensorBoard events), summary.json (with per-class
                                results), checkpoints

How the loop ends (diverged, interrupted, finished) is utils/ending.py's; summary.json and
the record of a failure are utils/record.py's; the pieces of a run's start utils/start.py's.

Speed rules of the loop: data come from a DeviceLoader already on the device (on
Clothing1M from worker processes decoding JPEGs, data/clothing1m.py); the step never
copies to the host: metrics accumulate in device tensors (utils/metrics.py) read once per
epoch, the divergence flag every --print_freq steps. Autocast only with --precision
bf16/fp16; channels-last and cuDNN autotuning on CUDA unless --deterministic (core/device.py).
"""
import contextlib
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from core.device import device_name, pick_device, seed_everything, speed_settings
from data import dataset_spec, hold_out_validation, prepare_data
from errors import UserError

from . import identity as ident
from .checkpoints import best_checkpoint, label_identity, last_checkpoint, load_init_weights, load_resume_state, restore
from .compile_check import check_compiled
from .ending import RunEnding, SignalGuard, refusing_nondeterminism
from .metrics import EpochStats, TensorBoardLog, check_tensorboard, evaluate, format_row, per_class_record  # noqa: F401
from .plan import code_paths
from .record import RunRecord, keep_result, stale_message
from .results import claim_run_folder, run_dir
from .schema import is_new_best, selection_column
from .start import begin, build_network, check_memory, noise_report, print_banner, saved_labels
from .state import RunState


def run(cfg, script, method, init_from=None, comparable=None):
    """Train one run; returns the process exit code (0, or EXIT_DIVERGED / signal codes).
    `init_from`: a checkpoint path, or a function returning one, to start the weights from
    (called only when the run has to train); `comparable`: the settings that pair it with
    a CE run of another script (utils.cli.comparable_settings), recorded in summary.json."""
    method.check_contract(cfg)  # a method that breaks the base class's rules stops here, naming the rule
    config = dict(vars(cfg))
    path = run_dir(config, script, method.tag)
    if cfg.print_run_dir:
        print(path)
        return 0
    with SignalGuard() as guard, claim_run_folder(path, cfg.if_exists, cfg.retry_diverged) as (folder, action):
        if action in ("finished", "diverged"):
            return keep_result(cfg, script, method, folder, action)
        with RunRecord(folder, action, config, script, method) as record:
            state = prepare(cfg, config, script, method, folder, action, init_from)
            record.start(state, comparable)
            guard.defer()  # from here on a signal stops the run between steps, after it saved
            record.written = True  # from here on the folder changes: whatever stops the run is recorded
            begin(state, folder, action)
            print_banner(state, folder, action)
            return train(state, folder, guard, record)


# ---------------------------------------------------------------- prepare

def prepare(cfg, config, script, method, folder, action, init_from):
    """The RunState of a run: data, noisy labels, networks, loaders and the method's set-up;
    a resumed run's checkpoint is checked here too. Everything that can refuse the run
    happens here, before its folder is written."""
    device = pick_device(cfg.device)
    autocast, channels_last = speed_settings(device, cfg.precision, cfg.deterministic)
    if cfg.tensorboard:
        check_tensorboard()
    spec = dataset_spec(cfg.dataset)
    check_memory(cfg, spec, device)
    seed_everything(cfg.seed)
    data, noisy, provenance, noise = prepare_data(cfg, saved_labels(folder) if action == "resume" else None)
    made_by = ident.made_by(code_paths(cfg, script, method), ident.data_fingerprint(data), noisy,
                            device_name(device), method.inputs())
    identity = label_identity(cfg, noisy, provenance, noise)
    run = RunState(cfg=cfg, config=config, script=script, method=method,
                   device=device, autocast=autocast, channels_last=channels_last,
                   data=data, all_noisy_labels=noisy, identity=identity, made_by=made_by,
                   num_classes=data.num_classes)
    run.build_network = lambda: build_network(cfg, data, device, channels_last)
    run.networks[""] = run.build_network()
    if action != "resume" and init_from is not None:
        run.init_from = init_from() if callable(init_from) else init_from
        load_init_weights(run.model, run.init_from, identity)
    resume_from = load_resume_state(folder, config, noisy, identity) if action == "resume" else None
    if resume_from is not None:
        saved = folder.read_json("config.json")
        run.init_from = (folder.read_json_or_none("summary.json") or {}).get("init_from")
        changes = ident.what_changed(saved.get("made_by"), made_by)
        if changes and not cfg.keep_stale:
            raise UserError(stale_message(folder.path, "resume", changes))
        run.kept_stale = changes
    run.noise_report = noise_report(data, noisy, provenance, noise)
    true = noise.true_train_labels(data)
    train_noisy = noisy
    if cfg.val_fraction:
        train_noisy, run.val_index = hold_out_validation(data, noisy, cfg.val_fraction, cfg.noise_seed)
        if true is not None:
            true = np.delete(true, run.val_index)
    run.noisy_labels = torch.as_tensor(train_noisy, device=device)
    run.true_labels = None if true is None else torch.as_tensor(true, device=device)
    run.train_loader = data.train_loader(run.noisy_labels, cfg.batch_size, device, cfg.seed, channels_last)
    run.train_eval_loader = run.train_loader.in_order(cfg.test_batch_size, augment=False)
    run.train_aug_loader = run.train_loader.in_order(cfg.test_batch_size, augment=True)
    run.eval_splits = {"test": data.eval_loader("test", cfg.test_batch_size, device, channels_last)}
    if data.has_val:
        run.eval_splits["val"] = data.eval_loader("val", cfg.test_batch_size, device, channels_last)
    run.resuming = resume_from is not None
    with refusing_nondeterminism(cfg.deterministic):  # before anything is written: a refusal
        method.setup(run)
        if resume_from is not None:
            restore(run, resume_from, folder.file("last.pt"))
        else:  # the accuracy before the first step; it also reads every evaluation image once
            run.initial = evaluate_all(run)
            if cfg.record_train_probs:  # the sum over epochs of the train softmax
                run.train_probs_sum = torch.zeros(len(run.noisy_labels), data.num_classes, dtype=torch.float64)
    return run


# ---------------------------------------------------------------- train

def train(run, folder, guard, record):
    """The epoch loop of a prepared run, writing its folder as it goes (summary.json through
    `record`, which also marks the run failed when anything raises); RunEnding records and
    prints how it ends. Returns the exit code."""
    cfg, method = run.cfg, run.method
    record.write("running")
    bound = cfg.loss_bound if cfg.loss_bound > 0 else math.inf
    with tensorboard_log(run, folder) as board, RunEnding(run, folder, guard, record) as ending:
        for epoch in range(run.epoch, cfg.n_epoch):
            started, record.epoch = time.time(), epoch + 1
            lr = lr_at(epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch, cfg.cosine_lr_min)
            set_lr(run, lr)
            set_epoch(run, epoch)
            if cfg.compile and epoch == run.epoch:  # the first epoch this process trains
                check_compiled_networks(run)
            method.start_epoch(epoch, run)
            stats = EpochStats(run.device, run.true_labels, bound)
            if not train_one_epoch(run, stats, epoch + 1, guard, cfg.print_freq,
                                   desc=f"epoch {epoch + 1}/{cfg.n_epoch}"):
                break  # a signal: the run ends interrupted after its last complete epoch
            row, confusion = evaluate_epoch(run, epoch + 1, lr, stats)
            row["epoch_time_s"] = round(time.time() - started, 3)
            run.history.add_epoch(row, per_class_record(epoch + 1, confusion, stats.per_class()),
                                  time.time() - started)
            print(format_row(run.rows, cfg.n_epoch), flush=True)
            save_epoch(run, folder)
            if board:
                board.add(row)
            record.write("running")
    return ending.exit_code()


def tensorboard_log(run, folder):
    """--tensorboard: the TensorBoardLog the loop adds each row to; without it, None."""
    if not run.cfg.tensorboard:
        return contextlib.nullcontext()
    return TensorBoardLog(folder.file("tensorboard"), run.epoch, run.rows)


def set_lr(run, lr):
    """The epoch's learning rate, for every network of the run."""
    for net in run.networks.values():
        for group in net.optimizer.param_groups:
            group["lr"] = lr


def set_epoch(run, epoch):
    """The loaders' epoch (their order, augmentation); before start_epoch: on Clothing1M it
    picks the epoch's subset, which label correction predicts over."""
    run.train_loader.set_epoch(epoch)
    run.train_aug_loader.set_epoch(epoch)


def check_compiled_networks(run):
    """--compile: each network's compiled gradients against the plain model's, on the batch
    the epoch starts with (utils/compile_check.py)."""
    x, y, _ = next(iter(run.train_loader))
    for net in run.networks.values():
        check_compiled(net.model, net.forward, run.autocast, run.cfg.precision, x, y)


def evaluate_epoch(run, epoch, lr, stats):
    """The epoch's metrics.csv row (without its time) and the main model's test confusion
    matrix: the training columns (stats), the method's columns, every evaluated model on
    every split; with --record_train_probs, the train softmax added to the run's sum."""
    confusion = torch.zeros(run.num_classes, run.num_classes, dtype=torch.int64, device=run.device)
    row = {"epoch": epoch, "lr": lr, **stats.row(),
           **hook_result(run.method, "epoch_columns", run.method.epoch_columns(), dict),
           **evaluate_all(run, confusion)}
    if run.train_probs_sum is not None:
        logits, _ = run.predict(run.model)
        run.train_probs_sum += torch.softmax(logits.double(), dim=1).cpu()
    return row, confusion


def hook_result(method, hook, value, kind):
    """A hook's result, checked against what the engine uses it as."""
    if not isinstance(value, kind):
        raise UserError(f"method {method.name}: {hook}() returned a {type(value).__name__}, not a "
                        f"{kind.__name__}: see the Method base class (methods/__init__.py)")
    return value


def train_one_epoch(run, stats, epoch, guard, check_every, desc=""):
    """Train one epoch of the run's loader with the method's step; returns False when a signal
    stopped it between steps. Raises Diverged (checked every `check_every` steps and at the end)."""
    for net in run.networks.values():
        net.model.train()
    for step, (x, y, idx) in enumerate(tqdm(run.train_loader, desc=desc, leave=False, disable=None)):
        if guard.signum is not None:
            return False
        loss, logits = run.method.train_step(run, x, y, idx)
        stats.add(step, loss, logits, y, idx)
        if (step + 1) % check_every == 0:
            stats.check(epoch)
    stats.check(epoch)
    return True


def evaluate_all(run, test_confusion=None):
    """{'test_acc': .., 'test_ece': .., 'test_acc_ema': ..} for the main model (or the model
    the method evaluates instead, Method.evaluated_model), the networks a method added and
    the method's extra models; the unsuffixed model's test predictions are counted into
    `test_confusion` when given (evaluate)."""
    evaluated = run.method.evaluated_model(run)
    main = {"": run.model} if evaluated is None else {"": evaluated, "_main": run.model}
    extra = hook_result(run.method, "eval_models", run.method.eval_models(), dict)
    models = {**main, **{f"_{k}": n.model for k, n in run.networks.items() if k},
              **{f"_{k}": m for k, m in extra.items()}}
    columns = {}
    for suffix, model in models.items():
        for split, loader in run.eval_splits.items():
            confusion = test_confusion if (suffix, split) == ("", "test") else None
            for metric, value in evaluate(model, loader, run.autocast, confusion=confusion).items():
                columns[f"{split}_{metric}{suffix}"] = value
    return columns


def save_epoch(run, folder):
    """metrics.csv (and train_probs.npy) every epoch; last.pt every --ckpt_every epochs and at the end;
    best.pt when the selection accuracy improves: validation accuracy where the run has
    a validation split, else test accuracy (the papers' choice), and there best_val_loss.pt
    when the validation loss of the main model falls; the momentum model's
    where the method has one (SLN-MO: it is the model the release reports, and its
    Clothing1M script saves both networks when the momentum model's val accuracy improves)."""
    rows, cfg = run.rows, run.cfg
    folder.write_csv("metrics.csv", rows, list(rows[0].keys()))
    row = rows[-1]
    extra = {**{k: n.model for k, n in run.networks.items() if k}, **run.method.eval_models()}
    key = selection_column(row, momentum="ema" in extra)
    if is_new_best(rows, key):
        folder.save_checkpoint("best.pt", best_checkpoint(run, row, key, extra))
    if "val_loss" in row and is_new_best(rows, "val_loss", lowest=True):
        # the lowest validation loss: the loss-correction release's rule for the model its
        # transition matrix is estimated from (methods/transition.py)
        folder.save_checkpoint("best_val_loss.pt", best_checkpoint(run, row, "val_loss", extra))
    if run.train_probs_sum is not None:  # --record_train_probs: the mean over the epochs so far
        folder.save_npy("train_probs.npy", (run.train_probs_sum / run.epoch).numpy())
    if run.epoch % cfg.ckpt_every == 0 or run.epoch == cfg.n_epoch:
        folder.save_checkpoint("last.pt", last_checkpoint(run))


def lr_at(epoch, base_lr, milestones, gamma, n_epoch, cosine_min=None):
    """Step plan: base_lr * gamma^k after k milestones. Milestones are fractions of
    n_epoch, so the released plans (e.g. 40/80 of 120 epochs) scale with --n_epoch; a
    milestone that rounds to epoch 0 moves to epoch 1 (the first epoch is at base_lr).
    With cosine_min (--cosine_lr_min), the cosine plan instead: CosineAnnealingLR's closed
    form with T_max = n_epoch, stepped once per epoch (epoch 0 at base_lr)."""
    if cosine_min is not None:
        return cosine_min + (base_lr - cosine_min) * (1 + math.cos(math.pi * epoch / n_epoch)) / 2
    passed = sum(epoch >= max(1, round(m * n_epoch)) for m in milestones)
    return base_lr * gamma ** passed
