"""The flags of a sweep's runs: the scripts as the sweep sees them, the runs' words cut into
flags with their values (tokens), the axes whose product makes the runs, and which
script's runs each flag goes to."""
import collections
import re

from core.args import flag_nargs, flag_table
from errors import UserError

from . import SweepError
from .cli import noise_settings, numbers, split_words

# Flags of the runs that decide where or whether a run writes: the sweep sets them itself.
WRITES = {"print_run_dir": "it prints the run folder instead of training",
          "if_exists": "every run is started with --if_exists auto, so that a rerun sweep continues",
          "resume": "every run is started with --if_exists auto (the same as --resume)",
          "overwrite": "every run is started with --if_exists auto; --overwrite_stale retrains the "
                       "runs made by other code or data"}
SWEEP_OPTIONS = ("retry_diverged", "keep_stale")  # run flags the sweep passes on itself

Option = collections.namedtuple("Option", "dest nargs")  # a flag a script accepts
Token = collections.namedtuple("Token", "flag dest words")  # one flag of a run with its values


class Script:
    """A training script as the sweep sees it, from its own preset and parser: the flags it
    accepts (`options`), their defaults, its method's flags, the script it requires, and
    `fixed`: the words every run of it starts with (`--method NAME` in a method grid)."""

    def __init__(self, name, preset, fixed=()):
        from methods import get_method
        from utils.cli import method_flags

        self.name, self.preset, self.requires, self.fixed = name, preset, preset.requires, list(fixed)
        self.parser = preset.parser()
        nargs = flag_nargs(self.parser)
        self.options = {s: Option(flag.dest, nargs[s]) for s, flag in flag_table(self.parser).items()}
        self.method = preset.method
        self.method_dests = method_flags(get_method(preset.method))[1]

    def default(self, dest):
        return self.parser.get_default(dest)


_SCRIPTS = {}


def load_script(name, words, fixed=()):
    """The Script `name` for the runs' words (train.py's flags depend on its --method)."""
    from utils.plan import script_preset

    try:
        preset = script_preset(name, [*fixed, *words])
    except UserError as exc:
        raise SweepError(f"{name}.py: {refusal(exc)}") from None
    key = (name, preset.method, tuple(fixed))  # a method grid's script starts its words with --method
    if key not in _SCRIPTS:
        _SCRIPTS[key] = Script(name, preset, fixed)
    return _SCRIPTS[key]


def refusal(exc):
    """A script's refusal as the sweep shows it: its message without the pointer to --help."""
    return "\n".join(line for line in str(exc).splitlines()
                     if not line.endswith("lists every flag with its default)"))


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


# ---------------------------------------------------------------- the runs' words as flags

