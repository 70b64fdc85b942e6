"""summarize.py on run folders written here by hand in the results contract's format.

Each run records in summary.json what it is (method_name, label, knobs, knob_baselines,
is_ce, comparable) and in config.json what made it (made_by); the expected numbers are
computed here with numpy from the accuracies written.
"""
import csv
import json
import os
import signal
import struct
import subprocess
import sys

import numpy as np
import pytest

import report.plots
import summarize
from conftest import fail_writing

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# t_{0.975, n-1}, hard-coded so the expected intervals do not depend on scipy.
T975 = {1: 12.706204736174694, 2: 4.302652729749462, 3: 3.1824463052837078}

CODE = "c0de0001aaaaaaaa"
DATA = {"data_sha1": "da7a0001bbbbbbbb", "labels_sha1": "1abe1001cccccccc"}
BASE = {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.4, "model": "resnet18",
        "n_epoch": 3, "batch_size": 128, "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0, "noise_seed": 0}


def comparable(starts_from=None, **changes):
    """summary.json's comparable: the settings shared with the CE run to pair with."""
    return {**BASE, **changes, "starts_from": starts_from}


FROM_SCRATCH = comparable()                                   # the CE warm-up, GLS direct
AFTER_WARMUP = comparable("main_warmup", lr=0.005)            # GLS after the warm-up
SLN_LIKE = comparable(noise_source="release")                 # SLN, and train.py's GCE


def made_by(code=CODE, data=DATA):
    return {"code": {"source_sha1": code, "source_files": ["a.py"], "git_commit": None, "git_dirty": False},
            "command": ["python", "a.py"], "data": dict(data)}


def write_json(path, obj):
    path.write_text(json.dumps(obj))


def write_run(root, script, name, config, summary=None, metrics=None, noise=None):
    """A run folder: config.json, summary.json (unless None), metrics.csv ({column: values}), noise.json."""
    folder = root / script / name
    folder.mkdir(parents=True)
    write_json(folder / "config.json", config)
    if summary is not None:
        write_json(folder / "summary.json", {"script": script, **summary})
    if metrics:
        columns = ["epoch", "lr", "train_loss", "train_acc"] + list(metrics)
        lines = [",".join(columns)]
        for e in range(len(next(iter(metrics.values())))):
            lines.append(",".join([str(e + 1), "0.1", "1.0", "50.0"] + [str(v[e]) for v in metrics.values()]))
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    if noise is not None:
        write_json(folder / "noise.json", noise)
    return folder


def finished(accs, method, noise=0.4, **extra):
    """A finished summary with (last, best[, last MO, best MO]) accuracies."""
    out = {"status": "finished", "method": method, "last_test_acc": accs[0], "best_test_acc": accs[1],
           "actual_noise_rate": noise, "epochs_completed": 3, "initial_test_acc": 60.0, **extra}
    if len(accs) == 4:
        out.update(last_test_acc_ema=accs[2], best_test_acc_ema=accs[3])
    return out


def record(name, label, knobs, is_ce, comp, baselines=None):
    return {"method_name": name, "label": label, "knobs": knobs,
            "knob_baselines": baselines if baselines is not None else {k: 0.0 for k in knobs},
            "is_ce": is_ce, "comparable": comp}


def method_run(root, script, name, seed, config, rec, accs, code=CODE, data=DATA, summary=None, **kw):
    """A run of the current format: made_by in config.json and summary.json, the method record."""
    config = {**config, "seed": seed, "result_dir": f"somewhere{seed}", "overwrite": seed == 1,
              "made_by": made_by(code, data)}
    if summary is None:
        summary = finished(accs, name.rsplit("-seed", 1)[0])
    summary = {**summary, **rec, "made_by": made_by(code, data)}
    return write_run(root, script, name, config, summary, **kw)


def settings_of(comp):
    return {k: v for k, v in comp.items() if k != "starts_from"}


def gls(root, script, r, seed, accs, wa=0.0, wb=1.0, comp=None, suffix="", **kw):
    ce = wb == 0
    tag = "ce" if ce else f"r{r:g}"
    label = "CE" if ce else f"{'PLS' if r > 0 else 'NLS' if r < 0 else 'GLS'} r={r:g}"
    knobs = {} if ce else {"smooth_rate": r}
    comp = comp or (AFTER_WARMUP if script == "main_GLS_load" else FROM_SCRATCH)
    config = {**settings_of(comp), "wa": wa, "wb": wb, "smooth_rate": r}
    if script == "main_GLS_load":
        config["warmup_ckpt"] = "best"
    return method_run(root, script, f"{tag}-seed{seed}{suffix}", seed, config,
                      record("gls", label, knobs, ce or r == 0, comp), accs, **kw)


def sln(root, sigma, seed, accs, script="noise_cifar_train", comp=SLN_LIKE, **kw):
    config = {**settings_of(comp), "sigma": sigma, "ema_decay": 0.99, "correction": -1}
    if script == "train":
        config["method"] = "sln"
    return method_run(root, script, f"slnmo-sigma{sigma:g}-seed{seed}", seed, config,
                      record("sln", f"SLN-MO sigma={sigma:g}", {"sigma": sigma}, sigma == 0, comp), accs, **kw)


def gce(root, q, seed, accs, comp=SLN_LIKE, **kw):
    config = {**settings_of(comp), "method": "gce", "q": q}
    return method_run(root, "train", f"gce-q{q:g}-seed{seed}", seed, config,
                      record("gce", f"GCE q={q:g}", {"q": q}, False, comp), accs, **kw)


# (last, best[, last MO, best MO]) by seed. Seed 3 of the GLS baseline is finished only
# there: it must not be paired (it would move every difference if it were).
WARMUP = {0: (80.0, 85.0), 1: (82.0, 86.5), 2: (79.0, 84.0)}
DIRECT = {0: (83.0, 88.0), 1: (86.5, 87.0), 2: (80.0, 90.0)}
LOAD = {0.0: {0: (85.0, 90.0), 1: (84.0, 91.0), 2: (88.0, 92.0), 3: (10.0, 10.0)},
        0.4: {0: (70.0, 75.0), 1: (80.0, 85.0), 2: (90.0, 95.5)},
        -2.0: {0: (81.25, 90.0), 1: (83.75, 91.0)}}
SLN = {0.0: {0: (70.0, 75.0, 72.0, 76.0), 1: (71.0, 74.0, 73.5, 77.0), 2: (69.0, 76.0, 74.0, 75.0)},
       0.5: {0: (74.0, 78.0, 78.0, 80.0), 1: (76.5, 77.0, 79.0, 81.5), 2: (75.0, 79.5, 77.5, 80.0)}}
GCE = {0.7: {0: (72.0, 76.0), 1: (74.0, 75.5), 2: (73.5, 77.0)}, 0.3: {0: (71.0, 74.0), 1: (70.5, 75.0)}}


@pytest.fixture
def results(tmp_path):
    """GLS (the warm-up, direct, after the warm-up), SLN and train.py's GCE; runs that did
    not finish; the same smooth rate 0 written as 0, 0.0 and -0.0."""
    root = tmp_path / "results"
    for seed, accs in WARMUP.items():
        gls(root, "main_warmup", 0.1, seed, accs, wa=1.0, wb=0.0)
    for seed, accs in DIRECT.items():
        gls(root, "main_GLS_direct_train", 0.4, seed, accs)
    zeros = {0: 0.0, 1: 0, 2: -0.0, 3: 0.0}
    for r, by_seed in LOAD.items():
        for seed, accs in by_seed.items():
            gls(root, "main_GLS_load", zeros[seed] if r == 0 else r, seed, accs,
                metrics={"test_acc": [accs[0] - 20, accs[0] - 10, accs[0]]})
    for sigma, by_seed in SLN.items():
        for seed, accs in by_seed.items():
            sln(root, sigma, seed, accs, metrics={"test_acc": [40.0, 50.0, accs[0]], "test_acc_ema": [30.0, 45.0, accs[2]]})
    for q, by_seed in GCE.items():
        for seed, accs in by_seed.items():
            gce(root, q, seed, accs)
    # r = -2: seed 2 interrupted, seed 3 crashed before its summary; r = -8 diverged.
    gls(root, "main_GLS_load", -2.0, 2, None, summary={"status": "interrupted", "method": "r-2",
                                                       "last_test_acc": 12.34, "epochs_completed": 1})
    write_run(root, "main_GLS_load", "r-2-seed3", {**settings_of(AFTER_WARMUP), "wa": 0.0, "wb": 1.0,
                                                   "smooth_rate": -2.0, "warmup_ckpt": "best", "seed": 3,
                                                   "made_by": made_by()})
    gls(root, "main_GLS_direct_train", -8.0, 0, None,
        summary={"status": "diverged", "method": "r-8", "diverged_epoch": 2, "epochs_completed": 1,
                 "last_test_acc": 20.0, "best_test_acc": 20.0})
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200
    assert len(data) > 5000  # a real plot, not an empty canvas


def summarized(root, out, *args):
    assert summarize.main([str(root), "--out", str(out), *args]) == 0
    return {r["label"]: r for r in read_csv(out / "summary.csv")}


def test_means_stds_and_each_methods_knob_columns(results, tmp_path):
    rows = summarized(results, tmp_path / "out")
    assert set(rows) == {"CE", "PLS r=0.4", "GLS r=0", "NLS r=-2", "SLN-MO sigma=0", "SLN-MO sigma=0.5",
                         "GCE q=0.7", "GCE q=0.3"}
    assert sorted(r["script"] for r in read_csv(tmp_path / "out" / "summary.csv")
                  if r["label"] == "PLS r=0.4") == ["main_GLS_direct_train", "main_GLS_load"]

    r04 = next(r for r in read_csv(tmp_path / "out" / "summary.csv")
               if r["script"] == "main_GLS_load" and r["method"] == "r0.4")
    assert (r04["n_seeds"], r04["seeds"], r04["n_not_averaged"]) == ("3", "0 1 2", "0")
    assert (r04["method_name"], r04["is_ce"], float(r04["smooth_rate"])) == ("gls", "False", 0.4)
    assert r04["sigma"] == r04["q"] == ""  # the knob columns of other methods are empty
    assert float(r04["last_test_acc_mean"]) == 80.0
    assert float(r04["last_test_acc_std"]) == 10.0  # sample std: sqrt((100 + 0 + 100) / 2)
    assert float(r04["best_test_acc_mean"]) == pytest.approx(np.mean([75.0, 85.0, 95.5]), abs=1e-12)
    assert float(r04["best_test_acc_std"]) == pytest.approx(np.std([75.0, 85.0, 95.5], ddof=1), abs=1e-12)
    assert r04["last_test_acc_ema_mean"] == ""

    # Smooth rate 0, 0.0 and -0.0: one group of four seeds.
    assert (rows["GLS r=0"]["n_seeds"], float(rows["GLS r=0"]["smooth_rate"])) == ("4", 0.0)
    # The interrupted run and the one without summary are not averaged in.
    r2 = rows["NLS r=-2"]
    assert (r2["n_seeds"], r2["seeds"], r2["n_not_averaged"]) == ("2", "0 1", "2")
    assert float(r2["last_test_acc_std"]) == pytest.approx(np.std([81.25, 83.75], ddof=1), abs=1e-12)
    # The warm-up trains no GLS term: it has no knob.
    assert rows["CE"]["smooth_rate"] == "" and rows["CE"]["is_ce"] == "True"

    s05 = rows["SLN-MO sigma=0.5"]
    assert float(s05["sigma"]) == 0.5 and s05["smooth_rate"] == ""
    assert float(s05["last_test_acc_ema_mean"]) == pytest.approx(np.mean([78.0, 79.0, 77.5]), abs=1e-12)
    assert float(s05["last_test_acc_ema_std"]) == pytest.approx(np.std([78.0, 79.0, 77.5], ddof=1), abs=1e-12)
    assert float(rows["GCE q=0.7"]["q"]) == 0.7 and rows["GCE q=0.7"]["script"] == "train"
    assert all(r["code"] == "c0de0001" and r["data"] == "da7a0001/1abe1001" for r in rows.values())
    assert all(r["marks"] == r["note"] == "" for r in rows.values())

    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| NLS r=-2 | main_GLS_load |  |  | -2 |" in md  # label, script, q, sigma, smooth_rate


def test_unfinished_runs_are_listed_separately(results, tmp_path):
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    listed = {r["run_dir"].split("results/")[1]: r for r in read_csv(out / "unfinished.csv")}
    assert set(listed) == {"main_GLS_load/r-2-seed2", "main_GLS_load/r-2-seed3",
                           "main_GLS_direct_train/r-8-seed0"}
    assert listed["main_GLS_load/r-2-seed2"]["status"] == "interrupted"
    assert listed["main_GLS_load/r-2-seed3"]["status"] == "no summary.json"
    assert listed["main_GLS_direct_train/r-8-seed0"]["note"] == "diverged at epoch 2"
    md = (out / "summary.md").read_text()
    table, not_averaged = md.split("## Runs not averaged")
    assert "82.50 ± 1.77" in table and "80.00 ± 10.00" in table
    assert "12.34" not in table
    for name in ("r-2-seed2", "r-2-seed3", "r-8-seed0"):
        assert name in not_averaged


# ---------------------------------------------------------------- paired differences

def expected_interval(group, baseline):
    """Mean paired difference and its 95% t-interval, from scratch with numpy."""
    d = np.array(group, dtype=float) - np.array(baseline, dtype=float)
    half = T975[len(d) - 1] * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def check_interval(row, name, group, baseline):
    mean, low, high = expected_interval(group, baseline)
    assert float(row[f"{name}_diff_mean"]) == pytest.approx(mean, abs=1e-12)
    assert float(row[f"{name}_diff_ci_low"]) == pytest.approx(low, rel=1e-12)
    assert float(row[f"{name}_diff_ci_high"]) == pytest.approx(high, rel=1e-12)


def check_pairs(row, mine, theirs, seeds):
    """Every accuracy the two groups both have, paired over `seeds`."""
    assert (row["n_pairs"], row["seeds"]) == (str(len(seeds)), " ".join(map(str, seeds)))
    for i, name in enumerate(summarize.ACCURACIES):
        if len(mine[seeds[0]]) > i and len(theirs[seeds[0]]) > i:
            check_interval(row, name, [mine[s][i] for s in seeds], [theirs[s][i] for s in seeds])
        else:
            assert row[f"{name}_diff_mean"] == row[f"{name}_diff_ci_low"] == ""


def paired_by(out):
    """{(label, script, baseline kind): paired row}."""
    rows = {}
    for r in read_csv(out / "paired.csv"):
        key = (r["label"], r["script"], r["baseline_kind"])
        assert key not in rows
        rows[key] = r
    return rows


def test_every_group_is_paired_against_ce_by_seed_whichever_script_made_it(results, tmp_path):
    out = tmp_path / "out"
    summarized(results, out)
    paired = paired_by(out)
    ce = {k[:2]: r for k, r in paired.items() if k[2] == "ce"}
    # GLS direct against the CE warm-up: another script, the same comparable settings.
    row = ce[("PLS r=0.4", "main_GLS_direct_train")]
    assert (row["baseline_script"], row["baseline_label"], row["baseline_method"]) == ("main_warmup", "CE", "ce")
    check_pairs(row, DIRECT, WARMUP, [0, 1, 2])
    # GLS after the warm-up against r = 0 after the warm-up (seed 3 is the baseline's alone).
    for label, r in (("PLS r=0.4", 0.4), ("NLS r=-2", -2.0)):
        row = ce[(label, "main_GLS_load")]
        assert (row["baseline_script"], row["baseline_label"]) == ("main_GLS_load", "GLS r=0")
        check_pairs(row, LOAD[r], LOAD[0.0], sorted(LOAD[r]))
    # SLN-MO against SLN at sigma 0, momentum models paired with momentum models.
    row = ce[("SLN-MO sigma=0.5", "noise_cifar_train")]
    assert row["baseline_label"] == "SLN-MO sigma=0"
    check_pairs(row, SLN[0.5], SLN[0.0], [0, 1, 2])
    # train.py's GCE against the SLN script's CE run: no momentum model on one side, no _ema.
    for q in (0.7, 0.3):
        row = ce[(f"GCE q={q:g}", "train")]
        assert (row["baseline_script"], row["baseline_label"]) == ("noise_cifar_train", "SLN-MO sigma=0")
        check_pairs(row, GCE[q], SLN[0.0], sorted(GCE[q]))
        assert row["note"] == ""
    # CE groups get no CE row; every other group gets one.
    assert set(ce) == {("PLS r=0.4", "main_GLS_direct_train"), ("PLS r=0.4", "main_GLS_load"),
                       ("NLS r=-2", "main_GLS_load"), ("SLN-MO sigma=0.5", "noise_cifar_train"),
                       ("GCE q=0.7", "train"), ("GCE q=0.3", "train")}

    md = (out / "summary.md").read_text()
    mean, low, high = expected_interval([d[0] for d in DIRECT.values()], [w[0] for w in WARMUP.values()])
    assert f"| {mean:+.2f} [{low:+.2f}, {high:+.2f}] (3 pairs) |" in md
    assert "| PLS r=0.4 | main_GLS_direct_train | CE | CE (main_warmup) |" in md


def test_knob_pairing_against_the_baseline_of_the_same_script(results, tmp_path):
    out = tmp_path / "out"
    summarized(results, out)
    paired = paired_by(out)
    knob = {k[:2]: r for k, r in paired.items() if k[2] == "knob"}
    for label, r in (("PLS r=0.4", 0.4), ("NLS r=-2", -2.0)):
        row = knob[(label, "main_GLS_load")]
        assert (row["baseline_method"], row["baseline_label"], row["note"]) == ("r0", "GLS r=0", "")
        check_pairs(row, LOAD[r], LOAD[0.0], sorted(LOAD[r]))
    assert float(knob[("PLS r=0.4", "main_GLS_load")]["last_test_acc_diff_mean"]) == pytest.approx(
        np.mean([70 - 85, 80 - 84, 90 - 88]), abs=1e-12)
    row = knob[("SLN-MO sigma=0.5", "noise_cifar_train")]
    check_pairs(row, SLN[0.5], SLN[0.0], [0, 1, 2])
    # No GLS direct at r = 0, no GCE at q = 0: a row that says so.
    for label, script, wanted in (("PLS r=0.4", "main_GLS_direct_train", "smooth_rate=0"), ("GCE q=0.7", "train", "q=0")):
        row = knob[(label, script)]
        assert (row["n_pairs"], row["baseline_group"], row["last_test_acc_diff_mean"]) == ("0", "", "")
        assert row["note"] == f"no baseline runs ({wanted}, every other setting equal)"
    # Baselines (knobs at their baseline value) and the warm-up (no knob) get no knob row.
    assert not {("GLS r=0", "main_GLS_load"), ("SLN-MO sigma=0", "noise_cifar_train"), ("CE", "main_warmup")} & set(knob)
    assert len(knob) == 6
    md = (out / "summary.md").read_text()
    assert "| baseline | CE |" in md  # r = 0 and sigma = 0: both their own baseline and CE


def test_ce_pairing_prefers_the_same_script_and_says_which(results, tmp_path):
    # train.py --method sln at sigma 0 with the GCE runs' settings: a second CE candidate.
    for seed, accs in {0: (60.0, 61.0, 62.0, 63.0), 1: (64.0, 66.0, 65.0, 67.0)}.items():
        sln(results, 0.0, seed, accs, script="train")
    out = tmp_path / "out"
    summarized(results, out)
    paired = paired_by(out)
    row = paired[("GCE q=0.7", "train", "ce")]
    assert (row["baseline_script"], row["baseline_label"]) == ("train", "SLN-MO sigma=0")
    check_pairs(row, GCE[0.7], {0: (60.0, 61.0), 1: (64.0, 66.0)}, [0, 1])
    other = next(r["group"] for r in read_csv(out / "summary.csv")
                 if r["script"] == "noise_cifar_train" and r["label"] == "SLN-MO sigma=0")
    assert row["note"] == f"2 CE groups match; used {row['baseline_group']} (same script), not {other}"
    # SLN from its script still prefers its own script's CE run.
    assert paired[("SLN-MO sigma=0.5", "noise_cifar_train", "ce")]["baseline_group"] == other


@pytest.mark.parametrize("change, note", [
    ({"comp": comparable(noise_source="release", lr=0.05)}, "no CE run with the same comparable settings"),
    ({"comp": comparable(noise_source="release", noise_seed=1)}, "no CE run with the same comparable settings"),
    ({"data": {**DATA, "labels_sha1": "1abe1002"}}, "exist only with other code or data"),
])
def test_ce_pairing_needs_equal_comparable_settings_and_data(results, tmp_path, change, note):
    gce(results, 0.9, 0, (70.0, 71.0), **change)
    out = tmp_path / "out"
    summarized(results, out)
    row = paired_by(out)[("GCE q=0.9", "train", "ce")]
    assert (row["baseline_group"], row["n_pairs"]) == ("", "0") and note in row["note"]


def test_comparable_settings_are_compared_canonically(results, tmp_path):
    # 0, 0.0 and -0.0, 2 and 2.0: one setting.
    comp = {**SLN_LIKE, "weight_decay": -0.0, "n_epoch": 3.0, "momentum": 0.9}
    gce(results, 0.9, 0, (70.0, 71.0), comp=comp)
    out = tmp_path / "out"
    summarized(results, out)
    row = paired_by(out)[("GCE q=0.9", "train", "ce")]
    assert row["baseline_label"] == "SLN-MO sigma=0" and row["n_pairs"] == "1"
    assert float(row["last_test_acc_diff_mean"]) == 70.0 - SLN[0.0][0][0]
    assert row["last_test_acc_diff_ci_low"] == ""  # one pair: no interval


def test_t_interval_matches_the_formula():
    diffs = [-2.5, 3.0, 4.0]
    assert summarize.t_interval(diffs) == pytest.approx(expected_interval(diffs, [0, 0, 0]), rel=1e-12)
    assert summarize.t_interval([1.25]) == (1.25, None, None)


# ---------------------------------------------------------------- open for new methods

def test_no_table_of_script_or_knob_names():
    source = open(summarize.__file__).read()
    for name in ("main_warmup", "main_GLS_direct_train", "main_GLS_load", "noise_cifar_train",
                 "noise_clothing1m_train", "smooth_rate", "sigma", "SCRIPT_NAMES", "BASELINE_KNOB"):
        assert name not in source, name


def test_a_new_method_with_two_knobs_is_tabled_paired_and_plotted(tmp_path, monkeypatch, capsys):
    """A method summarize.py has never heard of: knobs alpha and beta (baseline 0, 0), and a
    knob whose name is a column of the tables (it becomes knob_seeds)."""
    root = tmp_path / "results"
    values = {(0.0, 0): {0: (60.0, 61.0), 1: (62.0, 64.0)}, (0.4, 0): {0: (65.0, 66.0), 1: (63.0, 67.0)},
              (0.4, 2): {0: (70.0, 72.0), 1: (71.5, 73.0)}, (0.8, 2): {0: (68.0, 70.0), 1: (69.0, 69.5)}}
    for (alpha, beta), by_seed in values.items():
        for seed, accs in by_seed.items():
            rec = record("mix", f"MIX a={alpha:g} b={beta}", {"alpha": alpha, "beta": beta}, alpha == beta == 0, SLN_LIKE)
            method_run(root, "train", f"mix-a{alpha}-b{beta}-seed{seed}", seed,
                       {**BASE, "method": "mix", "alpha": alpha, "beta": beta}, rec, accs)
    rec = record("odd", "ODD", {"seeds": 3}, False, SLN_LIKE)
    method_run(root, "train", "odd-seed0", 0, {**BASE, "method": "odd", "seeds": 3}, rec, (50.0, 51.0))
    legends = capture_legends(monkeypatch)
    out = tmp_path / "out"
    rows = summarized(root, out)
    assert float(rows["MIX a=0.4 b=2"]["alpha"]) == 0.4 and float(rows["MIX a=0.4 b=2"]["beta"]) == 2
    assert rows["ODD"]["knob_seeds"] == "3" and rows["ODD"]["seeds"] == "0" and rows["ODD"]["alpha"] == ""
    paired = paired_by(out)
    for key in ((0.4, 2), (0.8, 2), (0.4, 0)):
        row = paired[(f"MIX a={key[0]:g} b={key[1]}", "train", "knob")]
        assert row["baseline_label"] == "MIX a=0 b=0"
        check_pairs(row, values[key], values[(0.0, 0)], [0, 1])
    assert paired[("ODD", "train", "knob")]["note"] == "no baseline runs (seeds=0, every other setting equal)"
    # One figure per (method, knob); lines per other setting (beta for alpha), points by value.
    names = sorted(p.name for p in out.glob("acc_vs_*.png"))
    # ODD ran at one value of its knob: no figure of a single dot, and a warning says why.
    assert names == ["acc_vs_alpha_mix.png", "acc_vs_beta_mix.png"]
    assert ("acc_vs_seeds_odd.png is not drawn: no setting of method odd was run at two values of seeds"
            in capsys.readouterr().err)
    assert legends["acc_vs_alpha_mix.png"][0] == ["train: digits symmetric 0.4, beta=0",
                                                  "train: digits symmetric 0.4, beta=2"]


def capture_legends(monkeypatch):
    """{file name: [legend texts of each axis]} of every figure summarize saves from now on."""
    legends = {}
    real = summarize.atomic_savefig

    def save(path, fig, **kwargs):  # the figure's legend (below its panels), else each axis's
        legends[os.path.basename(path)] = [[t.get_text() for t in legend.get_texts()] for legend in fig.legends] or [
            [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [] for ax in fig.axes]
        return real(path, fig, **kwargs)
    monkeypatch.setattr(report.plots, "atomic_savefig", save)
    return legends


def test_a_curves_pattern_names_a_whole_label_unless_substring_is_asked(results, tmp_path, monkeypatch):
    curve = {"test_acc": [50.0, 60.0, 70.0]}
    gls(results, "main_GLS_load", 0.4, 7, (91.0, 92.0), metrics=curve)
    gls(results, "main_GLS_load", 0.0, 7, (90.0, 91.0), metrics=curve)
    legends = capture_legends(monkeypatch)
    summarize.summarize(str(results), str(tmp_path / "exact"), curves=["GLS r=0"])
    assert {c.split(",")[0] for c in legends["curves_GLS_r=0.png"][0]} == {"GLS r=0"}
    summarize.summarize(str(results), str(tmp_path / "part"), curves=["r=0"], match="substring")
    assert {"GLS r=0", "PLS r=0.4"} <= {c.split(",")[0] for c in legends["curves_r=0.png"][0]}


def test_without_out_the_tables_go_to_a_folder_inside_the_results(results, capsys):
    assert summarize.main([str(results)]) == 0
    out = os.path.join(str(results), "summary")
    assert os.path.isfile(os.path.join(out, "summary.csv"))
    assert f"wrote {os.path.join(out, 'summary.csv')}" in capsys.readouterr().out.splitlines()
    assert summarize.main([str(results)]) == 0  # the tables' folder is no run: read again, same runs


def test_plots_against_each_knob_with_readable_legends(results, tmp_path, monkeypatch):
    curve = {"test_acc": [50.0, 60.0, 70.0]}
    for r, accs in ((-8.0, (40.0, 50.0)), (-0.4, (82.0, 88.0))):
        gls(results, "main_GLS_load", r, 0, accs, metrics=curve)
    gls(results, "main_GLS_load", 0.4, 0, (91.0, 92.0), comp=comparable("main_warmup", lr=0.01), suffix="-lr",
        metrics=curve)
    legends = capture_legends(monkeypatch)
    out = tmp_path / "out"
    _, _, plots = summarize.summarize(str(results), str(out), curves=["main_GLS_load", "sigma=0.5"],
                                      match="substring")
    names = sorted(os.path.basename(p) for p in plots)
    assert names == ["acc_vs_q_gce.png", "acc_vs_sigma_sln.png", "acc_vs_smooth_rate_gls.png",
                     "curves_main_GLS_load.png", "curves_sigma=0.5.png"]
    for name in names:
        check_png(out / name)
    # A line per script and other setting, sorted; MO lines for SLN; never a group hash.
    assert legends["acc_vs_smooth_rate_gls.png"][0] == [
        "main_GLS_direct_train: digits symmetric 0.4",
        "main_GLS_load: digits symmetric 0.4, lr=0.005", "main_GLS_load: digits symmetric 0.4, lr=0.01"]
    assert legends["acc_vs_sigma_sln.png"][0] == ["noise_cifar_train: digits symmetric 0.4",
                                                  "noise_cifar_train: digits symmetric 0.4 (MO)"]
    # Curves: the label, script and other settings, sorted by the knob's value as a number.
    curves = legends["curves_main_GLS_load.png"][0]
    assert [c.split(",")[0] for c in curves] == ["NLS r=-8", "NLS r=-2", "NLS r=-0.4", "GLS r=0", "PLS r=0.4",
                                                 "PLS r=0.4"]
    assert curves[0] == "NLS r=-8, main_GLS_load, lr=0.005 (1 seed)"
    assert curves[-2:] == ["PLS r=0.4, main_GLS_load, lr=0.005 (3 seeds)", "PLS r=0.4, main_GLS_load, lr=0.01 (1 seed)"]
    assert legends["curves_sigma=0.5.png"][0] == ["SLN-MO sigma=0.5, noise_cifar_train (3 seeds)",
                                                  "SLN-MO sigma=0.5, noise_cifar_train (3 seeds) MO"]
    md = (out / "summary.md").read_text()
    assert "![acc_vs_smooth_rate_gls.png](acc_vs_smooth_rate_gls.png)" in md


def test_points_along_a_knob_are_sorted_numerically(results):
    for r in (-8.0, -0.4):
        gls(results, "main_GLS_load", r, 0, (50.0, 60.0))
    groups = summarize.group_runs(summarize.find_runs(str(results)))
    rows, _ = summarize.group_rows(groups)
    members = summarize.knob_figures(rows)[("gls", "smooth_rate")]
    lines = dict(summarize.lines_over(members, groups, "smooth_rate"))
    xs = [r["knobs"]["smooth_rate"] for r in lines["main_GLS_load: digits symmetric 0.4"]]
    assert xs == [-8, -2, -0.4, 0, 0.4]


def test_curves_pattern_without_match_draws_nothing(results, tmp_path, capsys):
    _, _, plots = summarize.summarize(str(results), str(tmp_path / "out"), curves=["no-such-group"])
    assert not any(os.path.basename(p).startswith("curves_") for p in plots)
    assert "matches no finished group" in capsys.readouterr().err


# ---------------------------------------------------------------- code and data versions, marks

def test_two_code_versions_among_a_groups_seeds_are_never_averaged(results, tmp_path):
    gls(results, "main_GLS_load", 0.4, 3, (20.0, 30.0), code="c0de0002ffff")
    gls(results, "main_GLS_load", 0.4, 4, (22.0, 31.0), code="c0de0002ffff")
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    rows = [r for r in read_csv(out / "summary.csv") if r["script"] == "main_GLS_load" and r["method"] == "r0.4"]
    by_code = {r["code"]: r for r in rows}
    assert set(by_code) == {"c0de0001", "c0de0002"}
    assert (by_code["c0de0001"]["seeds"], float(by_code["c0de0001"]["last_test_acc_mean"])) == ("0 1 2", 80.0)
    assert (by_code["c0de0002"]["seeds"], float(by_code["c0de0002"]["last_test_acc_mean"])) == ("3 4", 21.0)
    assert all("2 code versions of these settings: each is its own group" in r["note"] for r in rows)
    md = (out / "summary.md").read_text()
    assert "| code / data |" in md and "| code c0de0001 |" in md and "| code c0de0002 |" in md
    assert "never averaged together" in md
    # The new code's runs have no baseline of the same code: not paired across code versions.
    paired = [r for r in read_csv(out / "paired.csv") if r["group"] == by_code["c0de0002"]["group"]]
    assert {r["baseline_kind"]: r["baseline_group"] for r in paired} == {"knob": "", "ce": ""}
    knob = next(r for r in paired if r["baseline_kind"] == "knob")
    assert "exist only with other code or data (code c0de0001" in knob["note"]


def test_two_data_versions_are_separate_groups(results, tmp_path):
    gls(results, "main_GLS_load", 0.4, 3, (20.0, 30.0), data={**DATA, "labels_sha1": "1abe1002dddd"})
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    rows = [r for r in read_csv(out / "summary.csv") if r["script"] == "main_GLS_load" and r["method"] == "r0.4"]
    assert sorted((r["data"], r["n_seeds"]) for r in rows) == [("da7a0001/1abe1001", "3"), ("da7a0001/1abe1002", "1")]
    assert "| data da7a0001/1abe1002 |" in (out / "summary.md").read_text()


def test_collapsed_and_kept_stale_seeds_are_marked(results, tmp_path):
    folder = results / "main_GLS_load" / "r-2-seed1"
    summary = json.loads((folder / "summary.json").read_text())
    write_json(folder / "summary.json", {**summary, "collapsed": True, "chance_acc": 10.3})
    for seed in (0, 2):
        folder = results / "noise_cifar_train" / f"slnmo-sigma0.5-seed{seed}"
        summary = json.loads((folder / "summary.json").read_text())
        write_json(folder / "summary.json", {**summary, "collapsed": False,
                                             "kept_stale": [{"changes": ["code: source hash a -> b"]}]})
    out = tmp_path / "out"
    rows = summarized(results, out)
    assert (rows["NLS r=-2"]["n_collapsed"], rows["NLS r=-2"]["marks"]) == ("1", "collapsed 1/2")
    assert (rows["SLN-MO sigma=0.5"]["n_kept_stale"], rows["SLN-MO sigma=0.5"]["marks"]) == ("2", "kept stale 2/3")
    assert rows["CE"]["marks"] == ""
    md = (out / "summary.md").read_text()
    assert "| collapsed 1/2 |" in md and "| kept stale 2/3 |" in md
    assert "**collapsed k/n:**" in md and "**kept stale k/n:**" in md


def test_runs_without_a_method_record_are_averaged_but_not_paired(results, tmp_path):
    """Runs made before runs recorded their method and identity: listed and averaged, no knob
    columns or pairing, and a note; beside current runs of the same settings, their own group."""
    for seed, last in ((0, 60.0), (1, 64.0)):
        config = {**settings_of(AFTER_WARMUP), "wa": 0.0, "wb": 1.0, "smooth_rate": 0.4,
                  "warmup_ckpt": "best", "seed": seed}
        write_run(results, "main_GLS_load", f"old-r0.4-seed{seed}", config, finished((last, last + 1), "r0.4"))
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    (old,) = [r for r in read_csv(out / "summary.csv") if r["code"] == ""]
    assert (old["label"], old["method"], old["method_name"], old["smooth_rate"]) == ("r0.4", "r0.4", "", "")
    assert (old["n_seeds"], float(old["last_test_acc_mean"])) == ("2", 62.0)
    assert old["note"].startswith(summarize.NO_RECORD) and "2 code versions" in old["note"]
    assert old["group"] not in {r["group"] for r in read_csv(out / "paired.csv")}
    md = (out / "summary.md").read_text()
    assert "| no method record |" in md and "| code unknown, data unknown |" in md and "**no method record:**" in md
    assert "| not paired | not paired |" in md


def test_a_damaged_method_record_is_warned_about_and_not_paired(results, tmp_path, capsys):
    folder = results / "train" / "gce-q0.7-seed1"
    summary = json.loads((folder / "summary.json").read_text())
    write_json(folder / "summary.json", {**summary, "knob_baselines": {}})
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    assert (f"{folder}: summary.json has knob_baselines {{}}, not a value for each of its knobs ['q']"
            in capsys.readouterr().err)
    row = next(r for r in read_csv(out / "summary.csv") if r["label"] == "GCE q=0.7")
    assert row["n_seeds"] == "3"  # the group's record is its other seeds'


# ---------------------------------------------------------------- memorisation

def write_mem_runs(root):
    """Two seeds with the new per-epoch columns, one group without them."""
    mem = {0: [10.0, 20.0, 40.0], 1: [14.0, 30.0, 44.0]}
    for seed in (0, 1):
        gls(root, "main_GLS_load", 0.4, seed, (80.0, 85.0),
            summary=finished((80.0, 85.0), "r0.4", last_mem_noisy=mem[seed][-1], last_test_ece=5.0 + seed),
            metrics={"test_acc": [60.0, 70.0, 80.0], "fit_clean": [50.0 + seed, 70.0, 90.0],
                  "mem_noisy": mem[seed], "test_ece": [9.0, 7.0, 5.0 + seed]})
    for seed in (0, 1):  # made before the columns existed: one seed has the summary keys only
        extra = {"last_mem_noisy": 33.0} if seed else {}
        gls(root, "main_GLS_load", -2.0, seed, (70.0, 75.0), summary=finished((70.0, 75.0), "r-2", **extra),
            metrics={"test_acc": [50.0, 60.0, 70.0]})
    return mem


def test_memorisation_curves_and_last_values(tmp_path):
    mem = write_mem_runs(tmp_path / "results")
    out = tmp_path / "out"
    _, _, plots = summarize.summarize(str(tmp_path / "results"), str(out), curves=["r0.4", "r-2"], match="substring")
    names = {os.path.basename(p) for p in plots}
    assert {"curves_r0.4.png", "mem_curves_r0.4.png", "curves_r-2.png"} <= names
    assert "mem_curves_r-2.png" not in names and not (out / "mem_curves_r-2.png").exists()
    check_png(out / "mem_curves_r0.4.png")

    groups = summarize.group_runs(summarize.find_runs(str(tmp_path / "results")))
    (new,) = [g for gid, g in groups.items() if "r0.4" in gid]
    epochs, means, stds, n = summarize.group_curve(new.done, "mem_noisy")
    assert list(epochs) == [1, 2, 3] and n == 2
    assert means == pytest.approx(np.mean([mem[0], mem[1]], axis=0), abs=1e-12)
    assert stds == pytest.approx(np.std([mem[0], mem[1]], axis=0, ddof=1), abs=1e-12)
    epochs, means, _, _ = summarize.group_curve(new.done, "test_acc")
    assert list(epochs) == [0, 1, 2, 3] and means[0] == 60.0

    rows = {r["method"]: r for r in read_csv(out / "summary.csv")}
    assert float(rows["r0.4"]["last_mem_noisy_mean"]) == 42.0
    assert float(rows["r0.4"]["last_test_ece_mean"]) == 5.5
    assert rows["r-2"]["last_mem_noisy_mean"] == "" and rows["r-2"]["last_test_ece_mean"] == ""


# ---------------------------------------------------------------- per-class results

K = 3


def per_class_entry(rng, epoch, mem_null=()):
    """One epoch's per_class entry as the engine writes it, from random counts."""
    confusion = rng.integers(0, 8, size=(K, K)) + np.diag(rng.integers(10, 30, size=K))
    n_clean, n_noisy = rng.integers(20, 40, size=K), rng.integers(0, 12, size=K)
    n_noisy[list(mem_null)] = 0
    fit = rng.uniform(50, 100, size=K).round(3)
    mem = [None if c in mem_null else float(v) for c, v in enumerate(rng.uniform(0, 60, size=K).round(3))]
    return {"epoch": epoch, "test_acc": list(100.0 * np.diag(confusion) / confusion.sum(axis=1)),
            "test_confusion": confusion.tolist(), "train_fit_clean": fit.tolist(), "train_n_clean": n_clean.tolist(),
            "train_mem_noisy": mem, "train_n_noisy": n_noisy.tolist()}


TRANSITION = [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]]


@pytest.fixture
def per_class_results(tmp_path):
    """Three seeds with per-class results (class 2 has no wrong label: mem_noisy null) and a
    seed without (made before summary.json recorded them)."""
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    entries = {}
    for seed in (0, 1, 2):
        entries[seed] = {"best": per_class_entry(rng, 2 + seed), "last": per_class_entry(rng, 3, mem_null=(2,))}
        gls(root, "main_GLS_load", 0.4, seed, (80.0, 85.0), noise={"transition_matrix": TRANSITION},
            summary=finished((80.0, 85.0), "r0.4", per_class=entries[seed]))
    gls(root, "main_GLS_load", 0.4, 3, (70.0, 75.0), noise={"transition_matrix": TRANSITION})
    gls(root, "main_GLS_load", -2.0, 0, (70.0, 75.0))
    return root, entries


def test_per_class_table_averages_the_seeds(per_class_results, tmp_path):
    root, entries = per_class_results
    out = tmp_path / "out"
    summarize.main([str(root), "--out", str(out)])
    table = read_csv(out / "per_class.csv")
    assert {r["label"] for r in table} == {"PLS r=0.4"}  # NLS has no per-class results
    for which in ("best", "last"):
        lines = sorted((r for r in table if r["epoch"] == which), key=lambda r: int(r["class"]))
        assert [int(r["class"]) for r in lines] == [0, 1, 2]
        acc = np.array([entries[s][which]["test_acc"] for s in (0, 1, 2)])
        fit = np.array([entries[s][which]["train_fit_clean"] for s in (0, 1, 2)])
        n_clean = np.array([entries[s][which]["train_n_clean"] for s in (0, 1, 2)])
        for k, line in enumerate(lines):
            assert line["n_seeds"] == "3" and line["epochs"] == " ".join(str(entries[s][which]["epoch"]) for s in (0, 1, 2))
            assert float(line["test_acc_mean"]) == pytest.approx(acc[:, k].mean(), rel=1e-12)
            assert float(line["test_acc_std"]) == pytest.approx(acc[:, k].std(ddof=1), rel=1e-12)
            assert float(line["fit_clean_mean"]) == pytest.approx(fit[:, k].mean(), rel=1e-12)
            assert float(line["n_clean_mean"]) == pytest.approx(n_clean[:, k].mean(), rel=1e-12)
        mem = [entries[s][which]["train_mem_noisy"] for s in (0, 1, 2)]
        for k, line in enumerate(lines):
            values = [m[k] for m in mem]
            if None in values:
                assert line["mem_noisy_mean"] == ""
            else:
                assert float(line["mem_noisy_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
    assert [r["mem_noisy_mean"] for r in table if r["epoch"] == "last" and r["class"] == "2"] == [""]
    md = (out / "summary.md").read_text()
    section = md.split("## Per class")[1].split("## Runs not averaged")[0]
    assert "### PLS r=0.4 (main_GLS_load), 3 seed(s)" in section
    first = [r for r in table if r["class"] == "0"]
    best, last = (next(r for r in first if r["epoch"] == w) for w in ("best", "last"))
    assert (f"| 0 | {float(best['test_acc_mean']):.2f} ± {float(best['test_acc_std']):.2f} | "
            f"{float(last['test_acc_mean']):.2f} ± {float(last['test_acc_std']):.2f} | "
            f"{float(last['fit_clean_mean']):.2f} | {float(last['mem_noisy_mean']):.2f} |") in section


def saved_images(monkeypatch):
    """{file name: the arrays of its first three panels} of every figure summarize saves."""
    images = {}
    real = summarize.atomic_savefig

    def save(path, fig, **kwargs):
        images[os.path.basename(path)] = [ax.images[0].get_array() if ax.images else None for ax in fig.axes[:3]]
        return real(path, fig, **kwargs)
    monkeypatch.setattr(report.plots, "atomic_savefig", save)
    return images


def test_confusion_figure_against_numpy(per_class_results, tmp_path, monkeypatch):
    root, entries = per_class_results
    images = saved_images(monkeypatch)
    out = tmp_path / "out"
    run0 = root / "main_GLS_load" / "r0.4-seed0"
    summarize.main([str(root), "--out", str(out), "--confusion", "PLS r=0.4", "--confusion", str(run0),
                    "--confusion", "r0.4-seed1"])
    groups = summarize.group_runs(summarize.find_runs(str(root)))
    gid = next(g for g in groups if "r0.4" in g)
    names = sorted(p.name for p in out.glob("confusion_*.png"))
    assert names == sorted([f"confusion_{gid.replace('/', '_')}.png", "confusion_r0.4-seed0.png",
                            "confusion_r0.4-seed1.png"])
    for name in names:
        check_png(out / name)

    def normalised(counts):
        counts = np.array(counts, dtype=float)
        return counts / counts.sum(axis=1, keepdims=True)
    transition, best, last = images[f"confusion_{gid.replace('/', '_')}.png"]
    assert np.asarray(transition) == pytest.approx(np.array(TRANSITION), abs=1e-12)
    for shown, which in ((best, "best"), (last, "last")):
        expected = np.mean([normalised(entries[s][which]["test_confusion"]) for s in (0, 1, 2)], axis=0)
        assert np.asarray(shown) == pytest.approx(expected, abs=1e-12)
        assert np.asarray(shown).sum(axis=1) == pytest.approx(np.ones(K), abs=1e-12)
    _, best, last = images["confusion_r0.4-seed1.png"]
    assert np.asarray(last) == pytest.approx(normalised(entries[1]["last"]["test_confusion"]), abs=1e-12)


def test_confusion_of_runs_without_per_class_results_is_explained(per_class_results, tmp_path, capsys):
    root, _ = per_class_results
    out = tmp_path / "out"
    summarize.main([str(root), "--out", str(out), "--match", "substring", "--confusion", "NLS",
                    "--confusion", "nothing-like-it"])
    err = capsys.readouterr().err
    assert "--confusion 'NLS': NLS r=-2, main_GLS_load has no per-class results" in err
    assert "--confusion 'nothing-like-it' matches no run folder and no finished group" in err
    assert not list(out.glob("confusion_*"))


@pytest.mark.parametrize("change, problem", [
    ({"test_acc": [50.0, "x", 10.0]}, "per_class.last has no test_acc list of numbers (or null for"),
    ({"test_acc": [50.0, 10.0]}, "per_class.last has no test_confusion of 2 x 2 counts"),
    ({"test_confusion": [[1, 2], [3, 4]]}, "per_class.last has no test_confusion of 3 x 3 counts"),
    ({"test_confusion": [[1, 2, 3], [4, -5, 6], [7, 8, 9]]}, "per_class.last has no test_confusion of 3 x 3 counts"),
    ({"train_n_noisy": [1, 2]}, "per_class.last has train_n_noisy that is not 3 counts"),
    ({"train_fit_clean": [1.0, "NaN", 2.0]}, "per_class.last has train_fit_clean that is not 3 numbers or null"),
])
def test_malformed_per_class_results_are_left_out(per_class_results, tmp_path, capsys, change, problem):
    root, entries = per_class_results
    folder = root / "main_GLS_load" / "r0.4-seed2"
    summary = json.loads((folder / "summary.json").read_text())
    summary["per_class"]["last"].update(change)
    write_json(folder / "summary.json", summary)
    out = tmp_path / "out"
    summarize.main([str(root), "--out", str(out)])
    (warning,) = [w for w in capsys.readouterr().err.splitlines() if "per_class" in w]
    assert warning.startswith(f"warning: {folder}: summary.json {problem}")
    assert warning.endswith("; left out of the per-class tables")
    table = read_csv(out / "per_class.csv")
    assert {r["n_seeds"] for r in table if r["epoch"] == "last"} == {"2"}
    assert {r["n_seeds"] for r in table if r["epoch"] == "best"} == {"3"}


# ---------------------------------------------------------------- damaged input

@pytest.mark.parametrize("text, problem", [("{not json", "is not readable JSON"),
                                           ("[1, 2]", "holds a JSON list, not an object"),
                                           ('{"seed": "one"}', "has seed 'one', not an integer"),
                                           ('{"seed": 1, "lr": NaN}', "has lr nan, not a finite number")])
def test_damaged_config_skips_the_run(results, tmp_path, capsys, text, problem):
    folder = gls(results, "main_GLS_load", 0.4, 5, (1.0, 1.0))
    (folder / "config.json").write_text(text)
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    assert f"skipping {folder}: config.json {problem}" in capsys.readouterr().err
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 9
    (r04,) = [r for r in rows if r["method"] == "r0.4" and r["script"] == "main_GLS_load"]
    assert (r04["n_seeds"], float(r04["last_test_acc_mean"])) == ("3", 80.0)
    assert str(folder) not in {u["run_dir"] for u in read_csv(out / "unfinished.csv")}


@pytest.mark.parametrize("text, problem", [("", "is not readable JSON"), ('{"status": "finished", ', "is not readable JSON"),
                                           ('"finished"', "holds a JSON str, not an object")])
def test_damaged_summary_makes_the_run_unfinished(results, tmp_path, capsys, text, problem):
    folder = gls(results, "main_GLS_load", 0.4, 3, (1.0, 1.0))
    (folder / "summary.json").write_text(text)
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    assert f"{folder}: summary.json {problem}" in capsys.readouterr().err
    (listed,) = [u for u in read_csv(out / "unfinished.csv") if u["run_dir"] == str(folder)]
    assert listed["status"] == "damaged summary.json" and problem in listed["note"]
    (r04,) = [r for r in read_csv(out / "summary.csv") if r["method"] == "r0.4" and r["script"] == "main_GLS_load"]
    assert (r04["n_seeds"], r04["n_not_averaged"], float(r04["last_test_acc_mean"])) == ("3", "1", 80.0)


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("epoch;lr;test_acc\n1;0.1;50\n", "has a wrong header"),
    ("epoch,lr,test_acc\n1,0.1,50\n2,0.1\n", "line 3 has 2 fields, the header 3"),
    ("epoch,lr,test_acc\n1,0.1,fifty\n", "line 2 has 'fifty', not a number"),
    ("epoch,lr,test_acc\n", "has a header but no epochs"),
    ("epoch,lr,test_acc\n1,0.1,50\n1,0.1,60\n", "has epochs that are not 1, 2, ..., n"),
])
def test_malformed_metrics_leaves_the_run_out_of_the_curves(results, tmp_path, capsys, text, problem):
    folder = results / "main_GLS_load" / "r0.4-seed2"
    (folder / "metrics.csv").write_text(text)
    _, _, plots = summarize.summarize(str(results), str(tmp_path / "out"), curves=["PLS r=0.4"])
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "metrics.csv" in line]
    assert warning.startswith(f"warning: {folder}: metrics.csv {problem}")
    assert warning.endswith("the run is left out of the curves")
    assert any(p.endswith("curves_PLS_r=0.4.png") for p in plots)
    groups = summarize.group_runs(summarize.find_runs(str(results)))
    (r04,) = [g for gid, g in groups.items() if gid.startswith("main_GLS_load") and "-r0.4-" in gid]
    epochs, means, _, n = summarize.group_curve(r04.done, "test_acc")
    assert n == 2 and list(means) == [60.0, 55.0, 65.0, 75.0]
    (row,) = [r for r in read_csv(tmp_path / "out" / "summary.csv")
              if r["method"] == "r0.4" and r["script"] == "main_GLS_load"]
    assert float(row["last_test_acc_mean"]) == 80.0  # the table does not need metrics.csv


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"85.0"'])
def test_non_finite_accuracy_is_not_averaged(results, tmp_path, capsys, value):
    path = results / "main_GLS_load" / "r0.4-seed1" / "summary.json"
    path.write_text(path.read_text().replace('"last_test_acc": 80.0', f'"last_test_acc": {value}'))
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{path.parent}: summary.json last_test_acc is" in err and "not a finite number" in err
    (r04,) = [r for r in read_csv(out / "summary.csv") if r["method"] == "r0.4" and r["script"] == "main_GLS_load"]
    assert r04["last_test_acc_mean"] == "" and r04["last_test_acc_std"] == ""
    assert float(r04["best_test_acc_mean"]) == pytest.approx(np.mean([75.0, 85.0, 95.5]), abs=1e-12)


