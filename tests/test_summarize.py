"""summarize.py on run folders written here in the results contract's format."""
import csv
import json
import statistics
import struct

import numpy as np
import pytest

import summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(root, script, name, config, summary=None, accs=None):
    """A run folder: config.json, summary.json (unless None), metrics.csv from accs."""
    folder = root / script / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps({"script": script, **summary}))
    if accs:
        columns = ["epoch", "lr", "train_loss", "train_acc"] + list(accs)
        lines = [",".join(columns)]
        for e in range(len(next(iter(accs.values())))):
            lines.append(",".join([str(e + 1), "0.1", "1.0", "50.0"] + [str(v[e]) for v in accs.values()]))
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def gls_config(seed, smooth_rate, **kw):
    return {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.4, "model": "resnet18",
            "n_epoch": 3, "lr": 0.01, "wa": 0.0, "wb": 1.0, "smooth_rate": smooth_rate, "seed": seed,
            "noise_seed": 0, "result_dir": f"somewhere{seed}", "overwrite": seed == 1, **kw}


def finished(last, best, noise, method, **extra):
    return {"status": "finished", "method": method, "last_test_acc": last, "best_test_acc": best,
            "actual_noise_rate": noise, "epochs_completed": 3, "initial_test_acc": 60.0, **extra}


@pytest.fixture
def results(tmp_path):
    """Three GLS groups, a warm-up, two SLN groups, and four runs that are not finished."""
    root = tmp_path / "results"
    load = "main_GLS_load"
    # r = 0.4: three seeds, all finished (result_dir/overwrite differ: bookkeeping only).
    for seed, last, best, noise in [(0, 70.0, 75.0, 0.39), (1, 80.0, 85.0, 0.41), (2, 90.0, 95.5, 0.40)]:
        write_run(root, load, f"r0.4-seed{seed}", gls_config(seed, 0.4),
                  finished(last, best, noise, "r0.4"),
                  accs={"test_acc": [last - 20, last - 10, last]})
    # r = -2: two finished seeds, one interrupted and one crashed before its summary.
    for seed, last, best in [(0, 81.25, 90.0), (1, 83.75, 91.0)]:
        write_run(root, load, f"r-2-seed{seed}", gls_config(seed, -2.0),
                  finished(last, best, 0.4, "r-2"), accs={"test_acc": [50.0, 60.0, last]})
    write_run(root, load, "r-2-seed2", gls_config(2, -2.0),
              {"status": "interrupted", "method": "r-2", "last_test_acc": 12.34, "best_test_acc": 12.34,
               "actual_noise_rate": 0.4, "epochs_completed": 1})
    write_run(root, load, "r-2-seed3", gls_config(3, -2.0))
    # Another noise seed is another experiment, not another seed of the same one.
    write_run(root, load, "r-2-noiseseed1", gls_config(0, -2.0, noise_seed=1),
              finished(50.0, 55.0, 0.38, "r-2"))
    # Direct NLS that diverged: nothing to average.
    write_run(root, "main_GLS_direct_train", "r-8-seed0", gls_config(0, -8.0),
              {"status": "diverged", "method": "r-8", "diverged_epoch": 2, "epochs_completed": 1,
               "last_test_acc": 20.0, "best_test_acc": 20.0, "actual_noise_rate": 0.4})
    # The CE warm-up (wb = 0): no smooth rate to report.
    for seed in (0, 1):
        write_run(root, "main_warmup", f"ce-seed{seed}", gls_config(seed, 0.1, wa=1.0, wb=0.0),
                  finished(88.0 + seed, 89.0 + seed, 0.4, "ce"))
    # SLN-MO at two sigmas, two seeds each, with the momentum model's accuracies.
    for sigma, base in [(0.5, 60.0), (1.0, 70.0)]:
        for seed in (0, 1):
            config = {"dataset": "digits", "noise_type": "sym", "noise_rate": 0.4, "model": "resnet18",
                      "n_epoch": 3, "sigma": sigma, "ema_decay": 0.9, "seed": seed, "gpu_id": 0}
            write_run(root, "noise_cifar_train", f"sigma{sigma}-seed{seed}", config,
                      finished(base + seed, base + 2 * seed, 0.4, f"slnmo-sigma{sigma:g}",
                               last_test_acc_ema=base + 5 + 3 * seed, best_test_acc_ema=base + 6 + 3 * seed),
                      accs={"test_acc": [40.0, 50.0, base + seed], "test_acc_ema": [30.0, 45.0, base + 5 + 3 * seed]})
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


