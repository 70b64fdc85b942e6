"""sweep.py's checks before anything starts and its smoke runs: a paper recipe's runs at a tiny
size on stand-in data, end to end through summarize.py --paper (a recipe cut to its first
runs; the whole recipes' plans without training); the data check naming every missing file
of a recipe with an empty data folder, before anything is written; and --dry-run's states
of the runs already there."""
import dataclasses
import json
import os

import pytest

import papers
import summarize
import sweep as sweeper
from conftest import TINY
from papers.smoke import SMOKE_EPOCHS, SMOKE_VAL_FRACTION, SMOKE_WIDTH, smoke_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def here(capsys, *args):
    """(exit status, stdout, stderr) of sweep.main in this process."""
    cwd = os.getcwd()
    try:
        code = sweeper.main([str(a) for a in args])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return code, out.out, out.err


def cut(name, which):
    """The recipe `name` cut to the runs `which` picks (their cells only), one seed."""
    recipe = papers.get_recipe(name)
    kept = which(recipe.runs)
    cells = [(p.row, p.column) for r in kept for p in r.parts]
    return dataclasses.replace(recipe, name=f"{name}-cut", runs=kept, seeds="0",
                               rows=tuple(dict.fromkeys(r for r, _ in cells)),
                               columns=tuple(dict.fromkeys(c for _, c in cells)))


@pytest.fixture
def recipes(monkeypatch):
    """Recipes cut to a few runs, found by name by the sweep and by summarize.py."""
    found = {}
    real = papers.get_recipe

    def get(name):
        return found[name] if name in found else real(name)

    monkeypatch.setattr(papers, "get_recipe", get)

    def add(recipe):
        found[recipe.name] = recipe
        return recipe.name
    return add


@pytest.mark.parametrize("name, which, trained", [
    # GLS after its CE warm-up: two runs, the second after the first
    ("gls-cifar100", lambda runs: [r for r in runs if r.script == "main_GLS_load"][:1], 2),
    # SLN (and SLN-MO) and SLN-MO-LC with label correction, of one column
    ("sln-cifar10", lambda runs: runs[1:3], 2),
])
def test_smoke_trains_the_recipes_runs_and_writes_its_table(name, which, trained, recipes, tmp_path, capsys):
    out_dir = tmp_path / "smoke"
    cut_name = recipes(cut(name, which))
    code, out, err = here(capsys, "paper", cut_name, "--smoke", "--result_dir", out_dir)
    assert code == 0, out + err
    assert f"sweep: {trained} finished" in out
    assert "SMOKE RUN" in out.split("\n# ")[1].splitlines()[0]  # the table's title says it
    with open(out_dir / "paper" / f"paper_{cut_name}.md") as f:
        table = f.read()
    assert "missing" not in table and "SMOKE RUN" in table  # every cell has a smoke result
    configs = []
    for root, _, names in os.walk(out_dir):
        if "config.json" in names:
            with open(os.path.join(root, "config.json")) as f:
                configs.append(json.load(f))
    assert len(configs) == trained
    assert all(c["smoke"] is True and c["n_epoch"] == SMOKE_EPOCHS for c in configs)
    assert all(c["data_root"].startswith(str(out_dir / "data")) for c in configs)
    # The runs really ran the recipe's structure: a load run started from its warm-up; the
    # label-correction run corrected (its tag names the correction epoch, 250 of 300 -> 1 of 2).
    folders = sorted(os.listdir(out_dir))
    if name.startswith("gls"):
        assert {"main_warmup", "main_GLS_load"} <= set(folders)
        (load,) = os.listdir(out_dir / "main_GLS_load")
        with open(out_dir / "main_GLS_load" / load / "summary.json") as f:
            assert "main_warmup" in json.load(f)["init_from"]
    else:
        tags = os.listdir(out_dir / "noise_cifar_train")
        assert any("-c1-" in t for t in tags) and any("-c1-" not in t for t in tags)


def test_smoke_plans_of_every_recipe_keep_their_structure():
    """Every recipe's smoke runs are its runs (scripts, the flags that vary, the seeds), at the
    smoke size: no epochs of their own (the sweep gives all SMOKE_EPOCHS), a small width
    where the model takes one, epoch counts of a method scaled into the smoke epochs."""
    for name, recipe in papers.recipes().items():
        smoke = smoke_recipe(recipe, "/tmp/d")
        assert len(smoke.runs) == len(recipe.runs) and smoke.seeds == recipe.seeds, name
        assert set(smoke.epochs.values()) == {SMOKE_EPOCHS} and "SMOKE RUN" in smoke.table
        for real, small in zip(recipe.runs, smoke.runs):
            flags, kept = dict(small.flags), dict(real.flags)
            assert small.script == real.script and small.parts == real.parts
            assert not {"n_epoch", "epochs"} & set(flags)
            assert flags["data_root"].startswith("/tmp/d")
            for flag, value in kept.items():
                if flag in ("n_epoch", "epochs"):
                    continue
                if flag == "correction" and 1 <= int(value) < int(kept["epochs"]):
                    assert flags[flag] == 1  # inside the run stays inside: label correction happens
                elif flag == "val_fraction" and 0 < float(value) < SMOKE_VAL_FRACTION:
                    assert flags[flag] == SMOKE_VAL_FRACTION  # raised: the stand-ins hold some out
                else:
                    assert flags[flag] == value, (name, flag)
            model = "resnet50" if real.script == "noise_clothing1m_train" else None
            assert ("width" in flags) == (model is None) and flags.get("width", SMOKE_WIDTH) == SMOKE_WIDTH


