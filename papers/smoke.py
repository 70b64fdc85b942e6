"""Smoke runs of a recipe (sweep.py paper NAME --smoke): every run of the recipe, with its
structure (scripts, the warm-ups they need, the flags that vary, the seeds), at a tiny size:
stand-in data in the data sets' own formats (the files each data set and noise type
declares, data.DataFile.fake), the recipe's models at a small width, SMOKE_EPOCHS epochs.

The runs record --smoke in their config.json: summarize.py refuses to mix them with real
runs, and lays smoke results out with smoke_recipe(recipe), whose table says it is a smoke
run. The size is read from the declarations, never from a recipe: a data set's own
smoke flags (DatasetSpec.smoke), models.PRETRAINED (no ImageNet download), a method's
epoch_flags (scaled to the smoke epochs), a validation split of a method's protocol or of
the recipe (raised to SMOKE_VAL_FRACTION, so that the stand-in data hold some out), so a
new recipe gets its smoke run unchanged.
"""
import dataclasses
import functools
import os

from core.args import flag_table

SMOKE_EPOCHS = 2
SMOKE_WIDTH = 4
# A validation split (PES's protocol holds out 10%, gls-cifarn 5%) on the stand-in data: the
# split takes round(fraction x members) of each class, and a CIFAR-100 stand-in has three
# images a class (data/cifar.py), so a smaller fraction would hold out none and the run
# would stop.
SMOKE_VAL_FRACTION = 0.25
# The flags every smoke run gets: its epochs, its mark, and no ImageNet weights to download
# (models.PRETRAINED); the sweep passes them to every script, the warm-ups' included.
SMOKE_FLAGS = ("--n_epoch", str(SMOKE_EPOCHS), "--smoke", "--no_pretrained")
HEADING = (f"SMOKE RUN: stand-in data, width {SMOKE_WIDTH}, {SMOKE_EPOCHS} epochs; it checks the "
           "machinery, its numbers are no result")


def scaled_epochs(value, epochs):
    """An epoch count of a flag (e.g. --correction 250 of 300 epochs) at SMOKE_EPOCHS: inside
    the run (1 .. epochs - 1) it stays inside (1 .. SMOKE_EPOCHS - 1); outside, as it is."""
    if not 1 <= value < epochs:
        return value
    return min(SMOKE_EPOCHS - 1, max(1, round(value * SMOKE_EPOCHS / epochs)))


def smoke_data_root(path, data_dir):
    """Where a smoke run reads the data that the real run reads from `path`: ./data/X becomes
    DATA_DIR/X, any other folder DATA_DIR/<its name>."""
    parts = [p for p in os.path.normpath(path).split(os.sep) if p not in ("", ".")]
    if parts and parts[0] == "data":
        return os.path.join(data_dir, *parts[1:])
    return os.path.join(data_dir, parts[-1] if parts else "")


_PARSERS = {}


def script_parser(script, words):
    """(method name, parser) of a script for these words (train.py's depend on its --method),
    each parser built once."""
    from utils.plan import script_preset

    preset = script_preset(script, words)
    key = (script, preset.method)
    if key not in _PARSERS:
        _PARSERS[key] = preset.parser()
    return preset.method, _PARSERS[key]


@functools.lru_cache(maxsize=None)
def takes_width(model):
    """Does the model take --width (resnet50 has torchvision's fixed widths)?"""
    from errors import UserError
    from models import build_model

    try:
        build_model(model, 2, width=SMOKE_WIDTH)
    except UserError:
        return False
    return True