def test_means_and_sample_stds(results, tmp_path):
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    rows = read_csv(out / "summary.csv")
    by_method = {}
    for r in rows:
        by_method.setdefault((r["script"], r["method"]), []).append(r)

    (r04,) = by_method[("main_GLS_load", "r0.4")]
    assert r04["n_seeds"] == "3" and r04["seeds"] == "0 1 2" and r04["n_not_averaged"] == "0"
    assert float(r04["smooth_rate"]) == 0.4 and r04["sigma"] == ""
    assert float(r04["last_test_acc_mean"]) == 80.0
    assert float(r04["last_test_acc_std"]) == 10.0  # sample std: sqrt((100 + 0 + 100) / 2)
    assert float(r04["best_test_acc_mean"]) == pytest.approx(85.16666666666667, abs=1e-12)
    assert float(r04["best_test_acc_std"]) == pytest.approx(statistics.stdev([75.0, 85.0, 95.5]), abs=1e-12)
    assert float(r04["best_test_acc_std"]) == pytest.approx(10.251016209787855, abs=1e-12)
    assert float(r04["actual_noise_rate_mean"]) == pytest.approx(0.4, abs=1e-12)
    assert r04["last_test_acc_ema_mean"] == ""

    # r = -2: the interrupted run (12.34 %) and the one without summary are not averaged in,
    # and the run with another noise seed is its own group.
    groups = sorted(by_method[("main_GLS_load", "r-2")], key=lambda r: -int(r["n_seeds"]))
    assert len(groups) == 2
    r2, other_noise = groups
    assert (r2["n_seeds"], r2["seeds"], r2["n_not_averaged"]) == ("2", "0 1", "2")
    assert float(r2["last_test_acc_mean"]) == 82.5
    assert float(r2["last_test_acc_std"]) == pytest.approx(1.7677669529663689, abs=1e-12)
    assert float(r2["best_test_acc_mean"]) == 90.5
    assert (other_noise["n_seeds"], float(other_noise["last_test_acc_mean"])) == ("1", 50.0)
    assert other_noise["last_test_acc_std"] == ""  # no sample std of one value
    assert "noise_seed=1" in other_noise["other"] and "noise_seed=0" in r2["other"]

    (warm,) = by_method[("main_warmup", "ce")]
    assert warm["smooth_rate"] == "" and float(warm["last_test_acc_mean"]) == 88.5

    (s1,) = by_method[("noise_cifar_train", "slnmo-sigma1")]
    assert float(s1["sigma"]) == 1.0 and s1["smooth_rate"] == ""
    assert float(s1["last_test_acc_mean"]) == 70.5
    assert float(s1["last_test_acc_ema_mean"]) == 76.5
    assert float(s1["last_test_acc_ema_std"]) == pytest.approx(statistics.stdev([75.0, 78.0]), abs=1e-12)
    assert float(s1["best_test_acc_ema_mean"]) == 77.5

    assert ("main_GLS_direct_train", "r-8") not in by_method  # diverged: nothing averaged
    assert len(rows) == 6


