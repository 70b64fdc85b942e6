#!/usr/bin/env python3
"""Sweeps of any training script over any of its flags, on this machine's GPUs/CPUs or as
SLURM job arrays (docs/SWEEPS.md is the manual).

    python3 sweep.py train.py --method gls --grid "smooth_rate=0.4 -2.0" --seeds "0 1 2" --gpus "0 1"
    python3 sweep.py main_GLS_load.py --grid "smooth_rate=0.4 -2.0" --grid "lr=1e-6 1e-5"
    python3 sweep.py gls --noise "symmetric:0.2 symmetric:0.4" --seeds "0 1 2" --gpus "0 1"
    python3 sweep.py sln --noise "sym:0.4 asym:0.4" --sigmas "0.1 1.0" --slots 2 --correction -1
    python3 sweep.py gls --slurm --sbatch_args "-p gpu --gres=gpu:1 --time=12:00:00" --array_parallel 16
    python3 sweep.py paper --list; python3 sweep.py paper gls-cifar10 --dry-run   (docs/PAPERS.md)

The runs are the product of the --grid flags (and --seeds); flags the sweep does not know
go to every run. A script that needs another run first (main_GLS_load.py needs its CE
warm-up) says so in its preset, and the sweep adds those runs and starts each dependent
run once its warm-up has finished. `gls` and `sln` are the papers' sweeps: GLS over smooth
rates (warm-up then load, from scratch, or both), SLN over sigmas. `paper NAME` runs a
paper table's recipe (papers/), printing its runs, epochs and estimated GPU-hours first.

Every run is started as `PYTHON SCRIPT FLAGS --if_exists auto`: the training script
decides, holding its run folder's lock, whether the run is done (exit 0 at once),
diverged (exit 3), to be resumed from last.pt or started over. The sweep keeps no state
of its own: after Ctrl-C, a crash, a reboot or a time limit, the same command completes
the sweep. Before starting anything it checks every run's flags with the script itself,
and that no run folder holds a result made by other code or data.
"""
import argparse
import collections
import ctypes
import contextlib
import copy
import hashlib
import importlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from core.args import Parser, format_duration

ROOT = os.path.dirname(os.path.abspath(__file__))

GLS_SMOOTH_RATES = "0.8 0.6 0.4 0.2 0.0 -0.2 -0.4 -0.6 -0.8 -1.0 -2.0 -4.0 -6.0 -8.0"  # the paper's
SLN_SIGMAS = "0.1 0.2 0.5 1.0"
GLS_MODES = {"load": ["main_GLS_load"], "direct": ["main_GLS_direct_train"],
             "both": ["main_GLS_load", "main_GLS_direct_train"]}
OUTCOME = {0: "finished", 3: "diverged", 130: "interrupted", 143: "interrupted"}  # else "failed"

# Flags of the runs that decide where or whether a run writes: the sweep sets them itself.
WRITES = {"print_run_dir": "it prints the run folder instead of training",
          "if_exists": "every run is started with --if_exists auto, so that a rerun sweep continues",
          "resume": "every run is started with --if_exists auto (the same as --resume)",
          "overwrite": "every run is started with --if_exists auto; --overwrite_stale retrains the "
                       "runs made by other code or data"}
SWEEP_OPTIONS = ("retry_diverged", "keep_stale")  # run flags the sweep passes on itself

# A run with more than 11 time-limit slices should ask for a longer --time; the bound
# stops a run that cannot finish one epoch within a slice from cycling forever.
MAX_REQUEUES = 10
# sbatch --signal=B:USR1@LEAD. SLURM checks its jobs every 30 s and warns a task at the
# first check that finds at most LEAD + 30 s left, so a run gets LEAD to LEAD + 30 s to
# finish its step and write last.pt. Short limits (tests) get a sixth, at least 10 s.
SIGNAL_LEAD = 120
# Room for the longest name a run writes in its folder: ".tmp<pid>-open_set_source.npy".
RUN_FILE_ROOM = 64
SHOWN = 5  # stale runs named in the report
PAPER_BENCH = "bench_*.json"  # papers/cost.py: benchmarks read by default for `sweep.py paper`


class SweepError(Exception):
    """Bad sweep options: reported as `error: ...`, exit status 2, nothing started."""


# ---------------------------------------------------------------- options

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
                       help="values of one flag of the runs; several --grid make their product")
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
    valued = {s for a in parser._actions if a.nargs != 0 for s in a.option_strings}
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


# ---------------------------------------------------------------- the scripts

class Script:
    """A training script as the sweep sees it, from its own preset and parser: the flags it
    accepts, their defaults, its method's flags, and the script it requires."""

    def __init__(self, name, preset):
        from methods import get_method
        from utils.cli import method_flags

        self.name, self.preset, self.requires = name, preset, preset.requires
        self.parser = preset.parser()
        self.actions = {s: a for a in self.parser._actions for s in a.option_strings}
        self.method = preset.method
        self.method_dests = method_flags(get_method(preset.method))[1]

    def default(self, dest):
        return self.parser.get_default(dest)


_SCRIPTS = {}


def load_script(name, words):
    """The Script `name` for the runs' words (train.py's flags depend on its --method)."""
    module = import_script(name)
    preset, refusal = script_call(lambda: module.preset(words))
    if refusal:
        raise SweepError(f"{name}.py: {refusal}")
    key = (name, preset.method)
    if key not in _SCRIPTS:
        _SCRIPTS[key] = Script(name, preset)
    return _SCRIPTS[key]


