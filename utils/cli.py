"""The scripts' flags: a preset (a method plus a protocol's defaults) becomes a parser, and
the parsed flags are checked once, before anything is read or written.

Flags come from four places, each declaring its own: the released scripts' names (the
GLS and SLN families, each accepting the other's spelling of the flags they share), the
engine's, the data sets' and noise types' (data/), and the method's (methods/). A bad
value is a UserError naming the value, the valid range and the fix.
"""
import argparse
import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from core.args import SEED_RANGE, Parser, check_device, finite_float, flag_dests, flag_table, integer
from core.device import PRECISIONS
from core.files import NAME_MAX, check_folder_path
from data import add_data_flags, canonical_noise_type, check_data_flags, dataset_names, dataset_spec, noise_types_help
from errors import UserError
from methods import get_method, methods
from models import MODELS, PRETRAINED, canonical_model, check_model_fits

NO_OP = "accepted for compatibility with the released code, where it did nothing"
# Flags that change nothing a run computes (the released no-ops, the class count that must
# match the data set, the method's name) and settings that change only its evaluation:
# left out when a run is compared with a run of another script or method.
NOT_TRAINING = {"loss", "top_bn", "ideal", "num_class", "method", "test_batch_size", "record_train_probs"}


@dataclass
class Preset:
    """A script: a method plus the defaults of the protocol it runs.

    family: the released flag names it takes ("gls", "sln", or None for train.py's own);
    method_options: keyword arguments of the method's from_config (SLN on Clothing1M mixes
    in soft predictions); requires: the script whose run must finish first (a sweep orders
    them); init_from(cfg): the checkpoint the run starts from, looked up only once the run
    folder says the run has to train; extra_flags(parser): flags of this script alone;
    needs(cfg): [data.DataFile] the run reads besides its data (a checkpoint to start from),
    checked by sweep.py before anything starts.
    """
    script: str
    method: str
    defaults: dict
    doc: str = ""
    family: Optional[str] = None
    method_options: dict = field(default_factory=dict)
    requires: Optional[str] = None
    init_from: Optional[Callable] = None
    extra_flags: Optional[Callable] = None
    needs: Optional[Callable] = None

    def parser(self, method_cls=None):
        return build_parser(self, method_cls or get_method(self.method))

    def parse(self, argv=None):
        """(cfg, method class): the checked flags of this script."""
        method_cls = get_method(self.method)
        parser = self.parser(method_cls)
        cfg = parser.parse_args(argv)
        validate(cfg, self, method_cls)
        refuse_unused_flags(cfg, parser.get_default)
        return cfg, method_cls


# ---------------------------------------------------------------- the parser

def build_parser(preset, method_cls):
    d = preset.defaults
    p = Parser(prog=f"{preset.script}.py", description=preset.doc,
               flag_owner=functools.partial(flag_owner, method_cls))
    add_released_flags(p, preset, method_cls)
    if preset.extra_flags:
        preset.extra_flags(p)
    add_engine_flags(p, d)
    return p


