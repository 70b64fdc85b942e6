"""Flags shared by the scripts, their validation, and the scripts' entry point.

Each script states its released protocol as a DEFAULTS dict and builds its parser
here, so the flag names of the released repositories and our additions stay the
same everywhere. Flags the released code accepted but ignored are kept and marked
as such in --help.
"""
import argparse
import glob
import json
import os
import sys

from data.noise import canonical_noise_type
from errors import UserError
from models import MODELS

from .results import RunFolder

NO_OP = "accepted for compatibility with the released code, where it did nothing"


def add_engine_flags(p, d):
    """Flags of the engine (utils/engine.py) that every script has."""
    g = p.add_argument_group("training engine")
    g.add_argument("--model", default=d.get("model", "resnet"), help=f"one of {', '.join(MODELS)}")
    g.add_argument("--width", type=int, default=None,
                   help="first-stage channels (default: the paper's); small widths for CPU runs")
    g.add_argument("--seed", type=int, default=d.get("seed", 0), help="training seed (init, order, augmentation)")
    g.add_argument("--noise_seed", type=int, default=0,
                   help="seed of the synthetic noisy labels, independent of --seed")
    g.add_argument("--test_batch_size", type=int, default=d.get("test_batch_size", 128))
    g.add_argument("--lr_milestones", type=float, nargs="*", default=d["lr_milestones"],
                   help="epochs where the lr is multiplied by --lr_gamma, as fractions of the epoch count")
    g.add_argument("--lr_gamma", type=float, default=d.get("lr_gamma", 0.1))
    g.add_argument("--momentum", type=float, default=d["momentum"])
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"])
    g.add_argument("--weight_decay", type=float, default=d["weight_decay"])
    g.add_argument("--val_fraction", type=float, default=0.0,
                   help="hold out this fraction of the noisy train set as a noisy validation split "
                        "(honest model selection: summary.json gets test_acc_at_best_val)")
    g.add_argument("--device", default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--loss_bound", type=float, default=1e4,
                   help="stop as diverged when the batch loss is non-finite or |loss| exceeds this "
                        "(0 disables the bound; non-finite losses always stop the run)")
    g.add_argument("--print_freq", type=int, default=d.get("print_freq", 50),
                   help="steps between divergence checks (each costs one host sync)")
    g.add_argument("--ckpt_every", type=int, default=1, help="epochs between last.pt checkpoints")
    g.add_argument("--resume", action="store_true", help="continue the run from its last.pt")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a run folder that already holds results (they are deleted)")
    g.add_argument("--print_run_dir", action="store_true",
                   help="print the run folder these flags map to, and exit")
    return g


