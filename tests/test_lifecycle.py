"""The life of a run folder (utils/results.py): one process per folder under an flock,
--if_exists refuse|auto|overwrite decided under that lock, restartable shell loops, and
the warm-up checkpoint's record of the labels it was trained on."""
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, read_csv, read_json, run_in_process
from errors import UserError
from utils.results import LOCK_FILE, RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small models, shared CPU
ARGV = TINY + ["--n_epoch", "2"]


def digests(folder):
    """{file: md5} of every result file (the lock file's content names its last holder)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name != LOCK_FILE:
            with open(os.path.join(folder, name), "rb") as f:
                out[name] = hashlib.md5(f.read()).hexdigest()
    return out


def last_line(capsys):
    return capsys.readouterr().out.strip().splitlines()[-1]


def folder_of(capsys):
    return last_line(capsys).split("results: ")[1]


@pytest.fixture
def finished(tmp_path, capsys):
    argv = ARGV + ["--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv) == 0
    return argv, folder_of(capsys)


# ---------------------------------------------------------------- --if_exists

def test_auto_leaves_a_finished_run_as_it_is(finished, capsys):
    argv, folder = finished
    before = digests(folder)
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 0
    assert last_line(capsys) == f"results: {folder}"
    assert digests(folder) == before
    assert run_in_process("main_GLS_direct_train", argv + ["--resume"]) == 0  # the same, spelled so
    assert digests(folder) == before


def test_refuse_is_the_default_and_overwrite_replaces_a_finished_run(finished, capsys):
    """--overwrite replaces what the run wrote, and leaves anything else in its folder."""
    argv, folder = finished
    before = digests(folder)
    with pytest.raises(UserError, match="already holds a finished run"):
        run_in_process("main_GLS_direct_train", argv)
    assert digests(folder) == before
    os.remove(os.path.join(folder, "best.pt"))
    with open(os.path.join(folder, "stray.txt"), "w") as f:
        f.write("left by hand")
    for spelling in (["--overwrite"], ["--if_exists", "overwrite"]):
        started = time.time()
        assert run_in_process("main_GLS_direct_train", argv + spelling) == 0
        assert folder_of(capsys) == folder
        assert os.path.getmtime(os.path.join(folder, "summary.json")) >= started
        assert open(os.path.join(folder, "stray.txt")).read() == "left by hand"
        assert os.path.exists(os.path.join(folder, "best.pt"))
        assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"
    # same seeds, same run: the replaced results equal the first ones
    assert {k: v for k, v in digests(folder).items() if k.endswith((".npy", "noise.json"))} == \
        {k: v for k, v in before.items() if k.endswith((".npy", "noise.json"))}


def test_auto_resumes_an_unfinished_run_and_restarts_one_without_checkpoint(finished, capsys):
    argv, folder = finished
    summary = read_json(os.path.join(folder, "summary.json"))
    RunFolder(folder).write_json("summary.json", {**summary, "status": "interrupted"})
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {folder} (resumed after epoch 2 of" in out
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"
    RunFolder(folder).write_json("summary.json", {**summary, "status": "running"})
    os.remove(os.path.join(folder, "last.pt"))  # killed before its first checkpoint
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 0
    assert "(resumed after" not in capsys.readouterr().out
    assert len(read_csv(os.path.join(folder, "metrics.csv"))) == 2 and os.path.exists(os.path.join(folder, "last.pt"))


def test_auto_keeps_a_diverged_run_unless_asked_to_retry(tmp_path, capsys):
    argv = ARGV + ["--loss_bound", "0.01", "--print_freq", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv) == 3
    folder = folder_of(capsys)
    before = digests(folder)
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 3
    assert "--retry_diverged" in capsys.readouterr().out and digests(folder) == before
    started = time.time()
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto", "--retry_diverged"]) == 3
    assert os.path.getmtime(os.path.join(folder, "summary.json")) >= started  # trained again
    with pytest.raises(UserError, match="--retry_diverged applies to --if_exists auto"):
        run_in_process("main_GLS_direct_train", argv + ["--retry_diverged"])


def test_a_shell_loop_with_if_exists_auto_is_safe_to_rerun(tmp_path):
    """The users' habit: a loop over smooth rates. Run twice, every run is trained once."""
    loop = (f'for r in 0.4 -2.0; do "{sys.executable}" main_GLS_direct_train.py '
            f'{" ".join(ARGV)} --n_epoch 1 --result_dir "{tmp_path}" --smooth_rate $r --if_exists auto '
            '|| exit $?; done')
    first = subprocess.run(["bash", "-c", loop], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    folders = sorted((tmp_path / "main_GLS_direct_train").iterdir())
    assert len(folders) == 2
    before = {f: digests(f) for f in folders}
    second = subprocess.run(["bash", "-c", loop], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already finished; nothing to do") == 2
    assert {f: digests(f) for f in folders} == before


# ---------------------------------------------------------------- one process per folder

def test_a_held_lock_refuses_a_second_run_naming_the_holder(finished):
    argv, folder = finished
    before = digests(folder)
    with open(os.path.join(folder, LOCK_FILE), "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on host elsewhere\n")
        held.flush()
        for extra in ([], ["--if_exists", "auto"], ["--if_exists", "overwrite"]):
            with pytest.raises(UserError, match="is in use by pid 4242 on host elsewhere"):
                run_in_process("main_GLS_direct_train", argv + extra)
    assert digests(folder) == before


def start(argv, **kwargs):
    return subprocess.Popen([sys.executable, "main_GLS_direct_train.py", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_rows(folder, rows, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        metrics = os.path.join(folder, "metrics.csv")
        if os.path.exists(metrics) and len(read_csv(metrics)) >= rows:
            return True
        time.sleep(0.02)
    return False


def test_two_identical_commands_never_train_one_folder_and_kill_9_leaves_no_stale_lock(tmp_path):
    argv = TINY + ["--n_epoch", "40", "--result_dir", str(tmp_path)]
    folder = subprocess.run([sys.executable, "main_GLS_direct_train.py", *argv, "--print_run_dir"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    first = start(argv)
    assert wait_for_rows(folder, 1, first), first.communicate()[1]
    second = start(argv + ["--if_exists", "auto"])
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2 and "Traceback" not in err
    assert f"is in use by pid {first.pid} on host" in err
    first.kill()  # SIGKILL: no chance to clean up; the kernel frees the lock
    first.communicate()
    rows = len(read_csv(os.path.join(folder, "metrics.csv")))
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "running"
    third = start(argv[:-4] + ["--n_epoch", "40", "--result_dir", str(tmp_path), "--if_exists", "auto"])
    assert wait_for_rows(folder, rows + 1, third)
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=60)
    assert third.returncode == 143, err
    assert f"run folder: {folder} (resumed after epoch {rows} of" in out
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "interrupted"


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    """Refusals found after the folder was locked (here: no warm-up to start from) remove
    the lock file and every folder made for it."""
    results = tmp_path / "fresh"
    with pytest.raises(UserError, match="no finished warm-up"):
        run_in_process("main_GLS_load", ARGV + ["--result_dir", str(results)])
    with pytest.raises(UserError, match="dependent"):
        run_in_process("main_warmup", ARGV + ["--noise_type", "dependent", "--result_dir", str(results)])
    assert not results.exists()


# ---------------------------------------------------------------- the warm-up checkpoint

@pytest.fixture
def warmup(tmp_path, capsys):
    argv = TINY + ["--n_epoch", "1", "--noise_rate", "0.4", "--result_dir", str(tmp_path / "results")]
    assert run_in_process("main_warmup", argv) == 0
    return argv, folder_of(capsys)


def test_a_copied_warmup_checkpoint_of_other_labels_is_refused(warmup, tmp_path):
    """The check once read noisy_labels.npy beside the checkpoint, so a copy elsewhere
    passed; the checkpoint now carries the hash of its labels."""
    argv, folder = warmup
    copy = tmp_path / "copy.pt"
    shutil.copy(os.path.join(folder, "best.pt"), copy)
    results = str(tmp_path / "other")
    for flags, named in ((["--noise_type", "pairflip"], "noise_type 'symmetric' vs 'pairflip'"),
                         (["--noise_seed", "3"], "noise_seed 0 vs 3"),
                         (["--noise_rate", "0.2"], "noise_rate 0.4 vs 0.2")):
        with pytest.raises(UserError, match="trained on other noisy labels") as err:
            run_in_process("main_GLS_load", TINY + ["--result_dir", results, "--noise_rate", "0.4", *flags,
                                                    "--warmup_ckpt", str(copy)])
        assert named in str(err.value)
    assert not os.path.exists(results)
    assert run_in_process("main_GLS_load", TINY + ["--noise_rate", "0.4", "--n_epoch", "1",
                                                   "--result_dir", results, "--warmup_ckpt", str(copy)]) == 0


def test_a_damaged_warmup_folder_is_skipped_with_a_warning(warmup, capsys):
    argv, folder = warmup
    stray = os.path.join(os.path.dirname(folder), "x")
    os.makedirs(stray)
    with open(os.path.join(stray, "config.json"), "w") as f:
        f.write("{not json")
    load = argv[:-2] + ["--result_dir", argv[-1], "--n_epoch", "1"]
    assert run_in_process("main_GLS_load", load) == 0
    err = capsys.readouterr().err
    assert f"skipping the warm-up folder {stray}: its config.json is not readable JSON" in err