def test_unfinished_runs_are_listed_separately(results, tmp_path):
    out = tmp_path / "out"
    summarize.main([str(results), "--out", str(out)])
    listed = {r["run_dir"].split("results/")[1]: r for r in read_csv(out / "unfinished.csv")}
    assert set(listed) == {"main_GLS_load/r-2-seed2", "main_GLS_load/r-2-seed3",
                           "main_GLS_direct_train/r-8-seed0"}
    assert listed["main_GLS_load/r-2-seed2"]["status"] == "interrupted"
    assert listed["main_GLS_load/r-2-seed3"]["status"] == "no summary.json"
    assert listed["main_GLS_direct_train/r-8-seed0"]["status"] == "diverged"
    assert listed["main_GLS_direct_train/r-8-seed0"]["note"] == "diverged at epoch 2"
    md = (out / "summary.md").read_text()
    table, not_averaged = md.split("## Runs not averaged")
    assert "82.50 ± 1.77" in table and "80.00 ± 10.00" in table
    assert "12.34" not in table  # the interrupted run's accuracy is not in the table
    for name in ("r-2-seed2", "r-2-seed3", "r-8-seed0"):
        assert name in not_averaged


def test_plots_are_pngs(results, tmp_path):
    out = tmp_path / "out"
    rows, unfinished, plots = summarize.summarize(str(results), str(out), curves=["main_GLS_load", "sigma1"])
    names = sorted(p.split("/")[-1] for p in plots)
    assert names == ["acc_vs_sigma.png", "acc_vs_smooth_rate.png",
                     "curves_main_GLS_load.png", "curves_sigma1.png"]
    for name in names:
        check_png(out / name)
    assert "![acc_vs_smooth_rate.png](acc_vs_smooth_rate.png)" in (out / "summary.md").read_text()


def test_curves_pattern_without_match_draws_nothing(results, tmp_path, capsys):
    _, _, plots = summarize.summarize(str(results), str(tmp_path / "out"), curves=["no-such-group"])
    assert not any(p.split("/")[-1].startswith("curves_") for p in plots)
    assert "matches no finished group" in capsys.readouterr().err


# ---------------------------------------------------------------- paired differences

# t_{0.975, n-1}, hard-coded so the expected intervals do not depend on scipy.
T975 = {1: 12.706204736174707, 2: 4.302652729749464}
# The GLS baseline (r = 0) by seed: (last, best). Seed 4 is finished only here, so it must
# not be paired; its numbers would move every difference if it were.
GLS_BASE = {0: (72.5, 74.0), 1: (77.0, 84.0), 2: (86.0, 96.5), 3: (81.0, 90.0), 4: (10.0, 10.0)}
# The same smooth rate 0 written three ways: one setting, one group.
ZEROS = {0: 0.0, 1: 0.0, 2: 0, 3: -0.0, 4: 0.0}


def sln_config(sigma, seed):
    return {"dataset": "digits", "noise_type": "sym", "noise_rate": 0.4, "model": "resnet18",
            "n_epoch": 3, "sigma": sigma, "ema_decay": 0.9, "seed": seed, "gpu_id": 0}


def sln_accs(base, seed):
    """(last, best, last MO, best MO), as the results fixture writes SLN-MO runs."""
    return base + seed, base + 2 * seed, base + 5 + 3 * seed, base + 6 + 3 * seed


def write_sln(root, sigma, seed, base):
    last, best, last_ema, best_ema = sln_accs(base, seed)
    write_run(root, "noise_cifar_train", f"sigma{sigma}-seed{seed}", sln_config(sigma, seed),
              finished(last, best, 0.4, f"slnmo-sigma{sigma:g}",
                       last_test_acc_ema=last_ema, best_test_acc_ema=best_ema))


@pytest.fixture
def paired_results(results):
    """The results fixture plus baselines: GLS load at r = 0 (seeds 0-4), r = 0.4 at
    another lr (no baseline), SLN-MO at sigma 0 (seeds 0, 1) and at sigma 2 (seed 1 only)."""
    for seed, (last, best) in GLS_BASE.items():
        write_run(results, "main_GLS_load", f"r0-seed{seed}", gls_config(seed, ZEROS[seed]),
                  finished(last, best, 0.4, "r0"))
    for seed in (0, 1):
        write_run(results, "main_GLS_load", f"r0.4-lr-seed{seed}", gls_config(seed, 0.4, lr=0.02),
                  finished(99.0, 99.0, 0.4, "r0.4"))
        write_sln(results, -0.0 if seed else 0, seed, 55.0)
    write_sln(results, 2.0, 1, 80.0)
    return results


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


