"""The SLN paper's tables (Chen et al., "Noise against noise: stochastic label noise helps
combat inherent label noise", ICLR 2021): SLN, SLN-MO and SLN-MO-LC on CIFAR-10 and
CIFAR-100 (noise rate 0.4, WRN-28-2, 300 epochs) and Clothing1M (ResNet-50, 10 epochs),
at the paper's sigmas, as the release's README runs them, with CE beside them.

SLN and SLN-MO are one run (--correction -1): SLN is the network itself, SLN-MO its
momentum model, evaluated every epoch beside it. SLN-MO-LC is a second run with label
correction (after 250 epochs on CIFAR, 1 on Clothing1M), read from its momentum model.
CE is a third run, the first one's with sigma 0 (--sigma 0 --correction -1: the release's
script with no stochastic label noise), read as SLN is: the baseline SLN is measured
against. CIFAR numbers are the last epoch's test accuracy (the release saves
the final networks, no selection). On Clothing1M the release validates only the momentum
model (noise_clothing1m_train.py:133) and keeps both networks at its best validation
epoch (:138-142): SLN-MO and SLN-MO-LC are the momentum model's test accuracy there (the
"Test_at_val_best" of its log, :145), SLN the plain network's test accuracy at that same
epoch (its net.pth, :141), and CE likewise.

No number of these tables could be read: the paper's tables were not available and the
release's README gives commands, no numbers. Every cell says so (Ref); the tables show
ours only. The paper's other baseline rows could not be read either; CE is ours.
"""
from papers import PaperRun, Part, Recipe, Ref, flags_of

CITATION = ('Chen et al., "Noise against noise: stochastic label noise helps combat inherent label '
            'noise", ICLR 2021')
ROWS = ("CE", "SLN", "SLN-MO", "SLN-MO-LC")
UNKNOWN = Ref(at="no source read gives it: the SLN paper's tables could not be read, and the release's "
                 "README (chenpf1025/SLN README.md) has commands, no numbers")


def unknown(columns):
    return {(row, column): UNKNOWN for row in ROWS for column in columns}


def sln_runs(columns, dataset, num_class, epochs, correction, metrics):
    """Three runs per column ({column: (noise_mode, sigma)}): CE (sigma 0), SLN without
    correction (SLN, SLN-MO) and with it (SLN-MO-LC). metrics = (the network's, the
    momentum model's); CE reads the network's, as SLN does."""
    plain, momentum = metrics
    runs = []
    for column, (mode, sigma) in columns.items():
        noise = flags_of(dataset=dataset, num_class=num_class, noise_mode=mode, noise_rate="0.4") if mode \
            else flags_of(dataset=dataset, num_class=num_class)
        runs.append(PaperRun(_script(dataset), noise + flags_of(sigma=0, correction=-1, epochs=epochs),
                             (Part("CE", column, "CE", plain),)))
        runs.append(PaperRun(_script(dataset), noise + flags_of(sigma=sigma, correction=-1, epochs=epochs),
                             (Part("SLN", column, "SLN", plain), Part("SLN-MO", column, "SLN-MO", momentum))))
        runs.append(PaperRun(_script(dataset), noise + flags_of(sigma=sigma, correction=correction, epochs=epochs),
                             (Part("SLN-MO-LC", column, "SLN-MO-LC", momentum),)))
    return tuple(runs)


def _script(dataset):
    return "noise_clothing1m_train" if dataset == "clothing1m" else "noise_cifar_train"


CIFAR_METRICS = ("last_test_acc", "last_test_acc_ema")
C10 = {"sym": ("sym", "1.0"), "asym": ("asym", "0.5"), "dependent": ("dependent", "0.5"),
       "openset": ("openset", "0.5")}
C100 = {"sym": ("sym", "0.2"), "asym": ("asym", "0.2"), "dependent": ("dependent", "0.1")}

SLN_CIFAR10 = Recipe(
    name="sln-cifar10", paper=CITATION, table="CIFAR-10 experiments at noise rate 0.4 (no published number could be read)",
    summary="CE, SLN, SLN-MO, SLN-MO-LC on CIFAR-10: sym (sigma 1.0), asym, dependent, openset (sigma 0.5), rate 0.4",
    runs=sln_runs(C10, "cifar10", 10, 300, 250, CIFAR_METRICS), rows=ROWS, columns=tuple(C10),
    epochs={"noise_cifar_train": 300}, refs=unknown(C10), row_title="method")

SLN_CIFAR100 = Recipe(
    name="sln-cifar100", paper=CITATION, table="CIFAR-100 experiments at noise rate 0.4 (no published number could be read)",
    summary="CE, SLN, SLN-MO, SLN-MO-LC on CIFAR-100: sym, asym (sigma 0.2), dependent (sigma 0.1), rate 0.4",
    runs=sln_runs(C100, "cifar100", 100, 300, 250, CIFAR_METRICS), rows=ROWS, columns=tuple(C100),
    epochs={"noise_cifar_train": 300}, refs=unknown(C100), row_title="method",
    places={"datapath": "./data/CIFAR100"})

SLN_CLOTHING1M = Recipe(
    name="sln-clothing1m", paper=CITATION, table="Clothing1M experiment (no published number could be read)",
    summary="CE, SLN, SLN-MO, SLN-MO-LC on Clothing1M: ResNet-50 (ImageNet), sigma 0.2, correction after 1 epoch",
    runs=sln_runs({"Clothing1M": (None, "0.2")}, "clothing1m", 14, 10, 1,
                  ("test_acc_noema_at_best_val_ema", "test_acc_at_best_val_ema")),
    rows=ROWS, columns=("Clothing1M",), epochs={"noise_clothing1m_train": 10}, refs=unknown(("Clothing1M",)),
    row_title="method", seeds="0",
    notes="Clothing1M is not redistributable: put it under --datapath (data/clothing1m.py has the layout).")
