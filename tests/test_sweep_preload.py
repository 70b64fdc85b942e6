"""sweeps/launch/preload.py: runs on CPU slots forked from one process that has imported
torch and the project. A forked run is what a started script is (arguments, environment,
folder, stdin, log, exit status, death by signal, atexit), its results are those of a fresh
process to the byte, a changed project file brings a new preloading process, and where
none can start the runs start as fresh processes."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY
from sweeps.launch import preload, start

pytestmark = pytest.mark.skipif(not preload.available(), reason="needs Linux (fork, prctl)")

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}

PROBE = r'''
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"),
                  "stdin": sys.stdin.read(), "name": __name__, "cmdline": open("/proc/self/cmdline").read(), "torch_threads": __import__("torch").get_num_threads()}))
what = sys.argv[1]
if what == "exit":
    sys.exit(int(sys.argv[2]))
if what == "message":
    sys.exit("a message to stderr")
if what == "raise":
    raise ValueError("boom")
if what == "ctrl_c":
    raise KeyboardInterrupt
if what == "sleep":
    import time
    print("sleeping", flush=True)
    time.sleep(60)
'''


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preload")
    s = preload.Preloaded(ENV, ROOT, start, str(folder / "preload.log"))
    yield s, folder
    s.close()


def run(starter, folder, *args, env=None, stop_after=None):
    s, _ = starter
    script = folder / "probe.py"
    script.write_text(PROBE)
    log = folder / f"log-{'-'.join(args)}.txt"
    proc = s.start([sys.executable, str(script), *args], str(log), {**ENV, **(env or {})})
    if stop_after is not None:
        deadline = time.time() + 60
        while "sleeping" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, stop_after)
    pid, code = s.wait()
    assert pid == proc.pid
    return code, log.read_text()


def test_a_forked_run_sees_what_a_started_script_sees(starter, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    code, log = run(starter, starter[1], "exit", "0", env={"PROBE": "x y", "OMP_NUM_THREADS": "2"})
    assert code == 0
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen["argv"] == [str(starter[1] / "probe.py"), "exit", "0"]
    assert seen["cwd"] == str(tmp_path) and seen["probe"] == "x y" and seen["stdin"] == ""
    assert seen["name"] == "__main__" and seen["torch_threads"] == 2
    assert seen["cmdline"].replace("\0", " ").strip().endswith(f"{starter[1] / 'probe.py'} exit 0")  # as ps shows it
    assert log.startswith("=== ") and "CUDA_VISIBLE_DEVICES=\n" in log  # the sweep's log header
    assert log.rstrip().endswith("atexit ran")


@pytest.mark.parametrize("args, expected, text", [
    (("exit", "7"), 7, None),
    (("message",), 1, "a message to stderr"),
    (("raise",), 1, "ValueError: boom"),
    (("ctrl_c",), 130, "KeyboardInterrupt"),
])
def test_the_exit_status_is_a_started_scripts(starter, args, expected, text):
    code, log = run(starter, starter[1], *args)
    assert code == expected
    if text:
        assert text in log


def test_a_run_stopped_by_sigterm_ends_with_143(starter):
    code, _ = run(starter, starter[1], "sleep", stop_after=signal.SIGTERM)
    assert code == 143


def test_a_changed_project_file_brings_a_new_preloading_process(starter):
    s, folder = starter
    run(starter, folder, "exit", "0")
    first = s.server
    path = next(iter(first.files))
    first.files[path] = [0, -1]  # as if the file had changed since it was imported
    code, _ = run(starter, folder, "exit", "0")
    assert code == 0 and s.server is not first and s.server.current()


def test_where_no_preloading_process_starts_runs_start_fresh(tmp_path, capsys):
    s = preload.Preloaded(ENV, str(tmp_path), start, str(tmp_path / "preload.log"))  # no project there
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = s.start([sys.executable, str(script), "exit", "5"], str(tmp_path / "run.log"), ENV)
    assert s.wait() == (proc.pid, 5)
    s.close()
    err = capsys.readouterr().err
    assert "the preloading process did not start (" in err and "No module named" in err
    assert "each run starts as a fresh process" in err


def metrics(folder):
    out = {}
    for path in sorted(folder.rglob("metrics.csv")):
        with open(path) as f:
            rows = [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]
        out[path.parent.name] = rows
    return out


def test_forked_and_fresh_runs_give_the_same_results_to_the_byte(tmp_path):
    results = {}
    for how in ("preloaded", "fresh"):
        args = [sys.executable, os.path.join(ROOT, "sweep.py"), "main_GLS_direct_train.py",
                "--grid", "smooth_rate=0 -1", "--slots", "2", *TINY, "--n_epoch", "2",
                "--result_dir", str(tmp_path / how)] + (["--no_preload"] if how == "fresh" else [])
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[how] = metrics(tmp_path / how)
        logs = (tmp_path / how).rglob("preload.log")
        assert bool(list(logs)) == (how == "preloaded")
    assert len(results["fresh"]) == 2 and results["preloaded"] == results["fresh"]


def test_no_preload_is_refused_with_slurm(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), "main_GLS_direct_train.py",
                           "--grid", "smooth_rate=0", "--slurm", "--no_preload", *TINY,
                           "--result_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--no_preload applies to runs on this machine" in proc.stderr
    assert not any(tmp_path.iterdir())