def paired_by_method(out):
    rows = {}
    for r in read_csv(out / "paired.csv"):
        rows.setdefault((r["script"], r["method"]), []).append(r)
    return rows


def test_paired_gls_against_smooth_rate_zero(paired_results, tmp_path):
    out = tmp_path / "out"
    assert summarize.main([str(paired_results), "--out", str(out)]) == 0
    paired = paired_by_method(out)
    summary = {(r["script"], r["method"], r["other"]): r for r in read_csv(out / "summary.csv")}
    base = next(r for k, r in summary.items() if k[:2] == ("main_GLS_load", "r0"))
    assert base["n_seeds"] == "5"  # smooth rate 0, 0.0 and -0.0: one group

    # r = 0.4 against r = 0 over seeds 0, 1, 2 (seed 4 is the baseline's only).
    r04 = next(r for r in paired[("main_GLS_load", "r0.4")] if r["n_pairs"] == "3")
    assert r04["seeds"] == "0 1 2" and r04["baseline_group"] == base["group"]
    assert r04["baseline_method"] == "r0" and r04["note"] == ""
    check_interval(r04, "last_test_acc", [70.0, 80.0, 90.0], [GLS_BASE[s][0] for s in (0, 1, 2)])
    check_interval(r04, "best_test_acc", [75.0, 85.0, 95.5], [GLS_BASE[s][1] for s in (0, 1, 2)])
    assert float(r04["last_test_acc_diff_mean"]) == pytest.approx(1.5, abs=1e-12)  # (-2.5 + 3 + 4) / 3
    assert r04["last_test_acc_ema_diff_mean"] == ""  # GLS has no momentum model

    # r = -2: seed 2 is interrupted and seed 3 has no summary, so the pairs are seeds 0, 1.
    (r2,) = [r for r in paired[("main_GLS_load", "r-2")] if r["n_pairs"] != "0"]
    assert (r2["n_pairs"], r2["seeds"]) == ("2", "0 1")
    check_interval(r2, "last_test_acc", [81.25, 83.75], [72.5, 77.0])
    check_interval(r2, "best_test_acc", [90.0, 91.0], [74.0, 84.0])

    # Another lr, or another noise seed, is another experiment: no baseline runs.
    (lr,) = [r for r in paired[("main_GLS_load", "r0.4")] if "lr=0.02" in r["other"]]
    (noise,) = [r for r in paired[("main_GLS_load", "r-2")] if "noise_seed=1" in r["other"]]
    for row in (lr, noise):
        assert (row["n_pairs"], row["baseline_group"], row["last_test_acc_diff_mean"]) == ("0", "", "")
        assert row["note"] == "no baseline runs (smooth_rate=0, every other setting equal)"

    # The baseline itself, the CE warm-up (no baseline) and the diverged run (no finished
    # seed) get no row.
    assert ("main_GLS_load", "r0") not in paired and ("main_warmup", "ce") not in paired
    assert not any(script == "main_GLS_direct_train" for script, _ in paired)

    md = (out / "summary.md").read_text()
    mean, low, high = expected_interval([70.0, 80.0, 90.0], [72.5, 77.0, 86.0])
    assert f"| {mean:+.2f} [{low:+.2f}, {high:+.2f}] (3 pairs) |" in md
    assert "Δ last acc vs baseline" in md and "| baseline |" in md


