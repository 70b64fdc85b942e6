"""The report of a results folder, summarize.py's package: tables, paired differences,
per-class results, figures, a paper's table and the runs by state.

    runs.py        finding the run folders (the one walk of a results tree) and reading them
    checks.py      damaged input: what is accepted of config.json and summary.json
    groups.py      runs that differ only by their seed, as rows of summary.csv
    stats.py       mean, sample std, the t-interval of paired differences
    pairing.py     each group against its knob baseline and its CE baseline
    per_class.py   per-class results and the mean confusion and transition matrices
    tables.py      the CSV files and summary.md
    figure_data.py what each figure shows; plots.py draws it (the only module with matplotlib)
    paper.py       --paper: a paper's table
    status.py      --status: the runs by state, without torch
    values.py      values compared and written: canonical settings, text, cell formats
    cli.py         the command line

summary.json's keys are utils/schema.py's. A knob is a method's tunable flag whose
baseline value makes it another method, e.g. GLS at smooth rate 0 is CE (docs/ARCHITECTURE.md).
"""
