"""Flags shared by the scripts, their validation, and the scripts' entry point.

Each script states its released protocol as a DEFAULTS dict and builds its parser
here, so the flag names of the released repositories and our additions stay the
same everywhere. Flags the released code accepted but ignored are kept and marked
as such in --help. Every flag is checked once, in validate(), before anything is read
or written: a bad value is a UserError naming the value, the valid range and the fix.
"""
import argparse
import errno
import math
import os
import re
import sys

import torch

from data import DATASETS, dataset_num_classes
from data.noise import canonical_noise_type, check_noise_fits
from errors import UserError
from models import MODELS, PRETRAINED

from .results import RunFolder, read_json_file, warn

NO_OP = "accepted for compatibility with the released code, where it did nothing"
SEED_RANGE = 2 ** 32  # numpy's RandomState takes seeds in [0, 2^32)


class Parser(argparse.ArgumentParser):
    """argparse, except that any negative number is a value, not an option: argparse
    takes only -2 and -2.0 for numbers, so --smooth_rate -2. or --smooth_rate -1e0 (valid
    NLS rates) and --weight_decay -1e-4 ended with "expected one argument"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def finite_float(text):
    """argparse type: a float that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: pass one such as 0.1 or -2") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number: pass one such as 0.1 or -2")
    return value