def is_option(word):
    return word.startswith("-") and len(word) > 1 and not re.fullmatch(
        r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-(inf|infinity|nan)", word, re.IGNORECASE)


def find_option(flag, scripts):
    return next((s.options[flag] for s in scripts if flag in s.options), None)


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
        known = find_option(flag, scripts)
        end = i + 1
        if "=" not in words[i]:
            nargs = known.nargs if known else "*"
            most = {None: 1, "?": 1, "*": len(words), "+": len(words)}.get(nargs, nargs)
            while end < len(words) and end - i - 1 < most and (nargs is None or not is_option(words[end])):
                end += 1
        tokens.append(Token(flag, known.dest if known else None, words[i:end]))
        i = end
    return tokens


def value(token):
    """The value(s) of a flag, as written (--flag VALUE or --flag=VALUE)."""
    return token.words[0].partition("=")[2] if len(token.words) == 1 else " ".join(token.words[1:])


# ---------------------------------------------------------------- axes

class Axis:
    """One dimension of the sweep: its option, how to write a value there (for messages), and
    its points, each a list of Tokens (a --noise setting is two flags)."""

    def __init__(self, option, points, example="{option} '{value}'"):
        self.option, self.points, self.example = option, points, example
        self.dests = {t.dest for point in points for t in point if t.dest}


def built_in_axes(kind, opts, scripts):
    """The axes of gls and sln (their noise settings and the method's own flag they vary) and
    --seeds, in the order that nests them (the first outermost)."""
    def flag(name, setting):
        return Token(name, find_option(name, scripts).dest, [name, setting])

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


def grid_flag(text):
    """(name as written, --flag, values) of --grid FLAG='V1 V2 ...' (FLAG with or without its dashes)."""
    name, eq, values = text.partition("=")
    flag = name if name.startswith("-") else "--" + name
    if not eq or not re.fullmatch(r"--?[A-Za-z_][\w-]*", flag):
        raise SweepError(f"--grid {text!r}: write FLAG='V1 V2 ...', e.g. --grid \"smooth_rate=0.4 -2.0\"")
    words = split_words(values, f"--grid {name}")
    if not words:
        raise SweepError(f"--grid {text!r} has no values: give one or more, e.g. --grid \"{name}=0.1 0.2\"")
    return name, flag, words


def grid_axis(text, scripts):
    """The Axis of --grid FLAG='V1 V2 ...'."""
    name, flag, words = grid_flag(text)
    known = find_option(flag, scripts)
    if known is not None and known.nargs == 0:
        raise SweepError(f"--grid {name}: {flag} takes no value; run one sweep with it and one without")
    spread = known is not None and known.nargs in ("*", "+")  # a value of a list flag is its words
    return Axis(f"--grid {name}=...", [[Token(flag, known.dest if known else None,
                                              [flag, *(v.split() if spread else [v])])] for v in words],
                f"--grid {name}='{{value}}'")


def method_grid(kind, opts, words):
    """The methods of --grid method='NAME ...' (train.py only), taken out of opts.grid, each
    once, and the Axis that stands for them in the checks; (None, None) without one."""
    from methods import methods

    texts = [t for t in opts.grid if grid_flag(t)[1] == "--method"]
    if not texts:
        return None, None
    if kind != "train":
        raise SweepError(f"--grid method: the runs of {kind if kind in ('gls', 'sln') else kind + '.py'} "
                         "have one method each; sweep methods with train.py: "
                         "sweep.py train.py --grid method='gls gce'")
    if len(texts) > 1:
        raise SweepError("--grid method is given twice: give its values once")
    given = next((w for w in words if w == "--method" or w.startswith("--method=")), None)
    if given:
        raise SweepError(f"the flags of the runs: {given}: the sweep sets --method from its option "
                         "--grid method=...; name every method there")
    names = list(dict.fromkeys(grid_flag(texts[0])[2]))
    known = methods()
    for name in names:
        if name not in known:
            ce = (" CE is the method gls with --smooth_rate 0: --grid \"method=gls gce\" --smooth_rate 0 "
                  "gives it to the gls runs only." if name.lower() == "ce" else "")
            raise SweepError(f"--grid method: {name!r} is not a method;{ce} The methods are "
                             f"{', '.join(sorted(known))}")
    opts.grid = [t for t in opts.grid if t not in texts]
    return names, Axis("--grid method=...", [[Token("--method", "method", ["--method", n])] for n in names],
                       "--grid method='{value}'")


# ---------------------------------------------------------------- checks of the flags

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
                             f"sweep's scripts: {', '.join(dict.fromkeys(s.name for s in scripts))}")
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
                                 "outcomes.tsv and the task files hold a run on each line, tab-separated: "
                                 "pass a value without one")


def routed(token, script, above, axis):
    """Does `token` go to the runs of `script`, which the scripts `above` need first? A flag
    goes where it is accepted (one that no script knows goes everywhere, to be refused with
    the script's message), never to a warm-up when it is a flag of the method that follows
    (the warm-up of GLS must not get --smooth_rate). A grid value goes to a warm-up only for
    a setting the two scripts share (the same default: data, noise, model, seed), not for
    one of a script's own protocol (epochs, lr)."""
    if token.dest is None:
        return True
    if token.flag not in script.options:
        return False
    if any(token.dest in s.method_dests for s in above):
        return False
    return not axis or all(s.default(token.dest) == script.default(token.dest) for s in above)
