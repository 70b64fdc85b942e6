"""The life of a run folder (utils/results.py): one process per folder under an flock,
--if_exists refuse|auto|overwrite decided under that lock, restartable shell loops, and
the warm-up checkpoint's record of the labels it was trained on."""
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, read_csv, read_json, run_in_process
from errors import UserError
from utils.results import LOCK_FILE, RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small models, loaded CPU
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
    # metrics.csv is written before last.pt: a SIGKILL between the two leaves one row more
    # than the checkpoint holds, and the resume starts from the checkpoint's epoch.
    resumed = re.search(rf"run folder: {re.escape(folder)} \(resumed after epoch (\d+) of", out)
    assert resumed and int(resumed.group(1)) in (rows, rows - 1), out
    epochs = [int(r["epoch"]) for r in read_csv(os.path.join(folder, "metrics.csv"))]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > int(resumed.group(1))
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


def test_a_finished_load_run_needs_nothing_but_itself(warmup, capsys):
    """--if_exists auto on a finished main_GLS_load.py run whose warm-up has moved away: the
    run is reported finished; the warm-up is looked for only when a run has to train."""
    argv, warm = warmup
    load = argv + ["--n_epoch", "1", "--smooth_rate", "-0.4"]
    assert run_in_process("main_GLS_load", load) == 0
    folder = folder_of(capsys)
    shutil.move(os.path.dirname(warm), os.path.dirname(warm) + "-moved")
    before = digests(folder)
    assert run_in_process("main_GLS_load", load + ["--if_exists", "auto"]) == 0
    assert "already finished" in capsys.readouterr().out and digests(folder) == before
    with pytest.raises(UserError, match="no finished warm-up"):  # a run that has to train needs it
        run_in_process("main_GLS_load", load + ["--if_exists", "overwrite"])


# ---------------------------------------------------------------- what a run may delete and leave

@pytest.mark.parametrize("spelling", [["--overwrite"], ["--if_exists", "overwrite"],
                                      ["--if_exists", "auto", "--retry_diverged"]])
def test_an_overwrite_removes_only_the_files_the_run_wrote(finished, tmp_path, capsys, spelling):
    """A run trained with --result_dir inside another run's folder, a user's notes and a link:
    none of them is deleted when the outer run is started again."""
    argv, folder = finished
    inner = os.path.join(folder, "nested")
    assert run_in_process("main_warmup", TINY + ["--n_epoch", "1", "--result_dir", inner]) == 0
    inner_run = folder_of(capsys)
    with open(os.path.join(folder, "notes.md"), "w") as f:
        f.write("mine")
    os.symlink(str(tmp_path), os.path.join(folder, "a_link"))
    inner_before = digests(inner_run)
    if spelling[-1] == "--retry_diverged":  # make the outer run a diverged one
        summary = read_json(os.path.join(folder, "summary.json"))
        summary["status"] = "diverged"
        with open(os.path.join(folder, "summary.json"), "w") as f:
            f.write(__import__("json").dumps(summary))
    assert run_in_process("main_GLS_direct_train", argv + spelling) == 0
    assert digests(inner_run) == inner_before
    assert open(os.path.join(folder, "notes.md")).read() == "mine"
    assert os.path.islink(os.path.join(folder, "a_link")) and os.path.isdir(tmp_path)
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"


@pytest.mark.parametrize("leftover", [".tmp4242-best.pt", ".tmp17-summary.json", "last.pt.tmp99",
                                      "config.json.tmp12345"])
def test_a_killed_writer_leaves_no_debris_after_the_next_lock(finished, capsys, leftover):
    argv, folder = finished
    with open(os.path.join(folder, leftover), "wb") as f:
        f.write(b"half a file")
    with open(os.path.join(folder, "keep.tmp.txt"), "w") as f:  # not a writer's temporary file
        f.write("mine")
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 0
    assert not os.path.exists(os.path.join(folder, leftover))
    assert os.path.exists(os.path.join(folder, "keep.tmp.txt"))
    assert "removed 1 temporary file(s) a killed process left" in capsys.readouterr().err


