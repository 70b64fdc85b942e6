"""sweep.py: the runs a command line makes (the papers' sweeps as before, any script over
any flag, warm-ups first), refusals, runs made by other code or data, odd paths and options,
tiny digits runs on CPU slots with their signals, SLURM task files and one array task
started by hand (tests/test_slurm.py submits to a real cluster)."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

import sweep as sweeper
from conftest import ROOT, TINY, read_csv, read_json

FAST = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu",
        "--batch_size", "256", "--test_batch_size", "512"]
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
    # Each ended run is counted, with the time left, and a failed one says why from its log.
    ended = [line for line in first.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0].split(",")[0] for line in ended] == ["[1/3", "[2/3", "[3/3"]
    assert "left]" in ended[0] and ended[2].startswith("[3/3] diverged (exit 3, ")
    reasons = [line.strip() for line in first.stdout.splitlines() if line.startswith("      ")]
    assert len(reasons) == 2 and all(r.startswith("error: the loss diverged at epoch 1, step ") for r in reasons)
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
    (["--slurm", "--sbatch_args", "-t 1:x"], "cannot read the time limit '1:x'"),
    (["--n_epochs", "3"], "main_warmup.py rejects its flags: unknown flag --n_epochs; did you mean --n_epoch"),
])
def test_bad_options_exit_2_before_anything_starts(tmp_path, bad, message):
    results = tmp_path / "results"
    proc = sweep("gls", "--result_dir", str(results), *bad, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "error: " in proc.stderr
    assert not results.exists()


def test_a_local_dry_run_lists_the_runs_in_order_and_writes_nothing(tmp_path):
    """Without --slurm, --dry-run prints each run's command (the flags the sweep resolved)
    and the warm-up it waits for, and starts and writes nothing."""
    results = tmp_path / "results"
    proc = sweep("gls", "--seeds", "0 1", "--smooth_rates", "0.4 -2", *FAST, "--result_dir", str(results),
                 "--dry-run")
    lines = proc.stdout.splitlines()
    assert lines[0] == "sweep: 6 runs" and lines[-1] == "dry run: nothing started, nothing written"
    runs = lines[1:-1]
    expected = [("main_warmup.py", "0", None, ""), ("main_GLS_load.py", "0", "0.4", "  (after run 1)"),
                ("main_GLS_load.py", "0", "-2", "  (after run 1)"), ("main_warmup.py", "1", None, ""),
                ("main_GLS_load.py", "1", "0.4", "  (after run 4)"), ("main_GLS_load.py", "1", "-2", "  (after run 4)")]
    assert len(runs) == len(expected)
    for i, (line, (script, seed, rate, after)) in enumerate(zip(runs, expected), 1):
        words = line.split("  (after")[0].split()
        assert words[0] == f"{i}." and words[1] == script and line.endswith(after or "--if_exists auto")
        assert words[words.index("--seed") + 1] == seed
        assert (words[words.index("--smooth_rate") + 1] if "--smooth_rate" in words else None) == rate
    assert not results.exists()


# ---------------------------------------------------------------- the runs a command line makes

def plan(*args):
    """The runs of a sweep command line, as sweep.py resolves them (in this process)."""
    return sweeper.plan([str(a) for a in args])[1]


BEFORE = os.path.join(ROOT, "tests", "sweep_runs_before.json")


def before_cases():
    with open(BEFORE) as f:
        return json.load(f)


@pytest.mark.parametrize("case", sorted(before_cases()))
def test_the_papers_sweeps_make_the_same_runs_as_before(tmp_path, case):
    """sweep.py gls and sln (the demo's two sweeps among them) make the runs, commands, run
    folders, order and warm-up links that the sweep made before it swept any script
    (recorded in tests/sweep_runs_before.json); working out the plan writes nothing."""
    results = str(tmp_path / "results")
    expected = before_cases()[case]
    runs = plan(*[w.replace("{results}", results) for w in shlex.split(expected["argv"])])

    def here(path):
        return path and path.replace("{results}", results)
    assert [(r.command[0], r.command[1:], r.run_dir, r.after and r.after.run_dir) for r in runs] == [
        (sys.executable, [here(w) for w in shlex.split(e["command"])], here(e["run_dir"]), here(e["after"]))
        for e in expected["runs"]]
    assert not os.path.exists(results)


def test_grids_make_their_product_each_run_once(tmp_path):
    results = str(tmp_path / "results")
    runs = plan("train.py", "--method", "gls", "--grid", "smooth_rate=0.4 -2.0", "--grid", "--lr=0.1 0.05",
                "--seeds", "0 1", "--wa", "0.5", *FAST, "--result_dir", results)
    got = [(flags(r.command)["--seed"], flags(r.command)["--smooth_rate"], flags(r.command)["--lr"]) for r in runs]
    # --seeds outermost, then the grids in the order given
    assert got == [(s, r, lr) for s in "01" for r in ("0.4", "-2.0") for lr in ("0.1", "0.05")]
    assert all(r.script == "train.py" and r.after is None and flags(r.command)["--wa"] == "0.5" for r in runs)
    assert len({r.run_dir for r in runs}) == 8
    for r, (seed, rate, _) in zip(runs, got):
        assert r.run_dir.startswith(os.path.join(results, "train", f"digits-symmetric0.2-resnet18-wa0.5-wb1-r{float(rate):g}-seed{seed}-"))
        assert r.log == os.path.join(results, "sweep_logs", "sweep_train_gls", "train", os.path.basename(r.run_dir) + ".log")
    # A list flag takes each grid value's words.
    runs = plan("train.py", "--method", "sln", "--grid", "lr_milestones='0.5 0.75' 0.3 ''", *FAST, "--result_dir", results)
    assert [r.command[r.command.index("--lr_milestones"):-2] for r in runs] == [
        ["--lr_milestones", "0.5", "0.75"], ["--lr_milestones", "0.3"], ["--lr_milestones"]]
    assert not os.path.exists(results)


def test_each_run_that_needs_a_warm_up_gets_the_one_it_needs(tmp_path):
    """main_GLS_load.py requires main_warmup.py: one warm-up per data setting and seed,
    before its load runs. The warm-up gets the settings the two share and never the load
    runs' method flags (--smooth_rate, --wa), their own protocol (the grid's --lr) or a flag
    it does not have (--warmup_ckpt); --warmup_args and --stage_args reach one stage."""
    results = str(tmp_path / "results")
    runs = plan("main_GLS_load.py", "--grid", "smooth_rate=0.4 -2.0", "--grid", "noise_rate=0.2 0.4",
                "--grid", "lr=1e-6 1e-5", "--seeds", "0 1", "--warmup_ckpt", "last", "--wa", "0.5",
                "--warmup_args", "--n_epoch 3", "--stage_args", "main_GLS_load.py=--n_epoch 4", *FAST,
                "--result_dir", results)
    warmups = [r for r in runs if r.script == "main_warmup.py"]
    loads = [r for r in runs if r.script == "main_GLS_load.py"]
    assert len(warmups) == 4 and len(loads) == 16 and len(runs) == 20
    assert sorted((flags(w.command)["--noise_rate"], flags(w.command)["--seed"]) for w in warmups) == [
        (rate, seed) for rate in ("0.2", "0.4") for seed in "01"]
    for w in warmups:
        assert not {"--smooth_rate", "--wa", "--warmup_ckpt", "--lr"} & set(flags(w.command))
        assert flags(w.command)["--n_epoch"] == "3" and w.after is None
    for load in loads:
        f = flags(load.command)
        assert f["--warmup_ckpt"] == "last" and f["--wa"] == "0.5" and f["--n_epoch"] == "4"
        warm = flags(load.after.command)
        assert (warm["--noise_rate"], warm["--seed"]) == (f["--noise_rate"], f["--seed"])
        assert runs.index(load.after) < runs.index(load)  # started after it, locally and on SLURM
    assert sorted((flags(r.command)["--smooth_rate"], flags(r.command)["--lr"]) for r in loads) == sorted(
        (s, lr) for s in ("0.4", "-2.0") for lr in ("1e-6", "1e-5") for _ in range(4))
    assert [stage for stage, _ in sweeper.slurm_stages(runs)] == ["warmup", "runs"]
    # gls --mode both: --warmup_ckpt goes to the load runs only.
    runs = plan("gls", "--mode", "both", "--smooth_rates", "0.4", "--warmup_ckpt", "last", *FAST, "--result_dir", results)
    assert [(r.script, "--warmup_ckpt" in r.command) for r in runs] == [
        ("main_warmup.py", False), ("main_GLS_load.py", True), ("main_GLS_direct_train.py", False)]
    assert not os.path.exists(results)


def here(capsys, *args):
    """sweep.main in this process (the scripts are imported once): (exit status, stdout, stderr)."""
    cwd = os.getcwd()
    try:
        code = sweeper.main([str(a) for a in args])
    except SystemExit as exc:  # the sweep's own option parser
        code = exc.code
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(path):
    """Every file and folder under `path` with its size and modification time."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            found[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return found


