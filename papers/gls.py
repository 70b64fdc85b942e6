"""The GLS paper's tables (Wei et al., "To Smooth or Not? When Label Smoothing Meets Noisy
Labels", ICML 2022): test accuracy of ResNet-34 at each smooth rate r, each cell the better
of GLS trained directly (main_GLS_direct_train.py, 200 epochs) and GLS after the CE warm-up
(main_warmup.py, 120 epochs, then main_GLS_load.py, 100 epochs), as the paper reports.

A part's number is the mean over seeds of best_test_acc: the released scripts keep the
checkpoint of the best test accuracy, and the paper's numbers are those selections.

The CIFAR-10/100 reference numbers are those of Table 2 of the paper's ICLR 2022
submission: the published ICML 2022 tables could not be read, and they differ in places.
gls-cifarn runs the CIFAR-N release's protocol with GLS as its loss (docs/PAPERS.md);
its reference numbers come from public boards and third parties, named cell by cell.
"""
from papers import PaperRun, Part, Recipe, Ref, Source, flags_of

CITATION = 'Wei et al., "To Smooth or Not? When Label Smoothing Meets Noisy Labels", ICML 2022'
SMOOTH_RATES = ("0.8", "0.4", "0.0", "-0.4", "-1.0", "-2.0", "-4.0", "-6.0")  # the table's rows
EPOCHS = {"main_GLS_direct_train": 200, "main_warmup": 120, "main_GLS_load": 100}
METRIC = "best_test_acc"
# (script, part name) of the two ways each cell is trained.
MODES = (("main_GLS_direct_train", "direct"), ("main_GLS_load", "after warm-up"))


def gls_runs(columns, dataset):
    """Every (column, smooth rate, mode) run: columns are {name: (noise_type, rate or None)}."""
    runs = []
    for column, (noise_type, rate) in columns.items():
        noise = flags_of(dataset=dataset, noise_type=noise_type, **({"noise_rate": rate} if rate else {}))
        for r in SMOOTH_RATES:
            for script, part in MODES:
                flags = noise + flags_of(smooth_rate=r, n_epoch=EPOCHS[script])
                runs.append(PaperRun(script, flags, (Part(r, column, part, METRIC),)))
    return tuple(runs)


def table(rows, columns, values, source, at):
    """{(row, column): Ref} of a table written row by row; at(row, column) says where in
    the source the cell is."""
    return {(row, column): Ref(v, source, at(row, column))
            for row, line in zip(rows, values) for column, v in zip(columns, line)}


SUBMISSION = Source(
    key="gls-iclr2022-submission",
    cites='the ICLR 2022 submission of the GLS paper (Wei et al., "Understanding Generalized Label '
          'Smoothing when Learning with Noisy Labels", OpenReview UQQgMRq58O), Table 2',
    where="https://openreview.net/forum?id=UQQgMRq58O",
    covers="test accuracy of ResNet-34, CIFAR-10 clean, symmetric 0.2/0.4/0.6, asymmetric 0.2/0.3 and "
           "CIFAR-100 symmetric 0.4/0.6 at r = 0.8, 0.4, 0, -0.4, -1, -2, -4, -6; each the better of "
           "direct training and after the warm-up",
    missing="not the published ICML 2022 (PMLR) tables, which could not be read and differ in places "
            "(a listing of the published paper gives 58.47 for CIFAR-100 symmetric noise, a number "
            "this table does not have); no standard deviations")
C10 = {"clean": ("clean", None), "sym 0.2": ("symmetric", "0.2"), "sym 0.4": ("symmetric", "0.4"),
       "sym 0.6": ("symmetric", "0.6"), "asym 0.2": ("pairflip", "0.2"), "asym 0.3": ("pairflip", "0.3")}
C100 = {"sym 0.4": ("symmetric", "0.4"), "sym 0.6": ("symmetric", "0.6")}
TABLE2 = [  # r: C10 clean, sym 0.2, sym 0.4, sym 0.6, asym 0.2, asym 0.3 | C100 sym 0.4, sym 0.6
    (92.91, 88.88, 81.48, 73.16, 90.45, 87.83, 54.04, 39.50),
    (93.05, 87.13, 81.50, 74.21, 90.49, 87.90, 54.26, 41.57),
    (91.44, 85.08, 80.42, 75.34, 88.32, 86.27, 48.03, 38.11),
    (93.55, 87.55, 81.58, 75.95, 87.27, 88.33, 56.87, 43.70),
    (92.58, 88.58, 81.95, 76.20, 88.47, 87.50, 57.44, 43.85),
    (93.30, 88.78, 83.64, 76.11, 88.66, 87.27, 58.10, 44.88),
    (93.13, 88.90, 84.34, 77.22, 89.56, 87.29, 58.35, 46.38),
    (93.14, 88.94, 84.52, 77.42, 89.70, 87.57, 57.73, 46.46),
]

