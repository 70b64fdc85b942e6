"""Paper recipes (papers/), `sweep.py paper` and `summarize.py --paper`: the recipes' runs
against the papers' settings written out here, the table against a numpy computation over
hand-made run folders, the dry run's counts and estimate. No training."""
import itertools
import json
import os

import numpy as np
import pytest

import summarize
import sweep
from conftest import ROOT, parse_flags, read_csv
from papers import get_recipe, recipes

GLS_RATES = [0.8, 0.4, 0.0, -0.4, -1.0, -2.0, -4.0, -6.0]
GLS_EPOCHS = {"main_GLS_direct_train": 200, "main_GLS_load": 100}


def settings(recipe_name):
    """(script, parsed flags) of every run of a recipe, as the script reads them."""
    return [(run.script, parse_flags(run.script, *run.words())) for run in get_recipe(recipe_name).runs]


# ---------------------------------------------------------------- the recipes' runs

def test_gls_cifar10_runs_are_the_papers_grid():
    runs = {(s, c.dataset, c.noise_type, None if c.noise_type == "clean" else c.noise_rate, c.smooth_rate, c.n_epoch)
            for s, c in settings("gls-cifar10")}
    noises = [("clean", None), ("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6),
              ("pairflip", 0.2), ("pairflip", 0.3)]
    want = {(s, "cifar10", t, r, rate, GLS_EPOCHS[s])
            for s in GLS_EPOCHS for (t, r) in noises for rate in GLS_RATES}
    assert runs == want and len(get_recipe("gls-cifar10").runs) == 96
    for script, cfg in settings("gls-cifar10"):
        assert (cfg.wa, cfg.wb, cfg.model) == (0.0, 1.0, "resnet")
    assert get_recipe("gls-cifar10").epochs["main_warmup"] == 120


def test_gls_cifar100_runs():
    runs = {(s, c.dataset, c.noise_type, c.noise_rate, c.smooth_rate, c.n_epoch) for s, c in settings("gls-cifar100")}
    assert runs == {(s, "cifar100", "symmetric", r, rate, GLS_EPOCHS[s])
                    for s in GLS_EPOCHS for r in (0.4, 0.6) for rate in GLS_RATES}


# The CIFAR-N release's protocol (UCSC-REAL/cifar-10-100n main.py), transcribed from it.
CIFARN_LR_PLAN = [0.1] * 60 + [0.01] * 40                  # main.py:138 (alpha_plan), 100 epochs (:16)
CIFARN_SGD = {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4}  # main.py:124
CIFARN_BATCHES = {"batch_size": 128, "test_batch_size": 64}  # main.py:102/:127, :135


def test_gls_cifarn_runs_are_the_cifarn_protocol():
    from utils.engine import lr_at
    planned = settings("gls-cifarn")  # each run's flags as its script parses and records them (config.json)
    human = [("cifar10", t) for t in ("aggre", "rand1", "rand2", "rand3", "worst")] + [("cifar100", "noisy100")]
    assert {(s, c.dataset, c.noise_type, c.smooth_rate) for s, c in planned} == {
        ("main_GLS_direct_train", d, t, r) for d, t in human for r in GLS_RATES}
    assert len(planned) == 6 * 8  # no warm-up: main.py trains once, from scratch
    for _, cfg in planned:
        assert [lr_at(e, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch) for e in range(cfg.n_epoch)] \
            == pytest.approx(CIFARN_LR_PLAN)
        assert {k: getattr(cfg, k) for k in CIFARN_SGD} == CIFARN_SGD
        assert {k: getattr(cfg, k) for k in CIFARN_BATCHES} == CIFARN_BATCHES
        assert (cfg.model, cfg.wa, cfg.wb) == ("resnet", 0.0, 1.0)  # main.py:122 ResNet34; GLS alone
        assert cfg.val_fraction == 0.05  # the one difference: a validation split to choose on
    # rows: CE is r = 0, PLS the positive rates, NLS the negative ones; every part is read at
    # its best validation epoch and chosen by its validation accuracy, never by the test set
    recipe = get_recipe("gls-cifarn")
    rows = {(p.row, float(dict(run.flags)["smooth_rate"])) for run in recipe.runs for p in run.parts}
    assert {r for row, r in rows if row == "PLS"} == {0.8, 0.4}
    assert {r for row, r in rows if row == "CE"} == {0.0}
    assert {r for row, r in rows if row == "NLS"} == {-0.4, -1.0, -2.0, -4.0, -6.0}
    assert {(p.metric, p.select) for run in recipe.runs for p in run.parts} == {("test_acc_at_best_val", "best_val_acc")}
    assert "validation" in recipe.notes and "nothing is chosen on the test set" in recipe.notes


@pytest.mark.parametrize("name, dataset, classes, sigmas", [
    ("sln-cifar10", "cifar10", 10, {"symmetric": 1.0, "asym": 0.5, "dependent": 0.5, "openset": 0.5}),
    ("sln-cifar100", "cifar100", 100, {"symmetric": 0.2, "asym": 0.2, "dependent": 0.1}),
])
def test_sln_cifar_runs_are_the_releases_commands(name, dataset, classes, sigmas):
    runs = {(c.dataset, c.num_class, c.noise_type, c.noise_rate, c.sigma, c.correction, c.n_epoch, c.ema_decay,
             c.model) for _, c in settings(name)}
    assert runs == {(dataset, classes, mode, 0.4, s, correction, 300, 0.999, "wrn28_2")
                    for mode, sigma in sigmas.items() for s, correction in ((sigma, -1), (sigma, 250), (0.0, -1))}
    # SLN and SLN-MO are the two models of the run without correction; SLN-MO-LC the other
    # run; CE the network of the run with sigma 0
    reads = {(p.row, dict(run.flags)["sigma"] == 0, run.flags[-2][1], p.metric)
             for run in get_recipe(name).runs for p in run.parts}
    assert reads == {("CE", True, -1, "last_test_acc"), ("SLN", False, -1, "last_test_acc"),
                     ("SLN-MO", False, -1, "last_test_acc_ema"), ("SLN-MO-LC", False, 250, "last_test_acc_ema")}


def test_sln_clothing1m_runs():
    runs = {(s, c.dataset, c.sigma, c.correction, c.n_epoch, c.model, c.num_per_class)
            for s, c in settings("sln-clothing1m")}
    assert runs == {("noise_clothing1m_train", "clothing1m", s, k, 10, "resnet50", 18976)
                    for s, k in ((0.2, -1), (0.2, 1), (0.0, -1))}
    # the release validates the momentum model only and keeps both networks at its best
    # validation epoch (noise_clothing1m_train.py:133, :138-142)
    reads = {(p.row, p.metric) for run in get_recipe("sln-clothing1m").runs for p in run.parts}
    assert reads == {("CE", "test_acc_noema_at_best_val_ema"), ("SLN", "test_acc_noema_at_best_val_ema"),
                     ("SLN-MO", "test_acc_at_best_val_ema"), ("SLN-MO-LC", "test_acc_at_best_val_ema")}


def test_summary_reads_the_plain_network_at_the_momentum_models_best_val_epoch():
    from utils.schema import best_results as summarize_rows
    val_ema = [60.0, 71.0, 70.0, 71.0]  # the first maximum is epoch 2
    val = [65.0, 60.0, 75.0, 61.0]
    test, test_ema = [50.0, 52.0, 58.0, 54.0], [55.0, 66.0, 67.0, 68.0]
    rows = [{"epoch": e + 1, "val_acc": val[e], "val_acc_ema": val_ema[e], "test_acc": test[e],
             "test_acc_ema": test_ema[e]} for e in range(4)]
    out = summarize_rows(rows)
    at = int(np.argmax(val_ema))
    assert out["test_acc_noema_at_best_val_ema"] == test[at] == 52.0
    assert out["test_acc_at_best_val_ema"] == test_ema[at]
    assert out["test_acc_at_best_val"] == test[int(np.argmax(val))] == 58.0


def test_every_cell_a_run_feeds_is_a_cell_of_the_table():
    for recipe in recipes().values():
        assert set(recipe.parts()) == set(itertools.product(recipe.rows, recipe.columns))


# ---------------------------------------------------------------- the reference numbers

def reference_header(recipe):
    """The table summarize.py --paper writes for a recipe with no runs."""
    cells, parts = summarize.paper_table(recipe, [])
    return summarize.paper_markdown(recipe, cells, parts, False)


@pytest.mark.parametrize("name", ["gls-cifar10", "gls-cifar100", "gls-cifarn", "sln-cifar10", "sln-cifar100",
                                  "sln-clothing1m"])
def test_every_reference_cell_names_its_source(name):
    import re
    from papers import Ref, Source
    recipe = get_recipe(name)
    cells = list(itertools.product(recipe.rows, recipe.columns))
    assert set(recipe.refs) == set(cells)  # every cell, and no other
    for cell in cells:
        ref = recipe.refs[cell]
        assert isinstance(ref, Ref) and ref.at, cell
        if ref.number is None:
            assert ref.source is None and ref.at.startswith("no source read gives it"), cell
            continue
        assert isinstance(ref.source, Source) and ref.source in recipe.sources(), cell
        assert ref.source.cites and ref.source.where.startswith("https://") and ref.source.covers
        assert re.search(r"row .+, column .+|Accuracy", ref.at), (cell, ref.at)
        quoted = re.findall(r"\d+\.\d\d", ref.source.covers)
        if quoted:  # a source whose record quotes its numbers quotes this one
            assert f"{ref.number:.2f}" in quoted, (cell, ref.number)

    md = reference_header(recipe)
    assert md.split("\n")[0] == f"# {recipe.name}: {recipe.paper}, {recipe.table}"
    for source in recipe.sources():
        assert source.cites in md and source.where in md
    known = len(recipe.paper_numbers)
    if known < len(cells):
        assert f"{len(cells) - known} of {len(cells)} cells have no published number" in md
    # the header's claim matches the sources: a submission's numbers are said to be the
    # submission's, and a table none of whose numbers could be read says so
    if any("submission" in s.cites for s in recipe.sources()):
        assert "submission" in recipe.table
    if known == 0:
        assert "no published number could be read" in recipe.table
    if recipe.sources() and not any("submission" in s.cites for s in recipe.sources()):
        assert "not from the GLS paper" in recipe.table
    listed = md.split("Where each reference number was read:")[1]
    for row, column in cells:
        assert f"{row} / {column}" in listed and recipe.refs[(row, column)].at in listed


def test_docs_list_every_source():
    text = open(os.path.join(ROOT, "docs", "PAPERS.md")).read()
    for name, recipe in recipes().items():
        for source in recipe.sources():
            assert f"`{source.key}`" in text and source.where.split(" ")[0] in text, source.key
        cells = len(recipe.rows) * len(recipe.columns)
        assert f"| `{name}` | {cells} | {len(recipe.paper_numbers)} | " in text, name


# ---------------------------------------------------------------- summarize.py --paper

def write_run(root, script, argv, seed, summary):
    """A run folder as the engine leaves it: config.json (every flag, parsed by the script)
    and summary.json."""
    cfg = parse_flags(script, *argv, "--seed", str(seed))
    folder = os.path.join(root, script, f"{'-'.join(a.strip('-') for a in argv)}-seed{seed}")
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(vars(cfg), f)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"status": "finished", "script": script, "seed": seed, **summary}, f)