def refused(code, err, message):
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.parametrize("args, message", [
    (["gls", "--noise_type", "pairflip"], "the sweep sets --noise_type from its option --noise; pass --noise TYPE:RATE"),
    (["gls", "--noise_mode", "asym"], "pass --noise TYPE:RATE"),
    (["gls", "--noise_rate=0.4"], "the sweep sets --noise_rate from its option --noise"),
    (["gls", "--seed", "3"], "pass --seeds '3' instead"),
    (["gls", "--smooth_rate", "-2.0"], "pass --smooth_rates '-2.0' instead"),
    (["sln", "--sigma", "0.3", "--num_class", "10"], "pass --sigmas '0.3' instead"),
    (["sln", "--noise_type", "asym", "--num_class", "10"], "the sweep sets --noise_type from its option --noise"),
    (["train.py", "--method", "gls", "--grid", "smooth_rate=0.4", "--smooth_rate", "0.1"],
     "pass --grid smooth_rate='0.1' instead"),
    (["train.py", "--method", "gls", "--seeds", "0 1", "--seed=2"], "pass --seeds '2' instead"),
    (["gls", "--grid", "smooth_rate=0.1"], "--grid smooth_rate=... and --smooth_rates both set --smooth_rate"),
    (["main_GLS_load.py", "--grid", "lr=0.1", "--grid", "--lr=0.2"], "both set --lr"),
    (["main_GLS_load.py", "--grid", "epochs=3", "--grid", "n_epoch=2"], "both set --n_epoch"),
])
def test_a_flag_the_sweep_sets_is_refused_naming_the_sweep_option(tmp_path, capsys, args, message):
    results = tmp_path / "results"
    refused(*here(capsys, *args, *FAST, "--result_dir", results)[::2], message)
    assert not results.exists()


