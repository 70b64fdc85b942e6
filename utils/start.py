"""A run's start, the pieces prepare() (utils/engine.py) puts together: the labels a resumed
run saved, its networks, the memory check, noise.json, the folder's first files and the
lines printed before the first epoch.
"""
import os

import numpy as np
import torch

from core.device import cpu_fallback_warning, device_name
from core.files import warn
from data.noise import transition_matrix
from errors import UserError
from models import build_model

from .results import clear
from .schema import KEPT_STALE, kept_stale_entry
from .state import Network


def saved_labels(folder):
    """() -> (noisy labels, provenance) the run folder saved (a damaged file: a UserError
    naming it), or None where it saved none: called only when they are needed."""
    def read():
        report = folder.read_json_or_none("noise.json")
        if report is None or not os.path.isfile(folder.file("noisy_labels.npy")):
            return None
        return folder.load_npy("noisy_labels.npy"), report.get("provenance") or {}
    return read


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


def begin(run, folder, action):
    """Only now, with flags, data, labels and checkpoints checked, is the folder written."""
    if action == "resume":
        if os.path.lexists(folder.file("error.log")):  # of the failure this run continues after
            os.remove(folder.file("error.log"))
        summary = folder.read_json_or_none("summary.json") or {}
        run.kept_stale_log = summary.get(KEPT_STALE, [])
        if run.kept_stale:
            run.kept_stale_log.append(kept_stale_entry(run.kept_stale, run.made_by, resumed_at_epoch=run.epoch))
            run.made_by = folder.read_json("config.json").get("made_by")
        return
    if action == "overwrite":
        clear(folder)
    run.config = {**run.config, "made_by": run.made_by}
    folder.write_json("config.json", run.config)
    folder.save_npy("noisy_labels.npy", run.all_noisy_labels)
    folder.write_json("noise.json", run.noise_report)
    for name, array in run.data.noise_arrays.items():  # noise beyond labels, e.g. open-set images
        folder.save_npy(f"{name}.npy", array)
    if run.val_index is not None:
        folder.save_npy("val_index.npy", run.val_index)


def print_banner(run, folder, action):
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
    lines = [f"run folder: {os.path.abspath(folder.path)} ({what})",
             f"device: {device_name(run.device)} ({run.device}), precision {cfg.precision}"
             + (", deterministic" if cfg.deterministic else ""),
             f"data: {cfg.dataset}, {len(run.noisy_labels)} training images, {n_test} test images; noise "
             f"{cfg.noise_type}" + (f", actual rate {noise:.4f}" if noise is not None else ", real (rate unknown)"),
             f"model: {cfg.model}, {params:,} parameters; method: {run.method.label} ({run.script})"]
    if run.init_from:
        lines.append(f"started from: {run.init_from}")
    print("\n".join(lines), flush=True)
