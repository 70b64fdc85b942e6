"""The training engine: one run, from flags to results, for every script and every method.

    run(cfg, script, method)
      claim the run folder      one process per folder; --if_exists decides what it holds
      prepare                   data, noisy labels, networks, loaders, the method: every
                                check that can refuse the run, before a file is written
      begin                     write the folder's config and labels, or load last.pt
      train                     epoch by epoch: the method's steps, evaluation, metrics.csv
                                (and TensorBoard events), summary.json (with per-class
                                results), checkpoints; divergence and signals end it cleanly

Speed rules of the loop: data come from a DeviceLoader already on the device (on
Clothing1M from worker processes decoding JPEGs, data/clothing1m.py); the step never
copies to the host: metrics accumulate in device tensors (utils/metrics.py) read once per
epoch, the divergence flag every --print_freq steps. Autocast only with --precision
bf16/fp16; channels-last and cuDNN autotuning on CUDA unless --deterministic (core/device.py).
"""
import contextlib
import math
import os
import re
import signal
import sys
import time
import traceback

import numpy as np
import torch
from tqdm import tqdm

from core.device import cpu_fallback_warning, device_name, pick_device, seed_everything, speed_settings
from core.files import RESTART, atomic_write_text, file_error, warn
from data import dataset_spec, hold_out_validation, prepare_data
from data.noise import transition_matrix
from errors import RunFailed, UserError
from models import build_model

from . import identity as ident
from .checkpoints import (best_checkpoint, label_identity, last_checkpoint, load_init_weights,
                          load_resume_state, restore)
from .compile_check import check_compiled
from .plan import Identities, code_paths
from .schema import best_results, header, is_new_best
from .metrics import (Diverged, EpochStats, TensorBoardLog, check_tensorboard, evaluate, format_row, result_line,
                      per_class_record)
from .results import claim_run_folder, clear, run_dir
from .state import Network, RunState

EXIT_DIVERGED = 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
COLLAPSE_MARGIN = 0.1  # collapsed: the last accuracy is within 10% of the way from chance to 100%


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
            state.comparable = comparable
            record.start(state)
            guard.defer()  # from here on a signal stops the run between steps, after it saved
            record.written = True  # from here on the folder changes: whatever stops the run is recorded
            begin(state, folder, action)
            print_banner(state, action)
            return train(state, folder, guard, record)


# ---------------------------------------------------------------- claim: a run already there

def keep_result(cfg, script, method, folder, action):
    """--if_exists auto on a finished or diverged run: kept when the same code and data would
    make it again (or with --keep_stale, recorded); a stale one is refused, nothing changed."""
    saved = folder.read_json("config.json")  # a damaged one is an error naming it
    current = Identities().made_by(cfg, script, method)
    changes = ident.what_changed(saved.get("made_by"), current) if current else []
    if changes:
        if not cfg.keep_stale:
            raise UserError(stale_message(folder.path, action, changes))
        record_kept_stale(folder, changes, current)
        print(f"{folder.path}: kept deliberately (--keep_stale) although " + "; ".join(changes))
    if action == "finished":
        print(f"{folder.path} already finished; nothing to do")
        print(result_line(folder.summary() or {}))
        print(f"results: {os.path.abspath(folder.path)}")
        return 0
    print(f"{folder.path} diverged earlier (a result, kept); --retry_diverged trains it again")
    print(f"results: {os.path.abspath(folder.path)}")
    return EXIT_DIVERGED


def stale_message(path, action, changes):
    what = {"finished": "a finished", "diverged": "a diverged", "resume": "an unfinished"}[action]
    return (f"{path} holds {what} run made by other code or data than this command would use now:\n  "
            + "\n  ".join(changes)
            + "\nRetrain it with --if_exists overwrite, or keep the old result deliberately with "
              "--if_exists auto --keep_stale (the decision is recorded in its summary.json)")


def record_kept_stale(folder, changes, current):
    summary = folder.read_json_or_none("summary.json") or {}
    entry = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": changes,
             "code_now": current["code"].get("source_sha1"), "data_now": current.get("data")}
    summary["kept_stale"] = summary.get("kept_stale", []) + [entry]
    folder.write_json("summary.json", summary)


# ---------------------------------------------------------------- prepare

