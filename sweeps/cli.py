"""Sweeps of any training script over any of its flags, on this machine's GPUs/CPUs or as
SLURM job arrays (docs/SWEEPS.md is the manual).

    python3 sweep.py train.py --method gls --grid "smooth_rate=0.4 -2.0" --seeds "0 1 2" --gpus "0 1"
    python3 sweep.py train.py --grid "method=gls gce elr" --smooth_rate 0 --seeds "0 1"
    python3 sweep.py main_GLS_load.py --grid "smooth_rate=0.4 -2.0" --grid "lr=1e-6 1e-5"
    python3 sweep.py gls --noise "symmetric:0.2 symmetric:0.4" --seeds "0 1 2" --gpus "0 1"
    python3 sweep.py sln --noise "sym:0.4 asym:0.4" --sigmas "0.1 1.0" --slots 2 --correction -1
    python3 sweep.py gls --slurm --sbatch_args "-p gpu --gres=gpu:1 --time=12:00:00" --array_parallel 16
    python3 sweep.py paper --list; python3 sweep.py paper gls-cifar10 --dry-run   (docs/PAPERS.md)

The runs are the product of the --grid flags (and --seeds); flags the sweep does not know
go to every run that accepts them. `--grid method=...` (train.py) makes runs of several
methods: a method's own flags go to its runs only. A script that needs another run first
(main_GLS_load.py needs its CE warm-up) says so in its preset, and the sweep adds those
runs and starts each dependent run once its warm-up has finished. `gls` and `sln` are the
papers' sweeps: GLS over smooth rates (warm-up then load, from scratch, or both), SLN over
sigmas. `paper NAME` runs a paper table's recipe (papers/), printing its runs, epochs and
estimated GPU-hours first.

Every run is started as `PYTHON SCRIPT FLAGS --if_exists auto`: the training script
decides, holding its run folder's lock, whether the run is resumed from last.pt or
started over. A run whose folder already holds its result (finished, or diverged without
--retry_diverged), made by the same code and data, is reported from its folder without
starting a process. The sweep keeps no state of its own: after Ctrl-C, a crash, a reboot
or a time limit, the same command completes the sweep. Before starting anything it
checks every run's flags with the script's own parser, and that no run folder holds a
result made by other code or data.
"""
import argparse
import os
import shlex
import shutil
import sys

from core.args import Parser, flag_table
from core.files import check_output_folder
from errors import UserError

from . import SweepError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GLS_SMOOTH_RATES = "0.8 0.6 0.4 0.2 0.0 -0.2 -0.4 -0.6 -0.8 -1.0 -2.0 -4.0 -6.0 -8.0"  # the paper's
SLN_SIGMAS = "0.1 0.2 0.5 1.0"
GLS_MODES = {"load": ["main_GLS_load"], "direct": ["main_GLS_direct_train"],
             "both": ["main_GLS_load", "main_GLS_direct_train"]}
MAX_REQUEUES = 10  # a run with more than 11 time-limit slices should ask for a longer --time
PAPER_BENCH = "bench_*.json"  # papers/cost.py: benchmarks read by default for `sweep.py paper`
# The longest name the sweep writes in its log folder.
LOG_FILE_ROOM = len("/tasks_warmup10.jsonl")


