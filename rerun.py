"""Start a run again from its folder: the command its config.json records, run from the
folder it was started in, with flags added or changed at the end (the last value of a flag
wins, as on any command line).

    python3 rerun.py RUN_DIR                       # the same command: --if_exists decides
    python3 rerun.py RUN_DIR --seed 1 --lr 0.05    # the same run with these flags changed
    python3 rerun.py RUN_DIR --show ...            # print the command, run nothing

The command is the one the run's script was given (made_by.command in config.json), with
this Python and this checkout's copy of the script.
"""
import os
import shlex
import sys

from core.args import Parser, run_main
from core.files import read_json_file
from errors import UserError

ROOT = os.path.dirname(os.path.abspath(__file__))


def rerun_command(run_dir, extra):
    """(command, folder to run it in) for RUN_DIR with the flags `extra` appended."""
    config, problem = read_json_file(os.path.join(run_dir, "config.json"))
    if config is None:
        raise UserError(f"{os.path.abspath(run_dir)}: config.json {problem}; pass a run folder (one "
                        "that holds config.json)")
    made_by = config.get("made_by") if isinstance(config.get("made_by"), dict) else {}
    recorded = made_by.get("command")
    if not (isinstance(recorded, list) and len(recorded) >= 2 and all(isinstance(w, str) for w in recorded)):
        raise UserError(f"{os.path.abspath(run_dir)}/config.json records no command (a run made before "
                        "runs recorded theirs): start it with its script and the flags config.json lists")
    script = os.path.join(ROOT, os.path.basename(recorded[1]))
    if not os.path.isfile(script):
        raise UserError(f"the run was made by {recorded[1]}, which this checkout does not have")
    cwd = made_by.get("cwd")
    if not (isinstance(cwd, str) and os.path.isdir(cwd)):
        cwd = os.getcwd()  # not recorded (older runs) or gone: relative paths mean this folder
    return [sys.executable, script, *recorded[2:], *extra], cwd


def main(argv=None):
    p = Parser(prog="rerun.py", description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (it holds config.json)")
    p.add_argument("--show", action="store_true", help="print the command, run nothing")
    args, extra = p.parse_known_args(argv)  # every other word: flags of the run's script
    command, cwd = rerun_command(args.run_dir, extra)
    print(f"(in {cwd}) {shlex.join(command)}", flush=True)
    if args.show:
        return 0
    os.chdir(cwd)
    os.execv(command[0], command)


if __name__ == "__main__":
    run_main(main)