def saved_labels(folder):
    """() -> (noisy labels, provenance) the run folder saved (a damaged file: a UserError
    naming it), or None where it saved none: called only when they are needed."""
    def read():
        report = folder.read_json_or_none("noise.json")
        if report is None or not os.path.isfile(folder.file("noisy_labels.npy")):
            return None
        return folder.load_npy("noisy_labels.npy"), report.get("provenance") or {}
    return read


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
    run = RunState(cfg=cfg, config=config, script=script, method=method, path=folder.path,
                   device=device, precision=cfg.precision, autocast=autocast, channels_last=channels_last,
                   data=data, noise=noise, noisy=noisy, identity=identity, made_by=made_by,
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


def build_network(cfg, data, device, channels_last):
    """The run's model (seeded by the training RNG), its optimiser and, for fp16, its scaler."""
    model = build_model(cfg.model, data.num_classes, data.in_channels, cfg.width,
                        pretrained=not cfg.no_pretrained, pretrained_path=cfg.pretrained_path).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return Network(model, torch.compile(model) if cfg.compile else model, optimizer, scaler)


def check_memory(cfg, spec, device):
    """Refuse a model whose weights, gradients and optimiser state alone exceed the memory of
    the device (an absurd --width), naming what it needs; counted on the meta device."""
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(cfg.model, spec.num_classes, spec.in_channels, cfg.width,
                                               pretrained=False).parameters())
    need = 4 * n * 4  # fp32 weights, gradients, momentum, and one copy more (EMA, second network)
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[1]
    else:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > available:
        raise UserError(f"--model {cfg.model} --width {cfg.width} has {n:,} parameters and needs at least "
                        f"{need / 2**30:.1f} GiB for weights, gradients and optimiser state, more than "
                        f"the {available / 2**30:.1f} GiB of {device_name(device)}: use a smaller --width")


def noise_report(data, noisy, provenance, noise):
    """noise.json: where the labels came from, actual noise rate and empirical transition
    matrix (None where the clean train labels are unknown: Clothing1M). Images that belong
    to no class (true label -1, open-set noise) count as noise."""
    report = {"noise_type": noise.name, "provenance": provenance,
              "arrays": sorted(data.noise_arrays)}
    true = noise.true_train_labels(data)
    if true is None:
        return {"actual_noise_rate": None, "transition_matrix": None, **report}
    report["transition_matrix"] = transition_matrix(data.train_labels, noisy, data.num_classes).tolist()
    if (true < 0).any():
        report["open_set_fraction"] = float((true < 0).mean())
    return {"actual_noise_rate": float((true != np.asarray(noisy)).mean()), **report}


# ---------------------------------------------------------------- begin

def begin(run, folder, action):
    """Only now, with flags, data, labels and checkpoints checked, is the folder written."""
    if action == "resume":
        if os.path.lexists(folder.file("error.log")):  # of the failure this run continues after
            os.remove(folder.file("error.log"))
        summary = folder.read_json_or_none("summary.json") or {}
        run.kept_stale_log = summary.get("kept_stale", [])
        if run.kept_stale:
            run.kept_stale_log.append({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": run.kept_stale,
                                       "code_now": run.made_by["code"]["source_sha1"],
                                       "data_now": run.made_by["data"], "resumed_at_epoch": run.epoch})
            run.made_by = folder.read_json("config.json").get("made_by")
        return
    if action == "overwrite":
        clear(folder)
    run.config = {**run.config, "made_by": run.made_by}
    folder.write_json("config.json", run.config)
    folder.save_npy("noisy_labels.npy", run.noisy)
    folder.write_json("noise.json", run.noise_report)
    for name, array in run.data.noise_arrays.items():  # noise beyond labels, e.g. open-set images
        folder.save_npy(f"{name}.npy", array)
    if run.val_index is not None:
        folder.save_npy("val_index.npy", run.val_index)