def test_summarize_paper_table(tmp_path, capsys):
    res = str(tmp_path / "results")
    c100 = ["--dataset", "cifar100", "--noise_type", "symmetric"]
    direct = {0: 50.0, 1: 52.0}                      # r -2, sym 0.4: the better part is after warm-up
    load = {0: 57.0, 1: 58.5, 2: 59.0}
    for seed, acc in direct.items():
        write_run(res, "main_GLS_direct_train", c100 + ["--noise_rate", "0.4", "--smooth_rate", "-2.0"], seed,
                  {"best_test_acc": acc, "last_test_acc": acc - 1})
    for seed, acc in load.items():
        write_run(res, "main_GLS_load", c100 + ["--noise_rate", "0.4", "--smooth_rate", "-2.0"], seed,
                  {"best_test_acc": acc, "last_test_acc": acc - 1})
    # the same runs at another lr: a second setting, fewer seeds, not taken
    write_run(res, "main_GLS_load", c100 + ["--noise_rate", "0.4", "--smooth_rate", "-2.0", "--lr", "1e-5"], 0,
              {"best_test_acc": 99.0})
    # r 0.4, sym 0.6: direct only (after warm-up missing): a partial cell
    write_run(res, "main_GLS_direct_train", c100 + ["--noise_rate", "0.6", "--smooth_rate", "0.4"], 0,
              {"best_test_acc": 40.0})
    # 50 epochs is not the recipe's run: never counted
    write_run(res, "main_GLS_direct_train", c100 + ["--noise_rate", "0.6", "--smooth_rate", "0.8", "--n_epoch", "50"],
              0, {"best_test_acc": 77.0})
    out = str(tmp_path / "table")
    assert summarize.main([res, "--paper", "gls-cifar100", "--out", out, "--parts"]) == 0
    printed = capsys.readouterr()
    cells = {(r["row"], r["column"], r["kind"]): r for r in read_csv(os.path.join(out, "paper_gls-cifar100.csv"))}

    want_load, want_direct = np.mean(list(load.values())), np.mean(list(direct.values()))
    cell = cells[("-2.0", "sym 0.4", "cell")]
    assert float(cell["ours_mean"]) == pytest.approx(max(want_load, want_direct))
    assert float(cell["ours_std"]) == pytest.approx(np.std(list(load.values()), ddof=1))
    assert cell["from_part"] == "after warm-up" and cell["n_seeds"] == "3" and cell["seeds"] == "0 1 2"
    assert float(cell["paper"]) == 58.10
    assert float(cell["difference"]) == pytest.approx(want_load - 58.10)
    assert float(cells[("-2.0", "sym 0.4", "part: direct")]["ours_mean"]) == pytest.approx(want_direct)
    assert float(cells[("-2.0", "sym 0.4", "part: direct")]["ours_std"]) == pytest.approx(np.std([50, 52], ddof=1))

    partial = cells[("0.4", "sym 0.6", "cell")]
    assert float(partial["ours_mean"]) == 40.0 and partial["ours_std"] == ""
    assert partial["status"] == "partial (no after warm-up)"
    assert cells[("0.8", "sym 0.6", "cell")]["status"] == "missing"  # its 50-epoch run does not count
    statuses = [r["status"] for k, r in cells.items() if k[2] == "cell"]
    assert len(statuses) == 16 and statuses.count("missing") == 14

    md = open(os.path.join(out, "paper_gls-cifar100.md")).read()
    assert "| -2.0 | 55.00 | " not in md  # the cell is the better part, not a mean of both
    assert f"{want_load:.2f} ± {np.std(list(load.values()), ddof=1):.2f} (3) / 58.10 {want_load - 58.10:+.2f}" in md
    assert "15 cell(s) missing or partial" in md and "- 0.4 / sym 0.6: partial (no after warm-up)" in md
    assert md in printed.out
    assert "runs of 2 settings or versions match" in printed.err


