"""The CIFAR-N benchmark (Wei et al., "Learning with Noisy Labels Revisited: A Study Using
Real-World Human Annotations", ICLR 2022): every method of this repository on the human
label sets of CIFAR-10N (clean, aggre, rand1-3, worst) and CIFAR-100N (clean, noisy), rows
methods, columns label sets, all through train.py.

Protocol per method: the method's own release protocol where it has one on CIFAR
(Method.protocol: sop, dividemix, pes, ...), else the CIFAR-N release's main.py protocol
(papers/gls.py, CIFARN_PROTOCOL: 100 epochs, lr 0.1 then 0.01 after 60, SGD momentum 0.9,
weight decay 5e-4, batch 128, ResNet-34). The rows are built from methods/ when the recipes
are read, so a new method file joins the benchmark with its defaults.

The cell is what the benchmark reports: the best test accuracy over the epochs
(best_test_acc; for a method evaluating another model than its network, e.g. DivideMix's
two-network average, that model's), mean ± std over three seeds. CE is GLS at r = 0; the
PLS and NLS cells are the rate (0.8, 0.4 | -0.4 ... -6) of the best mean best_test_acc.

Two reference columns: "paper", the CIFAR-N paper's numbers (as the reproduction quotes
them, aggregate labels only) and the boards' entries of label smoothing; "reproduced", the
reproduction KlemenVovk/noisy-labels' own results on every label set
(rescience/tables/CIFAR-N.tex). docs/PAPERS.md lists what each covers and lacks.
"""
from methods import methods
from papers import PaperRun, Part, Recipe, Ref, Source, flags_of
from papers.gls import (CIFARN, CIFARN_CE_QUOTE, CIFARN_PROTOCOL, GLS_LISTING, POSITIVE_LS_BOARD, SMOOTH_RATES,
                        cifarn_row)

CITATION = ('Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World Human Annotations", '
            'ICLR 2022')
SCRIPT = "train"
METRIC = "best_test_acc"  # the best test accuracy over the epochs (rescience/content.tex:198)
# Three seeds: "Each run is repeated three times to obtain the mean accuracy and the
# standard deviation" (the reproduction's account of the benchmark, rescience/content.tex:198).
SEEDS = "0 1 2"
# The columns: the clean labels, then the human label sets of papers/gls.py's gls-cifarn.
COLUMNS = {"C10N clean": ("cifar10", "clean"),
           **{c: v for c, v in CIFARN.items() if v[0] == "cifar10"},
           "C100N clean": ("cifar100", "clean100"),
           **{c: v for c, v in CIFARN.items() if v[0] == "cifar100"}}
# Rows of a method other than its defaults: {method: ((row, extra flags), ...)}. GLS gives
# the CE row (r = 0) and the PLS and NLS rows, each of several rates (parts).
VARIANTS = {
    "gls": tuple((cifarn_row(r), flags_of(smooth_rate=r)) for r in sorted(SMOOTH_RATES, key=lambda r: float(r) != 0)),
    # PES-semi's release protocol is not PES's (a method's protocol depends on the data set
    # alone): PES_semi.py:26, :30-32, :58-61 (docs/REPRODUCTION.md, pes), its default cosine
    # plan (--optim cos, :33) to lr / 100 as the engine's cosine plan.
    "pes": (("PES", ()), ("PES (semi)", flags_of(semi="on", lr="0.02", weight_decay="0.0005", n_epoch=300,
                                                 model="preact_resnet18", val_fraction="0", lr_milestones=None,
                                                 cosine_lr_min="0.0002"))),
    "sop": (("SOP", ()), ("SOP+", flags_of(sop_plus=None))),
}
# Methods that take no part, and why: a recipe's runs cannot start from another run of the
# recipe except through a script's warm-up, and these need one on human labels.
NEEDS_AN_ESTIMATE = ("on human labels it needs the transition matrix estimated from another run "
                     "(--transition estimate --estimate_from RUN, a cross-entropy run of the same labels), "
                     "which no run of a recipe can start from: run the two by hand")
