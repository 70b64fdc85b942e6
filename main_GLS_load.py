"""Generalized label smoothing started from the CE warm-up (Wei et al., ICML 2022).

Finds the checkpoint main_warmup.py wrote for the same data set, noise and model
under --result_dir (best test accuracy by default, as released; --warmup_ckpt
best|last|PATH), checks it was trained on the same noisy labels (its record of them:
data set, noise, seed or file, a hash of the labels) and model, and trains
wa * CE + wb * GLS(r) from it. summary.json's initial_test_acc is the accuracy of
the loaded weights before the first step. A finished run needs nothing but itself: the
warm-up is looked for only when the run has to train.

Released protocol (docs/REPRODUCTION.md): ResNet-34 from the warm-up, 100 epochs at a
constant lr 1e-6, SGD momentum 0.9 Nesterov, weight decay 1e-4, batch 128 (test 64),
wa=0, wb=1, smooth rate 0.1.

    python3 main_GLS_load.py --noise_type symmetric --noise_rate 0.2 --smooth_rate -2.0
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import os  # noqa: E402

from core.args import run_main  # noqa: E402

DEFAULTS = dict(n_epoch=100, lr=1e-6, lr_milestones=[], momentum=0.9, nesterov=True,
                weight_decay=1e-4, batch_size=128, test_batch_size=64, wa=0.0, wb=1.0, smooth_rate=0.1,
                noise_source="generate")
# The settings a warm-up must share with this run to be its warm-up.
WARMUP_KEYS = ("dataset", "noise_type", "noise_rate", "noise_seed", "noise_source", "model", "width",
               "val_fraction", "noise_file", "noise_path")


def warmup_flags(p):
    p.add_argument("--warmup_ckpt", default="best",
                   help="best or last checkpoint of the matching warm-up run, or a path")


def preset(argv=None):
    from utils.cli import Preset
    return Preset("main_GLS_load", "gls", DEFAULTS, __doc__, family="gls", requires="main_warmup",
                  init_from=find_warmup_checkpoint, extra_flags=warmup_flags, needs=warmup_needs)


def warmup_needs(cfg):
    """The checkpoint --warmup_ckpt PATH names; best and last come from the warm-up run
    that a sweep trains first (main_warmup.py, the script this one requires)."""
    from data import DataFile

    if cfg.warmup_ckpt in ("best", "last"):
        return []
    return [DataFile(cfg.warmup_ckpt, "the checkpoint to start from (--warmup_ckpt)",
                     "train the warm-up with main_warmup.py and pass its best.pt, or pass --warmup_ckpt "
                     "best to start from the warm-up the sweep trains")]


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


def find_warmup_checkpoint(cfg):
    """The checkpoint main_warmup.py wrote for this data set, noise and model.

    --warmup_ckpt is best, last or a path. Among matching finished warm-ups, one with the
    same --seed is preferred; several equally good candidates are an error. A damaged
    warm-up folder is skipped with a warning naming it. The checkpoint's record of its
    labels and model is checked when it is loaded (utils.checkpoints.load_init_weights).
    """
    from core.files import RunFolder, read_json_file, warn
    from data import canonical_noise_type
    from errors import UserError
    from models import canonical_model
    from utils.cli import check_file_flag

    which = cfg.warmup_ckpt
    if which not in ("best", "last"):
        check_file_flag("--warmup_ckpt", which)
        return which
    candidates = []
    root = os.path.join(cfg.result_dir, "main_warmup")
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        warm, problem = read_json_file(os.path.join(folder, "config.json"))
        if warm is None or not isinstance(warm.get("noise_type"), str):
            problem = problem or f"is damaged (noise_type {warm.get('noise_type')!r})"
            warn(f"skipping the warm-up folder {folder}: its config.json {problem}")
            continue
        warm["noise_type"] = canonical_noise_type(warm["noise_type"])
        warm["model"] = canonical_model(warm.get("model"))
        if all(warm.get(k) == getattr(cfg, k, None) for k in WARMUP_KEYS) and \
                os.path.exists(os.path.join(folder, f"{which}.pt")):
            candidates.append((warm.get("seed") != cfg.seed, folder))
    finished = [c for c in candidates if RunFolder(c[1]).status() == "finished"]
    if not finished:
        # Every setting the search matches on, so that the warm-up made is found next time.
        flags = {"dataset": cfg.dataset, "noise_type": cfg.noise_type, "noise_rate": cfg.noise_rate,
                 "model": cfg.model, "width": cfg.width, "seed": cfg.seed,
                 "noise_seed": cfg.noise_seed or None, "val_fraction": cfg.val_fraction or None,
                 "noise_source": None if cfg.noise_source == "generate" else cfg.noise_source,
                 "noise_file": cfg.noise_file, "noise_path": cfg.noise_path,
                 "data_root": None if cfg.data_root == "./data" else cfg.data_root,
                 "result_dir": cfg.result_dir}
        hint = "python3 main_warmup.py " + " ".join(f"--{k} {v}" for k, v in flags.items() if v is not None)
        found = f" ({len(candidates)} unfinished)" if candidates else ""
        raise UserError(f"no finished warm-up run{found} under {root} for "
                        f"{cfg.dataset}, {cfg.noise_type} {cfg.noise_rate}, model {cfg.model}. "
                        f"Run it first:\n  {hint}\nor pass --warmup_ckpt PATH")
    finished.sort()
    if len(finished) > 1 and finished[0][0] == finished[1][0]:
        raise UserError("several warm-up runs match: " + ", ".join(f for _, f in finished)
                        + "; choose one with --warmup_ckpt PATH")
    return os.path.join(finished[0][1], f"{which}.pt")


if __name__ == "__main__":
    run_main(main)