def integer(text):
    """argparse type: an int, refused with the fix (argparse says only "invalid int value")."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer: pass one such as 10") from None


def add_engine_flags(p, d):
    """Flags of the engine (utils/engine.py) that every script has."""
    g = p.add_argument_group("training engine")
    g.add_argument("--model", default=d.get("model", "resnet"), help=f"one of {', '.join(MODELS)}")
    g.add_argument("--width", type=integer, default=None,
                   help="first-stage channels (default: the paper's); small widths for CPU runs")
    g.add_argument("--seed", type=integer, default=d.get("seed", 0), help="training seed (init, order, augmentation)")
    g.add_argument("--noise_seed", type=integer, default=0,
                   help="seed of the synthetic noisy labels, independent of --seed (0: the "
                        "released experiments' labels)")
    g.add_argument("--noise_source", choices=["generate", "release"], default=d["noise_source"],
                   help="class-conditional noise (sym, asym): 'release' reads the SLN release's label "
                        "file <data root>/label_noisy/<mode><rate>.csv where it shipped one "
                        "(downloaded when missing) and draws the others; 'generate' draws them with "
                        f"the GLS release's generator (default: {d['noise_source']}, as released)")
    g.add_argument("--noise_file", default=None, metavar="PATH",
                   help="read the noisy labels from a label,label_noisy CSV (the SLN release's "
                        "format; its clean column must equal the data set's labels)")
    g.add_argument("--test_batch_size", type=integer, default=d["test_batch_size"])
    g.add_argument("--lr_milestones", type=finite_float, nargs="*", default=d["lr_milestones"],
                   help="epochs where the lr is multiplied by --lr_gamma, as fractions of the epoch count")
    g.add_argument("--lr_gamma", type=finite_float, default=d.get("lr_gamma", 0.1))
    g.add_argument("--momentum", type=finite_float, default=d["momentum"])
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"])
    g.add_argument("--weight_decay", type=finite_float, default=d["weight_decay"])
    g.add_argument("--val_fraction", type=finite_float, default=0.0,
                   help="hold out this fraction of the noisy train set as a noisy validation split "
                        "(honest model selection: summary.json gets test_acc_at_best_val)")
    g.add_argument("--record_train_probs", action="store_true",
                   help="after every epoch, predict the training set without augmentation and keep "
                        "the mean softmax over the epochs in train_probs.npy; on clean labels this "
                        "makes instance-dependent noise: python3 -m data.idn --run RUN_DIR")
    g.add_argument("--device", default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="fp32 as the papers trained (default), or bf16 autocast")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--loss_bound", type=finite_float, default=1e4,
                   help="stop as diverged when the batch loss is non-finite or |loss| exceeds this "
                        "(0 disables the bound; non-finite losses always stop the run)")
    g.add_argument("--print_freq", type=integer, default=d.get("print_freq", 50),
                   help="steps between divergence checks (each costs one host sync)")
    g.add_argument("--ckpt_every", type=integer, default=1, help="epochs between last.pt checkpoints")
    g = p.add_argument_group("the run folder")
    g.add_argument("--if_exists", choices=["refuse", "auto", "overwrite"], default=None,
                   help="what to do when the run folder holds results: refuse (the default); auto: "
                        "a finished run is left as it is (exit 0), a diverged one too (exit 3), an "
                        "unfinished one is resumed from last.pt or, without one, started again; "
                        "overwrite: delete its results and start again")
    g.add_argument("--resume", "-r", action="store_true", help="the same as --if_exists auto")
    g.add_argument("--overwrite", action="store_true", help="the same as --if_exists overwrite")
    g.add_argument("--retry_diverged", action="store_true",
                   help="with --if_exists auto: train a diverged run again instead of keeping it")
    g.add_argument("--print_run_dir", action="store_true",
                   help="print the run folder these flags map to, and exit")
    r = p.add_argument_group("real-noise data: CIFAR-N, Clothing1M")
    r.add_argument("--noise_path", default=None, metavar="PATH",
                   help="CIFAR-N label file for the human noise types (default: "
                        "<data root>/CIFAR-10_human.pt or CIFAR-100_human.pt; downloaded when missing)")
    r.add_argument("--num_per_class", type=integer, default=d.get("num_per_class", 18976),
                   help="Clothing1M: noisy train images per class in each epoch's balanced subset "
                        "(-1: every image, as the release's -1)")
    r.add_argument("--image_size", type=integer, default=224,
                   help="Clothing1M: crop size (resize to size * 256/224 first); small for CPU tests")
    r.add_argument("--num_workers", type=integer, default=d.get("num_workers", 4),
                   help="DataLoader workers decoding JPEGs (Clothing1M); CIFAR needs none")
    r.add_argument("--pretrained_path", default=None, metavar="PATH",
                   help="resnet50: ImageNet weights from this file instead of torchvision's download")
    r.add_argument("--no_pretrained", action="store_true",
                   help="resnet50: start from random weights instead of ImageNet's")
    return g


def gls_parser(doc, d):
    """The flags of the released GLS scripts plus the engine's."""
    p = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("released flags")
    g.add_argument("--lr", type=finite_float, default=d["lr"], help="first lr of the plan")
    g.add_argument("--loss", default="gls", help=f"{NO_OP}: --wa/--wb/--smooth_rate set the loss")
    g.add_argument("--result_dir", default="results", help="where run folders go")
    g.add_argument("--noise_rate", type=finite_float, default=0.2)
    g.add_argument("--noise_type", default=None,
                   help="clean, symmetric (sym), pairflip, asym, dependent, instance, openset; "
                        "CIFAR-N: aggre, worst, rand1, rand2, rand3, noisy100, clean100 and their "
                        "synthetic twins <type>_twin; real (Clothing1M). Default: symmetric, "
                        "real on clothing1m")
    g.add_argument("--dataset", default="cifar10", help=", ".join(DATASETS))
    g.add_argument("--n_epoch", type=integer, default=d["n_epoch"])
    g.add_argument("--wa", type=finite_float, default=d["wa"], help="weight of plain CE")
    g.add_argument("--wb", type=finite_float, default=d["wb"], help="weight of GLS")
    g.add_argument("--smooth_rate", type=finite_float, default=d["smooth_rate"],
                   help="r: > 0 PLS, < 0 NLS, 0 CE")
    g.add_argument("--top_bn", action="store_true", help=NO_OP)
    g.add_argument("--ideal", action="store_true", help=NO_OP)
    g = p.add_argument_group("data")
    g.add_argument("--data_root", default="./data",
                   help="folder holding the data set (Clothing1M: images/ and the annotation files)")
    g.add_argument("--batch_size", type=integer, default=d["batch_size"])
    add_engine_flags(p, d)
    return p