def add_released_flags(p, preset, method_cls):
    """The released scripts' flags, in their order and spelling; train.py takes the same."""
    d, family = preset.defaults, preset.family
    noise_help = f"noise type; {noise_types_help()}"
    if d.get("noise_type") is None:  # else the formatter appends the default
        noise_help += " (default: symmetric, real on clothing1m)"
    epochs = ("--epochs", "--n_epoch") if family == "sln" else ("--n_epoch", "--epochs")
    root = ("--datapath", "--data_root") if family == "sln" else ("--data_root", "--datapath")
    noise = ("--noise_mode", "--noise_type") if family == "sln" else ("--noise_type", "--noise_mode")
    g = p.add_argument_group("released flags" if family else "the experiment")
    if family != "sln":
        if family is None:
            g.add_argument("--method", default=method_cls.name, help=f"one of {', '.join(sorted(methods()))}")
        g.add_argument("--lr", type=finite_float, default=d["lr"], help="first lr of the plan")
        if family == "gls":
            g.add_argument("--loss", default="gls", help=f"{NO_OP}: --wa/--wb/--smooth_rate set the loss")
        g.add_argument("--result_dir", default="results", help="where run folders go")
        g.add_argument("--noise_rate", type=finite_float, default=d.get("noise_rate", 0.2), help="noise rate r")
        g.add_argument(*noise, dest="noise_type", default=d.get("noise_type"), help=noise_help)
        g.add_argument("--dataset", default=d.get("dataset", "cifar10"), help=", ".join(dataset_names()))
        g.add_argument(*epochs, dest="n_epoch", type=integer, default=d["n_epoch"], help="training epochs")
        m = g if family == "gls" else p.add_argument_group(f"method {method_cls.name}: {method_cls.summary}")
        method_cls.add_flags(m, d)
        if family == "gls":
            g.add_argument("--top_bn", action="store_true", help=NO_OP)
            g.add_argument("--ideal", action="store_true", help=NO_OP)
        g = p.add_argument_group("data")
        g.add_argument(*root, dest="data_root", default=d.get("data_root", "./data"),
                       help="folder holding the data set (Clothing1M: images/ and the annotation files)")
        g.add_argument("--batch_size", type=integer, default=d["batch_size"], help="training batch size")
        return
    g.add_argument("--dataset", default=d["dataset"], help=", ".join(dataset_names()))
    g.add_argument("--num_class", type=integer, default=None,
                   help="class count (default: the --dataset's, e.g. 10 for cifar10); a value given "
                        "must match it")
    g.add_argument(*root, dest="data_root", default=d["data_root"],
                   help="folder holding the data set (and the release's label_noisy/ files)")
    g.add_argument("--batch_size", type=integer, default=d["batch_size"], help="training batch size")
    g.add_argument(*epochs, dest="n_epoch", type=integer, default=d["n_epoch"], help="training epochs")
    g.add_argument("--lr", type=finite_float, default=d["lr"], help="first lr of the plan")
    g.add_argument(*noise, dest="noise_type", default=d["noise_type"], help=noise_help)
    g.add_argument("--noise_rate", type=finite_float, default=d["noise_rate"], help="noise rate r")
    method_cls.add_flags(g, d)  # --sigma, --correction (released), --ema_decay, --correction_aug
    g.add_argument("--gpu_id", type=integer, default=0,
                   help="CUDA device index, used when CUDA is present and --device is auto")
    g = p.add_argument_group("added")
    g.add_argument("--result_dir", default="results", help="where run folders go")


