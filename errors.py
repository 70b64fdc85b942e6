"""The exceptions the scripts report without a traceback.

UserError, for bad input (flags, data files, checkpoints, run folders): its message names
the problem and the fix. RunFailed, for a run that stopped on an error once its folder was
claimed (a bug in a method's code, a file it cannot write): summary.json says `failed`, and
the same command with --if_exists auto starts it again. The scripts catch both at the top
(core.args.run_main), print the message and exit with `exit_code`.
"""


class UserError(Exception):
    exit_code = 2


class RunFailed(UserError):
    exit_code = 1
