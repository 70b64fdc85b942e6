"""Runs whose folder holds a result made by other code or data than the sweep would use
now: what the run would record as made_by now (utils.plan, the same computation the
script makes) against the made_by of the folder's config.json (utils.identity.what_changed)."""
from errors import UserError

SHOWN_STALE = 5  # stale runs the report names one by one


class RunIdentities:
    """made_by of a sweep's planned runs as they would record it now, each part computed
    once for all of them (utils.plan.Identities)."""

    def __init__(self):
        from utils.plan import Identities

        self.identities = Identities()

    def made_by(self, run):
        return run.plan.made_by(self.identities)


def auto_action(run_dir, retry_diverged):
    """What --if_exists auto would do with a run folder (utils.results.decide) when it holds
    a result: finished, diverged or resume; None when the run starts (over) or the folder is
    damaged (its run then stops with the script's message)."""
    from core.files import RunFolder
    from utils.results import decide, run_entries

    if not run_entries(run_dir):
        return None
    try:
        action = decide(RunFolder(run_dir), "auto", retry_diverged)
    except UserError:
        return None
    return action if action in ("finished", "diverged", "resume") else None


def stale_runs(runs, retry_diverged, made_by=None):
    """[(run, changes)] of the runs whose folder holds a result that --if_exists auto would
    keep or resume (finished, diverged, unfinished with last.pt) but that other code or data
    made. Each other run whose folder holds a finished or diverged result to keep gets
    `run.kept` set to that state: the sweep reports it from its folder without starting it.
    made_by: run -> what it would record now (default: computed from its plan, and kept
    as `run.made_by`)."""
    from core.files import RunFolder
    from utils.identity import what_changed

    made_by, stale = made_by or RunIdentities().made_by, []
    for run in runs:
        run.kept = None
        action = auto_action(run.run_dir, retry_diverged)
        if action is None:
            continue
        saved = RunFolder(run.run_dir).read_json_or_none("config.json") or {}
        run.made_by = made_by(run)
        changes = what_changed(saved.get("made_by"), run.made_by)
        if changes:
            stale.append((run, changes))
        elif action != "resume":
            run.kept = action
    return stale


def stale_report(stale, total):
    lines = [f"{len(stale)} of the sweep's {total} runs hold results made by other code or data than "
             "this sweep would use now:"]
    for run, changes in stale[:SHOWN_STALE]:
        lines += [f"  {run.run_dir}"] + [f"    {change}" for change in changes]
    if len(stale) > SHOWN_STALE:
        lines.append(f"  and {len(stale) - SHOWN_STALE} more")
    lines += ["No run was started. Carry on with one of:",
              "  --overwrite_stale  retrain these runs (their results are deleted; the other runs are kept)",
              "  --keep_stale       keep (or resume) them deliberately; each run records the decision "
              "in its summary.json"]
    return "\n".join(lines)
