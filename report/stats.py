"""The statistics of the tables: mean and sample standard deviation over seeds, and the
95% t-interval of paired differences."""
import math
import statistics


def mean_std(values):
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def values_of(runs, name):
    """summary[name] of every run, or None unless every run has it: a column only some
    seeds have would mix populations."""
    values = [r["summary"][name] for r in runs if r["summary"].get(name) is not None]
    return values if len(values) == len(runs) else None


def t_interval(diffs):
    """Mean of paired differences and its 95% t-interval, mean ± t_{0.975, n-1} sd/sqrt(n)
    with sd of ddof=1; (mean, None, None) for one pair, where it is undefined."""
    from scipy import stats  # imported here: only the paired tables need it

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half