EXCLUDED = {"forward": NEEDS_AN_ESTIMATE, "backward": NEEDS_AN_ESTIMATE, "trevision": NEEDS_AN_ESTIMATE}
# The forget rate of the small-loss methods: their releases default it to the noise rate,
# which human labels do not declare; it is the label set's fraction of wrong labels (the
# released files' rates, docs/REAL_NOISE.md, checked by tests/test_cifarn.py).
FORGET_RATE_METHODS = ("coteaching", "coteaching_plus", "jocor")
NOISE_RATES = {"C10N clean": "0", "C10N aggre": "0.0901", "C10N rand1": "0.1723", "C10N rand2": "0.1812",
               "C10N rand3": "0.1764", "C10N worst": "0.4021", "C100N clean": "0", "C100N noisy": "0.4020"}
# Row names where the method's title is not the benchmark's name for it.
ROW_NAMES = {"nce_rce": "NCE+RCE", "sce": "SCE", "fdiv": "F-Div", "peer": "Peer Loss"}


def method_rows(found=None):
    """[(row, method, extra flags, part name)] of every method (found: {name: Method class},
    default methods/), the variants of VARIANTS first in their order, then the others by name."""
    found = methods() if found is None else found
    rows = []
    for name in sorted(set(found) - set(EXCLUDED), key=lambda n: (n not in VARIANTS, n)):
        cls = found[name]
        label = ROW_NAMES.get(name) or cls.title or name
        for row, extra in VARIANTS.get(name, ((label, ()),)):
            part = f"r={dict(extra)['smooth_rate']}" if name == "gls" else row
            rows.append((row, name, extra, part))
    return rows


def protocol_flags(cls, dataset):
    """The training flags of a method's runs: none where its release has a protocol on this
    data set (train.py applies it), else the CIFAR-N release's (papers/gls.py)."""
    return () if cls.protocol(dataset) else CIFARN_PROTOCOL


def benchmark_runs(rows, columns, found=None):
    found = methods() if found is None else found
    runs = []
    for column, (dataset, noise_type) in columns.items():
        for row, name, extra, part in rows:
            forget = flags_of(forget_rate=NOISE_RATES[column]) if name in FORGET_RATE_METHODS else ()
            flags = (flags_of(method=name, dataset=dataset, noise_type=noise_type) + extra + forget
                     + protocol_flags(found[name], dataset))
            runs.append(PaperRun(SCRIPT, flags, (Part(row, column, part, METRIC),)))
    return tuple(runs)


# ---------------------------------------------------------------- the reference numbers

RESCIENCE_COMMIT = "24c265f7be239b8e0ddd10e62c9113eafa476367"
REPRODUCED = Source(
    key="rescience-cifarn-reproduced",
    cites="the reproduction KlemenVovk/noisy-labels (a ReScience submission reproducing the CIFAR-N "
          "benchmark), rescience/tables/CIFAR-N.tex: its own results with each method's original "
          "configuration, the best test accuracy, mean ± std of three runs (caption: "
          "rescience/content.tex:294)",
    where=f"https://github.com/KlemenVovk/noisy-labels/blob/{RESCIENCE_COMMIT}/rescience/tables/CIFAR-N.tex",
    covers="CE, Co-teaching, Co-teaching+, ELR, ELR+, DivideMix, VolMinNet, CAL, PES (semi), SOP+ and SOP on "
           "CIFAR-10N clean, aggregate, random 1-3, worst and CIFAR-100N clean, noisy: every cell of those "
           "rows (CAL is no method of this repository)",
    missing="not the CIFAR-N paper's numbers; no row for the other methods; its runs use the configuration "
            "specific to each method (rescience/content.tex:289), not necessarily our protocol")
# rescience/tables/CIFAR-N.tex, lines 6-16 (line 13, CAL, has no method here): row: numbers
# in the table's column order, each (mean, std).
REPRODUCED_HEADINGS = ("CIFAR-10N Clean", "CIFAR-10N Aggregate", "CIFAR-10N Random 1", "CIFAR-10N Random 2",
                       "CIFAR-10N Random 3", "CIFAR-10N Worst", "CIFAR-100N Clean", "CIFAR-100N Noisy")
