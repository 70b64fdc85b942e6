"""sweep.py train.py --grid method=...: runs of several methods in one sweep, each method's
own flags reaching its runs only; and a finished sweep run again is confirmed from the
run folders, without starting a process per run."""
import os

import pytest

import summarize
import sweep as sweeper
from conftest import read_csv
from sweeps.launch import local

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu",
        "--batch_size", "256", "--test_batch_size", "512", "--n_epoch", "1"]


def here(capsys, *args):
    """(exit status, stdout, stderr) of sweep.main in this process."""
    code = sweeper.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def words_of(run):
    """{flag: value} of a run's command (after the script)."""
    words = run.command[2:]
    return {w: words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True
            for i, w in enumerate(words) if w.startswith("--")}


def test_a_method_grid_gives_each_method_its_own_flags(tmp_path):
    argv = ["train.py", "--grid", "method=gls gce elr", "--grid", "q=0.5 0.9", "--smooth_rate", "0.4",
            "--elr_lambda", "2", "--seeds", "0 1", *FAST, "--result_dir", str(tmp_path)]
    opts, runs, log_dir, name = sweeper.plan(argv)
    got = sorted((w["--method"], w["--seed"], w.get("--smooth_rate"), w.get("--q"), w.get("--elr_lambda"))
                 for w in map(words_of, runs))
    # the q axis reaches gce only: gls and elr are one run per seed, not two copies
    assert got == sorted([("gls", s, "0.4", None, None) for s in "01"]
                         + [("gce", s, None, q, None) for s in "01" for q in ("0.5", "0.9")]
                         + [("elr", s, None, None, "2") for s in "01"])
    assert [run.plan.method.name for run in runs] == [words_of(run)["--method"] for run in runs]
    assert len({run.run_dir for run in runs}) == 8
    assert name == "sweep_train_gls-gce-elr" and log_dir == os.path.join(str(tmp_path), "sweep_logs", name)
    assert not os.listdir(tmp_path)  # planning writes nothing


@pytest.mark.parametrize("args, message", [
    (["--grid", "method=ce gce"], "'ce' is not a method; CE is the method gls with --smooth_rate 0"),
    (["--grid", "method=gls gce", "--method", "gls"], "the sweep sets --method from its option --grid method"),
    (["--grid", "method=gls gce", "--sigma", "0.5"], "--sigma is a flag of method sln"),
    (["--grid", "method=gls", "--grid", "method=gce"], "--grid method is given twice"),
])
def test_a_method_grid_refuses_what_no_run_can_take(tmp_path, capsys, args, message):
    code, out, err = here(capsys, "train.py", *args, *FAST, "--result_dir", tmp_path, "--dry-run")
    assert code == 2 and message in err, err
    assert not os.listdir(tmp_path)


def test_the_method_grid_of_the_gls_sweep_is_refused(tmp_path, capsys):
    code, _, err = here(capsys, "gls", "--grid", "method=gls gce", *FAST, "--result_dir", tmp_path)
    assert code == 2 and "sweep methods with train.py" in err


def test_a_two_method_sweep_pairs_both_against_ce_and_a_rerun_starts_no_process(tmp_path, capsys, monkeypatch):
    results, out = tmp_path / "results", tmp_path / "summary"
    argv = ["train.py", "--grid", "method=gls gce", "--grid", "smooth_rate=0 0.4", "--slots", "1", *FAST,
            "--result_dir", results]
    code, first, err = here(capsys, *argv)
    assert code == 0 and "sweep: 3 finished" in first, first + err
    assert summarize.main([str(results), "--out", str(out)]) == 0
    capsys.readouterr()
    against_ce = {(r["method"], r["label"]): (r["baseline_label"], r["n_pairs"])
                  for r in read_csv(out / "paired.csv") if r["baseline_kind"] == "ce"}
    # gls with smooth rate 0 is the CE run: the other gls run and the gce run are paired with it
    assert against_ce == {("r0.4", "PLS r=0.4"): ("GLS r=0", "1"), ("gce-q0.7", "GCE q=0.7"): ("GLS r=0", "1")}

    # Run again: every run is finished, so none is started (a start would fail here).
    mtimes = {p: p.stat().st_mtime for p in results.rglob("metrics.csv")}
    monkeypatch.setattr(local, "start", lambda *a, **k: pytest.fail("a finished run was started"))
    code, second, err = here(capsys, *argv)
    assert code == 0, second + err
    ended = [line for line in second.splitlines() if line.startswith("[")]
    assert len(ended) == 3 and all(" finished (kept, exit 0): " in line for line in ended)
    assert "sweep: 3 finished" in second
    assert {p: p.stat().st_mtime for p in results.rglob("metrics.csv")} == mtimes
    logs = sorted((results / "sweep_logs" / "sweep_train_gls-gce" / "train").iterdir())
    assert len(logs) == 3
    for log in logs:
        kept = log.read_text().split("=== ")[-2:]  # the header lines of the last attempt
        assert kept[0].startswith(tuple("0123456789")) and "CUDA_VISIBLE_DEVICES=none (not started" in kept[0]
        assert "already finished; nothing to do" in kept[1] and "results: " in kept[1]

    # A run whose folder no longer holds the result the check found is started instead.
    _, runs, _, _ = sweeper.plan([str(a) for a in argv])
    runs[0].kept = "diverged"
    assert local.kept_result(runs[0], retry_diverged=False) is None