@pytest.mark.parametrize("args, message", [
    (["--print_run_dir"], "it prints the run folder instead of training"),
    (["--if_exists", "overwrite"], "every run is started with --if_exists auto"),
    (["--if_exists=refuse"], "every run is started with --if_exists auto"),
    (["--resume"], "(the same as --resume)"),
    (["-r"], "(the same as --resume)"),
    (["--overwrite"], "--overwrite_stale retrains the runs made by other code or data"),
    (["--grid", "if_exists=auto overwrite"], "--grid if_exists=...: --if_exists auto"),
    (["--warmup_args", "--print_run_dir"], "--warmup_args: --print_run_dir"),
    (["--stage_args", "main_GLS_load=--overwrite"], "--stage_args main_GLS_load: --overwrite"),
    (["--warmup_args", "--retry_diverged"], "pass --retry_diverged as an option of the sweep"),
    (["--stage_args", "main_warmup.py=--keep_stale"], "pass --keep_stale as an option of the sweep"),
])
def test_a_flag_that_decides_where_or_whether_a_run_writes_is_refused(tmp_path, capsys, args, message):
    results = tmp_path / "results"
    refused(*here(capsys, "main_GLS_load.py", *args, *FAST, "--result_dir", results)[::2], message)
    assert not results.exists()