def test_summarize_paper_cifarn_chooses_on_validation(tmp_path, capsys):
    recipe = get_recipe("gls-cifarn")
    res, out = str(tmp_path / "results"), str(tmp_path / "t")
    # (best_val_acc, test_acc_at_best_val) by seed: on the worst labels r = -1 validates best,
    # r = -2 tests best; r = 0 is CE
    fake = {"-1.0": [(80.0, 70.0), (82.0, 71.0)], "-2.0": [(78.0, 75.0), (77.0, 76.0)], "0.0": [(70.0, 65.0)]}
    for run in recipe.runs:
        flags = dict(run.flags)
        if flags["noise_type"] == "worst" and flags["smooth_rate"] in fake:
            for seed, (val, test) in enumerate(fake[flags["smooth_rate"]]):
                write_run(res, run.script, run.words(), seed,
                          {"best_val_acc": val, "test_acc_at_best_val": test, "best_test_acc": test + 5})
    assert summarize.main([res, "--paper", "gls-cifarn", "--out", out]) == 0
    capsys.readouterr()
    cells = {(r["row"], r["column"]): r for r in read_csv(os.path.join(out, "paper_gls-cifarn.csv"))}
    val_means = {r: np.mean([v for v, _ in fake[r]]) for r in ("-1.0", "-2.0")}
    chosen = max(val_means, key=val_means.get)
    nls = cells[("NLS", "C10N worst")]
    assert float(nls["ours_mean"]) == pytest.approx(np.mean([t for _, t in fake[chosen]]))
    assert nls["from_part"] == f"r={chosen}" and nls["select"] == "best_val_acc"
    assert float(nls["select_mean"]) == pytest.approx(val_means[chosen])
    assert float(nls["paper"]) == recipe.paper_number("NLS", "C10N worst")
    assert nls["paper_source"].startswith(recipe.refs[("NLS", "C10N worst")].source.key)
    ce = cells[("CE", "C10N worst")]
    assert float(ce["ours_mean"]) == 65.0 and ce["paper"] == ""
    assert ce["paper_source"].startswith("no source read gives it")


