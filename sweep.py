#!/usr/bin/env python3
"""Sweeps of any training script over any of its flags, on this machine's GPUs/CPUs or as
SLURM job arrays: `python3 sweep.py --help`, docs/SWEEPS.md. The code is the sweeps/
package; the names below are the ones other code and the tests use."""
import sys

try:
    from sweeps.launch import launch_command
    from sweeps.launch.local import last_error_line
    from sweeps.launch.slurm import slurm_stages
    from sweeps.main import main
    from sweeps.plan import plan
    from sweeps.stale import RunIdentities as Identities, stale_runs
except KeyboardInterrupt:  # a Ctrl-C while Python reads the code (slow on a busy machine)
    print("interrupted before any run started; nothing was written", file=sys.stderr)
    sys.exit(130)

__all__ = ["Identities", "last_error_line", "launch_command", "main", "plan", "slurm_stages", "stale_runs"]

if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # print run folders whose names are not UTF-8
        stream.reconfigure(errors="surrogateescape")
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # while submitting to SLURM (a local sweep handles its signals)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