def test_a_kill_9_mid_write_leaves_nothing_the_next_run_keeps(tmp_path):
    """kill -9 between a checkpoint's write and its rename: the next process cleans up."""
    argv = ARGV[:-1] + ["40", "--result_dir", str(tmp_path)]
    proc = start(argv)
    folder = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and folder is None:
            found = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path) for d in ds if d.startswith("digits")]
            folder = found[0] if found and os.path.exists(os.path.join(found[0], "last.pt")) else None
            time.sleep(0.2)
        assert folder, "the run never wrote a checkpoint"
        with open(os.path.join(folder, f".tmp{proc.pid}-last.pt"), "wb") as f:  # as a write cut short
            f.write(b"partial")
    finally:
        proc.kill()
        proc.wait()
    assert subprocess.run([sys.executable, os.path.join(ROOT, "main_GLS_direct_train.py"), *argv,
                           "--n_epoch", "1", "--print_run_dir"], capture_output=True).returncode == 0
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "main_GLS_direct_train.py"), *argv,
                              "--if_exists", "auto"], capture_output=True, text=True, cwd=ROOT,
                             env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert not [n for n in os.listdir(folder) if ".tmp" in n]


# ---------------------------------------------------------------- odd folders and paths

def test_a_run_folder_that_is_a_dangling_link_is_named_as_such(tmp_path, capsys):
    argv = ARGV + ["--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv + ["--print_run_dir"]) == 0
    folder = last_line(capsys)
    os.makedirs(os.path.dirname(folder))
    os.symlink(str(tmp_path / "gone"), folder)
    with pytest.raises(UserError, match=r"is a symbolic link to nothing .*gone.*remove the link"):
        run_in_process("main_GLS_direct_train", argv)
    os.remove(folder)
    link = tmp_path / "results-link"
    os.symlink(str(tmp_path / "nowhere"), link)
    with pytest.raises(UserError, match="--result_dir .* is a symbolic link to nothing"):
        run_in_process("main_GLS_direct_train", ARGV + ["--result_dir", str(link)])


@pytest.mark.parametrize("name", ["with\nnewline", "with\rreturn", "x" * 256, "é" * 128])
def test_result_dirs_the_run_cannot_use_are_refused_up_front(tmp_path, name):
    target = tmp_path / name
    with pytest.raises(UserError, match="--result_dir"):
        run_in_process("main_GLS_direct_train", ARGV + ["--result_dir", str(target)])
    assert os.listdir(tmp_path) == []


def test_a_result_dir_with_bytes_that_are_not_utf8_works_end_to_end(tmp_path):
    results = os.path.join(os.fsencode(str(tmp_path)), b"r\xff\xfesults")
    proc = subprocess.run([os.fsencode(sys.executable), os.fsencode(os.path.join(ROOT, "main_warmup.py")),
                           *[os.fsencode(a) for a in ARGV], b"--n_epoch", b"1", b"--result_dir", results],
                          capture_output=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr and results in proc.stdout
    (run,) = os.listdir(os.path.join(results, b"main_warmup"))
    summary = read_json(os.path.join(results, b"main_warmup", run, b"summary.json"))
    assert summary["status"] == "finished"


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_json_in_a_run_folder_is_no_traceback(finished, depth):
    """A config.json nested too deeply is a damaged folder (a clear error, nothing changed); a
    summary.json so damaged is written anew from last.pt, which holds the whole history."""
    argv, folder = finished
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("[" * depth + "]" * depth)
    before = digests(folder)
    with pytest.raises(UserError, match="config.json is not readable JSON \\(nested too deeply\\)"):
        run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"])
    assert digests(folder) == before
    assert run_in_process("main_GLS_direct_train", argv + ["--overwrite"]) == 0
    metrics = digests(folder)["metrics.csv"]
    good = read_json(os.path.join(folder, "summary.json"))
    with open(os.path.join(folder, "summary.json"), "w") as f:
        f.write("[" * depth + "]" * depth)
    assert run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"]) == 0
    repaired = read_json(os.path.join(folder, "summary.json"))
    assert repaired["status"] == "finished" and digests(folder)["metrics.csv"] == metrics
    assert repaired["last_test_acc"] == good["last_test_acc"]


def test_a_summary_that_is_a_fifo_never_hangs_the_run(finished):
    argv, folder = finished
    os.remove(os.path.join(folder, "summary.json"))
    os.mkfifo(os.path.join(folder, "summary.json"))
    with pytest.raises(UserError, match="summary.json is not a regular file"):
        run_in_process("main_GLS_direct_train", argv + ["--if_exists", "auto"])