# ---------------------------------------------------------------- runs made by other code or data

@pytest.fixture(scope="module")
def load_sweep(tmp_path_factory):
    """A finished sweep of main_GLS_load.py over two smooth rates from the last checkpoint of
    its warm-up, as users run it."""
    results = str(tmp_path_factory.mktemp("load") / "results")
    args = ["main_GLS_load.py", "--slots", "2", "--grid", "smooth_rate=0.4 -2.0", "--warmup_ckpt", "last",
            *FAST, "--n_epoch", "2", "--result_dir", results]
    proc = sweep(*args)
    return results, args, proc


def test_a_load_sweep_runs_the_warm_up_first_and_the_load_runs_from_its_last_checkpoint(load_sweep):
    results, _, proc = load_sweep
    assert "3 runs on 2 slot(s)" in proc.stdout and "sweep: 3 finished" in proc.stdout
    log_dir = os.path.join(results, "sweep_logs", "sweep_main_GLS_load")
    done = outcomes(log_dir)
    (warmup,) = [o[3] for o in done if o[2][1] == "main_warmup.py"]
    assert "--warmup_ckpt" not in done[0][2] and read_json(os.path.join(warmup, "summary.json"))["status"] == "finished"
    loads = [o for o in done if o[2][1] == "main_GLS_load.py"]
    assert sorted(flags(o[2])["--smooth_rate"] for o in loads) == ["-2.0", "0.4"]
    warmup_end = os.path.getmtime(os.path.join(warmup, "summary.json"))
    for o in loads:
        summary = read_json(os.path.join(o[3], "summary.json"))
        assert summary["status"] == "finished" and summary["init_from"] == os.path.join(warmup, "last.pt")
        assert header_time(o[4]) >= int(warmup_end)


def copy_of(load_sweep, tmp_path):
    """The finished sweep's result folder copied (run folder names do not depend on where
    they are), with its command line pointed at the copy."""
    results, args, _ = load_sweep
    copy = str(tmp_path / "results")
    shutil.copytree(results, copy)
    runs = {o[3].replace(results, copy): o[2][1] for o in outcomes(os.path.join(copy, "sweep_logs", "sweep_main_GLS_load"))}
    return copy, [copy if a == results else a for a in args], runs


def edit_made_by(run_dir, change):
    path = os.path.join(run_dir, "config.json")
    config = read_json(path)
    change(config)
    with open(path, "w") as f:
        json.dump(config, f)


def other_code(config):
    config["made_by"]["code"]["source_sha1"] = "0" * 40


def no_identity(config):  # a run folder of a version that did not record made_by
    del config["made_by"]


def test_stale_runs_stop_the_sweep_before_anything_starts(load_sweep, tmp_path, capsys):
    results, args, runs = copy_of(load_sweep, tmp_path)
    warmup = next(d for d, s in runs.items() if s == "main_warmup.py")
    load = next(d for d, s in runs.items() if s == "main_GLS_load.py")
    edit_made_by(warmup, other_code)
    edit_made_by(load, no_identity)
    before = snapshot(results)
    code, _, err = here(capsys, *args)
    refused(code, err, "2 of the sweep's 3 runs hold results made by other code or data")
    assert f"  {warmup}\n    code: source hash 0000000000 -> " in err
    assert f"  {load}\n    the run records no code or data identity" in err
    assert "No run was started" in err and "--overwrite_stale" in err and "--keep_stale" in err
    assert snapshot(results) == before  # no log, no outcomes.tsv, no run touched


