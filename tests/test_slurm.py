"""sweep.py --slurm on a real SLURM cluster (a one-node cluster on this machine is enough;
the tests are skipped without one). Everything is submitted when the module starts and
asserted afterwards, so the tests share one wait of a few minutes:

- a GLS sweep (sweep.py gls) whose warm-up needs longer than its 1-minute limit: SLURM
  warns the task, the warm-up saves, the task requeues itself and resumes it, and the
  warm-up ends with exactly the metrics of an uninterrupted run; the load runs' array
  waits for it;
- a run of a script swept over a grid, cancelled with scancel: interrupted, not requeued,
  resumable."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, read_csv, read_json
from test_sweep import attempts, header_time, outcomes

# The warm-up trains about 80 s on one core, which outlasts the first slice for sure
# (SLURM's warning comes 20 to 50 s into a 1-minute limit: sweep.py asks for 10 s, and
# SLURM checks on a 30 s tick) and ends within a few: its epochs are counted from this
# machine's speed at the start (on an idle machine about 0.3 s an epoch, 250 epochs).
WARMUP_SECONDS = 80
LIMIT = "--time=00:01:00"


def warmup_epochs(folder):
    """Epochs of the warm-up that train about WARMUP_SECONDS here now, timed on 3 epochs."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "main_warmup.py"), *TINY, "--n_epoch", "3",
                           "--batch_size", "32", "--result_dir", folder], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (metrics,) = [os.path.join(d, "metrics.csv") for d, _, files in os.walk(folder) if "metrics.csv" in files]
    seconds = max(float(r["epoch_time_s"]) for r in read_csv(metrics)[1:])
    return max(10, round(WARMUP_SECONDS / seconds))


def submit(*args, result_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # sbatch passes the environment on to the tasks
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), *args, *TINY,
                           "--result_dir", result_dir], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line.split()[3].rstrip(":") for line in proc.stdout.splitlines()
            if line.startswith("submitted job array ")]