GLS_CIFAR10 = Recipe(
    name="gls-cifar10", paper=CITATION, table="Table 2 of its ICLR 2022 submission, CIFAR-10 columns",
    summary="GLS on CIFAR-10: clean, symmetric 0.2/0.4/0.6, asymmetric (pairflip) 0.2/0.3 x 8 smooth rates",
    runs=gls_runs(C10, "cifar10"), rows=SMOOTH_RATES, columns=tuple(C10), epochs=EPOCHS,
    refs=table(SMOOTH_RATES, tuple(C10), [line[:6] for line in TABLE2], SUBMISSION,
               lambda r, c: f"Table 2, row r = {r}, column CIFAR-10 {c}"),
    row_title="r",
    notes="The paper's 'asymmetric' noise is the GLS release's pairflip.")

GLS_CIFAR100 = Recipe(
    name="gls-cifar100", paper=CITATION, table="Table 2 of its ICLR 2022 submission, CIFAR-100 columns",
    summary="GLS on CIFAR-100: symmetric 0.4/0.6 x 8 smooth rates",
    runs=gls_runs(C100, "cifar100"), rows=SMOOTH_RATES, columns=tuple(C100), epochs=EPOCHS,
    refs=table(SMOOTH_RATES, tuple(C100), [line[6:] for line in TABLE2], SUBMISSION,
               lambda r, c: f"Table 2, row r = {r}, column CIFAR-100 {c}"),
    row_title="r")


# CIFAR-N: the human label sets, trained as the CIFAR-N release trains them
# (UCSC-REAL/cifar-10-100n main.py, the GLS release's README sends CIFAR-N users there,
# README.md:51-52) with GLS as the loss. Every flag is that release's setting:
CIFARN_EPOCHS = 100  # main.py:16 (--n_epoch default 100)
CIFARN_PROTOCOL = flags_of(
    n_epoch=CIFARN_EPOCHS,
    lr="0.1",               # main.py:12; the plan main.py:138: 0.1 for 60 epochs, then 0.01
    lr_milestones="0.6",    # main.py:138, [0.1] * 60 + [0.01] * 40: one step, after 60 of 100
    lr_gamma="0.1",
    momentum="0.9",         # main.py:124
    **{"no-nesterov": None},  # main.py:124: torch.optim.SGD without nesterov
    weight_decay="0.0005",  # main.py:124
    batch_size=128,         # main.py:102, :127
    test_batch_size=64,     # main.py:135
    model="resnet",         # main.py:122, ResNet34: models/resnet.py, the GLS release's file
)
# Not the release's: 5% of the noisy training labels held out as a validation split, so
# that no choice (the epoch of a run, the smooth rate of a PLS or NLS cell) looks at the
# test set. --val_fraction 0 undoes it (docs/PAPERS.md).
CIFARN_VAL_FRACTION = "0.05"
CIFARN = {"C10N aggre": ("cifar10", "aggre"), "C10N rand1": ("cifar10", "rand1"),
          "C10N rand2": ("cifar10", "rand2"), "C10N rand3": ("cifar10", "rand3"),
          "C10N worst": ("cifar10", "worst"), "C100N noisy": ("cifar100", "noisy100")}
CIFARN_ROWS = ("CE", "PLS", "NLS")
CIFARN_METRIC = "test_acc_at_best_val"   # test accuracy at the epoch of the best validation accuracy
CIFARN_SELECT = "best_val_acc"           # a PLS / NLS cell: the rate of the best validation accuracy


def cifarn_row(r):
    return "CE" if float(r) == 0 else "PLS" if float(r) > 0 else "NLS"


def cifarn_runs():
    runs = []
    for column, (dataset, noise_type) in CIFARN.items():
        for r in SMOOTH_RATES:
            flags = (flags_of(dataset=dataset, noise_type=noise_type, smooth_rate=r) + CIFARN_PROTOCOL
                     + flags_of(val_fraction=CIFARN_VAL_FRACTION))
            part = Part(cifarn_row(r), column, f"r={r}", CIFARN_METRIC, CIFARN_SELECT)
            runs.append(PaperRun("main_GLS_direct_train", flags, (part,)))
    return tuple(runs)


POSITIVE_LS_BOARD = Source(
    key="pwc-positive-ls",
    cites='the Papers with Code CIFAR-N boards, entry "Positive-LS" of Lukasik et al., "Does label '
          'smoothing mitigate label noise?", ICML 2020 (not the GLS paper)',
    where="https://www.paperswithcode.com/paper/does-label-smoothing-mitigate-label-noise "
          "(the same entries: https://paperswithcode2.com/paper/135989)",
    covers="Positive-LS, accuracy (mean): CIFAR-10N aggregate 91.57, random 1 89.80, random 2 89.35, "
           "random 3 89.82, worst 82.76; CIFAR-100N 55.84",
    missing="no standard deviation, smooth rate or protocol; not a number of the GLS paper")