def test_runs_made_from_other_data_are_stale(load_sweep, tmp_path):
    results, args, runs = copy_of(load_sweep, tmp_path)
    warmup = next(d for d, s in runs.items() if s == "main_warmup.py")
    edit_made_by(warmup, lambda c: c["made_by"]["data"].update(data_sha1="f" * 40))
    cwd = os.getcwd()
    try:
        _, planned, _, _ = sweeper.plan(args)
    finally:
        os.chdir(cwd)
    ((run, changes),) = sweeper.stale_runs(planned, retry_diverged=False)
    assert run.run_dir == warmup and changes[0].startswith("data: data fingerprint ffffffffff -> ")


def test_keep_stale_keeps_them_and_each_records_it(load_sweep, tmp_path):
    results, args, runs = copy_of(load_sweep, tmp_path)
    stale = sorted(runs)[:2]
    for d in stale:
        edit_made_by(d, other_code)
    metrics = {d: os.path.getmtime(os.path.join(d, "metrics.csv")) for d in runs}
    proc = sweep(*args, "--keep_stale")
    assert "2 run(s) made by other code or data are kept deliberately (--keep_stale)" in proc.stdout
    assert "sweep: 3 finished" in proc.stdout
    for d in runs:
        assert os.path.getmtime(os.path.join(d, "metrics.csv")) == metrics[d]  # nothing retrained
        kept = read_json(os.path.join(d, "summary.json")).get("kept_stale")
        assert (kept is not None) == (d in stale)
        if kept:
            assert kept[-1]["changes"][0].startswith("code: source hash 0000000000 -> ")


def test_overwrite_stale_retrains_exactly_the_stale_runs(load_sweep, tmp_path):
    results, args, runs = copy_of(load_sweep, tmp_path)
    loads = sorted(d for d, s in runs.items() if s == "main_GLS_load.py")
    stale, current = loads[0], read_json(os.path.join(loads[1], "config.json"))["made_by"]["code"]["source_sha1"]
    edit_made_by(stale, other_code)
    metrics = {d: os.path.getmtime(os.path.join(d, "metrics.csv")) for d in runs}
    proc = sweep(*args, "--overwrite_stale")
    assert "1 run(s) made by other code or data are retrained (--overwrite_stale)" in proc.stdout
    assert "sweep: 3 finished" in proc.stdout
    for o in outcomes(os.path.join(results, "sweep_logs", "sweep_main_GLS_load")):
        assert o[2][-2:] == (["--if_exists", "overwrite"] if o[3] == stale else ["--if_exists", "auto"])
        retrained = os.path.getmtime(os.path.join(o[3], "metrics.csv")) != metrics[o[3]]
        assert retrained == (o[3] == stale)
    assert read_json(os.path.join(stale, "config.json"))["made_by"]["code"]["source_sha1"] == current
    assert len(read_csv(os.path.join(stale, "metrics.csv"))) == 2


def test_overwrite_stale_overwrites_only_while_the_stale_result_is_there(load_sweep, tmp_path, capsys):
    """A restarted sweep or a requeued SLURM task resumes the retraining instead of starting
    it over: `--if_exists overwrite` holds while the folder's config.json is the stale one."""
    results, args, runs = copy_of(load_sweep, tmp_path)
    stale = sorted(d for d, s in runs.items() if s == "main_GLS_load.py")[0]
    edit_made_by(stale, other_code)
    slots = args.index("--slots")
    code, out, err = here(capsys, *args[:slots], *args[slots + 2:], "--slurm", "--dry-run", "--overwrite_stale")
    assert code == 0, err
    with open(os.path.join(results, "sweep_logs", "sweep_main_GLS_load", "tasks_runs.jsonl")) as f:
        tasks = {t["run_dir"]: t for t in map(json.loads, f)}
    assert [d for d, t in tasks.items() if "stale_config" in t] == [stale]
    task = tasks[stale]
    assert task["command"][-2:] == ["--if_exists", "auto"]
    assert sweeper.launch_command(task["command"], stale, task["stale_config"])[-2:] == ["--if_exists", "overwrite"]
    edit_made_by(stale, lambda c: c.update(note="retrained"))  # the retraining wrote its own config.json
    assert sweeper.launch_command(task["command"], stale, task["stale_config"]) == task["command"]


