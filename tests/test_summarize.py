"""summarize.py on run folders written here in the results contract's format."""
import csv
import json
import statistics
import struct

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
