"""Print the run folder of many training commands at once: one per input line.

    printf '%s\\n' "main_GLS_load.py --smooth_rate -2 --seed 0" ... | python scripts/run_dirs.py

Each input line is a shell-quoted `SCRIPT ARGS...`; the output line is what
`SCRIPT ARGS... --print_run_dir` prints, or an empty line when the arguments are
rejected (the error goes to stderr). The local sweep (scripts/sweep_lib.sh) resolves
all its runs in this one process instead of starting Python and torch once per run.
"""
import contextlib
import importlib
import io
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from errors import UserError  # noqa: E402


def run_dir(words):
    module = importlib.import_module(os.path.splitext(os.path.basename(words[0]))[0])
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(words[1:] + ["--print_run_dir"])
    except SystemExit as exc:  # argparse's way to reject flags; its message is in err
        code = exc.code
    if code:
        raise UserError((err.getvalue().strip().splitlines() or [f"exit status {code}"])[-1])
    return out.getvalue().strip().splitlines()[-1]


def main():
    for line in sys.stdin:
        words = shlex.split(line)
        try:
            print(run_dir(words) if words else "", flush=True)
        except Exception as exc:  # the run then resolves itself in sweep_run.sh and fails there
            print(f"{line.strip()}: {exc}", file=sys.stderr)
            print("", flush=True)


if __name__ == "__main__":
    main()