def build_parser(kind):
    """The sweep's own options; `kind` is gls, sln, paper or a script name."""
    paper = kind in ("gls", "sln")
    p = Parser(prog=f"sweep.py {kind if paper or kind == 'paper' else kind + '.py'}"
               + (" NAME" if kind == "paper" else ""), description=__doc__,
               epilog="Every other flag goes to each run, e.g. --dataset cifar100 --n_epoch 50 "
                      "--result_dir results/c100. Relative paths are relative to the current folder, as for "
                      "the scripts.")
    g = p.add_argument_group("the runs")
    if kind == "gls":
        g.add_argument("--smooth_rates", default=GLS_SMOOTH_RATES, help="smooth rates; the default is the paper's")
        g.add_argument("--noise", default="symmetric:0.2", metavar="'TYPE:RATE ...'",
                       help="--noise_type/--noise_rate settings, e.g. 'symmetric:0.4 pairflip:0.2'")
        g.add_argument("--mode", default="load", choices=list(GLS_MODES),
                       help="load: CE warm-up, then GLS from it; direct: from scratch; both")
    if kind == "sln":
        g.add_argument("--sigmas", default=SLN_SIGMAS, help="sigmas")
        g.add_argument("--noise", default="sym:0.4", metavar="'MODE:RATE ...'",
                       help="--noise_mode/--noise_rate settings, e.g. 'sym:0.4 asym:0.4'")
    if kind == "paper":
        g.add_argument("--list", action="store_true", help="list the recipes: what each reproduces, its runs")
        g.add_argument("--smoke", action="store_true",
                       help="run every run of the recipe at a tiny size on stand-in data (its own folder, "
                            "default results/smoke), then print summarize.py --paper's table of them")
        g.add_argument("--bench", action="append", metavar="FILE",
                       help="a bench/throughput.py --json result of your GPU, for the estimate of "
                            f"GPU-hours (default: the files {PAPER_BENCH} in the repository root); repeatable")
    else:
        g.add_argument("--grid", action="append", metavar="FLAG='V1 V2 ...'",
                       help="values of one flag of the runs; several --grid make their product"
                            + ("; --grid method='gls gce' makes runs of several methods" if kind == "train" else ""))
    g.add_argument("--seeds", default="0" if paper else None, metavar="'S1 S2 ...'",
                   help="training seeds (--seed of the runs), e.g. '0 1 2'"
                        + ("; default: the recipe's" if kind == "paper" else ""))
    g.add_argument("--warmup_args", metavar="'FLAGS'",
                   help="flags for the runs another run needs first (the warm-ups) only, "
                        "e.g. '--n_epoch 30 --lr 0.1'")
    g.add_argument("--stage_args", action="append", metavar="SCRIPT='FLAGS'",
                   help="flags for the runs of one script of the sweep only, e.g. "
                        "main_warmup='--n_epoch 30'")
    g.add_argument("--log_dir", help="per-run logs, outcomes.tsv, SLURM task files "
                                     "(default <result_dir>/sweep_logs/sweep_<name>)")
    g.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    g = p.add_argument_group("runs already there")
    for flag, text in (("--retry_diverged", "start diverged runs over (by default a diverged run is a result)"),
                       ("--keep_stale", "keep (or resume) runs made by other code or data, deliberately; "
                                        "each run records the decision in its summary.json"),
                       ("--overwrite_stale", "retrain the runs made by other code or data (their results "
                                             "are deleted)")):
        g.add_argument(flag, action="store_true", help=text)
    g = p.add_argument_group("on this machine")
    g.add_argument("--gpus", help="GPUs to use, e.g. '0 1 2 3'; 'cpu' entries are CPU slots "
                                  "(default: every GPU nvidia-smi lists, else one CPU slot)")
    g.add_argument("--runs_per_gpu", type=positive_int, help="runs at a time per GPU (default 1)")
    g.add_argument("--slots", type=positive_int, help="N CPU slots sharing the cores")
    g.add_argument("--no_preload", action="store_true",
                   help="start each run on a CPU slot as a fresh Python process (by default such runs "
                        "are forked from one process that has imported torch and the project once, "
                        "seconds sooner a run; GPU slots always start fresh processes)")
    g = p.add_argument_group("SLURM")
    g.add_argument("--slurm", action="store_true", help="submit job arrays instead")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="write the task files and print the sbatch commands; submit nothing"
                        + ("; without --slurm: print the runs' count and cost," if kind == "paper" else
                           "; without --slurm: print") + " the runs with their states and the data check, "
                        "start nothing")
    g.add_argument("--sbatch_args", metavar="'OPTIONS'",
                   help="e.g. '-p gpu --gres=gpu:1 --cpus-per-task=4 --time=12:00:00'")
    g.add_argument("--array_parallel", type=positive_int, help="at most N tasks of an array at a time")
    g.add_argument("--max_requeues", type=natural_int,
                   help=f"times a task warned of its time limit requeues itself (default {MAX_REQUEUES})")
    return p


def positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return int(text)


def natural_int(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 0")
    return int(text)


def top_help():
    scripts = " ".join(f"{s}.py" for s in script_names())
    return (f"{__doc__}\nusage: sweep.py {{gls,sln,SCRIPT}} [options] [flags of the runs]\n"
            "       sweep.py paper {--list,NAME} [options] [flags of the runs]\n"
            f"  SCRIPT: one of {scripts}\n  sweep.py gls --help, sweep.py SCRIPT --help: the options")


def parse(argv):
    """(kind, options, words for the runs). `--opt VALUE` is joined into `--opt=VALUE` first,
    so that a value that looks like a flag (--sbatch_args --time=5) stays a value."""
    if not argv or argv[0] in ("-h", "--help"):
        if argv:
            print(top_help())
            raise SystemExit(0)
        raise SweepError(f"name the sweep: gls, sln or a script ({top_help().splitlines()[-2].strip()})")
    kind = argv[0] if argv[0] in ("gls", "sln", "paper") else script_name(argv[0])
    argv = argv[1:]
    recipe = None
    if kind == "paper" and argv and not argv[0].startswith("-"):
        recipe, argv = argv[0], argv[1:]
    argv, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = build_parser(kind)
    valued = {s for s, flag in flag_table(parser).items() if flag.takes_value}
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in valued and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    opts, passed = parser.parse_known_args(joined)
    opts.recipe = recipe
    if kind == "paper" and recipe is None and not opts.list:
        raise SweepError("name the recipe: sweep.py paper NAME (sweep.py paper --list lists them)")
    opts.grid, opts.stage_args = getattr(opts, "grid", None) or [], opts.stage_args or []
    opts.warmup_args, opts.sbatch_args = opts.warmup_args or "", opts.sbatch_args or ""
    return kind, opts, passed + rest


def script_name(arg):
    """The module name of a training script given as train.py, ./train.py or train."""
    name = os.path.basename(arg)
    name = name[:-len(".py")] if name.endswith(".py") else name
    if not name.isidentifier() or name not in script_names():
        scripts = ", ".join(f"{s}.py" for s in script_names())
        raise SweepError(f"{arg!r} is neither a sweep (gls, sln, paper) nor a training script of this project; "
                         f"sweep one of {scripts}")
    return name


def script_names():
    """The project's training scripts: the files of the root folder that define preset()."""
    names = []
    for entry in sorted(os.listdir(ROOT)):
        if entry.endswith(".py") and entry != "sweep.py":
            with open(os.path.join(ROOT, entry), "rb") as f:
                if b"\ndef preset(" in f.read():
                    names.append(entry[:-len(".py")])
    return names


def split_words(text, option):
    """The shell words of an option's value; a quote left open is an error, not a traceback."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise SweepError(f"{option} {text!r}: {exc} (the value is read as shell words): close the "
                         "quote, or quote the whole value once") from None


def numbers(text, option, kind=float):
    """The words of a list option, checked to be numbers (kept as written)."""
    words = text.split()
    if not words:
        raise SweepError(f"{option} is empty: give one or more values, e.g. {option} '0 1'")
    for word in words:
        try:
            kind(word)
        except ValueError:
            raise SweepError(f"{option} {text!r}: {word!r} is not "
                             f"{'an integer' if kind is int else 'a number'}") from None
    return words


def noise_settings(text, example):
    """[(type, rate)] of --noise 'TYPE:RATE ...'."""
    settings = []
    for setting in text.split():
        kind, _, rate = setting.partition(":")
        try:
            float(rate)
        except ValueError:
            kind = ""
        if not kind:
            raise SweepError(f"--noise {setting}: write TYPE:RATE, e.g. {example}")
        settings.append((kind, rate))
    if not settings:
        raise SweepError(f"--noise is empty: give one or more TYPE:RATE, e.g. {example}")
    return settings


def check_options(opts, kind=None):
    """Every refusal the sweep's own options decide, before a script is imported."""
    from .launch.slurm import time_limit_s

    if opts.keep_stale and opts.overwrite_stale:
        raise SweepError("--keep_stale and --overwrite_stale contradict each other: keep one")
    local = [f for f, on in (("--gpus", opts.gpus is not None), ("--slots", opts.slots),
                             ("--runs_per_gpu", opts.runs_per_gpu)) if on]
    cluster = [f for f, on in (("--sbatch_args", opts.sbatch_args), ("--array_parallel", opts.array_parallel),
                               ("--max_requeues", opts.max_requeues is not None)) if on]
    if opts.slurm and local:
        raise SweepError(f"{local[0]} sets slots on this machine; with --slurm ask SLURM for GPUs and "
                         "CPUs in --sbatch_args (e.g. '--gres=gpu:1 --cpus-per-task=4')")
    if opts.slurm and opts.no_preload:
        raise SweepError("--no_preload applies to runs on this machine's CPU slots; a SLURM task starts "
                         "its run as a fresh process: drop --no_preload, or --slurm")
    if cluster and not opts.slurm:
        raise SweepError(f"{cluster[0]} applies to --slurm: add --slurm, or drop it")
    if opts.gpus is not None and opts.slots:
        raise SweepError("--gpus and --slots both choose the slots: --slots N for CPU slots, or --gpus "
                         "with 'cpu' entries")
    if opts.gpus is not None:
        if not opts.gpus.split():
            raise SweepError("--gpus is empty (an unset shell variable?): name GPUs, e.g. --gpus '0 1', "
                             "'cpu' for a CPU slot, or drop --gpus to use every GPU nvidia-smi lists")
        bad = [g for g in opts.gpus.split() if not (g.isdigit() or g == "cpu" or g.startswith(("GPU-", "MIG-")))]
        if bad:
            raise SweepError(f"--gpus {opts.gpus!r}: {bad[0]!r} is neither a GPU index (0, 1, ...), a "
                             "GPU-/MIG- UUID nor 'cpu'")
    time_limit_s(opts.sbatch_args)  # its words and time limit
    split_words(opts.warmup_args, "--warmup_args")
    for text in opts.grid + opts.stage_args:  # quotes first: the rest needs the scripts loaded
        split_words(text.partition("=")[2], "--grid" if text in opts.grid else "--stage_args")
    check_python(opts.python)
    if opts.log_dir is not None:
        check_log_folder("--log_dir", opts.log_dir)


def check_python(python):
    where = python if os.sep in python else shutil.which(python)
    fix = "pass the interpreter of the project's environment, e.g. --python .venv/bin/python"
    if where is None:
        raise SweepError(f"--python {python!r} is not a program on PATH: {fix}")
    problem = ("no such file" if not os.path.exists(where) else "a folder" if os.path.isdir(where)
               else "not executable" if not os.access(where, os.X_OK) else None)
    if problem:
        raise SweepError(f"--python {python}: {problem}; {fix}")


def check_log_folder(what, path):
    """The folder the sweep writes its logs, outcomes.tsv and task files in (tab-separated
    files list it, so a tab is refused too)."""
    try:
        check_output_folder(what, path, fix="pass another folder (--log_dir FOLDER)", room=LOG_FILE_ROOM,
                            separators="\n\r\t")
    except UserError as exc:
        raise SweepError(str(exc)) from None