def sln_parser(doc, d):
    """The flags of the released SLN scripts plus the engine's.

    The released names map onto the engine's with dest=: --epochs -> n_epoch,
    --noise_mode -> noise_type, --datapath -> data_root.
    """
    p = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("released flags")
    g.add_argument("--dataset", default=d["dataset"], help=", ".join(DATASETS))
    g.add_argument("--num_class", type=integer, default=d["num_class"],
                   help="class count; must match --dataset")
    g.add_argument("--datapath", dest="data_root", default=d["datapath"],
                   help="folder holding the data set (and the release's label_noisy/ files)")
    g.add_argument("--batch_size", type=integer, default=d["batch_size"])
    g.add_argument("--epochs", dest="n_epoch", type=integer, default=d["n_epoch"])
    g.add_argument("--lr", type=finite_float, default=d["lr"], help="first lr of the plan")
    g.add_argument("--noise_mode", dest="noise_type", default=d["noise_mode"],
                   help="sym, asym, dependent, openset; also clean, symmetric, pairflip, instance; "
                        "CIFAR-N: aggre, worst, rand1, rand2, rand3, noisy100, clean100 and their "
                        "synthetic twins <type>_twin; real (Clothing1M)")
    g.add_argument("--noise_rate", type=finite_float, default=d["noise_rate"])
    g.add_argument("--sigma", type=finite_float, default=d["sigma"],
                   help="std of the stochastic label noise (0: none)")
    g.add_argument("--correction", type=integer, default=d["correction"],
                   help="label correction after this many epochs; -1 or any value outside "
                        "1..epochs-1: never")
    g.add_argument("--gpu_id", type=integer, default=0,
                   help="CUDA device index, used when CUDA is present and --device is auto")
    g = p.add_argument_group("added")
    g.add_argument("--result_dir", default="results", help="where run folders go")
    g.add_argument("--ema_decay", type=finite_float, default=d["ema_decay"],
                   help="decay of the momentum model (SLN-MO); 0: no momentum model (plain SLN)")
    g.add_argument("--correction_aug", choices=["on", "off"], default=None,
                   help="label correction predicts on augmented training images (on: the default, "
                        "as released) or on the images themselves (off)")
    add_engine_flags(p, d)
    return p


def require(checks):
    """Raise the UserError of the first (ok, message) pair that is not ok."""
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def check_device(name):
    """auto, cpu, cuda or cuda:N; CUDA ones need a visible device (checked by pick_device)."""
    head, _, index = name.partition(":")
    if not (name in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())):
        raise UserError(f"--device {name!r} is not a device of this code; use auto, cpu, cuda or cuda:N")


def check_folder_flag(flag, path):
    if not path:
        raise UserError(f"{flag} is empty (an unset shell variable?): pass a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder: pass a folder")


def check_file_flag(flag, path, missing_ok=False):
    """A file flag names an existing regular file (or nothing there, with `missing_ok`)."""
    if missing_ok and path is not None and not os.path.lexists(path):
        return
    if path is not None and not os.path.isfile(path):
        what = ("a folder, not a file" if os.path.isdir(path) else
                "not a regular file" if os.path.exists(path) else "no such file")
        raise UserError(f"{flag} {path}: {what}; pass the path of an existing file")


def resolve_if_exists(cfg):
    """--resume and --overwrite are spellings of --if_exists auto and overwrite."""
    spelled = [v for v, on in (("auto", cfg.resume), ("overwrite", cfg.overwrite)) if on]
    if cfg.if_exists is not None:
        spelled.append(cfg.if_exists)
    if len(set(spelled)) > 1:
        raise UserError(f"--if_exists {' and '.join(sorted(set(spelled)))} contradict each other "
                        "(--resume is --if_exists auto, --overwrite is --if_exists overwrite): keep one")
    cfg.if_exists = spelled[0] if spelled else "refuse"
    if cfg.retry_diverged and cfg.if_exists != "auto":
        raise UserError("--retry_diverged applies to --if_exists auto (or --resume): add it, or "
                        "use --if_exists overwrite")


