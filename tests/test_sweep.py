"""sweep.py on tiny digits runs with CPU slots, its SLURM task files and one array task
started by hand (tests/test_slurm.py submits to a real cluster)."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, read_csv, read_json

FAST = [*TINY, "--batch_size", "256", "--test_batch_size", "512"]
# Long enough to be stopped half-way: about 0.3 s per epoch on one core.
SLOW = [*TINY, "--batch_size", "32", "--test_batch_size", "512", "--n_epoch", "10"]


def sweep(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def outcomes(log_dir):
    """[(outcome, exit status, command words, run folder, log)] of outcomes.tsv."""
    with open(os.path.join(log_dir, "outcomes.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(o, code, shlex.split(cmd), run_dir, log) for o, code, cmd, run_dir, log in rows]


def flags(words):
    """{flag: value} of a command's --flag value pairs (the last one wins, as in argparse)."""
    out = {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            out[w] = nxt if nxt and not nxt.startswith("--") else True
    return out


def attempts(log):
    """What each training attempt appended to a run log, after its two header lines."""
    out = []
    with open(log) as f:
        for line in f:
            if line.startswith("=== ") and " CUDA_VISIBLE_DEVICES=" in line:
                out.append("")
            elif not line.startswith("=== "):
                out[-1] += line
    return out


def header_time(log):
    with open(log) as f:
        return time.mktime(time.strptime(f.readline()[4:23], "%Y-%m-%d %H:%M:%S"))


def test_gls_sweep_runs_each_run_once_then_reruns_change_nothing(tmp_path):
    results = str(tmp_path / "results")
    args = ["gls", "--slots", "2", "--smooth_rates", "0.4 -2.0", "--noise", "symmetric:0.4", "--seeds", "0",
            "--warmup_args", "--lr 0.1", *FAST, "--n_epoch", "1", "--lr", "0.01", "--result_dir", results]
    first = sweep(*args)
    assert "3 runs on 2 slot(s) [cpu cpu]" in first.stdout and "sweep: 3 finished" in first.stdout
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    done = outcomes(log_dir)
    assert [o[:2] for o in done] == [("finished", "0")] * 3
    assert all(o[2][0] == sys.executable and o[2][-2:] == ["--if_exists", "auto"] for o in done)
    runs = {o[3]: (read_json(os.path.join(o[3], "summary.json")), o[4]) for o in done}
    (warmup,) = [d for d in runs if "/main_warmup/" in d]
    loads = sorted((s["config"]["smooth_rate"], d) for d, (s, _) in runs.items() if "/main_GLS_load/" in d)
    assert [r for r, _ in loads] == [-2.0, 0.4]
    assert runs[warmup][0]["config"]["lr"] == 0.1  # --warmup_args reach the warm-up only
    warmup_end = os.path.getmtime(os.path.join(warmup, "summary.json"))
    for _, d in loads:
        summary, log = runs[d]
        assert summary["init_from"] == os.path.join(warmup, "best.pt") and summary["config"]["lr"] == 0.01
        assert header_time(log) >= int(warmup_end)  # started once the warm-up had finished
    for d, (summary, log) in runs.items():
        assert summary["status"] == "finished"
        assert log == os.path.join(log_dir, os.path.basename(os.path.dirname(d)), os.path.basename(d) + ".log")
        with open(log) as f:
            assert f.readline().endswith(" CUDA_VISIBLE_DEVICES=\n")  # a CPU slot: no GPU
        (attempt,) = attempts(log)
        assert "epoch 1/1" in attempt and f"results: {d}" in attempt
    mtimes = {d: os.path.getmtime(os.path.join(d, "metrics.csv")) for d in runs}

    second = sweep(*args)
    assert "sweep: 3 finished" in second.stdout
    again = outcomes(log_dir)
    assert sorted(o[:2] + (o[3],) for o in again) == sorted(("finished", "0", d) for d in runs)
    for d, (summary, log) in runs.items():
        assert os.path.getmtime(os.path.join(d, "metrics.csv")) == mtimes[d]
        assert read_json(os.path.join(d, "summary.json")) == summary
        first_attempt, rerun = attempts(log)  # the rerun appended to the same log, trained nothing
        assert "epoch 1/1" not in rerun and f"results: {d}" in rerun


def test_diverged_runs_are_recorded_and_kept(tmp_path):
    """A diverged run does not stop the sweep: on one slot the diverged warm-up is
    followed by the direct run (its load run is recorded as skipped-dependency), and a
    rerun leaves both as they are. The slot is "GPU 7": its runs are pinned with
    CUDA_VISIBLE_DEVICES=7 (they use the CPU here)."""
    results = str(tmp_path / "results")
    # --loss_bound below any CE loss: every run is stopped as diverged at its first check.
    args = ["gls", "--gpus", "7", "--mode", "both", "--smooth_rates", "0.4", "--noise", "symmetric:0.4",
            *FAST, "--n_epoch", "1", "--loss_bound", "0.001", "--print_freq", "1", "--result_dir", results]
    first = sweep(*args, check=False)
    assert first.returncode == 1 and "sweep: 2 diverged, 1 skipped-dependency" in first.stdout
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    done = outcomes(log_dir)
    assert [(o[0], o[1], o[2][1]) for o in done] == [("diverged", "3", "main_warmup.py"),
                                                     ("skipped-dependency", "-", "main_GLS_load.py"),
                                                     ("diverged", "3", "main_GLS_direct_train.py")]
    assert not os.path.exists(done[1][3]) and not os.path.exists(done[1][4])  # never started
    summaries = {o[3]: os.path.join(o[3], "summary.json") for o in done if o[0] == "diverged"}
    assert all(read_json(s)["status"] == "diverged" for s in summaries.values())
    for o in done[::2]:
        with open(o[4]) as f:
            assert f.readline().endswith(" CUDA_VISIBLE_DEVICES=7\n")
    kept = {d: (os.path.getmtime(s), read_json(s)) for d, s in summaries.items()}

    second = sweep(*args, check=False)
    assert second.returncode == 1
    assert [o[:2] for o in outcomes(log_dir)] == [("diverged", "3"), ("skipped-dependency", "-"), ("diverged", "3")]
    assert {d: (os.path.getmtime(s), read_json(s)) for d, s in summaries.items()} == kept


def test_sln_sweep_runs_noise_cifar_train(tmp_path):
    results = str(tmp_path / "results")
    sweep("sln", "--slots", "2", "--sigmas", "1.0", "--noise", "sym:0.4", "--seeds", "0",
          *FAST, "--num_class", "10", "--epochs", "1", "--lr", "0.05", "--ema_decay", "0.5",
          "--correction", "-1", "--result_dir", results)
    (done,) = outcomes(os.path.join(results, "sweep_logs", "sweep_sln"))
    assert done[:2] == ("finished", "0") and "/noise_cifar_train/" in done[3]
    s = read_json(os.path.join(done[3], "summary.json"))
    assert s["status"] == "finished" and s["config"]["sigma"] == 1.0
    assert s["config"]["noise_type"] == "symmetric" and s["config"]["noise_rate"] == 0.4  # --noise sym:0.4
    assert "last_test_acc_ema" in s  # the momentum model is evaluated


def test_slurm_dry_run_writes_one_task_per_run(tmp_path):
    results = str(tmp_path / "results")
    proc = sweep("gls", "--slurm", "--dry-run", "--mode", "both", "--smooth_rates", "0.4 -2.0",
                 "--noise", "symmetric:0.2 pairflip:0.4", "--seeds", "0 1", "--sbatch_args", "-p gpu --time=12:00:00",
                 "--array_parallel", "3", "--max_requeues", "4", *FAST, "--n_epoch", "1", "--result_dir", results)
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")

    def tasks(stage):
        with open(os.path.join(log_dir, f"tasks_{stage}.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        for task in lines:
            words = task["command"]
            assert words[0] == sys.executable and words[-2:] == ["--if_exists", "auto"]
            assert flags(words)["--result_dir"] == results and flags(words)["--dataset"] == "digits"
            assert task["run_dir"].startswith(os.path.join(results, words[1][:-3]) + "/")
            assert task["log"] == os.path.join(log_dir, words[1][:-3], os.path.basename(task["run_dir"]) + ".log")
        return lines

    warm = tasks("warmup")
    assert sorted((t["command"][1], flags(t["command"])["--noise_type"], flags(t["command"])["--noise_rate"],
                   flags(t["command"])["--seed"]) for t in warm) == sorted(
        ("main_warmup.py", t, r, seed) for t, r in [("symmetric", "0.2"), ("pairflip", "0.4")] for seed in "01")
    rest = tasks("runs")
    expected = sorted((script, t, r, seed, rate)
                      for script in ("main_GLS_load.py", "main_GLS_direct_train.py")
                      for t, r in [("symmetric", "0.2"), ("pairflip", "0.4")]
                      for seed in "01" for rate in ("0.4", "-2.0"))
    got = sorted((t["command"][1], *(flags(t["command"])[k] for k in ("--noise_type", "--noise_rate", "--seed",
                                                                       "--smooth_rate"))) for t in rest)
    assert got == expected  # every run exactly once
    assert len({t["run_dir"] for t in warm + rest}) == 20

    lines = proc.stdout.splitlines()
    (warm_line,) = [line for line in lines if line.startswith("warmup=$(sbatch ")]
    (runs_line,) = [line for line in lines if line.startswith("runs=$(sbatch ")]
    for line, n in ((warm_line, 4), (runs_line, 16)):
        words = shlex.split(line[line.index("sbatch"):-1])
        assert f"--array=0-{n - 1}%3" in words and "-p" in words and "--time=12:00:00" in words
        assert "--requeue" in words and "--signal=B:USR1@120" in words and "--open-mode=append" in words
        assert words[-2] == "--wrap" and shlex.split(words[-1])[-4:] == [
            "_task", os.path.join(log_dir, f"tasks_{'warmup' if n == 4 else 'runs'}.jsonl"), "--max_requeues", "4"]
    assert "--dependency=afterany:${warmup%%;*}" in runs_line and "--dependency" not in warm_line
    script = tmp_path / "submit.sh"
    script.write_text(warm_line + "\n" + runs_line + "\n")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # the printed commands are valid shell

    # One array task as SLURM starts it: line 1 of the warm-ups runs and finishes.
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "99"}
    task = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), "_task",
                           os.path.join(log_dir, "tasks_warmup.jsonl")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert task.returncode == 0, task.stdout + task.stderr
    assert "task 1 (job 99, restart 0)" in task.stdout and "finished (exit 0)" in task.stdout
    (done,) = outcomes(log_dir)
    assert done[:2] == ("finished", "0") and done[3] == warm[1]["run_dir"] and done[4] == warm[1]["log"]
    s = read_json(os.path.join(done[3], "summary.json"))
    assert (s["status"], s["config"]["noise_type"], s["config"]["seed"]) == (
        "finished", flags(warm[1]["command"])["--noise_type"], int(flags(warm[1]["command"])["--seed"]))


def test_sln_dry_run_has_one_array_and_a_short_limit_a_short_warning(tmp_path):
    results = str(tmp_path / "results")
    proc = sweep("sln", "--slurm", "--dry-run", "--noise", "sym:0.4 asym:0.4", "--seeds", "0 1 2",
                 "--sbatch_args", "--time=00:01:00", "--retry_diverged", "--dataset", "digits",
                 "--num_class", "10", "--result_dir", results)
    log_dir = os.path.join(results, "sweep_logs", "sweep_sln")
    assert not os.path.exists(os.path.join(log_dir, "tasks_warmup.jsonl"))
    with open(os.path.join(log_dir, "tasks_runs.jsonl")) as f:
        commands = [json.loads(line)["command"] for line in f]
    assert all(c[-3:] == ["--if_exists", "auto", "--retry_diverged"] for c in commands)
    runs = [flags(c) for c in commands]
    got = sorted((f["--noise_mode"], f["--noise_rate"], f["--seed"], f["--sigma"]) for f in runs)
    assert got == sorted((m, "0.4", seed, sigma) for m in ("sym", "asym") for seed in "012"
                         for sigma in ("0.1", "0.2", "0.5", "1.0"))
    (line,) = [line for line in proc.stdout.splitlines() if "sbatch" in line]
    assert "--array=0-23 " in line and "--dependency" not in line and "--signal=B:USR1@10 " in line


@pytest.mark.parametrize("bad, message", [
    (["--mode", "sideways"], "argument --mode: invalid choice: 'sideways'"),
    (["--noise", "symmetric"], "--noise symmetric: write TYPE:RATE"),
    (["--slots", "zero"], "argument --slots: 'zero' must be a positive integer"),
    (["--seeds", "0 0.5"], "--seeds '0 0.5': '0.5' is not an integer"),
    (["--dry-run"], "--dry-run goes with --slurm"),
    (["--slurm", "--sbatch_args", "-t 1:x"], "cannot read the time limit '1:x'"),
    (["--n_epochs", "3"], "main_warmup.py rejects its flags: unknown flag --n_epochs; did you mean --n_epoch"),
])
def test_bad_options_exit_2_before_anything_starts(tmp_path, bad, message):
    results = tmp_path / "results"
    proc = sweep("gls", "--result_dir", str(results), *bad, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "error: " in proc.stderr
    assert not results.exists()


def training_pids(marker):
    """Processes (not zombies) whose command line contains `marker`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and "main_GLS_direct_train.py" in cmdline and state != "Z":
            pids.append(int(pid))
    return pids


def start_training_sweep(results):
    """A local sweep of two runs on two CPU slots, returned once both are training."""
    args = ["gls", "--slots", "2", "--mode", "direct", "--smooth_rates", "0.4 0.2", "--noise", "symmetric:0.4",
            *SLOW, "--result_dir", results]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "sweep.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    folder = os.path.join(results, "main_GLS_direct_train")
    while time.time() < deadline:
        metrics = [os.path.join(folder, d, "metrics.csv") for d in os.listdir(folder)] \
            if os.path.isdir(folder) else []
        if len(metrics) == 2 and all(os.path.exists(m) and len(read_csv(m)) >= 2 for m in metrics):
            return proc, args, [os.path.dirname(m) for m in metrics]
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the runs did not start training within 120 s")


def test_sigterm_stops_the_runs_resumably(tmp_path):
    results = str(tmp_path / "results")
    proc, args, run_dirs = start_training_sweep(results)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    log_dir = os.path.join(results, "sweep_logs", "sweep_gls")
    stopped = outcomes(log_dir)
    assert sorted(o[:2] + (o[3],) for o in stopped) == sorted(("interrupted", "143", d) for d in run_dirs)
    assert "sweep: 2 interrupted" in output
    epochs = {}
    for d in run_dirs:
        assert read_json(os.path.join(d, "summary.json"))["status"] == "interrupted"
        epochs[d] = len(read_csv(os.path.join(d, "metrics.csv")))
        assert 2 <= epochs[d] < 10 and os.path.exists(os.path.join(d, "last.pt"))

    sweep(*args)  # the same command finishes them from where they stopped
    for o in outcomes(log_dir):
        assert o[:2] == ("finished", "0")
        assert [int(r["epoch"]) for r in read_csv(os.path.join(o[3], "metrics.csv"))] == list(range(1, 11))
        first, second = attempts(o[4])
        assert "epoch 1/10 " in first and "epoch 1/10 " not in second and "epoch 10/10 " in second


def test_kill_9_of_the_sweep_leaves_no_run_training(tmp_path):
    results = str(tmp_path / "results")
    proc, _, run_dirs = start_training_sweep(results)
    runs = training_pids(results)
    assert len(runs) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 60
    while training_pids(results) and time.time() < deadline:
        time.sleep(0.2)
    assert training_pids(results) == []
    # They were told (SIGTERM from the kernel as their parent died) and saved.
    assert [read_json(os.path.join(d, "summary.json"))["status"] for d in run_dirs] == ["interrupted"] * 2