def check_refused(capsys, argv, *expected):
    assert summarize.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err


def test_out_that_is_a_file_is_refused(results, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    check_refused(capsys, [str(results), "--out", str(out)], f"--out {out} is a file")
    assert out.read_text() == "keep me"
    check_refused(capsys, [str(results), "--out", str(out / "summary")], "cannot be created", str(out))
    run = results / "main_GLS_load" / "r0.4-seed0"
    check_refused(capsys, [str(results), "--out", str(run)], "is a run folder")
    assert not (run / "summary.csv").exists()


def test_results_dir_without_runs_is_refused(results, tmp_path, capsys):
    out = tmp_path / "out"
    check_refused(capsys, [str(tmp_path / "missing"), "--out", str(out)], "is not a folder")
    (tmp_path / "empty").mkdir()
    check_refused(capsys, [str(tmp_path / "empty"), "--out", str(out)], "holds no readable run folder")
    damaged = tmp_path / "damaged" / "main_GLS_load" / "run"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{")
    check_refused(capsys, [str(tmp_path / "damaged"), "--out", str(out)], "holds no readable run folder")
    assert not out.exists()


# ---------------------------------------------------------------- full disks and odd trees

REPO = os.path.dirname(os.path.abspath(summarize.__file__))


@pytest.mark.parametrize("failing", ["summary.csv", "paired.csv", "unfinished.csv",
                                     "acc_vs_smooth_rate_gls.png", "curves_PLS.png", "summary.md"])
def test_a_full_disk_leaves_every_output_whole(results, tmp_path, monkeypatch, capsys, failing):
    """Each output is the earlier version or the new one, never part of one: every file goes
    through the atomic writer (a file written another way would not fail here)."""
    out, reference = tmp_path / "out", tmp_path / "reference"
    summarized(results, out, "--match", "substring", "--curves", "PLS")
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    gls(results, "main_GLS_load", 0.4, 3, (50.0, 55.0), metrics={"test_acc": [1.0, 2.0, 3.0]})
    gls(results, "main_GLS_load", 0.4, 4, None, summary={"status": "running", "method": "r0.4"})
    summarized(results, reference, "--match", "substring", "--curves", "PLS")
    new = {p.name: p.read_bytes() for p in reference.iterdir()}
    assert old[failing] != new[failing]
    capsys.readouterr()
    fail_writing(monkeypatch, failing)
    assert summarize.main([str(results), "--out", str(out), "--match", "substring", "--curves", "PLS"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to --out {out} (No space left on device)") and "Traceback" not in err
    assert (out / failing).read_bytes() == old[failing]
    for path in out.iterdir():
        assert path.read_bytes() in (old[path.name], new[path.name]), path.name
    assert sorted(p.name for p in out.iterdir()) == sorted(old)  # no temporary file left behind


def r04_seeds(out):
    return next(r["seeds"] for r in read_csv(out / "summary.csv")
                if r["script"] == "main_GLS_load" and r["method"] == "r0.4")


def test_a_linked_run_folder_is_read(results, tmp_path, capsys):
    folder = gls(tmp_path / "elsewhere", "main_GLS_load", 0.4, 3, (60.0, 65.0))
    (results / "main_GLS_load" / "linked-seed3").symlink_to(folder)
    out = tmp_path / "out"
    summarized(results, out)
    assert r04_seeds(out) == "0 1 2 3"
    assert "linked" not in capsys.readouterr().err


@pytest.mark.parametrize("link, target, link_read_first", [
    ("main_GLS_load/loop", "", False),                             # a cycle to the top
    ("main_GLS_load/r0.4-seed1/up", "main_GLS_load", False),       # a cycle from inside a run
    ("copy-of-seed0", "main_GLS_load/r0.4-seed0", True),           # a second path to a run, read first
    ("zz-copy-of-seed0", "main_GLS_load/r0.4-seed0", False),       # ... and read second
])
def test_a_second_path_to_a_folder_is_read_once_and_named(results, tmp_path, capsys, link, target, link_read_first):
    (results / link).symlink_to(results / target)
    out = tmp_path / "out"
    summarized(results, out)
    assert r04_seeds(out) == "0 1 2"
    first, second = str(results / target).rstrip("/"), str(results / link)
    if link_read_first:
        first, second = second, first
    warnings = [w for w in capsys.readouterr().err.splitlines() if "read already" in w]
    assert warnings == [f"warning: skipping {second}: it leads to {first}, which is read already "
                        "(a link cycle, or a second link to one folder)"]


@pytest.mark.parametrize("where", ["main_GLS_load/gone", "gone-run"])
def test_a_dangling_link_is_named(results, tmp_path, capsys, where):
    (results / where).symlink_to(tmp_path / "nowhere")
    out = tmp_path / "out"
    summarized(results, out)
    assert f"warning: skipping {results / where}: a symbolic link to nothing ({tmp_path / 'nowhere'})" in \
        capsys.readouterr().err


def test_a_dangling_summary_link_lists_the_run_as_damaged(results, tmp_path, capsys):
    folder = results / "main_GLS_load" / "r0.4-seed2"
    (folder / "summary.json").unlink()
    (folder / "summary.json").symlink_to(tmp_path / "nowhere.json")
    out = tmp_path / "out"
    summarized(results, out)
    (listed,) = [u for u in read_csv(out / "unfinished.csv") if u["run_dir"] == str(folder)]
    assert (listed["status"], listed["note"]) == ("damaged summary.json", "summary.json is missing")


@pytest.fixture
def deadline():
    """Fail, rather than hang, a test whose code blocks (on a FIFO)."""
    def expired(signum, frame):
        raise TimeoutError("summarize.py blocked")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name, expected", [
    ("config.json", "warning: skipping {folder}: config.json is not a regular file"),
    ("summary.json", "warning: {folder}: summary.json is not a regular file"),
    ("metrics.csv", "warning: {folder}: metrics.csv is not a regular file"),
    ("noise.json", "warning: {folder}: noise.json is not a regular file"),
])
def test_a_fifo_never_blocks(per_class_results, tmp_path, capsys, deadline, name, expected):
    root, _ = per_class_results
    folder = root / "main_GLS_load" / "r0.4-seed2"
    if (folder / name).exists():
        (folder / name).unlink()
    os.mkfifo(folder / name)
    out = tmp_path / "out"
    summarized(root, out, "--match", "substring", "--curves", "PLS", "--confusion", "PLS")
    assert expected.format(folder=folder) in capsys.readouterr().err


def nested(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("name, make, problem", [
    ("config.json", lambda obj: nested(100_000), "is not readable JSON (nested too deeply)"),
    ("config.json", lambda obj: json.dumps({**obj, "lr_milestones": json.loads(nested(40))}), "nested more than 32"),
    ("summary.json", lambda obj: '{"status": "finished", "x": ' + nested(100_000) + "}", "nested too deeply"),
    ("summary.json", lambda obj: json.dumps({**obj, "per_class": json.loads(nested(40))}), "nested more than 32"),
    ("noise.json", lambda obj: '{"transition_matrix": ' + nested(100_000) + "}", "nested too deeply"),
    ("noise.json", lambda obj: json.dumps({"transition_matrix": json.loads(nested(40))}), "nested more than 32"),
])
def test_deeply_nested_json_is_a_warning(per_class_results, tmp_path, capsys, name, make, problem):
    root, _ = per_class_results
    path = root / "main_GLS_load" / "r0.4-seed2" / name
    path.write_text(make(json.loads(path.read_text())))
    out = tmp_path / "out"
    summarized(root, out, "--match", "substring", "--confusion", "PLS")
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if f"{path.parent}: {name}" in line or f"{path.parent}" in line]
    assert f"{name} is not readable JSON" in warning and problem in warning and "Traceback" not in err


def non_utf8_results(tmp_path):
    """Runs under a folder whose name is not UTF-8, one run folder's too, an unfinished run,
    and a label holding a lone surrogate (a hand-written \\ud800 escape) and a '|'."""
    root = tmp_path / os.fsdecode(b"r\xe9sultats-\xff")
    for seed, accs in WARMUP.items():
        gls(root, "main_warmup", 0.1, seed, accs, wa=1.0, wb=0.0)
    gls(root, "main_GLS_direct_train", 0.4, 0, (70.0, 71.0), suffix=os.fsdecode(b"-\xfe"))
    gls(root, "main_GLS_direct_train", -2.0, 0, None, summary={"status": "interrupted", "method": "r-2"})
    folder = gls(root, "main_GLS_direct_train", 0.8, 0, (60.0, 61.0))
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "label": "PLS \ud800|r=0.8"}))
    return root


