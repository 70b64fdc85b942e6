"""scripts/sweep_gls.sh and sweep_sln.sh on tiny digits runs with 2 CPU slots, and the
SLURM task files they write (no SLURM needed)."""
import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--batch_size", "256",
        "--test_batch_size", "512"]


def sweep(script, *args, check=True):
    env = {**os.environ, "PYTHON": sys.executable}
    for name in ("GPUS", "SLOTS", "SEEDS", "NOISE", "LOG_DIR", "MODE", "SMOOTH_RATES", "SIGMAS"):
        env.pop(name, None)
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def outcomes(log_dir):
    """[(outcome, exit status, command, run folder)] of the sweep's last invocation."""
    with open(os.path.join(log_dir, "outcomes.tsv")) as f:
        return [tuple(line.rstrip("\n").split("\t")[:4]) for line in f]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def flags(words):
    """{flag: value} of a command's --flag value pairs (the last one wins, as in argparse)."""
    out = {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            out[w] = nxt if nxt and not nxt.startswith("--") else True
    return out


def test_gls_sweep_runs_each_run_once_then_skips_all(tmp_path):
    results = str(tmp_path / "results")
    args = ["--slots", "2", "--smooth_rates", "0.4 -2.0", "--noise", "symmetric:0.4", "--seeds", "0",
            "--warmup_args", "--lr 0.1", *TINY, "--n_epoch", "1", "--lr", "0.01", "--result_dir", results]
    first = sweep("sweep_gls.sh", *args)
    assert "3 runs on 2 slot(s) [cpu cpu]" in first.stdout
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    done = outcomes(log_dir)
    assert [o[:2] for o in done] == [("finished", "0")] * 3
    runs = {o[3]: summary(o[3]) for o in done}
    assert len(runs) == 3
    assert all(os.path.isdir(d) and d.startswith(results) for d in runs)
    warmups = [d for d in runs if "/main_warmup/" in d]
    loads = sorted((s["config"]["smooth_rate"], d) for d, s in runs.items() if "/main_GLS_load/" in d)
    assert len(warmups) == 1 and [r for r, _ in loads] == [-2.0, 0.4]
    assert runs[warmups[0]]["config"]["lr"] == 0.1  # --warmup_args reach the warm-up only
    for _, d in loads:
        # each load run started from the sweep's warm-up, after it had finished
        assert runs[d]["init_from"] == os.path.join(warmups[0], "best.pt")
        assert runs[d]["config"]["lr"] == 0.01
    # one log per run, holding exactly one training attempt
    logs = {}
    for d in runs:
        log = os.path.join(log_dir, os.path.basename(os.path.dirname(d)), os.path.basename(d) + ".log")
        logs[d] = open(log).read()
        assert logs[d].count("=== ") == 2 and f"results: {d}" in logs[d]
        assert logs[d].splitlines()[0].endswith(" CUDA_VISIBLE_DEVICES=")  # CPU slot: no GPU
    mtimes = {d: os.path.getmtime(os.path.join(d, "metrics.csv")) for d in runs}

    second = sweep("sweep_gls.sh", *args)
    again = outcomes(log_dir)
    assert [o[:2] for o in again] == [("skipped", "0")] * 3
    assert {o[3] for o in again} == set(runs)
    assert "3 skipped" in second.stdout
    for d in runs:
        assert os.path.getmtime(os.path.join(d, "metrics.csv")) == mtimes[d]
        log = open(os.path.join(log_dir, os.path.basename(os.path.dirname(d)), os.path.basename(d) + ".log")).read()
        assert log.startswith(logs[d]) and "skipped" in log[len(logs[d]):]

    # An interrupted run (last.pt kept) is resumed; a failed one without a checkpoint is
    # started again; the finished warm-up is left alone.
    (r04,) = [d for r, d in loads if r == 0.4]
    (r2,) = [d for r, d in loads if r == -2.0]
    for d, status in ((r04, "interrupted"), (r2, "failed")):
        with open(os.path.join(d, "summary.json")) as f:
            s = json.load(f)
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump({**s, "status": status}, f)
    os.remove(os.path.join(r2, "last.pt"))
    sweep("sweep_gls.sh", *args)
    third = {o[3]: o[:2] for o in outcomes(log_dir)}
    assert third == {warmups[0]: ("skipped", "0"), r04: ("finished", "0"), r2: ("finished", "0")}
    assert summary(r04)["status"] == summary(r2)["status"] == "finished"
    for d, flag in ((r04, "--resume"), (r2, "--overwrite")):
        log = open(os.path.join(log_dir, "main_GLS_load", os.path.basename(d) + ".log")).read()
        assert log.rstrip().splitlines()[-1] == f"results: {d}"
        assert [line.endswith(flag) for line in log.splitlines() if line.startswith("=== ") and ".py " in line] \
            == [False, True]


def test_diverged_runs_are_recorded_and_kept(tmp_path):
    """A diverged run does not stop the sweep (one slot: the second run starts after the
    first diverged), and a restart does not run it again. The slot is "GPU 7": its runs
    are pinned with CUDA_VISIBLE_DEVICES=7 (no such GPU here, so they use the CPU)."""
    results = str(tmp_path / "results")
    # --loss_bound below any CE loss: every run is stopped as diverged at its first check.
    args = ["--gpus", "7", "--mode", "direct", "--smooth_rates", "0.4 -8.0", "--noise", "symmetric:0.4",
            *TINY, "--n_epoch", "1", "--loss_bound", "0.001", "--print_freq", "1", "--result_dir", results]
    first = sweep("sweep_gls.sh", *args, check=False)
    assert first.returncode == 1
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    done = outcomes(log_dir)
    assert sorted(o[:2] for o in done) == [("diverged", "3")] * 2
    assert all(summary(o[3])["status"] == "diverged" for o in done)
    for o in done:
        log = open(os.path.join(log_dir, "main_GLS_direct_train", os.path.basename(o[3]) + ".log")).read()
        assert log.startswith("=== ") and log.splitlines()[0].endswith(" CUDA_VISIBLE_DEVICES=7")
    second = sweep("sweep_gls.sh", *args, check=False)
    assert second.returncode == 1
    assert sorted(o[:2] for o in outcomes(log_dir)) == [("skipped-diverged", "3")] * 2


def test_sln_sweep_runs_noise_cifar_train(tmp_path):
    results = str(tmp_path / "results")
    sweep("sweep_sln.sh", "--slots", "2", "--sigmas", "1.0", "--noise", "sym:0.4", "--seeds", "0",
          *TINY, "--num_class", "10", "--epochs", "1", "--lr", "0.05", "--ema_decay", "0.5",
          "--correction", "-1", "--result_dir", results)
    (done,) = outcomes(os.path.join(results, "sweep_logs", "sweep_sln"))
    assert done[:2] == ("finished", "0") and "/noise_cifar_train/" in done[3]
    s = summary(done[3])
    assert s["config"]["sigma"] == 1.0 and s["config"]["noise_type"] == "sym"
    assert "last_test_acc_ema" in s  # the momentum model is evaluated


def test_slurm_task_files_hold_one_command_per_run(tmp_path):
    results = str(tmp_path / "results")
    proc = sweep("sweep_gls.sh", "--slurm", "--dry-run", "--mode", "both", "--smooth_rates", "0.4 -2.0",
                 "--noise", "symmetric:0.2 pairflip:0.4", "--seeds", "0 1", "--sbatch_args", "-p gpu",
                 "--array_parallel", "3", *TINY, "--n_epoch", "1", "--result_dir", results)
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    assert "submit with" in proc.stdout

    def commands(name):
        with open(os.path.join(log_dir, name)) as f:
            lines = f.read().splitlines()
        parsed = [shlex.split(line) for line in lines]
        for words in parsed:
            assert words[:3] == ["scripts/sweep_run.sh", log_dir, sys.executable]
            assert flags(words)["--result_dir"] == results and flags(words)["--dataset"] == "digits"
        return [(w[3], flags(w)) for w in parsed]

    warm = commands("tasks_warmup.txt")
    assert sorted((s, f["--noise_type"], f["--noise_rate"], f["--seed"]) for s, f in warm) == sorted(
        ("main_warmup.py", t, r, seed) for t, r in [("symmetric", "0.2"), ("pairflip", "0.4")] for seed in "01")
    assert all("--smooth_rate" not in f for _, f in warm)
    main = commands("tasks.txt")
    expected = sorted((script, t, r, seed, rate)
                      for script in ("main_GLS_load.py", "main_GLS_direct_train.py")
                      for t, r in [("symmetric", "0.2"), ("pairflip", "0.4")]
                      for seed in "01" for rate in ("0.4", "-2.0"))
    got = sorted((s, f["--noise_type"], f["--noise_rate"], f["--seed"], f["--smooth_rate"]) for s, f in main)
    assert got == expected  # every run exactly once

    submit = open(os.path.join(log_dir, "submit.sh")).read()
    assert "--array=1-4%3 scripts/sweep_array.sbatch" in submit
    assert "--array=1-16%3 scripts/sweep_array.sbatch" in submit
    assert "--dependency=afterany:${warmup%%;*}" in submit and "-p gpu" in submit

    # One array task as SLURM would start it: line 1 of the warm-up file runs and finishes.
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_SUBMIT_DIR": ROOT}
    task = subprocess.run(["bash", os.path.join(ROOT, "scripts", "sweep_array.sbatch"),
                           os.path.join(log_dir, "tasks_warmup.txt")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert task.returncode == 0, task.stdout + task.stderr
    (done,) = outcomes(log_dir)
    assert done[0] == "finished"
    first = warm[0][1]
    s = summary(done[3])
    assert (s["config"]["noise_type"], s["config"]["seed"]) == (first["--noise_type"], int(first["--seed"]))


def test_sln_slurm_tasks(tmp_path):
    results = str(tmp_path / "results")
    sweep("sweep_sln.sh", "--slurm", "--dry-run", "--noise", "sym:0.4 asym:0.4", "--seeds", "0 1 2",
          "--dataset", "digits", "--num_class", "10", "--result_dir", results)
    log_dir = os.path.join(results, "sweep_logs", "sweep_sln")
    assert not os.path.exists(os.path.join(log_dir, "tasks_warmup.txt"))
    with open(os.path.join(log_dir, "tasks.txt")) as f:
        runs = [flags(shlex.split(line)) for line in f]
    got = sorted((f["--noise_mode"], f["--noise_rate"], f["--seed"], f["--sigma"]) for f in runs)
    assert got == sorted((m, "0.4", seed, sigma) for m in ("sym", "asym") for seed in "012"
                         for sigma in ("0.1", "0.2", "0.5", "1.0"))
    submit = open(os.path.join(log_dir, "submit.sh")).read()
    assert "--array=1-24 " in submit and "--dependency" not in submit


@pytest.mark.parametrize("bad, message", [(["--mode", "sideways"], "choose load, direct or both"),
                                          (["--noise", "symmetric"], "write TYPE:RATE"),
                                          (["--slots", "zero"], "must be a positive integer")])
def test_bad_sweep_options(tmp_path, bad, message):
    proc = sweep("sweep_gls.sh", "--result_dir", str(tmp_path), *bad, check=False)
    assert proc.returncode == 2 and message in proc.stderr