def test_smoke_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "smoke"
    code, out, err = here(capsys, "paper", "gls-cifar100", "--smoke", "--seeds", "0 1", "--dry-run",
                          "--result_dir", out_dir)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(lines) == 2 * (32 + 2)  # per seed 32 runs and their 2 warm-ups
    assert all(f"--n_epoch {SMOKE_EPOCHS} --smoke" in line for line in lines)
    assert "a start would stop here" not in out  # the stand-ins are made by the smoke run
    assert not out_dir.exists()


def test_smoke_refuses_a_folder_of_real_runs_and_summarize_never_mixes(tmp_path, capsys):
    real = tmp_path / "res" / "main_warmup" / "run"
    real.mkdir(parents=True)
    (real / "config.json").write_text(json.dumps({"dataset": "cifar10", "seed": 0}))
    code, _, err = here(capsys, "paper", "sln-cifar10", "--smoke", "--result_dir", tmp_path / "res")
    assert code == 2 and "holds real runs" in err and str(real) in err
    smoke = tmp_path / "res" / "noise_cifar_train" / "run"
    smoke.mkdir(parents=True)
    (smoke / "config.json").write_text(json.dumps({"dataset": "cifar10", "seed": 0, "smoke": True}))
    assert summarize.main([str(tmp_path / "res"), "--paper", "sln-cifar10"]) == 2
    assert "smoke runs" in capsys.readouterr().err


# ---------------------------------------------------------------- the data check

def missing_paths(err):
    """The paths the report names (its lines of two-space indent)."""
    return [line.strip() for line in err.splitlines() if line.startswith("  /")]


@pytest.mark.parametrize("name, flag, expected", [
    ("gls-cifarn", "--data_root", ["cifar-10-batches-py", "CIFAR-10_human.pt", "cifar-100-python",
                                   "CIFAR-100_human.pt"]),
    ("sln-cifar10", "--datapath", ["cifar-10-batches-py", "label_noisy/sym0.4.csv", "label_noisy/asym0.4.csv",
                                   "label_noisy/dependent0.4.csv", "cifar-100-python"]),
])
@pytest.mark.parametrize("slurm", [False, True])
def test_an_empty_data_folder_stops_the_recipe_before_anything_starts(name, flag, expected, slurm, tmp_path,
                                                                       capsys):
    empty, results = tmp_path / "empty", tmp_path / "results"
    empty.mkdir()
    code, out, err = here(capsys, "paper", name, flag, empty, "--seeds", "0", "--result_dir", results,
                          *(["--slurm"] if slurm else []))
    assert code == 2
    assert missing_paths(err) == [str(empty / e) for e in expected]  # each once, in the order the runs read them
    assert err.count("get it: ") == len(expected) and "curl -L" in err
    assert not results.exists() and os.listdir(empty) == []  # no run folder, no task file, no download


def test_the_dry_run_reports_the_missing_files_and_starts_nothing(tmp_path, capsys):
    empty, results = tmp_path / "empty", tmp_path / "results"
    empty.mkdir()
    code, out, _ = here(capsys, "paper", "gls-cifar100", "--data_root", empty, "--seeds", "0", "--dry-run",
                        "--result_dir", results)
    assert code == 0 and "a start would stop here: 1 file(s)" in out
    assert missing_paths(out) == [str(empty / "cifar-100-python")]
    assert not results.exists()


def test_a_missing_warmup_checkpoint_is_named(tmp_path, capsys):
    ckpt = tmp_path / "no" / "best.pt"
    code, _, err = here(capsys, "main_GLS_load.py", *TINY, "--warmup_ckpt", ckpt, "--result_dir", tmp_path / "r")
    assert code == 2 and missing_paths(err) == [str(ckpt)] and "--warmup_ckpt" in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- dry run: the runs' states

def test_the_dry_run_says_which_runs_are_done(tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["gls", "--seeds", "0 1", "--smooth_rates", "0.4", *TINY, "--n_epoch", "1", "--result_dir", results]
    runs = sweeper.plan([str(a) for a in argv])[1]
    assert len(runs) == 4  # per seed a warm-up and a load run
    now = sweeper.Identities()

    def write(run, status, made_by=True):
        os.makedirs(run.run_dir)
        config = {"made_by": now.made_by(run)} if made_by else {}
        with open(os.path.join(run.run_dir, "config.json"), "w") as f:
            json.dump(config, f)
        with open(os.path.join(run.run_dir, "summary.json"), "w") as f:
            json.dump({"status": status}, f)

    write(runs[0], "finished")
    write(runs[1], "interrupted")
    write(runs[2], "finished", made_by=False)  # made before runs recorded their code: stale
    code, out, err = here(capsys, *argv, "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "sweep: 4 runs (1 finished, 1 unfinished, 1 stale, 1 not started)"
    assert [line.split("] ")[0].split("[")[1] for line in lines[1:5]] == [
        "finished", "unfinished: interrupted", "stale, finished", "not started"]
    assert "a start would stop here: 1 of the sweep's 4 runs hold results made by other code" in out
    assert lines[-1] == "dry run: nothing started, nothing written"


def test_every_smoke_split_holds_out_some_of_the_stand_in_data():
    """A validation split below SMOKE_VAL_FRACTION that a recipe sets (gls-cifarn's 0.05) is
    raised to it in the smoke runs, as a method protocol's is (PES's 0.1, tested in
    test_cifarn_benchmark.py), once."""
    raised = set()
    for name, recipe in papers.recipes().items():
        for real, smoke in zip(recipe.runs, smoke_recipe(recipe, "/tmp/d").runs):
            if 0 < float(dict(real.flags).get("val_fraction", 0)) < SMOKE_VAL_FRACTION:
                assert [v for f, v in smoke.flags if f == "val_fraction"] == [SMOKE_VAL_FRACTION]
                raised.add(name)
    assert "gls-cifarn" in raised