def smoke_run(paper_run, recipe, data_dir):
    """The PaperRun at the smoke size: its flags, less the epochs (the sweep gives every run
    SMOKE_EPOCHS), the method's epoch flags scaled, plus the model's width (where it takes
    one), the data set's smoke flags and (with data_dir) its stand-in data."""
    from data import dataset_spec
    from methods import get_method

    words = paper_run.words()
    method, parser = script_parser(paper_run.script, words)
    dest = {s.lstrip("-"): f.dest for s, f in flag_table(parser).items()}
    cfg = parser.parse_args(words)
    epoch_flags = set(get_method(method).epoch_flags)
    epochs = cfg.n_epoch
    flags = []
    for flag, value in paper_run.flags:
        if dest.get(flag) == "n_epoch":
            continue
        if dest.get(flag) in epoch_flags:
            value = scaled_epochs(int(value), epochs)
        flags.append((flag, value))
    split = getattr(cfg, "val_fraction", 0) or 0
    if 0 < split < SMOKE_VAL_FRACTION:  # the protocol's split or the recipe's, raised
        flags = [(f, v) for f, v in flags if dest.get(f) != "val_fraction"] + [("val_fraction", SMOKE_VAL_FRACTION)]
    if takes_width(cfg.model):
        flags.append(("width", SMOKE_WIDTH))
    flags += list(dataset_spec(cfg.dataset).smoke)
    if data_dir is not None:
        flags.append(("data_root", smoke_data_root(recipe.places.get("datapath") or recipe.places.get("data_root")
                                                   or cfg.data_root, data_dir)))
    return dataclasses.replace(paper_run, flags=tuple(flags))


def smoke_recipe(recipe, data_dir=None):
    """The recipe of recipe's smoke runs (data_dir: the stand-in data's folder, for the sweep;
    None for summarize.py, which does not match the runs by their data folder)."""
    runs = tuple(smoke_run(r, recipe, data_dir) for r in recipe.runs)
    return dataclasses.replace(recipe, runs=runs, epochs={s: SMOKE_EPOCHS for s in recipe.epochs}, places={},
                               table=f"{recipe.table} [{HEADING}]",
                               notes=" ".join(n for n in (HEADING + ".", recipe.notes) if n))


def smoke_results(runs):
    """True when the runs (summarize.py's dicts) are smoke runs, False when real runs; a
    UserError when both, which no table mixes."""
    from errors import UserError

    smoke = [r for r in runs if r["config"].get("smoke") is True]
    if smoke and len(smoke) < len(runs):
        real = next(r for r in runs if r["config"].get("smoke") is not True)
        raise UserError(f"the folder holds smoke runs (e.g. {smoke[0]['folder']}) and real runs (e.g. "
                        f"{real['folder']}); no table mixes them: summarize the smoke runs' folder "
                        "(sweep.py paper --smoke writes to results/smoke) apart from the real results")
    return bool(smoke)


def smoke_plan(recipe, words):
    """(the smoke recipe, the runs' words, the result folder) of sweep.py paper NAME --smoke:
    SMOKE_FLAGS added, --result_dir results/smoke unless given, the stand-in data in its
    data/ folder. A folder holding real runs, and the flags smoke runs set, are refused."""
    from errors import UserError

    result_dir, given = "results/smoke", False
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if flag in ("--n_epoch", "--epochs", "--data_root", "--datapath"):
            raise UserError(f"{flag}: a smoke run sets it (every run {SMOKE_EPOCHS} epochs, on stand-in data "
                            "in its result folder's data/); drop it")
        if flag == "--result_dir":
            result_dir, given = value if eq else (words[i + 1] if i + 1 < len(words) else result_dir), True
    real = real_run_in(result_dir)
    if real:
        raise UserError(f"--result_dir {result_dir} holds real runs (e.g. {real}); smoke runs go to a "
                        "folder of their own: pass another --result_dir (default results/smoke)")
    return smoke_recipe(recipe, os.path.join(result_dir, "data")), \
        [*SMOKE_FLAGS, *words, *([] if given else ["--result_dir", result_dir])], result_dir


def real_run_in(folder):
    """The first run folder under `folder` whose config.json is not a smoke run's, or None."""
    import json

    for where, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if "config.json" in names:
            try:
                with open(os.path.join(where, "config.json")) as f:
                    if json.load(f).get("smoke") is not True:
                        return where
            except (OSError, ValueError, AttributeError):
                return where
            subfolders[:] = []
    return None