def validate(cfg):
    """Range checks of the shared flags; a UserError names the value and the valid range.
    Aliases are normalised here, once (sym -> symmetric), so equal runs share a folder."""
    if cfg.noise_type is None:  # the GLS scripts: symmetric as released, real on Clothing1M
        cfg.noise_type = "real" if cfg.dataset == "clothing1m" else "symmetric"
    cfg.noise_type = canonical_noise_type(cfg.noise_type)
    resolve_if_exists(cfg)
    check_device(cfg.device)
    require([
        (cfg.dataset in DATASETS, f"--dataset {cfg.dataset!r} is unknown; choose one of {', '.join(DATASETS)}"),
        (0.0 <= cfg.noise_rate < 1.0, f"--noise_rate {cfg.noise_rate} is outside [0, 1)"),
        (cfg.n_epoch >= 1, f"--n_epoch/--epochs {cfg.n_epoch} must be at least 1"),
        (cfg.batch_size >= 2, f"--batch_size {cfg.batch_size} must be at least 2 (BatchNorm "
                              "trains on batch statistics)"),
        (cfg.test_batch_size >= 1, f"--test_batch_size {cfg.test_batch_size} must be at least 1"),
        (cfg.lr > 0, f"--lr {cfg.lr} must be positive"),
        (cfg.lr_gamma > 0, f"--lr_gamma {cfg.lr_gamma} must be positive (the lr is multiplied by it)"),
        (0.0 <= cfg.momentum < 1.0, f"--momentum {cfg.momentum} is outside [0, 1)"),
        (cfg.weight_decay >= 0, f"--weight_decay {cfg.weight_decay} must be >= 0"),
        (not cfg.nesterov or cfg.momentum > 0, "--nesterov needs --momentum > 0 (or --no-nesterov)"),
        (cfg.loss_bound >= 0, f"--loss_bound {cfg.loss_bound} must be >= 0 (0 disables the bound)"),
        (cfg.model in MODELS, f"--model {cfg.model!r} is unknown; choose one of {', '.join(MODELS)}"),
        (cfg.width is None or cfg.width >= 1, f"--width {cfg.width} must be at least 1"),
        (0 <= cfg.seed < SEED_RANGE, f"--seed {cfg.seed} is outside [0, 2^32)"),
        (0 <= cfg.noise_seed < SEED_RANGE, f"--noise_seed {cfg.noise_seed} is outside [0, 2^32)"),
        (0.0 <= cfg.val_fraction < 0.5, f"--val_fraction {cfg.val_fraction} is outside [0, 0.5)"),
        (not (cfg.val_fraction and cfg.dataset == "clothing1m"),
         "clothing1m has a clean validation split of its own: drop --val_fraction"),
        (not cfg.record_train_probs or (cfg.val_fraction == 0 and cfg.dataset != "clothing1m"),
         "--record_train_probs predicts every training image each epoch: it needs the whole "
         "training set (no --val_fraction) and a data set held in memory (not clothing1m)"),
        (all(0.0 < m < 1.0 for m in cfg.lr_milestones),
         f"--lr_milestones {cfg.lr_milestones} must be fractions of the run in (0, 1)"),
        (cfg.print_freq >= 1 and cfg.ckpt_every >= 1, "--print_freq and --ckpt_every must be >= 1"),
        (cfg.num_per_class >= 1 or cfg.num_per_class == -1,
         f"--num_per_class {cfg.num_per_class} must be at least 1, or -1 for every image"),
        (cfg.image_size >= 8, f"--image_size {cfg.image_size} must be at least 8"),
        (cfg.num_workers >= 0, f"--num_workers {cfg.num_workers} must be >= 0"),
        (not (cfg.no_pretrained and cfg.pretrained_path),
         "--no_pretrained and --pretrained_path exclude each other: keep one"),
        (not cfg.pretrained_path or cfg.model in PRETRAINED,
         f"--pretrained_path gives ImageNet weights to {', '.join(PRETRAINED)}; --model {cfg.model} "
         "always starts from random weights: drop --pretrained_path or use --model resnet50"),
        (cfg.model != "resnet50" or cfg.dataset != "digits",
         "--model resnet50 takes 3-channel images; digits are 1-channel: use resnet18, resnet34, "
         "preact_resnet18 or wrn28_2"),
        (cfg.model != "cnn" or cfg.dataset in ("cifar10", "cifar100"),
         f"--model cnn is the release's network for 32x32 CIFAR images, not {cfg.dataset}: use a ResNet"),
    ])
    check_file_flag("--noise_file", cfg.noise_file)
    check_file_flag("--noise_path", cfg.noise_path, missing_ok=True)  # downloaded when missing
    check_file_flag("--pretrained_path", cfg.pretrained_path)
    check_folder_flag("--result_dir", cfg.result_dir)
    check_folder_flag("--data_root/--datapath", cfg.data_root)
    check_noise_fits(cfg.dataset, dataset_num_classes(cfg.dataset), cfg.noise_type, cfg.noise_file)