def import_script(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SweepError(f"cannot import {name}.py ({exc}): run the sweep with the project's Python, "
                         "e.g. .venv/bin/python sweep.py") from None


def script_call(call):
    """(call(), None) of a script's code run in this process, or (None, its message) when it
    refuses (a UserError, or argparse's exit with the message on stderr)."""
    from errors import UserError

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            result = call()
        return result, None if not isinstance(result, int) or not result else f"exit status {result}"
    except SystemExit as exc:
        text = err.getvalue().strip()
        if "error: " not in text:
            return None, text.splitlines()[-1] if text else f"exit status {exc.code}"
        lines = text.rsplit("error: ", 1)[1].splitlines()  # without argparse's "PROG: error: "
        return None, "\n".join(line for line in lines if not line.endswith("lists every flag with its default)"))
    except UserError as exc:
        return None, str(exc)


# ---------------------------------------------------------------- the runs' flags

Token = collections.namedtuple("Token", "flag dest words")  # one flag of a run with its values


def is_option(word):
    return word.startswith("-") and len(word) > 1 and not re.fullmatch(
        r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-(inf|infinity|nan)", word, re.IGNORECASE)


def find_action(flag, scripts):
    return next((s.actions[flag] for s in scripts if flag in s.actions), None)


def tokenize(words, scripts, option="the flags of the runs"):
    """[Token] of a run's words, each flag with its values as the scripts' parsers read them;
    a flag none of them knows keeps the values that follow it (the script refuses it)."""
    tokens, i = [], 0
    while i < len(words):
        flag = words[i].split("=", 1)[0]
        if not is_option(words[i]):
            raise SweepError(f"{option}: unexpected value {words[i]!r}: values follow their flag "
                             "(--flag VALUE), and a sweep option's list is one quoted word "
                             "(--seeds '0 1 2')")
        action = find_action(flag, scripts)
        end = i + 1
        if "=" not in words[i]:
            nargs = action.nargs if action else "*"
            most = {None: 1, "?": 1, "*": len(words), "+": len(words)}.get(nargs, nargs)
            while end < len(words) and end - i - 1 < most and (nargs is None or not is_option(words[end])):
                end += 1
        tokens.append(Token(flag, action.dest if action else None, words[i:end]))
        i = end
    return tokens


class Axis:
    """One dimension of the sweep: its option, how to write a value there (for messages), and
    its points, each a list of Tokens (a --noise setting is two flags)."""

    def __init__(self, option, points, example="{option} '{value}'"):
        self.option, self.points, self.example = option, points, example
        self.dests = {t.dest for point in points for t in point if t.dest}


def built_in_axes(kind, opts, scripts):
    """The axes of gls and sln (their noise settings and knob) and --seeds, in the order
    that nests them (the first outermost)."""
    def flag(name, value):
        return Token(name, find_action(name, scripts).dest, [name, value])

    axes = []
    if kind in ("gls", "sln"):
        noise_flag = "--noise_type" if kind == "gls" else "--noise_mode"
        example = "symmetric:0.4" if kind == "gls" else "sym:0.4"
        axes.append(Axis("--noise", [[flag(noise_flag, t), flag("--noise_rate", r)] for t, r in
                                     noise_settings(opts.noise, example)], f"--noise TYPE:RATE (e.g. {example})"))
    if opts.seeds is not None:
        axes.append(Axis("--seeds", [[flag("--seed", s)] for s in numbers(opts.seeds, "--seeds", int)]))
    if kind == "gls":
        axes.append(Axis("--smooth_rates", [[flag("--smooth_rate", r)]
                                            for r in numbers(opts.smooth_rates, "--smooth_rates")]))
    if kind == "sln":
        axes.append(Axis("--sigmas", [[flag("--sigma", s)] for s in numbers(opts.sigmas, "--sigmas")]))
    return axes


def grid_axis(text, scripts):
    """The Axis of --grid FLAG='V1 V2 ...' (FLAG with or without its dashes)."""
    name, eq, values = text.partition("=")
    flag = name if name.startswith("-") else "--" + name
    if not eq or not re.fullmatch(r"--?[A-Za-z_][\w-]*", flag):
        raise SweepError(f"--grid {text!r}: write FLAG='V1 V2 ...', e.g. --grid \"smooth_rate=0.4 -2.0\"")
    words = split_words(values, f"--grid {name}")
    if not words:
        raise SweepError(f"--grid {text!r} has no values: give one or more, e.g. --grid \"{name}=0.1 0.2\"")
    action = find_action(flag, scripts)
    if flag == "--method":
        raise SweepError("--grid method: a method decides which flags a run has; run one sweep per method")
    if action is not None and action.nargs == 0:
        raise SweepError(f"--grid {name}: {flag} takes no value; run one sweep with it and one without")
    spread = action is not None and action.nargs in ("*", "+")  # a value of a list flag is its words
    return Axis(f"--grid {name}=...", [[Token(flag, action.dest if action else None,
                                               [flag, *(v.split() if spread else [v])])] for v in words],
                f"--grid {name}='{{value}}'")


def stage_words(opts, tops, scripts):
    """{script: words} of --stage_args, and --warmup_args under the key None (every required
    run), their flags checked."""
    if opts.warmup_args and len(scripts) == len(tops):
        raise SweepError(f"--warmup_args: the runs of this sweep ({', '.join(s.name + '.py' for s in tops)}) "
                         "need no other run first: give the flags to every run, or drop it")
    stages = {None: split_words(opts.warmup_args, "--warmup_args")}
    for text in opts.stage_args:
        name, eq, flags = text.partition("=")
        name = name[:-len(".py")] if name.endswith(".py") else name
        if not eq or name not in {s.name for s in scripts}:
            raise SweepError(f"--stage_args {text!r}: write SCRIPT='FLAGS' with SCRIPT one of the "
                             f"sweep's scripts: {', '.join(s.name for s in scripts)}")
        stages[name] = stages.get(name, []) + split_words(flags, f"--stage_args {name}")
    for name, words in stages.items():
        option = f"--stage_args {name}" if name else "--warmup_args"
        check_tokens(tokenize(words, [s for s in scripts if s.name == name] or scripts, option), [], option)
    return stages


def check_axes(axes):
    """Each flag is varied by one option, with values the sweep may set."""
    seen = {}
    for axis in axes:
        check_tokens([t for point in axis.points for t in point], [], axis.option)
        for dest in axis.dests:
            if dest in seen:
                raise SweepError(f"{axis.option} and {seen[dest]} both set --{dest}: give its values once")
            seen[dest] = axis.option


def check_tokens(tokens, axes, option):
    """Refuse a flag the sweep sets itself, or one that changes where or whether a run writes:
    the sweep never silently overrides the user's flags."""
    for token in tokens:
        words = " ".join(token.words)
        if token.dest in WRITES:
            raise SweepError(f"{option}: {words}: the sweep refuses it because {WRITES[token.dest]}")
        if token.dest in SWEEP_OPTIONS:
            raise SweepError(f"{option}: {words}: pass {token.flag} as an option of the sweep, which "
                             "gives it to every run")
        for axis in axes:
            if token.dest in axis.dests:
                use = axis.example.format(option=axis.option, value=value(token))
                raise SweepError(f"{option}: {words}: the sweep sets {token.flag} from its option "
                                 f"{axis.option}; pass {use} instead")
        for word in token.words:
            if any(c in word for c in "\n\r\t"):
                raise SweepError(f"{option}: {token.flag} {word!r} holds a line break or a tab; "
                                 "outcomes.tsv and the task files hold one run a line, tab-separated: "
                                 "pass a value without one")


# ---------------------------------------------------------------- the runs

class Run:
    """One training command; `after` is the run (its warm-up) that must finish first;
    `stale_config`: with --overwrite_stale, the digest of the stale run's config.json."""

    def __init__(self, opts, script, flags, after=None):
        self.script, self.after = script, after
        self.command = [opts.python, script, *flags, "--if_exists", "auto"] + \
            (["--retry_diverged"] if opts.retry_diverged else []) + (["--keep_stale"] if opts.keep_stale else [])
        self.run_dir = self.log = self.stale_config = None


def routed(token, script, above, axis):
    """Does `token` go to the runs of `script`, which the scripts `above` need first? A flag
    goes where it is accepted (one that no script knows goes everywhere, to be refused with
    the script's message), never to a warm-up when it is a flag of the method that follows
    (the warm-up of GLS must not get --smooth_rate). A grid value goes to a warm-up only for
    a setting the two scripts share (the same default: data, noise, model, seed), not for
    one of a script's own protocol (epochs, lr)."""
    if token.dest is None:
        return True
    if token.flag not in script.actions:
        return False
    if any(token.dest in s.method_dests for s in above):
        return False
    return not axis or all(s.default(token.dest) == script.default(token.dest) for s in above)


def build_runs(opts, tops, axes, common, stages):
    """Every run of the product of the axes, for each top script; the runs each one requires
    come first (repeated ones are dropped by resolve)."""
    runs = []

    def add(script, point, above):
        words = [w for t in common if routed(t, script, above, False) for w in t.words]
        words += [w for t in point if routed(t, script, above, True) for w in t.words]
        words += (stages[None] if above else []) + stages.get(script.name, [])
        after = None
        if script.requires:
            after = add(load_script(script.requires, words), point, [script, *above])
        run = Run(opts, f"{script.name}.py", words, after)
        runs.append(run)
        return run

    for point in itertools.product(*[axis.points for axis in axes]):
        for top in tops:
            add(top, [t for tokens in point for t in tokens], [])
    return runs


def resolve(runs, log_dir):
    """Give each run its folder, from the script's own --print_run_dir called in this
    process (one torch import for the whole sweep), and its log; drop repeated runs.
    A run whose flags the script rejects stops the sweep before anything starts."""
    unique = {}
    for run in runs:
        name = run.script[:-len(".py")]
        module = import_script(name)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            _, refusal = script_call(lambda: module.main(run.command[2:] + ["--print_run_dir"]))
        if refusal:
            raise SweepError(f"{run.script} rejects its flags: {refusal}\n  {shlex.join(run.command[1:])}")
        run.run_dir = out.getvalue().strip().splitlines()[-1]
        run.log = os.path.join(log_dir, name, os.path.basename(run.run_dir) + ".log")
        unique.setdefault(run.run_dir, run)
    for run in unique.values():
        if run.after:  # a repeated warm-up stands for its first copy
            run.after = unique[run.after.run_dir]
    return list(unique.values())


def plan(argv):
    """(options, runs, log folder, sweep name): every run of the command line, checked, with
    its folder; nothing is written."""
    kind, opts, words = parse(argv)
    check_options(opts, kind)
    if kind == "paper":
        return plan_paper(opts, words)
    top_names = GLS_MODES[opts.mode] if kind == "gls" else ["noise_cifar_train"] if kind == "sln" else [kind]
    tops = [load_script(name, words) for name in top_names]
    scripts = required_scripts(tops, words)
    axes = built_in_axes(kind, opts, scripts) + [grid_axis(text, scripts) for text in opts.grid]
    check_axes(axes)
    common = tokenize(words, scripts)
    check_tokens(common, axes, "the flags of the runs")
    runs = build_runs(opts, tops, axes, common, stage_words(opts, tops, scripts))
    result_dir = next((value(t) for t in reversed(common) if t.dest == "result_dir"), "results")
    name = f"sweep_{kind}" + (f"_{tops[0].method}" if "--method" in tops[0].actions else "")
    log_dir = opts.log_dir or os.path.join(result_dir, "sweep_logs", name)
    runs = resolve(runs, log_dir)
    if opts.log_dir is None:
        check_folder("the log folder (default of --log_dir)", log_dir)
    return opts, runs, log_dir, name


# ---------------------------------------------------------------- paper recipes

def plan_paper(opts, words):
    """plan() of `sweep.py paper NAME`: the recipe's runs (papers/) times the seeds, each
    with the runs it requires, through the same machinery as every sweep. A flag the recipe
    sets is refused (the runs are the paper's); its data locations (places) give way to
    the user's. opts.paper holds (recipe, [(script, cfg, method)]) for the estimate."""
    from errors import UserError
    from papers import get_recipe
    from papers.smoke import smoke_plan

    try:
        recipe = get_recipe(opts.recipe)
        if opts.smoke:
            recipe, words, opts.smoke = smoke_plan(recipe, words)
    except UserError as exc:
        raise SweepError(str(exc)) from None
    seeds = numbers(opts.seeds if opts.seeds is not None else recipe.seeds, "--seeds", int)
    if opts.warmup_args and not any(load_script(r.script, r.words() + words).requires for r in recipe.runs):
        raise SweepError(f"--warmup_args: the runs of the recipe {recipe.name} need no other run first (no "
                         "warm-up), so its flags would reach no run: drop it")
    runs, result_dir = [], "results"
    for paper_run in recipe.runs:
        fixed = paper_run.words()
        top = load_script(paper_run.script, fixed + words)
        scripts = required_scripts([top], words)
        fixed_axis = Axis(f"the recipe {recipe.name}", [tokenize(fixed, scripts, f"the recipe {recipe.name}")])
        seed_axis = Axis("--seeds", [[Token("--seed", "seed", ["--seed", s])] for s in seeds])
        common = tokenize(words, scripts)
        for token in common:
            if token.dest in fixed_axis.dests:
                raise SweepError(f"{' '.join(token.words)}: the recipe {recipe.name} sets {token.flag} "
                                 f"(the paper's setting); drop it, or sweep {paper_run.script}.py itself "
                                 "for other settings")
        check_tokens(common, [seed_axis], "the flags of the runs")
        places = tokenize([w for flag, v in recipe.places.items() for w in (f"--{flag}", v)], scripts)
        common += [t for t in places if t.dest not in {c.dest for c in common}]
        runs += build_runs(opts, [top], [seed_axis, fixed_axis], common, paper_stages(opts, recipe, top, scripts))
        result_dir = next((value(t) for t in reversed(common) if t.dest == "result_dir"), result_dir)
    name = f"sweep_paper_{recipe.name}"
    log_dir = opts.log_dir or os.path.join(result_dir, "sweep_logs", name)
    runs = resolve(runs, log_dir)
    if opts.log_dir is None:
        check_folder("the log folder (default of --log_dir)", log_dir)
    opts.paper = (recipe, [paper_config(run, recipe) for run in runs])
    return opts, runs, log_dir, name


def paper_stages(opts, recipe, top, scripts):
    """stage_words for one run of a recipe: --warmup_args reach the runs that have a warm-up,
    --stage_args SCRIPT=... the runs of SCRIPT (a script of no run of the recipe is an error)."""
    names = {s.name for s in scripts}
    known = {r.script for r in recipe.runs} | {getattr(load_script(r.script, r.words()), "requires", None)
                                                for r in recipe.runs}
    for text in opts.stage_args:
        name = text.partition("=")[0]
        if (name[:-len(".py")] if name.endswith(".py") else name) not in known:
            raise SweepError(f"--stage_args {text!r}: SCRIPT must be one of the recipe's scripts: "
                             f"{', '.join(sorted(k for k in known if k))}")
    mine = copy.copy(opts)
    mine.warmup_args = opts.warmup_args if top.requires else ""
    mine.stage_args = [t for t in opts.stage_args
                       if t.partition("=")[0].removesuffix(".py") in names]
    return stage_words(mine, [top], scripts)


def paper_config(run, recipe):
    """(script, cfg, method) of a run of a recipe, its epochs checked against the recipe's
    (a --warmup_args or --stage_args --n_epoch would make them another protocol)."""
    name = run.script[:-len(".py")]
    preset = import_script(name).preset(run.command[2:])
    cfg, method_cls = preset.parse(run.command[2:])
    want = recipe.epochs.get(name)
    if want is not None and cfg.n_epoch != want:
        raise SweepError(f"the recipe {recipe.name} trains {run.script} for {want} epochs, the paper's; "
                         f"these flags make it {cfg.n_epoch}: drop --n_epoch from --warmup_args/--stage_args")
    return name, cfg, method_cls.from_config(cfg, **preset.method_options)


def recipe_listing():
    from papers import recipes

    lines = ["paper recipes (python3 sweep.py paper NAME --dry-run: runs, epochs, GPU-hours):"]
    for name, recipe in sorted(recipes().items()):
        seeds = len(recipe.seeds.split())
        lines.append(f"  {name:<15} {recipe.summary}")
        lines.append(f"  {'':<15} reproduces {recipe.paper}, {recipe.table}; {len(recipe.runs)} runs a seed "
                     f"(and the warm-ups they need), default seeds '{recipe.seeds}' ({seeds})")
    return "\n".join(lines)


def paper_report(opts):
    """The lines printed before a paper sweep starts (and by --dry-run): the recipe, the
    runs, epochs and the estimated GPU-hours with its basis."""
    from errors import UserError
    from papers.cost import default_benches, estimate, read_benches

    recipe, planned = opts.paper
    try:
        benches = read_benches(opts.bench if opts.bench else default_benches(ROOT))
    except UserError as exc:
        raise SweepError(str(exc)) from None
    seeds = opts.seeds if opts.seeds is not None else recipe.seeds
    head = f"paper {recipe.name}: {recipe.paper}, {recipe.table}; seeds {seeds}"
    if opts.smoke:
        return f"{head}\n{len(planned)} runs, results in {opts.smoke}"
    return "\n".join([head] + estimate(planned, benches))


def required_scripts(tops, words):
    """The top scripts, then every script they require (and those require), once each."""
    scripts = list(tops)
    for script in tops:
        chain = [script.name]
        while script.requires:
            if script.requires in chain:
                raise SweepError(f"the scripts {' -> '.join(chain)} -> {script.requires} require each "
                                 "other: no run of them can start first")
            chain.append(script.requires)
            script = load_script(script.requires, words)
            if script.name not in {s.name for s in scripts}:
                scripts.append(script)
    return scripts


def value(token):
    """The value(s) of a flag, as written (--flag VALUE or --flag=VALUE)."""
    return token.words[0].partition("=")[2] if len(token.words) == 1 else " ".join(token.words[1:])


# ---------------------------------------------------------------- checks before anything starts

def check_options(opts, kind=None):
    """Every refusal the sweep's own options decide, before a script is imported."""
    if opts.keep_stale and opts.overwrite_stale:
        raise SweepError("--keep_stale and --overwrite_stale contradict each other: keep one")
    local = [f for f, on in (("--gpus", opts.gpus is not None), ("--slots", opts.slots),
                             ("--runs_per_gpu", opts.runs_per_gpu)) if on]
    cluster = [f for f, on in (("--sbatch_args", opts.sbatch_args), ("--array_parallel", opts.array_parallel),
                               ("--max_requeues", opts.max_requeues is not None)) if on]
    if opts.slurm and local:
        raise SweepError(f"{local[0]} sets slots on this machine; with --slurm ask SLURM for GPUs and "
                         "CPUs in --sbatch_args (e.g. '--gres=gpu:1 --cpus-per-task=4')")
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
        check_folder("--log_dir", opts.log_dir)


def check_python(python):
    where = python if os.sep in python else shutil.which(python)
    fix = "pass the interpreter of the project's environment, e.g. --python .venv/bin/python"
    if where is None:
        raise SweepError(f"--python {python!r} is not a program on PATH: {fix}")
    problem = ("no such file" if not os.path.exists(where) else "a folder" if os.path.isdir(where)
               else "not executable" if not os.access(where, os.X_OK) else None)
    if problem:
        raise SweepError(f"--python {python}: {problem}; {fix}")


def check_folder(what, path):
    """A folder the sweep writes in: creatable or a folder, writable, its names within limits."""
    if not path:
        raise SweepError(f"{what} is empty (an unset shell variable?): pass a folder")
    if any(c in path for c in "\n\r\t"):
        raise SweepError(f"{what} {path!r} holds a line break or a tab; outcomes.tsv holds one run a "
                         "line, tab-separated: pass a folder name without one")
    if os.path.lexists(path) and not os.path.exists(path):
        raise SweepError(f"{what} {path} is a symbolic link to nothing: fix or remove the link, or pass "
                         "another folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise SweepError(f"{what} {path} is a file, not a folder: pass a folder (--log_dir FOLDER)")
    base = existing_ancestor(path)
    if not os.path.isdir(base):
        raise SweepError(f"{what} {path}: {base} is a file, so no folder can be made under it; pass "
                         "another folder (--log_dir FOLDER)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SweepError(f"{what} {path}: {base} is not writable by you; pass another folder (--log_dir FOLDER)")
    check_length(what, path, room=len("/tasks_warmup10.jsonl"))


def existing_ancestor(path):
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_length(what, path, room=0):
    """Refuse a path with a name longer than its file system allows, or longer as a whole
    (`room`: the longest name a run adds inside it)."""
    full = os.fsencode(os.path.abspath(path))
    try:
        base = existing_ancestor(path)
        name_max, path_max = os.pathconf(base, "PC_NAME_MAX"), os.pathconf(base, "PC_PATH_MAX")
    except OSError:
        name_max, path_max = 255, 4096
    long = [n for n in full.split(b"/") if len(n) > name_max]
    shown = path if len(path) < 100 else f"{path[:60]}...{path[-30:]}"
    if long:
        raise SweepError(f"{what} {shown!r}: the name {os.fsdecode(long[0][:40])}... has {len(long[0])} "
                         f"bytes, and this file system allows {name_max}: use shorter names")
    if len(full) + room >= path_max:
        raise SweepError(f"{what} {shown!r} is {len(full)} bytes long; with the files written there it "
                         f"would exceed this system's limit of {path_max}: use a shorter --result_dir or --log_dir")


def check_paths(runs):
    """Every run's folder and log can be written: names within limits, no file in the way."""
    for run in runs:
        check_length("the run folder", run.run_dir, RUN_FILE_ROOM)
        check_length("the log", run.log)
        folder = existing_ancestor(os.path.dirname(run.log))
        if not os.path.isdir(folder) or os.path.isdir(run.log):
            raise SweepError(f"the log {run.log} cannot be written: {folder if not os.path.isdir(folder) else run.log} "
                             "is in the way; remove it or pass another --log_dir")


# ---------------------------------------------------------------- runs made by other code or data

def stale_runs(runs, retry_diverged):
    """[(run, changes)] of the runs whose folder holds a result that --if_exists auto would
    keep or resume (finished, diverged, unfinished with last.pt) but that other code or data
    made: what the current code and data would record (utils.engine.current_made_by) differs
    from the folder's config.json made_by (utils.identity.what_changed)."""
    from core.files import RunFolder
    from errors import UserError
    from utils.identity import what_changed
    from utils.results import decide, run_entries

    now, stale = Identities(), []
    for run in runs:
        if not run_entries(run.run_dir):
            continue
        folder = RunFolder(run.run_dir)
        try:
            if decide(folder, "auto", retry_diverged) not in ("finished", "diverged", "resume"):
                continue
        except UserError:
            continue  # a damaged folder: its run stops with the script's message
        saved = folder.read_json_or_none("config.json") or {}
        changes = what_changed(saved.get("made_by"), now.made_by(run))
        if changes:
            stale.append((run, changes))
    return stale


class Identities:
    """made_by's code, data and outside inputs for a run's flags, as the run would record them
    now. The code part is computed once per set of code files (script, method, data set,
    noise type), the data part (the data set loaded and hashed, its noisy labels made) once
    per data setting."""

    # The flags that decide the data and noisy labels, besides those data sets and noise
    # types declare themselves (data.add_data_flags).
    DATA_FLAGS = ("dataset", "data_root", "noise_type", "noise_rate", "noise_seed", "noise_source",
                  "noise_file", "noise_path")

    def __init__(self):
        from data import add_data_flags
        from utils.identity import git_identity

        declared = argparse.ArgumentParser(add_help=False)
        add_data_flags(declared, {})
        self.data_flags = self.DATA_FLAGS + tuple(sorted({a.dest for a in declared._actions} - set(self.DATA_FLAGS)))
        self.git = git_identity()
        self.code, self.data = {}, {}

    def made_by(self, run):
        from utils.engine import code_paths, present_inputs
        from utils.identity import source_identity

        name = run.script[:-len(".py")]
        preset = import_script(name).preset(run.command[2:])
        cfg, method_cls = preset.parse(run.command[2:])
        method = method_cls.from_config(cfg, **preset.method_options)
        paths = tuple(code_paths(cfg, preset.script, method))
        if paths not in self.code:
            self.code[paths] = {**source_identity(paths), **self.git}
        key = tuple(repr(getattr(cfg, k, None)) for k in self.data_flags)
        if key not in self.data:
            self.data[key] = self.data_identity(cfg)
        return {"code": self.code[paths], **({"data": self.data[key]} if self.data[key] else {}),
                **present_inputs(method)}

    @staticmethod
    def data_identity(cfg):
        """{data_sha1, labels_sha1}, or None (with a warning) when the data cannot be read
        without a download: then only the code is compared, as the script itself does."""
        from core.files import warn
        from data import prepare_data
        from data.download import no_downloads
        from errors import UserError
        from utils.identity import data_fingerprint, labels_sha1

        try:
            with no_downloads():
                data, noisy, _, _ = prepare_data(cfg)
        except UserError as exc:
            warn(f"the data of {cfg.dataset} under {cfg.data_root} cannot be loaded to check the runs "
                 f"there ({str(exc).splitlines()[0]}); only their code is compared")
            return None
        return {"data_sha1": data_fingerprint(data), "labels_sha1": labels_sha1(noisy)}


def stale_report(stale, total):
    lines = [f"{len(stale)} of the sweep's {total} runs hold results made by other code or data than "
             "this sweep would use now:"]
    for run, changes in stale[:SHOWN]:
        lines += [f"  {run.run_dir}"] + [f"    {change}" for change in changes]
    if len(stale) > SHOWN:
        lines.append(f"  and {len(stale) - SHOWN} more")
    lines += ["No run was started. Carry on with one of:",
              "  --overwrite_stale  retrain these runs (their results are deleted; the other runs are kept)",
              "  --keep_stale       keep (or resume) them deliberately; each run records the decision "
              "in its summary.json"]
    return "\n".join(lines)


def config_digest(run_dir):
    """sha1 of a run folder's config.json (None without one): what --overwrite_stale replaces."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def launch_command(command, run_dir, stale_config):
    """The command to start now. A run that --overwrite_stale retrains gets --if_exists
    overwrite only while its folder still holds the stale result the sweep found (the same
    config.json): a restarted sweep or a requeued SLURM task then resumes the retraining."""
    if stale_config is None or config_digest(run_dir) != stale_config:
        return command
    return command[:len(command) - command[::-1].index("--if_exists") - 1] + ["--if_exists", "overwrite"]


# ---------------------------------------------------------------- one run

LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def start(command, log, env):
    """Start a run in its own process group, output appended to its log. The kernel
    sends it SIGTERM (it saves and stops) when this process dies, even by kill -9."""
    parent = os.getpid()

    def die_with_parent():  # in the child, between fork and exec
        if LIBC is not None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    # The run writes into the log: UTF-8, keeping the bytes of a name that is not UTF-8
    # (a strict locale would end the run with UnicodeEncodeError when it prints its folder).
    env = {**env, "PYTHONIOENCODING": "utf-8:surrogateescape"}
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "ab") as out:  # bytes: a path may hold any byte but "/" and NUL
        out.write(encode(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} "
                         f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}\n"
                         f"=== {shlex.join(command)}\n"))
        out.flush()
        # the script by its path in this checkout: relative paths in its flags mean the
        # current folder, as for a script started by hand
        script = command[1] if os.path.isabs(command[1]) else os.path.join(ROOT, command[1])
        return subprocess.Popen([command[0], script, *command[2:]], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)


def encode(text):
    """Text with the bytes of non-UTF-8 file names (decoded by Python as surrogates) restored."""
    return text.encode("utf-8", "surrogateescape")


def shell_status(returncode):
    """An exit status as the shell shows it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def record(outcomes, outcome, code, command, run_dir, log):
    """One line of outcomes.tsv (appended: each line is a single small write)."""
    with open(outcomes, "ab") as f:
        f.write(encode(f"{outcome}\t{code}\t{shlex.join(command)}\t{run_dir}\t{log}\n"))


def signal_quietly(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


# ---------------------------------------------------------------- on this machine

def local_slots(opts):
    """CUDA_VISIBLE_DEVICES of each slot ('' for a CPU slot)."""
    if opts.slots:
        devices = ["cpu"] * opts.slots
    elif opts.gpus:
        devices = opts.gpus.split()
    else:
        devices = []
        if shutil.which("nvidia-smi"):
            query = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                   capture_output=True, text=True)
            devices = query.stdout.split() if query.returncode == 0 else []
        devices = devices or ["cpu"]
    return ["" if d == "cpu" else d for d in devices for _ in range(opts.runs_per_gpu or 1)]


def print_local_plan(runs, states=()):
    """--dry-run without --slurm: every run's command, in the order the sweep starts them, and
    the run it waits for; with `states` (preflight.run_states), where some run has started,
    each run's state."""
    import preflight

    order = {id(run): i + 1 for i, run in enumerate(runs)}
    shown = states if any(state != "not started" for state in states) else ()
    print(f"sweep: {len(runs)} runs" + (f" ({preflight.state_counts(shown)})" if shown else ""))
    for i, run in enumerate(runs, 1):
        after = f"  (after run {order[id(run.after)]})" if run.after is not None and id(run.after) in order else ""
        print(f"{i:4d}. " + (f"[{shown[i - 1]}] " if shown else "") + f"{shlex.join(run.command[1:])}{after}")


class Progress:
    """The "[k/N] ... about 12m left" prefix of each ended run: the time left is the sweep's
    time so far per ended run, times the runs not ended yet."""

    def __init__(self, total):
        self.total, self.ended, self.started = total, 0, time.time()

    def step(self):
        self.ended += 1
        left = self.total - self.ended
        if not left:
            return f"[{self.ended}/{self.total}]"
        eta = (time.time() - self.started) / self.ended * left
        return f"[{self.ended}/{self.total}, about {format_duration(eta)} left]"


def last_error_line(log):
    """Why a run failed, from its log: the last line that starts with "error:", else the
    last line that is not empty (a traceback's last line names the exception)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 65536))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError as exc:
        return f"(its log {log} cannot be read: {exc.strerror})"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [f"(its log {log} is empty)"])[-1]


def run_local(runs, opts, log_dir):
    """Run on the slots: a run starts when a slot is free and its warm-up (if any) has
    finished; SIGINT/SIGTERM stop every run (they save) and the sweep."""
    slots = local_slots(opts)
    # CPU runs side by side would each start a thread per core and slow each other down.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // max(slots.count(""), 1)))
    outcomes = os.path.join(log_dir, "outcomes.tsv")
    open(outcomes, "w").close()
    print(f"sweep: {len(runs)} runs on {len(slots)} slot(s) [{' '.join(s or 'cpu' for s in slots)}], "
          f"logs in {log_dir}", flush=True)

    pending, free = list(runs), list(slots)
    progress = Progress(len(runs))
    running = {}  # pid -> (run, command, slot, process, start time)
    exit_of = {}  # run folder -> exit status
    stopping = []

    def stop(signum, frame):
        if not stopping:
            print(f"sweep: {signal.Signals(signum).name}: stopping {len(running)} run(s); they save "
                  "their state, and the same command resumes them", file=sys.stderr, flush=True)
        stopping.append(signum)
        for pid in list(running):
            signal_quietly(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for run in list(pending):
                if stopping or not free:
                    break
                if run.after and run.after.run_dir not in exit_of:
                    continue  # its warm-up has not ended yet
                pending.remove(run)
                if run.after and exit_of[run.after.run_dir] != 0:
                    record(outcomes, "skipped-dependency", "-", run.command, run.run_dir, run.log)
                    print(f"{progress.step()} skipped-dependency (its warm-up did not finish): {run.run_dir}",
                          flush=True)
                    continue
                slot = free.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot}
                if not slot:
                    env["OMP_NUM_THREADS"] = threads
                command = launch_command(run.command, run.run_dir, run.stale_config)
                proc = start(command, run.log, env)
                running[proc.pid] = (run, command, slot, proc, time.time())
                if stopping:  # the signal came while it started
                    signal_quietly(proc.pid, signal.SIGTERM)
            if not running:
                break
            pid, wait_status = os.wait()  # a signal runs its handler, then the wait goes on
            if pid not in running:
                continue
            run, command, slot, proc, started = running.pop(pid)
            proc.returncode = code = shell_status(os.waitstatus_to_exitcode(wait_status))
            free.append(slot)
            exit_of[run.run_dir] = code
            outcome = OUTCOME.get(code, "failed")
            record(outcomes, outcome, code, command, run.run_dir, run.log)
            why = "" if code == 0 else f"\n      {last_error_line(run.log)}"
            print(f"{progress.step()} {outcome} (exit {code}, {time.time() - started:.0f}s): {run.run_dir}{why}",
                  flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for run in pending:
        record(outcomes, "not-started", "-", run.command, run.run_dir, run.log)
    with open(outcomes, "rb") as f:
        tally = collections.Counter(line.split(b"\t")[0].decode() for line in f)
    print("sweep: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
          + f"; see {outcomes}", flush=True)
    if stopping:
        return 128 + stopping[0]
    return 0 if set(tally) == {"finished"} else 1


# ---------------------------------------------------------------- SLURM

def time_limit_s(sbatch_args):
    """Seconds of the --time (-t) among the sbatch options, or None (none, or unlimited)."""
    value = None
    words = split_words(sbatch_args, "--sbatch_args")
    for i, word in enumerate(words):
        if word in ("-t", "--time") and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--time="):
            value = word[len("--time="):]
        elif word.startswith("-t") and len(word) > 2:
            value = word[2:]
    if value is None or value.upper() in ("INFINITE", "UNLIMITED"):
        return None
    days, dash, clock = value.rpartition("-")  # SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
    try:
        parts = [int(p) for p in clock.split(":")]
        if dash:
            parts = (parts + [0, 0])[:3]
        elif len(parts) == 1:
            parts = [0, parts[0], 0]
        elif len(parts) == 2:
            parts = [0, *parts]
        hours, minutes, seconds = parts
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    except ValueError:
        raise SweepError(f"--sbatch_args: cannot read the time limit {value!r}") from None


def signal_lead(sbatch_args):
    limit = time_limit_s(sbatch_args)
    return SIGNAL_LEAD if limit is None else min(SIGNAL_LEAD, max(10, limit // 6))


def slurm_stages(runs):
    """[(stage name, runs)] in submission order: the runs others need first, a level per
    array (warm-ups), then the rest ("runs"), each array waiting for the one before."""
    level = {}
    for run in reversed(runs):  # a run's warm-up comes before it in the list
        level.setdefault(run, 0)
        if run.after:
            level[run.after] = max(level.get(run.after, 0), level[run] + 1)
    top = max(level.values(), default=0)
    names = {0: "runs", **{k: "warmup" if top == 1 else f"warmup{k}" for k in range(1, top + 1)}}
    return [(names[k], [r for r in runs if level[r] == k]) for k in range(top, -1, -1)
            if any(level[r] == k for r in runs)]


def submit_slurm(runs, opts, log_dir, name, lead):
    """Write one task file per stage (warm-ups, then the rest) and submit each as a job
    array whose task i runs `sweep.py _task FILE` for line i; each array starts when
    every task of the one before has ended (afterany: a failed warm-up fails only the
    runs that need it, with the script's message)."""
    stages = []  # (stage, task file, number of tasks)
    for stage, stage_runs in slurm_stages(runs):
        tasks = os.path.abspath(os.path.join(log_dir, f"tasks_{stage}.jsonl"))
        with open(tasks, "w") as f:
            for run in stage_runs:
                task = {"command": run.command, "run_dir": run.run_dir, "log": os.path.abspath(run.log)}
                f.write(json.dumps({**task, **({"stale_config": run.stale_config} if run.stale_config else {})}) + "\n")
        stages.append((stage, tasks, len(stage_runs)))

    def sbatch(stage, tasks, n, after):
        task = [opts.python, os.path.join(ROOT, "sweep.py"), "_task", tasks,
                "--max_requeues", str(MAX_REQUEUES if opts.max_requeues is None else opts.max_requeues)]
        return ["sbatch", "--parsable", f"--job-name={name}-{stage}",
                f"--array=0-{n - 1}" + (f"%{opts.array_parallel}" if opts.array_parallel else ""),
                "--requeue", "--open-mode=append", f"--signal=B:USR1@{lead}", f"--chdir={os.getcwd()}",
                f"--output={os.path.abspath(log_dir)}/slurm-%A_%a.out", *shlex.split(opts.sbatch_args),
                *([f"--dependency=afterany:{after}"] if after else []), "--wrap", "exec " + shlex.join(task)]

    open(os.path.join(log_dir, "outcomes.tsv"), "w").close()
    print(f"sweep: {len(runs)} runs in {len(stages)} SLURM job array(s) "
          f"({', '.join(f'{n} {stage}' for stage, _, n in stages)}); task files and logs in {log_dir}")
    if opts.dry_run:
        print("dry run, nothing submitted; to submit:")
        after = None
        for stage, tasks, n in stages:
            line = shlex.join(sbatch(stage, tasks, n, after and "ID"))
            print(f"{stage}=$({line.replace('afterany:ID', f'afterany:${{{after}%%;*}}')})")
            after = stage
        return 0
    if not shutil.which("sbatch"):
        raise SweepError("sbatch not found: run this on the cluster's login node (or use --dry-run)")
    after = None
    for stage, tasks, n in stages:
        result = subprocess.run(sbatch(stage, tasks, n, after), capture_output=True, text=True)
        if result.returncode != 0:
            raise SweepError(f"sbatch failed: {result.stderr.strip()}")
        after = result.stdout.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        print(f"submitted job array {after}: {n} {stage} task(s)", flush=True)
    return 0


def job_state(job_id):
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    return dict(w.split("=", 1) for w in result.stdout.split() if "=" in w).get("JobState")


def run_task(argv):
    """One array task (`sweep.py _task FILE`): run line SLURM_ARRAY_TASK_ID of FILE.

    SLURM's warning before the time limit (USR1, to this process only) and its SIGTERM
    (scancel, the limit itself, pre-emption) reach the run as SIGTERM: it saves and exits
    143. After the warning the task requeues itself, unless the job is being cancelled
    or has been requeued --max_requeues times, and the requeued task resumes the run."""
    p = argparse.ArgumentParser(prog="sweep.py _task")
    p.add_argument("tasks")
    p.add_argument("--max_requeues", type=natural_int, default=MAX_REQUEUES)
    args = p.parse_args(argv)
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    with open(args.tasks) as f:
        task = json.loads(f.read().splitlines()[index])
    job = os.environ["SLURM_JOB_ID"]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    got, proc = [], None

    def forward(signum, frame):
        got.append(signum)
        print(f"{time.strftime('%F %T')} {signal.Signals(signum).name}: stopping the run", flush=True)
        if proc is not None:
            signal_quietly(proc.pid, signal.SIGTERM)

    for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    print(f"{time.strftime('%F %T')} task {index} (job {job}, restart {restarts}) on "
          f"{socket.gethostname()}: {task['run_dir']}", flush=True)
    command = launch_command(task["command"], task["run_dir"], task.get("stale_config"))
    proc = start(command, task["log"], dict(os.environ))
    if got:  # a signal came while it started
        signal_quietly(proc.pid, signal.SIGTERM)
    code = shell_status(proc.wait())
    outcome = OUTCOME.get(code, "failed")
    if code in (130, 143) and signal.SIGUSR1 in got:
        state = job_state(job)
        if restarts >= args.max_requeues:
            print(f"not requeued: requeued {restarts} times already (--max_requeues "
                  f"{args.max_requeues}); submit the sweep again to go on")
        elif state != "RUNNING":
            print(f"not requeued: the job is {state}")
        else:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            print(f"scontrol requeue {job}: exit {result.returncode} {result.stderr.strip()}")
            outcome = "requeued" if result.returncode == 0 else outcome
    record(os.path.join(os.path.dirname(args.tasks), "outcomes.tsv"), outcome, code, command,
           task["run_dir"], task["log"])
    print(f"{time.strftime('%F %T')} {outcome} (exit {code})", flush=True)
    return code


# ---------------------------------------------------------------- main

def prepare(argv):
    """(options, runs, log folder, name, signal lead): the plan, every check, and the stale
    runs handled as the options say. Nothing is written or started."""
    opts, runs, log_dir, name = plan(argv)
    check_paths(runs)
    opts.missing = data_check(opts, runs)
    stale = stale_runs(runs, opts.retry_diverged)
    if stale and opts.keep_stale:
        print(f"sweep: {len(stale)} run(s) made by other code or data are kept deliberately (--keep_stale); "
              "each records it in its summary.json", flush=True)
    elif stale and opts.overwrite_stale:
        for run, _ in stale:
            run.stale_config = config_digest(run.run_dir)
        print(f"sweep: {len(stale)} run(s) made by other code or data are retrained (--overwrite_stale)", flush=True)
    elif stale and not (opts.dry_run and not opts.slurm):
        raise SweepError(stale_report(stale, len(runs)))
    opts.stale = stale
    return opts, runs, log_dir, name, signal_lead(opts.sbatch_args)


def data_check(opts, runs):
    """The files that the runs which will train read, checked before anything starts (a
    smoke run makes its stand-in data first): a missing one stops the sweep, naming them
    all; a dry run only reports them. Returns the report (None when nothing is missing)."""
    import preflight
    from errors import UserError

    try:
        if getattr(opts, "smoke", None) and not opts.dry_run:
            preflight.make_stand_ins(runs)
        done = () if opts.overwrite_stale else [
            run for run, state in zip(runs, preflight.run_states(runs))
            if state == "finished" or (state == "diverged" and not opts.retry_diverged)]
        missing = preflight.missing_data(runs, done)
    except UserError as exc:  # a data folder that cannot be read, a stand-in that cannot be made
        raise SweepError(str(exc)) from None
    if getattr(opts, "smoke", None) and opts.dry_run:  # the smoke run makes these
        missing = {path: need for path, need in missing.items() if need[0].fake is None}
    report = preflight.missing_report(missing, len(runs)) if missing else None
    if report and not opts.dry_run:
        raise SweepError(report)
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_task"]:
        return run_task(argv[1:])
    try:
        if argv[:1] == ["paper"] and parse(argv)[1].list:
            extra = " ".join(w for w in argv[1:] if w != "--list")
            if extra:
                raise SweepError(f"--list lists the recipes and runs nothing, so {extra} would do nothing: "
                                 "drop it (sweep.py paper NAME --dry-run shows a recipe's runs)")
            print(recipe_listing())
            return 0
        try:
            opts, runs, log_dir, name, lead = prepare(argv)
            report = paper_report(opts) if getattr(opts, "paper", None) else None
        except KeyboardInterrupt:
            print("interrupted before any run started; nothing was written", file=sys.stderr)
            return 130
        if report:
            print(report, flush=True)
        if opts.dry_run and not opts.slurm:
            from preflight import run_states
            print_local_plan(runs, run_states(runs, [run for run, _ in opts.stale]))
            if opts.stale and not (opts.keep_stale or opts.overwrite_stale):
                print(f"a start would stop here: {stale_report(opts.stale, len(runs))}")
        if opts.dry_run and opts.missing:
            print(f"a start would stop here: {opts.missing}", flush=True)
        if opts.dry_run and not opts.slurm:
            print("dry run: nothing started, nothing written")
            return 0
        os.makedirs(log_dir, exist_ok=True)
        if opts.slurm:
            code = submit_slurm(runs, opts, log_dir, name, lead)
            if getattr(opts, "smoke", None):
                print(f"when the arrays have ended: python3 summarize.py {opts.smoke} --paper {opts.recipe}")
            return code
        code = run_local(runs, opts, log_dir)
        if getattr(opts, "smoke", None):
            import summarize
            code = summarize.main([opts.smoke, "--paper", opts.recipe]) or code
        return code
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # print run folders whose names are not UTF-8
        stream.reconfigure(errors="surrogateescape")
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # while submitting to SLURM (a local sweep handles its signals)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