def test_paired_sln_against_sigma_zero(paired_results, tmp_path):
    out = tmp_path / "out"
    summarize.main([str(paired_results), "--out", str(out)])
    paired = paired_by_method(out)
    base = [sln_accs(55.0, seed) for seed in (0, 1)]
    for sigma, level in (("0.5", 60.0), ("1", 70.0)):
        (row,) = paired[("noise_cifar_train", f"slnmo-sigma{sigma}")]
        assert (row["n_pairs"], row["seeds"]) == ("2", "0 1")
        assert row["baseline_method"] == "slnmo-sigma0"
        mine = [sln_accs(level, seed) for seed in (0, 1)]
        for i, name in enumerate(summarize.ACCURACIES):
            check_interval(row, name, [m[i] for m in mine], [b[i] for b in base])
    # One pair (sigma 2 has seed 1 only): a difference, but no interval.
    (one,) = paired[("noise_cifar_train", "slnmo-sigma2")]
    assert (one["n_pairs"], one["seeds"]) == ("1", "1")
    assert float(one["last_test_acc_ema_diff_mean"]) == sln_accs(80.0, 1)[2] - sln_accs(55.0, 1)[2]
    assert one["last_test_acc_diff_ci_low"] == one["last_test_acc_ema_diff_ci_high"] == ""
    assert ("noise_cifar_train", "slnmo-sigma0") not in paired


def test_t_interval_matches_scipy_free_formula():
    diffs = [-2.5, 3.0, 4.0]
    mean, low, high = summarize.t_interval(diffs)
    assert (mean, low, high) == pytest.approx(expected_interval(diffs, [0, 0, 0]), rel=1e-12)
    assert summarize.t_interval([1.25]) == (1.25, None, None)


# ---------------------------------------------------------------- memorisation

def write_mem_runs(root):
    """Two seeds with the new per-epoch columns, one older group without them."""
    mem = {0: [10.0, 20.0, 40.0], 1: [14.0, 30.0, 44.0]}
    for seed in (0, 1):
        write_run(root, "main_GLS_load", f"new-seed{seed}", gls_config(seed, 0.4),
                  finished(80.0, 85.0, 0.4, "r0.4", last_mem_noisy=mem[seed][-1],
                           last_test_ece=5.0 + seed),
                  accs={"test_acc": [60.0, 70.0, 80.0], "fit_clean": [50.0 + seed, 70.0, 90.0],
                        "mem_noisy": mem[seed], "test_ece": [9.0, 7.0, 5.0 + seed]})
    for seed in (0, 1):  # made before the columns existed: one seed has the summary keys only
        extra = {"last_mem_noisy": 33.0} if seed else {}
        write_run(root, "main_GLS_load", f"old-seed{seed}", gls_config(seed, -2.0),
                  finished(70.0, 75.0, 0.4, "r-2", **extra), accs={"test_acc": [50.0, 60.0, 70.0]})
    return mem


def test_memorisation_curves_and_last_values(tmp_path):
    mem = write_mem_runs(tmp_path / "results")
    out = tmp_path / "out"
    _, _, plots = summarize.summarize(str(tmp_path / "results"), str(out), curves=["r0.4", "r-2"])
    names = {p.split("/")[-1] for p in plots}
    assert {"curves_r0.4.png", "mem_curves_r0.4.png", "curves_r-2.png"} <= names
    assert "mem_curves_r-2.png" not in names and not (out / "mem_curves_r-2.png").exists()
    check_png(out / "mem_curves_r0.4.png")

    groups = summarize.group_runs(summarize.find_runs(str(tmp_path / "results")))
    (new,) = [m for gid, m in groups.items() if "r0.4" in gid]
    epochs, means, stds, n = summarize.group_curve(new, "mem_noisy")
    assert list(epochs) == [1, 2, 3] and n == 2
    assert means == pytest.approx(np.mean([mem[0], mem[1]], axis=0), abs=1e-12)
    assert stds == pytest.approx(np.std([mem[0], mem[1]], axis=0, ddof=1), abs=1e-12)
    # test_acc starts at epoch 0, summary.json's initial_test_acc.
    epochs, means, _, _ = summarize.group_curve(new, "test_acc")
    assert list(epochs) == [0, 1, 2, 3] and means[0] == 60.0

    rows = {r["method"]: r for r in read_csv(out / "summary.csv")}
    assert float(rows["r0.4"]["last_mem_noisy_mean"]) == 42.0
    assert float(rows["r0.4"]["last_test_ece_mean"]) == 5.5
    assert rows["r-2"]["last_mem_noisy_mean"] == "" and rows["r-2"]["last_test_ece_mean"] == ""