# ---------------------------------------------------------------- odd paths and options

def bad_option(tmp, kind):
    """Options that must be refused before any script is imported, by kind of mistake."""
    (tmp / "file").write_text("")
    (tmp / "script").write_text("#!/bin/sh\n")  # not executable
    os.symlink(str(tmp / "nothing"), str(tmp / "dangling"))
    long_name = "n" * 300
    return {
        "quote in --warmup_args": (["--warmup_args", "'--lr 0.1"], "--warmup_args", "No closing quotation"),
        "quote in --sbatch_args": (["--slurm", "--sbatch_args", '-p "gpu'], "--sbatch_args", "No closing quotation"),
        "quote in --grid": (["--grid", "lr='0.1 0.2"], "--grid", "No closing quotation"),
        "quote in --stage_args": (["--stage_args", "main_warmup='--lr"], "--stage_args", "No closing quotation"),
        "--python missing": (["--python", str(tmp / "nope")], "--python", "no such file"),
        "--python a folder": (["--python", str(tmp)], "--python", "a folder"),
        "--python not executable": (["--python", str(tmp / "script")], "--python", "not executable"),
        "--python not on PATH": (["--python", "no-such-python3"], "--python", "is not a program on PATH"),
        "--log_dir a file": (["--log_dir", str(tmp / "file")], "--log_dir", "is a file, not a folder"),
        "--log_dir under a file": (["--log_dir", str(tmp / "file" / "logs")], "--log_dir", "is a file, so no folder"),
        "--log_dir a dangling link": (["--log_dir", str(tmp / "dangling")], "--log_dir", "symbolic link to nothing"),
        "--log_dir empty": (["--log_dir", ""], "--log_dir", "is empty"),
        "--log_dir with a line break": (["--log_dir", str(tmp / "a\nb")], "--log_dir", "line break or a tab"),
        "--log_dir with a tab": (["--log_dir", str(tmp / "a\tb")], "--log_dir", "line break or a tab"),
        "--log_dir name too long": (["--log_dir", str(tmp / long_name)], "--log_dir", "this file system allows"),
        "--log_dir path too long": (["--log_dir", str(tmp / "/".join(["d" * 200] * 21))], "--log_dir",
                                    "would exceed this system's limit"),
        "--gpus empty": (["--gpus", ""], "--gpus", "is empty"),
        "--gpus blank": (["--gpus", "  "], "--gpus", "is empty"),
        "--gpus tab": (["--gpus", "\t"], "--gpus", "is empty"),
        "--gpus not a GPU": (["--gpus", "0 x"], "--gpus", "'x' is neither a GPU index"),
    }[kind]


@pytest.mark.parametrize("kind", [
    "quote in --warmup_args", "quote in --sbatch_args", "quote in --grid", "quote in --stage_args",
    "--python missing", "--python a folder", "--python not executable", "--python not on PATH",
    "--log_dir a file", "--log_dir under a file", "--log_dir a dangling link", "--log_dir empty",
    "--log_dir with a line break", "--log_dir with a tab", "--log_dir name too long", "--log_dir path too long",
    "--gpus empty", "--gpus blank", "--gpus tab", "--gpus not a GPU"])