REPRODUCED_TABLE = {
    "CE": (6, ((94.21, 0.12), (91.70, 0.07), (90.20, 0.04), (90.12, 0.13), (90.08, 0.05), (83.91, 0.08),
               (76.23, 0.19), (61.19, 0.51))),
    "Co-teaching": (7, ((92.15, 0.11), (91.93, 0.25), (90.69, 0.07), (90.51, 0.14), (90.56, 0.22), (80.92, 0.43),
                        (72.24, 0.44), (54.48, 0.27))),
    "Co-teaching+": (8, ((92.90, 0.22), (91.15, 0.08), (89.82, 0.13), (89.64, 0.19), (89.77, 0.26), (82.36, 0.04),
                         (70.39, 0.45), (55.46, 0.34))),
    "ELR": (9, ((93.97, 0.12), (93.00, 0.19), (92.20, 0.10), (92.05, 0.12), (92.18, 0.17), (87.89, 0.14),
                (75.64, 0.21), (63.72, 0.38))),
    "ELR+": (10, ((95.81, 0.16), (95.32, 0.06), (94.89, 0.11), (94.88, 0.08), (94.93, 0.07), (91.75, 0.06),
                  (78.82, 0.24), (67.87, 0.07))),
    "DivideMix": (11, ((95.51, 0.00), (95.62, 0.09), (95.72, 0.11), (95.78, 0.10), (95.71, 0.09), (93.10, 0.10),
                       (78.22, 0.06), (70.91, 0.09))),
    "VolMinNet": (12, ((92.71, 0.02), (90.47, 0.17), (88.90, 0.51), (88.81, 0.17), (88.67, 0.10), (80.87, 0.25),
                       (72.73, 0.65), (58.30, 0.05))),
    "PES (semi)": (14, ((94.75, 0.16), (94.64, 0.05), (95.20, 0.08), (95.26, 0.13), (95.20, 0.11), (92.58, 0.05),
                        (77.77, 0.33), (70.32, 0.28))),
    "SOP+": (15, ((96.53, 0.05), (96.04, 0.15), (95.70, 0.07), (95.62, 0.18), (95.75, 0.14), (92.89, 0.09),
                  (77.90, 0.29), (63.88, 0.32))),
    "SOP": (16, ((93.76, 0.26), (91.69, 0.76), (89.83, 0.24), (90.57, 0.46), (90.88, 0.15), (83.66, 0.64),
                 (72.97, 1.15), (56.17, 1.02))),
}
# The CIFAR-N paper's numbers on the aggregate labels, as the reproduction quotes them:
# rescience/tables/comparison.tex, column "Reported" (caption rescience/content.tex:280).
# The reproduction writes SOP+ for the paper's SOP row ("the author's reported performance
# for the SOP method is most likely SOP+", rescience/content.tex:195).
REPORTED = {"CE": (5, 87.77, 0.38), "Co-teaching": (6, 91.20, 0.13), "Co-teaching+": (7, 90.61, 0.22),
            "ELR": (8, 92.38, 0.64), "ELR+": (9, 94.83, 0.10), "DivideMix": (10, 95.01, 0.71),
            "VolMinNet": (11, 89.70, 0.21), "PES (semi)": (13, 94.66, 0.18), "SOP+": (14, 95.61, 0.13)}
# The label-smoothing rows: the boards' entries papers/gls.py records for gls-cifarn.
POSITIVE_LS = {"C10N aggre": (91.57, "CIFAR-10N-Aggregate"), "C10N rand1": (89.80, "CIFAR-10N-Random1"),
               "C10N rand2": (89.35, "CIFAR-10N-Random2"), "C10N rand3": (89.82, "CIFAR-10N-Random3"),
               "C10N worst": (82.76, "CIFAR-10N-Worst"), "C100N noisy": (55.84, "CIFAR-100N")}