# ---------------------------------------------------------------- damaged input

@pytest.mark.parametrize("text, problem", [("{not json", "is not JSON"),
                                           ("[1, 2]", "is JSON but not an object"),
                                           ('{"seed": "one"}', "has seed 'one', not an integer")])
def test_damaged_config_skips_the_run(results, tmp_path, capsys, text, problem):
    folder = write_run(results, "main_GLS_load", "damaged", gls_config(5, 0.4),
                       finished(1.0, 1.0, 0.4, "r0.4"))
    (folder / "config.json").write_text(text)
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipping {folder}: config.json {problem}" in err
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 6
    (r04,) = [r for r in rows if r["method"] == "r0.4"]
    assert (r04["n_seeds"], float(r04["last_test_acc_mean"])) == ("3", 80.0)
    assert str(folder) not in {u["run_dir"] for u in read_csv(out / "unfinished.csv")}


@pytest.mark.parametrize("text, problem", [("", "is not JSON"), ('{"status": "finished", ', "is not JSON"),
                                           ('"finished"', "is JSON but not an object (it holds a string)")])
def test_damaged_summary_makes_the_run_unfinished(results, tmp_path, capsys, text, problem):
    folder = write_run(results, "main_GLS_load", "r0.4-seed3", gls_config(3, 0.4),
                       finished(1.0, 1.0, 0.4, "r0.4"))
    (folder / "summary.json").write_text(text)
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    assert f"{folder}: summary.json {problem}" in capsys.readouterr().err
    (listed,) = [u for u in read_csv(out / "unfinished.csv") if u["run_dir"] == str(folder)]
    assert listed["status"] == "damaged summary.json" and problem in listed["note"]
    (r04,) = [r for r in read_csv(out / "summary.csv") if r["method"] == "r0.4"]
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
    _, _, plots = summarize.summarize(str(results), str(tmp_path / "out"), curves=["r0.4"])
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "metrics.csv" in line]
    assert warning.startswith(f"warning: {folder}: metrics.csv {problem}")
    assert warning.endswith("the run is left out of the curves")
    assert any(p.endswith("curves_r0.4.png") for p in plots)
    # The curve is the mean of seeds 0 and 1 only (seed 2 ended at 90).
    groups = summarize.group_runs(summarize.find_runs(str(results)))
    (r04,) = [m for gid, m in groups.items() if "-r0.4-" in gid]
    epochs, means, _, n = summarize.group_curve(r04, "test_acc")
    assert n == 2 and list(means) == [60.0, 55.0, 65.0, 75.0]
    # The table does not need metrics.csv: seed 2 is still averaged.
    (row,) = [r for r in read_csv(tmp_path / "out" / "summary.csv") if r["method"] == "r0.4"]
    assert float(row["last_test_acc_mean"]) == 80.0


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"85.0"'])
def test_non_finite_accuracy_is_not_averaged(results, tmp_path, capsys, value):
    path = results / "main_GLS_load" / "r0.4-seed1" / "summary.json"
    path.write_text(path.read_text().replace('"last_test_acc": 80.0', f'"last_test_acc": {value}'))
    out = tmp_path / "out"
    assert summarize.main([str(results), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{path.parent}: summary.json last_test_acc is" in err and "not a finite number" in err
    (r04,) = [r for r in read_csv(out / "summary.csv") if r["method"] == "r0.4"]
    assert r04["last_test_acc_mean"] == "" and r04["last_test_acc_std"] == ""
    assert float(r04["best_test_acc_mean"]) == pytest.approx(85.16666666666667, abs=1e-12)


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
