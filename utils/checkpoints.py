"""Checkpoints: what they hold, the checks before one is loaded, and every RNG state.

last.pt   the main network (model, optimizer, fp16 scaler), the networks a method added,
          the method's state, the run's progress (rows, the best epoch's per-class results),
          every RNG state, and what identifies the run's noisy labels and model: a resumed
          run goes on exactly where it stopped.
best.pt   the weights at the best selection accuracy (and the extra evaluated models').
"""
import random

import numpy as np
import torch

from core.files import RESTART, load_checkpoint
from errors import UserError
from models import canonical_model

from .identity import labels_sha1
from .results import result_settings

LAST_KEYS = ("model", "optimizer", "method", "state", "rng", "config", "identity")


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


def label_identity(cfg, noisy, provenance, noise):
    """What identifies the labels and model a checkpoint was trained with; stored in every
    checkpoint and compared when another run starts from it (main_GLS_load.py)."""
    return {"dataset": cfg.dataset, "noise_type": cfg.noise_type,
            "noise_rate": cfg.noise_rate if noise.uses_rate else None,
            "noise_seed": cfg.noise_seed if provenance.get("source") == "generated" else None,
            "noise_file_md5": provenance.get("md5"),
            "labels_sha1": labels_sha1(noisy),
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
        theirs = canonical_model(src.get(key)) if key == "model" else src.get(key)
        if theirs != identity[key]:
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
    missing = [k for k in LAST_KEYS if k not in ckpt]
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


def restore(run, ckpt, path):
    """Load a resumed run's networks, optimisers, method state, progress and every RNG state
    (last, so that nothing after it draws); a checkpoint that does not fit is a UserError."""
    try:
        main = run.networks[""]
        main.model.load_state_dict(ckpt["model"])
        main.optimizer.load_state_dict(ckpt["optimizer"])
        if main.scaler is not None:
            main.scaler.load_state_dict(ckpt["scaler"])
        for name, net in run.networks.items():
            if name:
                net.load_state_dict(ckpt["networks"][name])
        run.method.load_state_dict(ckpt["method"])
        run.history.load_state_dict(ckpt["state"])
        restore_rng(ckpt["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(f"{path} does not fit this run ({str(exc).splitlines()[0]}); {RESTART}") from None


def last_checkpoint(run):
    main = run.networks[""]
    return {"model": main.model.state_dict(), "optimizer": main.optimizer.state_dict(),
            "scaler": None if main.scaler is None else main.scaler.state_dict(),
            "networks": {name: net.state_dict() for name, net in run.networks.items() if name},
            "method": run.method.state_dict(), "state": run.history.state_dict(), "rng": capture_rng(),
            "epoch": run.epoch, "identity": run.identity, "config": run.config}


def best_checkpoint(run, row, selected_by, eval_models):
    return {"model": run.model.state_dict(), "epoch": row["epoch"], "test_acc": row["test_acc"],
            "selected_by": selected_by, "eval_models": {k: m.state_dict() for k, m in eval_models.items()},
            "identity": run.identity, "config": run.config}