def gls_parser(doc, d):
    """The flags of the released GLS scripts (PROTOCOL §5) plus the engine's."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("released flags")
    g.add_argument("--lr", type=float, default=d["lr"], help="first lr of the plan")
    g.add_argument("--loss", default="gls", help=f"{NO_OP}: --wa/--wb/--smooth_rate set the loss")
    g.add_argument("--result_dir", default="results", help="where run folders go")
    g.add_argument("--noise_rate", type=float, default=0.2)
    g.add_argument("--noise_type", default="symmetric",
                   help="clean, symmetric (sym), pairflip, asym")
    g.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, digits")
    g.add_argument("--n_epoch", type=int, default=d["n_epoch"])
    g.add_argument("--wa", type=float, default=d["wa"], help="weight of plain CE")
    g.add_argument("--wb", type=float, default=d["wb"], help="weight of GLS")
    g.add_argument("--smooth_rate", type=float, default=0.1, help="r: > 0 PLS, < 0 NLS, 0 CE")
    g.add_argument("--num_workers", type=int, default=4,
                   help="DataLoader workers where one is used (Clothing1M); CIFAR needs none")
    g.add_argument("--top_bn", action="store_true", help=NO_OP)
    g.add_argument("--ideal", action="store_true", help=NO_OP)
    g = p.add_argument_group("data")
    g.add_argument("--data_root", default="./data", help="folder holding the data set")
    g.add_argument("--batch_size", type=int, default=d["batch_size"])
    add_engine_flags(p, d)
    return p


def validate(cfg):
    """Range checks of the shared flags; a UserError names the value and the valid range."""
    checks = [
        (0.0 <= cfg.noise_rate < 1.0, f"--noise_rate {cfg.noise_rate} is outside [0, 1)"),
        (cfg.n_epoch >= 1, f"--n_epoch/--epochs {cfg.n_epoch} must be at least 1"),
        (cfg.batch_size >= 1 and cfg.test_batch_size >= 1, "batch sizes must be at least 1"),
        (cfg.lr > 0, f"--lr {cfg.lr} must be positive"),
        (cfg.model in MODELS, f"--model {cfg.model!r} is unknown; choose one of {', '.join(MODELS)}"),
        (cfg.width is None or cfg.width >= 1, f"--width {cfg.width} must be at least 1"),
        (0.0 <= cfg.val_fraction < 0.5, f"--val_fraction {cfg.val_fraction} is outside [0, 0.5)"),
        (all(0.0 < m < 1.0 for m in cfg.lr_milestones),
         f"--lr_milestones {cfg.lr_milestones} must be fractions of the run in (0, 1)"),
        (cfg.momentum >= 0 and cfg.weight_decay >= 0, "--momentum and --weight_decay must be >= 0"),
        (not cfg.nesterov or cfg.momentum > 0, "--nesterov needs --momentum > 0"),
        (cfg.print_freq >= 1 and cfg.ckpt_every >= 1, "--print_freq and --ckpt_every must be >= 1"),
        (not (cfg.resume and cfg.overwrite), "--resume and --overwrite exclude each other"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def validate_gls(cfg):
    validate(cfg)
    if cfg.smooth_rate > 1.0:
        raise UserError(f"--smooth_rate {cfg.smooth_rate} is above 1: the target's true-class "
                        "weight 1 - r would be negative; use r <= 1 (negative r is NLS)")


def find_warmup_checkpoint(cfg, which="best"):
    """The checkpoint main_warmup.py wrote for this data set, noise and model.

    `which` is best, last or a path. Among matching finished warm-ups, one with the
    same --seed is preferred; several equally good candidates are an error.
    """
    if which not in ("best", "last"):
        if not os.path.isfile(which):
            raise UserError(f"--warmup_ckpt {which}: no such file")
        return which
    keys = ("dataset", "noise_rate", "noise_seed", "model", "width", "val_fraction",
            "noise_file", "noise_path")
    candidates = []
    for config_file in sorted(glob.glob(os.path.join(cfg.result_dir, "main_warmup", "*", "config.json"))):
        folder = os.path.dirname(config_file)
        with open(config_file) as f:
            warm = json.load(f)
        same = all(warm.get(k) == getattr(cfg, k, None) for k in keys)
        same &= canonical_noise_type(warm.get("noise_type")) == canonical_noise_type(cfg.noise_type)
        if same and os.path.exists(os.path.join(folder, f"{which}.pt")):
            candidates.append((warm.get("seed") != cfg.seed, folder))
    finished = [c for c in candidates if RunFolder(c[1]).status() == "finished"]
    if not finished:
        hint = (f"python3 main_warmup.py --dataset {cfg.dataset} --noise_type {cfg.noise_type} "
                f"--noise_rate {cfg.noise_rate} --model {cfg.model} --seed {cfg.seed} "
                f"--result_dir {cfg.result_dir}")
        found = f" ({len(candidates)} unfinished)" if candidates else ""
        raise UserError(f"no finished warm-up run{found} under {cfg.result_dir}/main_warmup for "
                        f"{cfg.dataset}, {cfg.noise_type} {cfg.noise_rate}, model {cfg.model}. "
                        f"Run it first:\n  {hint}\nor pass --warmup_ckpt PATH")
    finished.sort()
    if len(finished) > 1 and finished[0][0] == finished[1][0]:
        raise UserError("several warm-up runs match: " + ", ".join(f for _, f in finished)
                        + "; choose one with --warmup_ckpt PATH")
    return os.path.join(finished[0][1], f"{which}.pt")


def run_main(main):
    """Run a script's main(); bad input ends with its message and exit status 2."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