def test_a_results_path_that_is_not_utf8_is_summarized(tmp_path):
    root = non_utf8_results(tmp_path)
    out = root / "summary"
    summarized(root, out, "--match", "substring", "--curves", "PLS", "--confusion", "CE")
    md = (out / "summary.md").read_bytes()
    assert os.fsencode(str(root)) in md and b"| PLS \xef\xbf\xbd\\|r=0.8 |" in md  # U+FFFD; | escaped
    unfinished = (out / "unfinished.csv").read_bytes()
    assert os.fsencode(str(root / "main_GLS_direct_train" / "r-2-seed0")) in unfinished
    assert {p.name for p in out.iterdir()} >= {"summary.csv", "paired.csv", "acc_vs_smooth_rate_gls.png"}


def test_a_results_path_that_is_not_utf8_in_a_fresh_process(tmp_path):
    """The terminal gets the paths too (print fails on undecodable bytes unless handled)."""
    root = non_utf8_results(tmp_path)
    proc = subprocess.run([sys.executable, "summarize.py", os.fsencode(root), "--out", os.fsencode(root / "out")],
                          cwd=REPO, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert b"r-2-seed0" in proc.stdout and b"wrote " in proc.stdout
    assert (root / "out" / "summary.md").exists()


# ---------------------------------------------------------------- the demo's reading

def test_the_demo_table_reads_the_paired_knob_baselines(tmp_path, capsys):
    import demo
    root, out = tmp_path / "results", tmp_path / "out"
    for seed, accs in WARMUP.items():
        gls(root, "main_warmup", 0.1, seed, accs, wa=1.0, wb=0.0)
    load = {0.0: LOAD[0.0], 0.4: LOAD[0.4], -0.4: {0: (84.0, 90.0), 1: (85.0, 90.0), 2: (86.5, 91.0)}}
    for r, by_seed in load.items():
        for seed, accs in by_seed.items():
            gls(root, "main_GLS_load", r, seed, accs)
    for sigma, by_seed in SLN.items():
        for seed, accs in by_seed.items():
            sln(root, sigma, seed, accs)
    summarize.summarize(str(root), str(out))
    capsys.readouterr()
    assert demo.print_table(*demo.read_results(str(out))) == []
    printed = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()}

    def cell(mine, theirs, i):
        mean, low, high = expected_interval([mine[s][i] for s in (0, 1, 2)], [theirs[s][i] for s in (0, 1, 2)])
        return f"| {mean:+.1f} [{low:+.1f}, {high:+.1f}] |"
    assert printed["after warm-up: PLS, r=0.4"].endswith(cell(load[0.4], LOAD[0.0], 0))
    assert printed["after warm-up: NLS, r=-0.4"].endswith(cell(load[-0.4], LOAD[0.0], 0))
    assert printed["from scratch: SLN, sigma=0.5"].endswith(cell(SLN[0.5], SLN[0.0], 0))
    assert printed["momentum model of SLN (SLN-MO)"].endswith(cell(SLN[0.5], SLN[0.0], 2))
    assert printed["CE warm-up (60 ep)"].endswith("| 80.3 ± 1.5 | 85.2 ± 1.3 | n/a | n/a |  |")