def scontrol(job):
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not shutil.which("sbatch"):
        pytest.skip("no sbatch on PATH: these tests submit to a SLURM cluster (a one-node cluster on "
                    "this machine will do)")
    if subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.skip("sbatch is installed but no SLURM controller answers (sinfo fails)")
    base = tmp_path_factory.mktemp("slurm")
    gls, cancel, reference = (str(base / name) for name in ("gls", "cancel", "reference"))
    epochs = warmup_epochs(str(base / "timing"))
    jobs = submit("gls", "--slurm", "--smooth_rates", "0.4 -2.0", "--noise", "symmetric:0.4",
                  "--warmup_args", f"--n_epoch {epochs} --batch_size 32", "--sbatch_args", LIMIT,
                  "--max_requeues", "20", "--n_epoch", "2",
                  result_dir=gls)
    jobs += submit("main_GLS_direct_train.py", "--slurm", "--grid", "smooth_rate=0.4", "--noise_type", "symmetric",
                   "--noise_rate", "0.4", "--n_epoch", "20", "--batch_size", "32", result_dir=cancel)
    # The warm-up as one uninterrupted run, meanwhile, on this machine.
    with open(os.path.join(gls, "sweep_logs", "sweep_gls", "tasks_warmup.jsonl")) as f:
        warmup = json.loads(f.readline())
    ref = subprocess.Popen([*warmup["command"], "--result_dir", reference], cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    yield {"gls": gls, "cancel": cancel, "jobs": jobs, "warmup": warmup, "reference": reference, "ref": ref,
           "epochs": epochs}
    subprocess.run(["scancel", *jobs], capture_output=True)  # what a failed test left running
    ref.kill()
    ref.wait()


def test_the_second_array_waits_for_the_warmups(cluster):
    warmup_job, runs_job = cluster["jobs"][:2]
    state = scontrol(runs_job)
    assert (state["JobState"], state["Reason"]) == ("PENDING", "Dependency")
    assert state["Dependency"].startswith(f"afterany:{warmup_job}_*")


def test_scancel_leaves_the_run_interrupted_and_resumable(cluster):
    job = cluster["jobs"][2]
    log_dir = os.path.join(cluster["cancel"], "sweep_logs", "sweep_main_GLS_direct_train")
    folder = os.path.join(cluster["cancel"], "main_GLS_direct_train")

    def training():
        metrics = [os.path.join(folder, d, "metrics.csv") for d in os.listdir(folder)] \
            if os.path.isdir(folder) else []
        return metrics and os.path.exists(metrics[0]) and len(read_csv(metrics[0])) >= 3

    wait_until(training, 120, "3 epochs of the run to be cancelled")
    subprocess.run(["scancel", job], check=True)
    wait_until(lambda: os.path.getsize(os.path.join(log_dir, "outcomes.tsv")) > 0, 60, "the task's outcome")
    ((outcome, code, command, run_dir, log),) = outcomes(log_dir)
    assert (outcome, code) == ("interrupted", "143")
    # The task wrote its outcome before it exited; SLURM then shows the job COMPLETING a moment.
    wait_until(lambda: scontrol(f"{job}_0").get("JobState") != "COMPLETING", 60, "the job's end")
    state = scontrol(f"{job}_0")
    assert (state["JobState"], state["Restarts"]) == ("CANCELLED", "0")  # not requeued
    summary = read_json(os.path.join(run_dir, "summary.json"))
    done = len(read_csv(os.path.join(run_dir, "metrics.csv")))
    assert summary["status"] == "interrupted" and 3 <= done < 20
    assert os.path.exists(os.path.join(run_dir, "last.pt"))

    # The task's own command resumes it.
    resumed = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "epoch 1/20 " not in resumed.stdout and "epoch 20/20 " in resumed.stdout
    assert [int(r["epoch"]) for r in read_csv(os.path.join(run_dir, "metrics.csv"))] == list(range(1, 21))
    assert read_json(os.path.join(run_dir, "summary.json"))["status"] == "finished"


@pytest.fixture(scope="module")
def finished_sweep(cluster):
    """The GLS sweep, once both arrays have ended."""
    log_dir = os.path.join(cluster["gls"], "sweep_logs", "sweep_gls")

    def ended():
        rows = outcomes(log_dir)
        return sum(o[0] != "requeued" for o in rows) == 3
    wait_until(ended, 900, "the GLS sweep's end")
    return log_dir, outcomes(log_dir)


def test_time_limit_requeues_the_warmup_which_resumes_exactly(cluster, finished_sweep):
    log_dir, rows = finished_sweep
    warmup = cluster["warmup"]
    lines = [o for o in rows if o[3] == warmup["run_dir"]]
    assert [o[0] for o in lines[:-1]] == ["requeued"] * (len(lines) - 1) and len(lines) >= 2
    assert [o[1] for o in lines] == ["143"] * (len(lines) - 1) + ["0"] and lines[-1][0] == "finished"
    tries = attempts(warmup["log"])
    assert len(tries) == len(lines)
    n = cluster["epochs"]
    assert f"epoch {n}/{n} " in tries[-1]
    for before, attempt in zip(tries, tries[1:]):  # each requeue resumed what the slice before saved
        nothing_saved = "after 0 complete epochs" in before or "before training started" in before
        assert (f"epoch 1/{n} " in attempt) == nothing_saved
    with open(os.path.join(log_dir, f"slurm-{cluster['jobs'][0]}_0.out")) as f:
        slurm_log = f.read()
    assert [f"restart {i})" in slurm_log for i in range(len(lines))] == [True] * len(lines)
    assert slurm_log.count("scontrol requeue ") == len(lines) - 1

    assert cluster["ref"].wait(timeout=300) == 0
    (ref_dir,) = [os.path.join(cluster["reference"], "main_warmup", d)
                  for d in os.listdir(os.path.join(cluster["reference"], "main_warmup"))]
    assert os.path.basename(ref_dir) == os.path.basename(warmup["run_dir"])

    def untimed(rows):
        return [{k: v for k, v in r.items() if "time" not in k} for r in rows]
    got = read_csv(os.path.join(warmup["run_dir"], "metrics.csv"))
    assert len(got) == n and untimed(got) == untimed(read_csv(os.path.join(ref_dir, "metrics.csv")))


def test_load_runs_start_after_the_requeued_warmup_finished(cluster, finished_sweep):
    log_dir, rows = finished_sweep
    warmup = cluster["warmup"]["run_dir"]
    loads = [o for o in rows if "/main_GLS_load/" in o[3]]
    assert sorted(o[:2] for o in loads) == [("finished", "0")] * 2
    warmup_end = os.path.getmtime(os.path.join(warmup, "summary.json"))
    for o in loads:
        assert read_json(os.path.join(o[3], "summary.json"))["init_from"] == os.path.join(warmup, "best.pt")
        assert header_time(o[4]) >= int(warmup_end) and len(attempts(o[4])) == 1