def print_banner(run, action):
    """What is about to happen, before the first epoch."""
    cfg = run.cfg
    warning = cpu_fallback_warning(cfg.device, run.device)
    if warning:
        warn(warning)
    what = {"start": "new", "overwrite": "restarted (earlier results deleted)",
            "resume": f"resumed after epoch {run.epoch} of {cfg.n_epoch}"}[action]
    params = sum(p.numel() for p in run.model.parameters())
    noise = run.noise_report["actual_noise_rate"]
    n_test = len(run.data.test_labels) if getattr(run.data, "test_labels", None) is not None else "?"
    lines = [f"run folder: {os.path.abspath(run.path)} ({what})",
             f"device: {device_name(run.device)} ({run.device}), precision {run.precision}"
             + (", deterministic" if cfg.deterministic else ""),
             f"data: {cfg.dataset}, {len(run.noisy_labels)} training images, {n_test} test images; noise "
             f"{cfg.noise_type}" + (f", actual rate {noise:.4f}" if noise is not None else ", real (rate unknown)"),
             f"model: {cfg.model}, {params:,} parameters; method: {run.method.label} ({run.script})"]
    if run.init_from:
        lines.append(f"started from: {run.init_from}")
    print("\n".join(lines), flush=True)


# ---------------------------------------------------------------- train

def train(run, folder, guard, record):
    """The epoch loop of a prepared run, writing its folder as it goes (summary.json through
    `record`, which also marks the run failed when anything raises)."""
    cfg, method = run.cfg, run.method
    record.write("running")
    bound = cfg.loss_bound if cfg.loss_bound > 0 else math.inf
    board = TensorBoardLog(folder.file("tensorboard"), run.epoch, run.rows) if cfg.tensorboard else None
    with board or contextlib.nullcontext():
        try:
            for epoch in range(run.epoch, cfg.n_epoch):
                started, record.epoch = time.time(), epoch + 1
                lr = lr_at(epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch, cfg.cosine_lr_min)
                for net in run.networks.values():
                    for group in net.optimizer.param_groups:
                        group["lr"] = lr
                # set_epoch first: on Clothing1M it picks the epoch's subset, which label
                # correction (start_epoch) predicts over.
                run.train_loader.set_epoch(epoch)
                run.train_aug_loader.set_epoch(epoch)
                if cfg.compile and epoch == run.epoch:
                    x, y, _ = next(iter(run.train_loader))  # the batch the epoch starts with
                    for net in run.networks.values():
                        check_compiled(net.model, net.forward, run.autocast, run.precision, x, y)
                method.start_epoch(epoch, run)
                stats = EpochStats(run.device, run.true_labels, bound)
                if not train_one_epoch(run, stats, epoch + 1, guard, cfg.print_freq,
                                       desc=f"epoch {epoch + 1}/{cfg.n_epoch}"):
                    break
                confusion = torch.zeros(run.num_classes, run.num_classes, dtype=torch.int64, device=run.device)
                row = {"epoch": epoch + 1, "lr": lr, **stats.row(),
                       **hook_result(method, "epoch_columns", method.epoch_columns(), dict),
                       **evaluate_all(run, confusion)}
                if run.train_probs_sum is not None:
                    logits, _ = run.predict(run.model)
                    run.train_probs_sum += torch.softmax(logits.double(), dim=1).cpu()
                row["epoch_time_s"] = round(time.time() - started, 3)
                run.rows.append(row)
                run.record_per_class(per_class_record(epoch + 1, confusion, stats.per_class()))
                run.epoch = epoch + 1
                run.wall_time_s += time.time() - started
                print(format_row(run.rows, cfg.n_epoch), flush=True)
                save_epoch(run, folder)
                if board:
                    board.add(row)
                record.write("running")
        except Diverged as d:
            record.write("diverged", diverged_epoch=d.epoch, diverged_step=d.step, diverged_loss=d.loss)
            what = "non-finite" if not math.isfinite(d.loss) else f"{d.loss:.4g}, beyond --loss_bound {cfg.loss_bound:g}"
            hint = method.divergence_hint(run.script)
            kept = (f"The checkpoint of epoch {run.epoch}, the last good one, is kept." if run.epoch
                    else "No epoch completed, so there is no checkpoint.")
            print(f"error: the loss diverged at epoch {d.epoch}, step {d.step}: the batch loss was {what}. "
                  f"{hint + ' ' if hint else ''}{kept}")
            print(result_line(best_results(run.rows)))
            print(f"results: {os.path.abspath(folder.path)}")
            return EXIT_DIVERGED
        except Exception as exc:
            if guard.signum is None:
                operation = nondeterministic_operation(exc) if cfg.deterministic else None
                if operation:
                    record.write("failed", error=str(exc).splitlines()[0])
                    raise UserError(f"--deterministic: {operation} has no deterministic implementation on "
                                    f"{device_name(run.device)}, so the run stopped at epoch {run.epoch + 1}. "
                                    "Train without --deterministic, or on a device where it has one") from None
                raise  # RunRecord marks the run failed
            # The signal that stops the run reached the whole process group: a DataLoader
            # worker it caught while starting (before it ignores such signals) ends the epoch
            # with an error. The run stops as interrupted after its last complete epoch.
    if guard.signum is not None:
        record.write("interrupted")
        print(f"interrupted (signal {guard.signum}) after {run.epoch} complete epochs; "
              "continue with the same command and --if_exists auto (or --resume)")
        print(result_line(best_results(run.rows)))
        print(f"results: {os.path.abspath(folder.path)}")
        return EXIT_SIGNAL[guard.signum]
    collapse = collapsed(run)
    record.write("finished", **collapse)
    if collapse["collapsed"]:
        print(f"warning: the run collapsed: its last test accuracy, {run.rows[-1]['test_acc']:.2f}%, is "
              f"near chance ({collapse['chance_acc']:.2f}%, the largest test class). "
              f"{method.divergence_hint(run.script)}".rstrip())
    print(result_line(best_results(run.rows)))
    print(f"results: {os.path.abspath(folder.path)}")
    return 0