GLS_LISTING = Source(
    key="wizwand-gls",
    cites="the wizwand listing of the GLS paper's benchmark results (third party)",
    where="https://www.wizwand.com/paper/68fa6cd71e209131cea362a4",
    covers="GLS paper: CIFAR-10N worst 82.99, aggregate 91.97; also Clothing1M 74.24, "
           "'CIFAR-100 Symmetric Noise' 58.47, 'CIFAR-10 Symmetric Noise' 93.55",
    missing="the listing's CIFAR-10N random 1-3 and CIFAR-100N entries could not be read; which loss "
            "and smooth rate each number is, and its standard deviation, are not given")
CIFARN_CE_QUOTE = Source(
    key="cifarn-paper-via-rescience",
    cites='the CIFAR-N paper (Wei et al., "Learning with Noisy Labels Revisited: A Study Using '
          'Real-World Human Annotations", ICLR 2022) as quoted by the reproduction KlemenVovk/noisy-labels, '
          'rescience/tables/comparison.tex, column "Reported"',
    where="https://github.com/KlemenVovk/noisy-labels/blob/24c265f7be239b8e0ddd10e62c9113eafa476367/"
          "rescience/tables/comparison.tex",
    covers="the CIFAR-N paper's accuracy on CIFAR-10N aggregate: CE 87.77 ± 0.38 (and nine other methods)",
    missing="only the aggregate label set; the CIFAR-N paper's own table could not be read")

NO_GLS_CIFARN = ("no source read gives it: the GLS paper's CIFAR-N table could not be read, and the "
                 "listing of its benchmark results that could be read has no entry for this label set")
NO_CE = ("no source read gives it: the CIFAR-N paper's CE numbers were read only for the aggregate "
         "labels (quoted by a reproduction)")
CIFARN_REFS = {
    ("CE", "C10N aggre"): Ref(87.77, CIFARN_CE_QUOTE, "row CE, column Reported (87.77 ± 0.38)"),
    **{("CE", c): Ref(at=NO_CE) for c in CIFARN if c != "C10N aggre"},
    **{("PLS", c): Ref(v, POSITIVE_LS_BOARD, f"Positive-LS, {board}, Accuracy (mean)")
       for c, v, board in (("C10N aggre", 91.57, "CIFAR-10N-Aggregate"), ("C10N rand1", 89.80, "CIFAR-10N-Random1"),
                           ("C10N rand2", 89.35, "CIFAR-10N-Random2"), ("C10N rand3", 89.82, "CIFAR-10N-Random3"),
                           ("C10N worst", 82.76, "CIFAR-10N-Worst"), ("C100N noisy", 55.84, "CIFAR-100N"))},
    ("NLS", "C10N aggre"): Ref(91.97, GLS_LISTING, "Related benchmarks, CIFAR-10N (Aggregate), Accuracy"),
    ("NLS", "C10N worst"): Ref(82.99, GLS_LISTING, "Related benchmarks, CIFAR-10N (Worst), Accuracy"),
    **{("NLS", c): Ref(at=NO_GLS_CIFARN) for c in ("C10N rand1", "C10N rand2", "C10N rand3", "C100N noisy")},
}

GLS_CIFARN = Recipe(
    name="gls-cifarn", paper=CITATION,
    table="CIFAR-N (CIFAR-10N, CIFAR-100N) under the CIFAR-N release's protocol; reference numbers from "
          "public boards and third parties, not from the GLS paper's own table",
    summary="GLS on CIFAR-N human labels (CIFAR-N release's protocol): aggre, rand1-3, worst, CIFAR-100N; "
            "CE / PLS / NLS chosen on a validation split",
    runs=cifarn_runs(), rows=CIFARN_ROWS, columns=tuple(CIFARN), epochs={"main_GLS_direct_train": CIFARN_EPOCHS},
    refs=CIFARN_REFS, row_title="loss",
    notes="Runs: the CIFAR-N release's main.py protocol (100 epochs, lr 0.1 then 0.01 after 60, SGD momentum "
          "0.9, weight decay 5e-4, batch 128, ResNet-34) with GLS as the loss, 5% of the noisy training "
          "labels held out for validation. Each run reads the test accuracy at its best validation epoch; "
          "CE is r = 0; the PLS cell is the rate of r = 0.8, 0.4 and the NLS cell the rate of r = -0.4, -1, "
          "-2, -4, -6 with the best mean validation accuracy: nothing is chosen on the test set. The boards' "
          "numbers take the best test accuracy over the epochs, so expect ours to be lower.")