def test_per_class_of_many_classes_shows_the_weakest_in_summary_md(tmp_path):
    root, out = tmp_path / "results", tmp_path / "out"
    k = 25
    confusion = np.diag(np.arange(1, k + 1) * 4) + 1
    acc = 100.0 * np.diag(confusion) / confusion.sum(axis=1)
    entry = {"epoch": 3, "test_acc": acc.tolist(), "test_confusion": confusion.tolist()}
    gls(root, "main_GLS_load", 0.4, 0, (80.0, 85.0), summary=finished((80.0, 85.0), "r0.4",
                                                                     per_class={"best": entry, "last": entry}))
    summarized(root, out)
    assert len(read_csv(out / "per_class.csv")) == 2 * k
    section = (out / "summary.md").read_text().split("## Per class")[1].split("## Runs")[0]
    assert f"the 10 classes of lowest last accuracy of {k}" in section
    shown = [int(line.split(" | ")[0].strip("| ")) for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| class")]
    assert shown == list(np.argsort(acc)[:10])
    assert f"| 0 | {acc[0]:.2f} | {acc[0]:.2f} |  |  |  |" in section  # no training columns recorded


def test_per_class_that_is_not_an_object_is_warned_about(per_class_results, tmp_path, capsys):
    root, _ = per_class_results
    folder = root / "main_GLS_load" / "r0.4-seed1"
    summary = json.loads((folder / "summary.json").read_text())
    write_json(folder / "summary.json", {**summary, "per_class": [1, 2]})
    summarized(root, tmp_path / "out")
    assert (f"{folder}: summary.json per_class is not an object; left out of the per-class tables"
            in capsys.readouterr().err)
    assert {r["n_seeds"] for r in read_csv(tmp_path / "out" / "per_class.csv")} == {"2"}


def test_a_class_without_test_images_has_no_per_class_accuracy(tmp_path, monkeypatch):
    """The engine writes null for the accuracy of a class without test images (its confusion
    row is all 0): no mean, and an empty row in the figure."""
    root, out = tmp_path / "results", tmp_path / "out"
    confusions = {0: [[8, 2, 0], [0, 0, 0], [1, 1, 6]], 1: [[9, 1, 0], [0, 0, 0], [0, 2, 6]]}
    for seed, confusion in confusions.items():
        acc = [100.0 * row[c] / sum(row) if sum(row) else None for c, row in enumerate(confusion)]
        entry = {"epoch": 3, "test_acc": acc, "test_confusion": confusion}
        gls(root, "main_GLS_load", 0.4, seed, (80.0, 85.0),
            summary=finished((80.0, 85.0), "r0.4", per_class={"best": entry, "last": entry}))
    images = saved_images(monkeypatch)
    summarized(root, out, "--match", "substring", "--confusion", "PLS")
    lines = {int(r["class"]): r for r in read_csv(out / "per_class.csv") if r["epoch"] == "last"}
    assert (float(lines[0]["test_acc_mean"]), float(lines[2]["test_acc_mean"])) == (85.0, 75.0)
    assert lines[1]["test_acc_mean"] == lines[1]["test_acc_std"] == ""
    (transition, best, last), = [v for k, v in images.items() if k.startswith("confusion_")]
    assert transition is None  # no noise.json
    shown = np.ma.filled(np.asarray(last, dtype=float), np.nan) if np.ma.isMaskedArray(last) else np.asarray(last)
    assert shown[0] == pytest.approx([0.85, 0.15, 0.0]) and np.isnan(shown[1]).all()


def test_ce_pairing_between_other_scripts_prefers_most_seeds_in_common(results, tmp_path):
    gls(results, "main_GLS_direct_train", 0.0, 0, (66.0, 67.0), comp=SLN_LIKE)  # CE, one seed
    out = tmp_path / "out"
    summarized(results, out)
    row = paired_by(out)[("GCE q=0.7", "train", "ce")]
    assert (row["baseline_script"], row["n_pairs"]) == ("noise_cifar_train", "3")
    assert "2 CE groups match" in row["note"] and "(most seeds in common), not main_GLS_direct_train/" in row["note"]


def test_ce_pairing_in_train_py_across_methods_ignores_their_code_but_not_within_one(tmp_path):
    """train.py --method gce against train.py --method sln at sigma 0: other method files, so
    other source hashes by construction, and still paired; SLN at sigma 0.5 against its
    CE (sigma 0) of other code: the same method, so never paired."""
    root = tmp_path / "results"
    for seed in (0, 1):
        gce(root, 0.7, seed, GCE[0.7][seed], code="c0de-gce")
        sln(root, 0.0, seed, SLN[0.0][seed], script="train", code="c0de-sln-old")
        sln(root, 0.5, seed, SLN[0.5][seed], script="train", code="c0de-sln-new")
    out = tmp_path / "out"
    summarized(root, out)
    paired = paired_by(out)
    row = paired[("GCE q=0.7", "train", "ce")]
    assert (row["baseline_script"], row["baseline_label"]) == ("train", "SLN-MO sigma=0")
    check_pairs(row, {s: GCE[0.7][s] for s in (0, 1)}, {s: SLN[0.0][s][:2] for s in (0, 1)}, [0, 1])
    row = paired[("SLN-MO sigma=0.5", "train", "ce")]
    assert row["n_pairs"] == "0" and "exist only with other code or data" in row["note"]


def test_the_report_package_has_no_table_of_script_or_knob_names_and_one_plotting_module():
    """The report reads what a run is from its own summary.json: no module of report/ names
    a script or a knob; matplotlib is imported by report/plots.py alone."""
    folder = os.path.join(REPO, "report")
    sources = {name: open(os.path.join(folder, name)).read() for name in os.listdir(folder) if name.endswith(".py")}
    assert {"runs.py", "groups.py", "tables.py", "plots.py", "paper.py"} <= set(sources)
    for name, source in sources.items():
        for word in ("main_warmup", "main_GLS_direct_train", "main_GLS_load", "noise_cifar_train",
                     "noise_clothing1m_train", "smooth_rate", "sigma", "SCRIPT_NAMES", "BASELINE_KNOB"):
            assert word not in source, (name, word)
        assert ("import matplotlib" in source) == (name == "plots.py"), name
