"""The one exception for bad input: flags, data files, checkpoints, run folders.

Its message names the problem and the fix. The scripts catch it at the top
(core.args.run_main), print it and exit with status 2, without a traceback.
"""


class UserError(Exception):
    pass
