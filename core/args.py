"""Command-line plumbing shared by every script: the parser, number types, the entry point.

Light on purpose (no torch): a script imports this first, and everything heavy inside
main(), so that a Ctrl-C while torch loads ends like any other (exit 130, no traceback).
"""
import argparse
import collections
import contextlib
import contextvars
import difflib
import errno
import re
import sys

from errors import UserError

SEED_RANGE = 2 ** 32  # numpy's RandomState takes seeds in [0, 2^32)

# One flag of a parser: its destination, whether it takes a value, its default, and
# argparse's nargs (None: one value, 0: none, "?", "*", "+" or a count).
Flag = collections.namedtuple("Flag", "dest takes_value default nargs")

_RAISING = contextvars.ContextVar("flag_errors_raise", default=False)


class FlagError(UserError):
    """A flag a parser refuses, raised instead of exiting inside `flag_errors_raise()`."""


@contextlib.contextmanager
def flag_errors_raise():
    """Inside it, a Parser that refuses its flags raises FlagError with the message it would
    print, instead of printing it and exiting: code that plans runs (utils/plan.py) gets the
    script's own words as an exception, without reading anything printed for people."""
    token = _RAISING.set(True)
    try:
        yield
    finally:
        _RAISING.reset(token)


def flag_table(parser):
    """{option string: Flag} of an argparse parser: the one place that reads its actions."""
    return {s: Flag(a.dest, a.nargs != 0, a.default, a.nargs) for a in parser._actions for s in a.option_strings}


def flag_nargs(parser):
    """{option string: argparse's nargs} (None: one value, 0: none, "?", "*", "+" or a count):
    how many words after a flag are its values."""
    return {s: flag.nargs for s, flag in flag_table(parser).items()}


def flag_dests(parser):
    """The destinations of an argparse parser's flags (its --help left out)."""
    return {f.dest for f in flag_table(parser).values()} - {"help"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written, and every flag's default in --help: 0, False and
    an empty list included (a flag without a value, None, says in its help what it means)."""

    def _get_help_string(self, action):
        # `is`, not `in`: 0 == False, so a membership test would hide --seed 0 and --momentum 0
        if (action.default is None or action.default is argparse.SUPPRESS
                or "%(default)" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with three changes:
    - any negative number is a value, not an option (argparse takes only -2 and -2.0, so
      --smooth_rate -2. or -1e0 ended with "expected one argument");
    - an unknown flag is one line naming it, with "did you mean" and `flag_owner`'s word
      on where it belongs, instead of the whole usage;
    - errors end with exit status 2 and a pointer to --help, without the usage block.
    """

    def __init__(self, *args, flag_owner=None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # --seed must never be read as --seeds
        super().__init__(*args, **kwargs)
        self.flag_owner = flag_owner  # flag -> "a flag of method gls" (or None)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def option_names(self):
        return sorted(s for s in flag_table(self) if s.startswith("--"))

    def parse_args(self, args=None, namespace=None):
        cfg, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(self.unknown_message(extra))
        return cfg

    def unknown_message(self, extra):
        flag = next((w for w in extra if w.startswith("-")), extra[0])
        name = flag.split("=", 1)[0]
        if not name.startswith("-"):
            return f"unexpected value {flag!r}: values follow their flag (--flag VALUE)"
        owner = self.flag_owner(name) if self.flag_owner else None
        if owner:
            return f"{name} is {owner}"
        close = difflib.get_close_matches(name, self.option_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"unknown flag {name}{hint}"

    def error(self, message):
        text = f"{message}\n({self.prog} --help lists every flag with its default)"
        if _RAISING.get():
            raise FlagError(text)
        self.exit(2, f"error: {text}\n")


def finite_float(text):
    """argparse type: a float that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: pass one such as 0.1 or -2") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number: pass one such as 0.1 or -2")
    return value + 0.0  # -0.0 is 0.0: one setting, one run folder


def integer(text):
    """argparse type: an int, refused with the fix (argparse says only "invalid int value")."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer: pass one such as 10") from None


def check_device(name):
    """auto, cpu, cuda or cuda:N; CUDA ones need a visible device (checked when the run starts)."""
    head, _, index = name.partition(":")
    if not (name in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())):
        raise UserError(f"--device {name!r} is not a device of this code; use auto, cpu, cuda or cuda:N")


# Errors of the file system, not of the code: a message is clearer than a traceback.
DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some of your quota",
               errno.EROFS: "use a writable --result_dir", errno.ENAMETOOLONG: "use a shorter --result_dir"}


def run_main(main):
    """Run a script's main() and exit with its status. Bad input: its message, exit 2. A full
    disk or quota: its message, exit 1 (every file is written atomically, so the run folder
    keeps its last complete state, and the same command with --if_exists auto continues).
    Ctrl-C before training starts: exit 130 without a traceback (a run that trains handles
    its signals itself, saves and exits 130 too). The scripts themselves start with SIGINT at
    its default action, so that a Ctrl-C during their imports and flag parsing, where nothing
    has been written, ends the process at once; the engine takes SIGINT over before it
    claims a run folder (utils/engine.py)."""
    for stream in (sys.stdout, sys.stderr):  # paths with bytes that are not UTF-8 print as given
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        code = main()
    except UserError as exc:  # and RunFailed: a run that stopped on an error, marked failed (exit 1)
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before training started; nothing was written", file=sys.stderr)
        code = 130
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror}{where}: {DISK_ERRORS[exc.errno]}, then rerun the same command "
              "with --if_exists auto (the last complete checkpoint was kept)", file=sys.stderr)
        code = 1
    sys.exit(code)


def format_duration(seconds):
    """12s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