def add_engine_flags(p, d):
    """Flags of the engine (utils/engine.py) that every script has."""
    g = p.add_argument_group("training engine")
    g.add_argument("--model", default=d.get("model", "resnet"),
                   help=f"one of {', '.join(MODELS)} (resnet is ResNet-34)")
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
                        "the GLS release's generator")
    g.add_argument("--noise_file", default=None, metavar="PATH",
                   help="read the noisy labels from a label,label_noisy CSV (the SLN release's "
                        "format; its clean column must equal the data set's labels)")
    g.add_argument("--test_batch_size", type=integer, default=d["test_batch_size"], help="evaluation batch size")
    g.add_argument("--lr_milestones", type=finite_float, nargs="*", default=d["lr_milestones"],
                   help="epochs where the lr is multiplied by --lr_gamma, as fractions of the epoch count")
    g.add_argument("--lr_gamma", type=finite_float, default=d.get("lr_gamma", 0.1), help="lr factor at a milestone")
    g.add_argument("--cosine_lr_min", type=finite_float, default=d.get("cosine_lr_min"), metavar="LR",
                   help="cosine plan instead of milestones: the lr falls from --lr to this over the run, "
                        "once per epoch (PyTorch's CosineAnnealingLR with T_max = --n_epoch); needs "
                        "--lr_milestones without values")
    g.add_argument("--momentum", type=finite_float, default=d["momentum"], help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"],
                   help="Nesterov momentum")
    g.add_argument("--weight_decay", type=finite_float, default=d["weight_decay"], help="SGD weight decay")
    g.add_argument("--val_fraction", type=finite_float, default=d.get("val_fraction", 0.0),
                   help="hold out this fraction of the noisy train set as a noisy validation split "
                        "(honest model selection: summary.json gets test_acc_at_best_val)")
    g.add_argument("--record_train_probs", action="store_true",
                   help="after every epoch, predict the training set without augmentation and keep "
                        "the mean softmax over the epochs in train_probs.npy; on clean labels this "
                        "makes instance-dependent noise: python3 -m data.idn --run RUN_DIR")
    g.add_argument("--device", default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 as the papers trained (on CUDA with PyTorch's default TF32 convolutions); "
                        "fp32_strict: no TF32 anywhere; bf16 autocast; fp16 autocast with a gradient "
                        "scaler (GPUs without bf16)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only, no cuDNN autotuning (an operation without a "
                        "deterministic implementation stops the run, naming it)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--loss_bound", type=finite_float, default=1e4,
                   help="stop as diverged when the batch loss is non-finite or |loss| exceeds this "
                        "(0 disables the bound; non-finite losses always stop the run)")
    g.add_argument("--print_freq", type=integer, default=d.get("print_freq", 50),
                   help="steps between divergence checks (each costs one host sync)")
    g.add_argument("--ckpt_every", type=integer, default=1, help="epochs between last.pt checkpoints")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write the per-epoch metrics as TensorBoard event files in <run>/tensorboard")
    g = p.add_argument_group("the run folder")
    g.add_argument("--if_exists", choices=["refuse", "auto", "overwrite"], default=None,
                   help="what to do when the run folder holds results: refuse (the default); auto: "
                        "a finished run is left as it is (exit 0), a diverged one too (exit 3), an "
                        "unfinished one is resumed from last.pt or, without one, started again; "
                        "a run made by other code or data is refused (see --keep_stale); "
                        "overwrite: delete its results and start again")
    g.add_argument("--resume", "-r", action="store_true", help="the same as --if_exists auto")
    g.add_argument("--overwrite", action="store_true", help="the same as --if_exists overwrite")
    g.add_argument("--retry_diverged", action="store_true",
                   help="with --if_exists auto: train a diverged run again instead of keeping it")
    g.add_argument("--keep_stale", action="store_true",
                   help="with --if_exists auto: keep (or resume) a run made by other code or data, "
                        "deliberately; the decision is recorded in its summary.json")
    g.add_argument("--print_run_dir", action="store_true",
                   help="print the run folder these flags map to, and exit")
    g.add_argument("--smoke", action="store_true",
                   help="mark the run as a smoke run on stand-in data (sweep.py paper --smoke sets it): "
                        "summarize.py never mixes it with real runs")
    r = p.add_argument_group("data sets and models")
    r.add_argument("--noise_path", default=None, metavar="PATH",
                   help="CIFAR-N label file for the human noise types (default: "
                        "<data root>/CIFAR-10_human.pt or CIFAR-100_human.pt; downloaded when missing)")
    add_data_flags(r, d)
    r.add_argument("--pretrained_path", default=None, metavar="PATH",
                   help="resnet50: ImageNet weights from this file instead of torchvision's download")
    r.add_argument("--no_pretrained", action="store_true",
                   help="resnet50: start from random weights instead of ImageNet's")


@functools.lru_cache(maxsize=None)
def method_flags(method_cls):
    """The option strings and dests of a method's flags."""
    p = argparse.ArgumentParser(add_help=False)
    method_cls.add_flags(p, {})
    return set(flag_table(p)), flag_dests(p)


def flag_owner(method_cls, flag):
    """Where an unknown flag belongs: "a flag of method gls, not of this run's method gce"."""
    owners = sorted(name for name, cls in methods().items() if cls is not method_cls
                    and flag in method_flags(cls)[0])
    if owners:
        own = sorted(method_flags(method_cls)[0])
        return (f"a flag of method {' and '.join(owners)}, not of this run's method {method_cls.name}"
                + (f" (its flags: {' '.join(own)})" if own else " (it has no flags of its own)"))
    return None


# ---------------------------------------------------------------- checks

def require(checks):
    """Raise the UserError of the first (ok, message) pair that is not ok."""
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def check_folder_flag(flag, path):
    """A folder flag (--result_dir, --data_root) names a folder, or a place where one can be
    made: a folder that does not exist yet is made by the run (whether it can be written is
    for the run folder's lock to say, utils/results.py)."""
    check_folder_path(flag, path, file_fix="pass a folder")
    long = [p for p in path.split(os.sep) if len(os.fsencode(p)) > NAME_MAX]
    if long:
        raise UserError(f"{flag}: the folder name {long[0][:40]!r}... has {len(os.fsencode(long[0]))} bytes, "
                        f"more than the system's limit of {NAME_MAX}: use a shorter name")


def check_file_flag(flag, path, missing_ok=False):
    """A file flag names an existing regular file (or nothing there, with `missing_ok`)."""
    if missing_ok and path and not os.path.lexists(path):  # an empty path is never a file to come
        return
    if path is not None and not os.path.isfile(path):
        what = ("a folder, not a file" if os.path.isdir(path) else
                "not a regular file" if os.path.exists(path) else
                f"a symbolic link to nothing ({os.readlink(path)})" if os.path.islink(path) else "no such file")
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
    for flag in ("retry_diverged", "keep_stale"):
        if getattr(cfg, flag) and cfg.if_exists != "auto":
            raise UserError(f"--{flag} applies to --if_exists auto (or --resume): add it, or use "
                            "--if_exists overwrite")


def validate(cfg, preset, method_cls):
    """Every check the flags alone decide; aliases are normalised here, once (sym ->
    symmetric, resnet34 -> resnet, -0 -> 0), so that equal runs share a folder."""
    spec = dataset_spec(cfg.dataset)
    if cfg.noise_type is None:
        cfg.noise_type = spec.default_noise
    cfg.noise_type = canonical_noise_type(cfg.noise_type)
    cfg.model = canonical_model(cfg.model)
    resolve_if_exists(cfg)
    check_device(cfg.device)
    require([
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
        (not (cfg.val_fraction and spec.has_val),
         f"{spec.name} has a validation split of its own: drop --val_fraction"),
        (not cfg.record_train_probs or (cfg.val_fraction == 0 and spec.in_memory),
         "--record_train_probs predicts every training image each epoch: it needs the whole "
         f"training set (no --val_fraction) and a data set held in memory (not {spec.name})"),
        (cfg.cosine_lr_min is None or 0.0 <= cfg.cosine_lr_min <= cfg.lr,
         f"--cosine_lr_min {cfg.cosine_lr_min} is outside [0, --lr {cfg.lr}]"),
        (cfg.cosine_lr_min is None or not cfg.lr_milestones,
         f"--cosine_lr_min replaces the milestones {cfg.lr_milestones}: pass --lr_milestones "
         "without values, or drop --cosine_lr_min"),
        (all(0.0 < m < 1.0 for m in cfg.lr_milestones),
         f"--lr_milestones {cfg.lr_milestones} must be fractions of the run in (0, 1)"),
        (cfg.print_freq >= 1 and cfg.ckpt_every >= 1, "--print_freq and --ckpt_every must be >= 1"),
        (not (cfg.no_pretrained and cfg.pretrained_path),
         "--no_pretrained and --pretrained_path exclude each other: keep one"),
        (not cfg.pretrained_path or cfg.model in PRETRAINED,
         f"--pretrained_path gives ImageNet weights to {', '.join(PRETRAINED)}; --model {cfg.model} "
         "always starts from random weights: drop --pretrained_path or use --model resnet50"),
    ])
    check_model_fits(cfg.model, spec)
    # a file gone is refused when a run must read it (a fresh start); a run that has started
    # takes its labels from its own folder
    check_file_flag("--noise_file", cfg.noise_file, missing_ok=True)
    check_file_flag("--noise_path", cfg.noise_path, missing_ok=True)  # downloaded when missing
    check_file_flag("--pretrained_path", cfg.pretrained_path)
    check_folder_flag("--result_dir", cfg.result_dir)
    check_folder_flag("--data_root/--datapath", cfg.data_root)
    check_data_flags(cfg)
    method_cls.check_flags(cfg)
    if preset.family == "sln":
        validate_sln_family(cfg, spec)


def refuse_unused_flags(cfg, default):
    """A flag that only some runs read (a data set's or a noise type's own, a rate or a factor
    of a plan this run lacks), set away from its default on a run that does not read it, is
    refused: no flag is accepted and then dropped. `default(dest)`: the parser's default."""
    from data import flags_of_others, noise_type

    def changed(dest):
        return getattr(cfg, dest) != default(dest)

    for dest, (kind, name) in flags_of_others(cfg).items():
        if changed(dest):
            raise UserError(f"--{dest} is a flag of the {kind} {name}, and this run (--dataset {cfg.dataset}, "
                            f"noise type {cfg.noise_type}) does not read it: drop it")
    noise = noise_type(cfg.noise_type)
    require([
        (noise.uses_rate or not changed("noise_rate"),
         f"noise type {noise.name} has no rate, so --noise_rate {cfg.noise_rate:g} would do nothing: drop it"),
        (cfg.lr_milestones or not changed("lr_gamma"),
         f"--lr_gamma {cfg.lr_gamma:g} multiplies the lr at --lr_milestones, and this run has none (a "
         "constant lr): drop it, or give the milestones"),
        (not cfg.noise_file or not changed("noise_seed"),
         f"--noise_seed {cfg.noise_seed} seeds drawn labels, and --noise_file gives them: drop one"),
        (cfg.noise_path is None or noise.group.startswith("CIFAR-N"),
         f"--noise_path names a CIFAR-N label file, and noise type {noise.name} reads none: drop it"),
    ])


def validate_sln_family(cfg, spec):
    """--num_class must match the data set; --gpu_id becomes --device cuda:N when --device is
    auto and CUDA is present (beside an explicit --device it is refused: one of the two would
    be dropped)."""
    if cfg.num_class is None:
        cfg.num_class = spec.num_classes
    require([
        (cfg.num_class == spec.num_classes, f"--num_class {cfg.num_class} does not match {cfg.dataset}, "
                                            f"which has {spec.num_classes} classes: pass --num_class {spec.num_classes}"),
        (cfg.gpu_id >= 0, f"--gpu_id {cfg.gpu_id} must be >= 0"),
        (cfg.gpu_id == 0 or cfg.device == "auto",  # checked before --gpu_id sets the device
         f"--gpu_id {cfg.gpu_id} picks the CUDA device when --device is auto, and --device "
         f"{cfg.device} decides here: drop one"),
    ])
    if cfg.device == "auto" and torch.cuda.is_available():
        if cfg.gpu_id >= torch.cuda.device_count():
            raise UserError(f"--gpu_id {cfg.gpu_id}: only {torch.cuda.device_count()} CUDA "
                            "device(s) visible")
        cfg.device = f"cuda:{cfg.gpu_id}"


def comparable_settings(cfg, preset, method_cls):
    """The settings a run shares with the CE run it is paired against, whichever script made
    either (summary.json's `comparable`): every setting that changes training but the seed
    and the method's own flags, and the script whose run it starts from (the warm-up)."""
    from .results import result_settings

    drop = method_flags(method_cls)[1] | NOT_TRAINING | {"seed"}
    settings = {k: v for k, v in result_settings(vars(cfg)).items() if k not in drop}
    return {**settings, "starts_from": preset.requires}


def run_preset(preset, argv=None):
    """Parse and check the flags of a preset, build its method, and train (utils.engine.run)."""
    from .engine import run
    from .plan import plan_run

    plan = plan_run(preset, argv)
    return run(plan.cfg, plan.script, plan.method, init_from=plan.init_from, comparable=plan.comparable)


def method_protocol(name, argv, defaults):
    """The training defaults the method's release uses on the data set argv's --dataset names
    (Method.protocol), read before the parser is built; {}: the script's own."""
    p = Parser(prog="train.py", add_help=False)
    p.add_argument("--dataset", default=defaults.get("dataset", "cifar10"))
    known, _ = p.parse_known_args(argv)
    return get_method(name).protocol(known.dataset)


def choose_method(argv, doc):
    """The --method of train.py's command line, read before the rest (its flags depend on it).
    --help without --method lists the methods."""
    p = Parser(prog="train.py", add_help=False)
    p.add_argument("--method")
    p.add_argument("-h", "--help", action="store_true")
    known, _ = p.parse_known_args(argv)
    if known.method is None:
        listing = "\n".join(f"  {name:<12} {cls.summary}" for name, cls in sorted(methods().items()))
        if known.help:
            print(f"{doc}\nmethods (python3 train.py --method NAME --help shows one's flags):\n{listing}")
            raise SystemExit(0)
        p.error(f"--method is required; choose one of:\n{listing}")
    return get_method(known.method).name