def test_bad_sweep_options_are_one_error_line_and_nothing_written(tmp_path, kind):
    args, option, message = bad_option(tmp_path, kind)
    before = snapshot(tmp_path)
    proc = sweep("gls", *args, *FAST, "--result_dir", tmp_path / "results", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert option in proc.stderr and message in proc.stderr, proc.stderr
    assert proc.stdout == "" and snapshot(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--result_dir", "{tmp}/a\nb"], "--result_dir '{tmp}/a\\nb' holds a line break or a tab"),
    (["--result_dir", "{tmp}/a\rb"], "holds a line break or a tab"),
    (["--result_dir", "{tmp}/a\tb"], "holds a line break or a tab"),
    (["--noise_file", "labels\n.csv", "--result_dir", "{tmp}/r"], "--noise_file 'labels\\n.csv' holds a line break"),
    (["--grid", "lr='0.1\n'", "--result_dir", "{tmp}/r"], "--grid lr=...: --lr '0.1\\n' holds a line break"),
    (["--warmup_args", "--data_root '\td'", "--result_dir", "{tmp}/r"], "--warmup_args: --data_root '\\td'"),
    (["--result_dir", "{tmp}/" + "n" * 300], "has 300 bytes, more than the system's limit of 255"),
    (["--result_dir", "{tmp}/" + "/".join(["d" * 250] * 16)], "would exceed this system's limit"),
    (["--result_dir", "{tmp}/" + "/".join(["d" * 250] * 15) + "/" + "d" * 150, "--log_dir", "{tmp}/logs"],
     "the run folder"),
])
def test_paths_the_runs_cannot_write_are_refused_before_anything_starts(tmp_path, capsys, args, message):
    tmp = str(tmp_path)
    before = snapshot(tmp)
    code, _, err = here(capsys, "gls", *[a.replace("{tmp}", tmp) for a in args], *FAST)
    refused(code, err, message.replace("{tmp}", tmp))
    assert snapshot(tmp) == before


def test_paths_that_are_not_utf8_are_written_as_they_are(tmp_path):
    """Folder names are bytes: the sweep logs and records them under a strict UTF-8 locale."""
    results = os.fsdecode(os.fsencode(str(tmp_path)) + b"/results\xff")
    log_dir = os.fsdecode(os.fsencode(str(tmp_path)) + b"/logs\xfe")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), "train.py", "--method", "gls",
                           "--smooth_rate", "0.4", "--slots", "1", *FAST, "--n_epoch", "1",
                           "--result_dir", results, "--log_dir", log_dir], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert b"sweep: 1 finished" in proc.stdout and b"/results\xff/train/" in proc.stdout
    with open(os.path.join(log_dir, "outcomes.tsv"), "rb") as f:
        (line,) = f.read().splitlines()
    outcome, code, command, run_dir, log = line.split(b"\t")
    assert (outcome, code) == (b"finished", b"0") and run_dir.startswith(os.fsencode(results) + b"/train/")
    assert log == os.fsencode(os.path.join(log_dir, "train", os.path.basename(os.fsdecode(run_dir)) + ".log"))
    with open(log, "rb") as f:
        header, called = f.readline(), f.readline()
    assert header.startswith(b"=== ") and called.startswith(b"=== ") and b"results\xff" in called
    assert read_json(os.path.join(os.fsdecode(run_dir), "summary.json"))["status"] == "finished"


def test_ctrl_c_while_the_sweep_plans_ends_it_with_130_and_writes_nothing(tmp_path):
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "sweep.py"), "gls", "--slots", "2", *FAST,
                             "--result_dir", str(tmp_path / "results")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # importing the scripts (torch) takes longer
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err == "interrupted before any run started; nothing was written\n" and out == ""
    assert snapshot(tmp_path) == before

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


def test_relative_paths_mean_the_current_folder_as_for_the_scripts(tmp_path):
    """Started from another folder, a sweep writes its runs and logs under that folder's
    relative --result_dir, as the script itself would."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), "train.py", "--method", "gce",
                           "--slots", "1", *FAST, "--n_epoch", "1", "--result_dir", "res"],
                          cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = os.listdir(work / "res" / "train")
    assert read_json(work / "res" / "train" / run / "summary.json")["status"] == "finished"
    assert (work / "res" / "sweep_logs").is_dir() and not os.path.exists(os.path.join(ROOT, "res"))