NEGATIVE_LS = {"C10N aggre": (91.97, "CIFAR-10N (Aggregate)"), "C10N worst": (82.99, "CIFAR-10N (Worst)")}

NO_PAPER = ("no source read gives it: the CIFAR-N paper's own table could not be read; the reproduction "
            "quotes its numbers for the aggregate labels only")
NO_PAPER_ROW = ("no source read gives it: the CIFAR-N paper's own table could not be read, and no source "
                "read quotes a number of this method")
NO_PAPER_SOP = ("no source read gives it: the reproduction quotes the paper's SOP number as SOP+ "
                "(rescience/content.tex:195), the SOP+ row")
NO_REPRODUCED = "no source read gives it: the reproduction (rescience/tables/CIFAR-N.tex) has no row for this method"


def paper_ref(row, column):
    if row in REPORTED and column == "C10N aggre":
        line, number, std = REPORTED[row]
        return Ref(number, CIFARN_CE_QUOTE,
                   f"rescience/tables/comparison.tex:{line}, row {row}, column Reported ({number:.2f} ± {std:.2f})")
    if row == "PLS" and column in POSITIVE_LS:
        number, board = POSITIVE_LS[column]
        return Ref(number, POSITIVE_LS_BOARD, f"Positive-LS, {board}, Accuracy (mean)")
    if row == "NLS" and column in NEGATIVE_LS:
        number, board = NEGATIVE_LS[column]
        return Ref(number, GLS_LISTING, f"Related benchmarks, {board}, Accuracy")
    if row == "SOP":
        return Ref(at=NO_PAPER_SOP)
    return Ref(at=NO_PAPER if row in REPORTED or row in ("PLS", "NLS") else NO_PAPER_ROW)


def reproduced_ref(row, column):
    if row not in REPRODUCED_TABLE:
        return Ref(at=NO_REPRODUCED)
    line, numbers = REPRODUCED_TABLE[row]
    i = list(COLUMNS).index(column)
    number, std = numbers[i]
    return Ref(number, REPRODUCED, f"rescience/tables/CIFAR-N.tex:{line}, row {row}, column "
                                   f"{REPRODUCED_HEADINGS[i]} ({number:.2f} ± {std:.2f})")


def benchmark_recipe(found=None, columns=None, name="cifarn-benchmark"):
    """The recipe of the methods `found` ({name: Method class}, default methods/) on
    `columns` (default COLUMNS, every label set); a subset is the same recipe cut."""
    columns = COLUMNS if columns is None else columns
    rows = method_rows(found)
    names = tuple(dict.fromkeys(row for row, *_ in rows))
    cells = [(row, column) for row in names for column in columns]
    return Recipe(
        name=name, paper=CITATION,
        table="its CIFAR-N benchmark (CIFAR-10N, CIFAR-100N); reference numbers: the CIFAR-N paper's aggregate "
              "column as a reproduction quotes it and boards' entries, not from the paper's own table; and the "
              "reproduction's own results",
        summary="every method on CIFAR-10N clean/aggre/rand1-3/worst and CIFAR-100N clean/noisy, each with its "
                "release's protocol or the CIFAR-N release's; best test accuracy",
        runs=benchmark_runs(rows, columns, found), rows=names, columns=tuple(columns),
        epochs={SCRIPT: None},  # each method's protocol: 100 epochs, or its release's
        refs={cell: paper_ref(*cell) for cell in cells}, seeds=SEEDS, row_title="method",
        more_refs=(("reproduced", {cell: reproduced_ref(*cell) for cell in cells}),),
        notes="Runs: train.py, each method with its release's CIFAR protocol where it has one (Method.protocol), "
              "else the CIFAR-N release's main.py protocol (100 epochs, lr 0.1 then 0.01 after 60, SGD momentum "
              "0.9, weight decay 5e-4, batch 128, ResNet-34). A cell is the best test accuracy over the epochs, "
              "as the benchmark reports it; CE is GLS at r = 0, PLS and NLS the smooth rate of the best mean.")


CIFARN_BENCHMARK = benchmark_recipe()