class RunRecord:
    """summary.json of a run, from the moment its folder is claimed to the end of the run, and
    the failure recorder around all of it (run() reads top to bottom inside it).

    An exception that escapes (a bug in any hook of a method, a file or folder the run cannot
    write, anything after the run's first file was written) marks the run `failed`: summary.json
    gets the error, error.log the traceback, and the exception becomes one line, RunFailed
    (exit 1: the error, where in the code it was raised, and what to do next), or the UserError it
    was (exit 2). `--if_exists auto` then continues the run from its last checkpoint, or starts
    it again. Before the folder is written: a refusal (UserError) or a signal leaves it as it
    was; a crash marks an unfinished run failed (a new one gets a summary.json that says so),
    and leaves a finished or diverged result untouched.
    """

    def __init__(self, folder, action, config, script, method):
        self.folder, self.action, self.run, self.written, self.failed = folder, action, None, False, False
        self.epoch = None  # the epoch being trained (1-based), for the message
        earlier = folder.read_json_or_none("summary.json") if action != "start" else None
        self.kept_result = (earlier or {}).get("status") in ("finished", "diverged")
        self.summary = {**(earlier or {}), "script": script, "run_dir": folder.path, "method": method.tag,
                        "method_name": method.name, "config": config}

    def start(self, run):
        """The summary's header, from the prepared run."""
        cfg, method = run.cfg, run.method
        self.run = run
        self.summary = header(cfg, run.script, self.folder.path, method, comparable=run.comparable,
                              actual_noise_rate=run.noise_report["actual_noise_rate"],
                              device=device_name(run.device), precision=run.precision,
                              torch_version=torch.__version__, init_from=run.init_from)

    def write(self, status, **extra):
        run, summary = self.run, self.summary
        if run is not None:
            summary.update(best_results(run.rows), epochs_completed=run.epoch,
                           wall_time_s=round(run.wall_time_s, 3),
                           initial_test_acc=(run.initial or {}).get("test_acc"))
            if run.kept_stale_log:
                summary["kept_stale"] = run.kept_stale_log
            if run.per_class.get("best"):  # None when resumed from a checkpoint that predates it
                summary["per_class"] = run.per_class
            summary["config"], summary["made_by"] = run.config, run.made_by
        summary.update(status=status, **extra)
        self.failed = status == "failed"
        self.folder.write_json("summary.json", summary)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        if not self.written and isinstance(exc, (UserError, KeyboardInterrupt, SystemExit)):
            return False  # a refusal or a signal before the first file: nothing was written
        if not self.written and self.kept_result:  # a crash never replaces a result
            if not isinstance(exc, Exception):
                return False
            raise RunFailed(self.failure_message(exc, tb, record=False)) from exc
        if isinstance(exc, UserError) and not isinstance(exc, RunFailed):
            self.record_failure(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False  # the message already names the problem and the fix
        if not isinstance(exc, Exception):  # a signal out of the loop's reach: marked, then as it was
            self.record_failure(f"{kind.__name__}: {exc}")
            return False
        raise RunFailed(self.failure_message(exc, tb)) from exc

    def record_failure(self, error, traceback_text=None):
        """status failed with `error` (unless the run recorded its failure itself) and the traceback
        in error.log; '' or what kept them from being written."""
        problems = []
        if traceback_text is not None:
            try:
                atomic_write_text(self.folder.file("error.log"), traceback_text)
            except OSError as exc:
                problems.append(f"error.log: {exc.strerror or exc}")
        if not self.failed:
            try:
                self.write("failed", error=error)
            except Exception as exc:  # a full disk, or what broke the summary in the first place
                problems.append(f"summary.json: {getattr(exc, 'strerror', None) or exc}")
        return "; ".join(problems)

    def failure_message(self, exc, tb, record=True):
        """One line: what failed, when, where in the code, and the way on."""
        run = self.run
        when = (f"in epoch {self.epoch}" if self.epoch else f"before epoch {run.epoch + 1}" if self.written
                else "before training started")
        if isinstance(exc, OSError):
            what = file_error(exc, self.folder.path)
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        head = f"{what}{code_location(tb)}: the run {self.folder.path} stopped {when}"
        if not record:
            return f"{head}; the {self.summary.get('status')} result in its folder is untouched. Fix the cause, then rerun"
        problem = self.record_failure(what, "".join(traceback.format_exception(type(exc), exc, tb)))
        kept = ("its summary.json says failed and error.log holds the traceback" if not problem
                else f"this could not be recorded in the run folder ({problem})")
        return f"{head}; {kept}. Fix the cause, then rerun the same command with --if_exists auto"


def code_location(tb):
    """' (at methods/gce.py:57, in epoch_columns)': the innermost frame outside Python and the
    installed libraries: the method's code, or the engine's."""
    installed = tuple(os.path.join(p, "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    frames = [f for f in traceback.extract_tb(tb)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(installed)]
    if not frames:
        return ""
    frame, path = frames[-1], os.path.abspath(frames[-1].filename)
    shown = os.path.relpath(path, ident.ROOT) if path.startswith(os.path.join(ident.ROOT, "")) else path
    return f" (at {shown}:{frame.lineno}, in {frame.name})"


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


@contextlib.contextmanager
def refusing_nondeterminism(enabled):
    """Under --deterministic, torch's error for an operation without a deterministic
    implementation becomes a UserError naming it."""
    try:
        yield
    except RuntimeError as exc:
        operation = nondeterministic_operation(exc) if enabled else None
        if operation is None:
            raise
        raise UserError(f"--deterministic: {operation} has no deterministic implementation on this "
                        "device (met before the first step; nothing was written). Train without "
                        "--deterministic, or on a device where it has one") from None


def nondeterministic_operation(exc):
    """The operation torch names in the error it raises under use_deterministic_algorithms
    ("put_ does not have a deterministic implementation, but you set ..."), else None."""
    match = re.search(r"(\S+) does not have a deterministic implementation", str(exc))
    return match.group(1) if match else None


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
    key = ("val_acc" if "val_acc" in row else "test_acc") + ("_ema" if "ema" in extra else "")
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


def collapsed(run):
    """{"collapsed": bool, "chance_acc": %}: a finished run whose last test accuracy is closer to
    chance (the share of the largest test class) than COLLAPSE_MARGIN of the way to 100%."""
    labels = getattr(run.data, "test_labels", None)
    if labels is None or not run.rows:
        return {"collapsed": False}
    chance = float(100.0 * np.bincount(np.asarray(labels)).max() / len(labels))
    return {"collapsed": bool(run.rows[-1]["test_acc"] < chance + COLLAPSE_MARGIN * (100 - chance)),
            "chance_acc": round(chance, 3)}


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


class SignalGuard:
    """SIGINT/SIGTERM (and SIGHUP, unless nohup ignores it) while a run prepares end the
    process at once with 128 + the signal's number (nothing has been written; the run
    folder's lock is released on the way out). After defer(), they set a flag the loop
    reads between steps (a Python int: no sync): the run saves and ends as interrupted."""

    def __init__(self):
        self.signum = None
        self.deferred = False

    def defer(self):
        self.deferred = True

    def __enter__(self):
        self.previous = {}
        for s in EXIT_SIGNAL:
            if s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN:
                continue
            self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if not self.deferred:
            print(f"interrupted ({signal.Signals(signum).name}) before training started; nothing was "
                  "written", flush=True)
            raise SystemExit(EXIT_SIGNAL[signum])
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