def test_summarize_paper_sln_reads_the_momentum_model(tmp_path, capsys):
    res = str(tmp_path / "results")
    base = ["--noise_mode", "asym", "--noise_rate", "0.4", "--sigma", "0.5", "--epochs", "300"]
    for seed, (plain, ema) in enumerate([(80.0, 84.0), (82.0, 85.0)]):
        write_run(res, "noise_cifar_train", base + ["--correction", "-1"], seed,
                  {"last_test_acc": plain, "last_test_acc_ema": ema})
    out = str(tmp_path / "t")
    assert summarize.main([res, "--paper", "sln-cifar10", "--out", out]) == 0
    capsys.readouterr()
    cells = {(r["row"], r["column"]): r for r in read_csv(os.path.join(out, "paper_sln-cifar10.csv"))}
    assert float(cells[("SLN", "asym")]["ours_mean"]) == pytest.approx(81.0)
    assert float(cells[("SLN-MO", "asym")]["ours_mean"]) == pytest.approx(84.5)
    assert cells[("SLN-MO-LC", "asym")]["status"] == "missing" and cells[("SLN", "asym")]["paper"] == ""


def test_summarize_paper_refusals(tmp_path, capsys):
    assert summarize.main([str(tmp_path), "--paper", "gls-cifar1O"]) == 2
    assert "did you mean gls-cifar10" in capsys.readouterr().err
    assert summarize.main([str(tmp_path / "none"), "--paper", "gls-cifar10"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "none")


# ---------------------------------------------------------------- sweep.py paper

def test_list(capsys):
    assert sweep.main(["paper", "--list"]) == 0
    out = capsys.readouterr().out
    for name, runs in (("gls-cifar10", 96), ("gls-cifar100", 32), ("gls-cifarn", 48), ("sln-cifar10", 12),
                       ("sln-cifar100", 9), ("sln-clothing1m", 3)):
        line = out[out.index(f"  {name} "):]
        assert f"{runs} runs a seed" in line.split("\n")[1]


def test_dry_run_counts_and_estimate(tmp_path, capsys):
    res = str(tmp_path / "res")
    assert sweep.main(["paper", "gls-cifar100", "--seeds", "0", "--dry-run", "--result_dir", res]) == 0
    out = capsys.readouterr().out
    # 16 direct runs of 200 epochs, 16 after warm-up of 100, their 2 warm-ups of 120
    epochs = 16 * 200 + 16 * 100 + 2 * 120
    assert f"34 runs, {epochs:,} epochs in all" in out
    assert "ASSUMPTION" in out and "62.4 TFLOP/s" in out
    assert "2.32 GFLOP a forward image" in out  # ResNet-34 on 32x32: 1.16 G multiply-adds
    fwd = 2.32e9
    hours = epochs * (3 * fwd * 50_000 + fwd * 10_000) / 62.4e12 / 3600
    shown = float(out.split("estimated ")[1].split(" GPU-hours")[0])
    assert shown == pytest.approx(hours, rel=0.01)
    assert "nothing started, nothing written" in out and not os.path.exists(res)

    bench = tmp_path / "bench_r34.json"
    bench.write_text(json.dumps({"model": "resnet34", "width": None, "precision": "fp32",
                                 "achieved_tflops_project": 31.2, "device": "test GPU"}))
    assert sweep.main(["paper", "gls-cifar100", "--seeds", "0", "--dry-run", "--result_dir", res,
                       "--bench", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "measured 31.2 TFLOP/s on test GPU" in out and "ASSUMPTION" not in out
    assert float(out.split("estimated ")[1].split(" GPU-hours")[0]) == pytest.approx(2 * shown, rel=0.01)


def test_slurm_dry_run_writes_the_recipes_runs(tmp_path, capsys):
    res = str(tmp_path / "res")
    assert sweep.main(["paper", "sln-clothing1m", "--slurm", "--dry-run", "--result_dir", res,
                       "--datapath", str(tmp_path / "c1m")]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 30 epochs in all" in out
    with open(os.path.join(res, "sweep_logs", "sweep_paper_sln-clothing1m", "tasks_runs.jsonl")) as f:
        commands = [json.loads(line)["command"] for line in f]
    assert sorted((c[c.index("--sigma") + 1], c[c.index("--correction") + 1]) for c in commands) == \
        [("0", "-1"), ("0.2", "-1"), ("0.2", "1")]
    assert all(c[c.index("--seed") + 1] == "0" for c in commands)


@pytest.mark.parametrize("argv, message", [
    (["paper", "sln-cifar"], "did you mean sln-cifar10"),
    (["paper"], "name the recipe"),
    (["paper", "gls-cifar10", "--smooth_rate", "0.1", "--dry-run"], "the recipe gls-cifar10 sets --smooth_rate"),
    (["paper", "gls-cifar100", "--warmup_args", "--n_epoch 5", "--dry-run"], "trains main_warmup.py for 120 epochs"),
    (["paper", "sln-cifar10", "--bench", os.path.join(ROOT, "README.md"), "--dry-run"], "cannot be read as JSON"),
])
def test_refusals(argv, message, capsys, tmp_path):
    assert sweep.main(argv + ["--result_dir", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")