def validate_gls(cfg):
    validate(cfg)
    require([
        (cfg.smooth_rate <= 1.0, f"--smooth_rate {cfg.smooth_rate} is above 1: the target's "
                                 "true-class weight 1 - r would be negative; use r <= 1 (negative r is NLS)"),
        (cfg.wa >= 0 and cfg.wb >= 0, f"--wa {cfg.wa} and --wb {cfg.wb} weigh losses: both must be >= 0"),
        (cfg.wa + cfg.wb > 0, "--wa and --wb are both 0: the loss would be 0; set one of them"),
    ])


def validate_sln(cfg):
    """validate() plus the SLN flags. --gpu_id becomes --device cuda:N when --device is
    auto and CUDA is present (an explicit --device wins)."""
    validate(cfg)
    num_classes = dataset_num_classes(cfg.dataset)
    require([
        (cfg.num_class == num_classes, f"--num_class {cfg.num_class} does not match {cfg.dataset}, "
                                       f"which has {num_classes} classes: pass --num_class {num_classes}"),
        (cfg.sigma >= 0, f"--sigma {cfg.sigma} must be >= 0"),
        (0.0 <= cfg.ema_decay < 1.0,
         f"--ema_decay {cfg.ema_decay} is outside [0, 1); 0 means no momentum model"),
        (cfg.gpu_id >= 0, f"--gpu_id {cfg.gpu_id} must be >= 0"),
    ])
    if cfg.correction_aug == "on":  # the default, as released: one name for one run
        cfg.correction_aug = None
    if cfg.device == "auto" and torch.cuda.is_available():
        if cfg.gpu_id >= torch.cuda.device_count():
            raise UserError(f"--gpu_id {cfg.gpu_id}: only {torch.cuda.device_count()} CUDA "
                            "device(s) visible")
        cfg.device = f"cuda:{cfg.gpu_id}"


def find_warmup_checkpoint(cfg, which="best"):
    """The checkpoint main_warmup.py wrote for this data set, noise and model.

    `which` is best, last or a path. Among matching finished warm-ups, one with the
    same --seed is preferred; several equally good candidates are an error. A damaged
    warm-up folder is skipped with a warning naming it. The checkpoint's record of its
    labels and model is checked when it is loaded (utils.engine.load_init_weights).
    """
    if which not in ("best", "last"):
        check_file_flag("--warmup_ckpt", which)
        return which
    keys = ("dataset", "noise_type", "noise_rate", "noise_seed", "noise_source", "model", "width",
            "val_fraction", "noise_file", "noise_path")
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
        if all(warm.get(k) == getattr(cfg, k, None) for k in keys) and \
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


# Errors of the file system, not of the code: a message is clearer than a traceback.
DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some of your quota",
               errno.EROFS: "use a writable --result_dir"}


def run_main(main):
    """Run a script's main(); bad input ends with its message and exit status 2. A full disk
    or quota ends with its message and exit status 1: every file is written atomically, so
    the run folder keeps its last complete state (a run records `failed`), and the same
    command with --if_exists auto continues or restarts it."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror}{where}: {DISK_ERRORS[exc.errno]}, then rerun the same command "
              "with --if_exists auto (the last complete checkpoint was kept)", file=sys.stderr)
        code = 1
    sys.exit(code)
