"""A run's failures, each a documented outcome: whatever stops a run once its folder is claimed
(a file or folder it cannot write, a bug in a method's hook) marks it failed in one line
without a traceback, and --if_exists auto starts it again; a method that breaks the base
class's rules is refused before anything is written; no option is accepted and then dropped;
the start-up checks look at the files themselves, not at their names."""
import errno
import os

import pytest

from conftest import TINY, parse_flags, read_json, write_fake_cifar
from core.args import run_main
from errors import UserError
from methods.gce import GCE
from utils.engine import run

pytestmark = pytest.mark.usefixtures("one_thread")

ARGV = TINY[:-4] + ["--width", "4", "--device", "cpu", "--n_epoch", "1", "--noise_rate", "0.4"]


def cli(call, capsys):
    """(exit status, stdout, stderr) of `call` run as the scripts run main() (core.args.run_main)."""
    with pytest.raises(SystemExit) as done:
        run_main(call)
    out, err = capsys.readouterr()
    return done.value.code, out, err


def one_error_line(err):
    """The one `error:` line of stderr, which holds nothing else (no traceback, no warning)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def snapshot(root, skip):
    """Every path under `root` outside the folder `skip`, with its size."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[path] = os.lstat(path).st_size if not os.path.isdir(path) else None
    return found


def gce(tmp_path, method_cls=GCE, *extra):
    cfg = parse_flags("train", "--method", "gce", *ARGV, "--result_dir", str(tmp_path), *extra)
    return cfg, method_cls.from_config(cfg)


def train(tmp_path, capsys, method_cls=GCE, *extra):
    cfg, method = gce(tmp_path, method_cls, *extra)
    return cli(lambda: run(cfg, "train", method), capsys)


def the_folder(tmp_path):
    (folder,) = (tmp_path / "train").iterdir()
    return str(folder)


def assert_auto_finishes_it(tmp_path, capsys, *extra):
    code, out, err = train(tmp_path, capsys, GCE, "--if_exists", "auto", *extra)
    assert code == 0, err
    folder = the_folder(tmp_path)
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "finished"
    assert not os.path.exists(os.path.join(folder, "error.log"))


# ---------------------------------------------------------------- what a run opens

class StopsAfterEpoch1(GCE):
    """GCE that ends as interrupted after its first epoch (SIGTERM as epoch 2 starts)."""

    def start_epoch(self, epoch, run):
        if epoch == 1:
            import signal
            signal.raise_signal(signal.SIGTERM)


def test_a_tensorboard_folder_that_is_a_link_to_nothing_fails_the_resume_naming_it(tmp_path, capsys):
    two = ["--tensorboard", "--n_epoch", "2"]
    assert train(tmp_path, capsys, StopsAfterEpoch1, *two)[0] == 143
    folder = the_folder(tmp_path)
    board = os.path.join(folder, "tensorboard")
    os.rename(board, str(tmp_path / "moved"))
    os.symlink(str(tmp_path / "gone"), board)
    before = snapshot(str(tmp_path), folder)
    code, _, err = train(tmp_path, capsys, GCE, *two, "--if_exists", "auto")
    line = one_error_line(err)
    assert code == 2
    assert f"--tensorboard: its event files cannot be written: {board} is a symbolic link to nothing" in line
    assert "--result_dir" not in line and "--if_exists auto" in line
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "failed" and "symbolic link to nothing" in summary["error"]
    assert snapshot(str(tmp_path), folder) == before  # the link's target was not made
    os.remove(board)
    assert_auto_finishes_it(tmp_path, capsys, *two)


def test_event_files_that_cannot_be_written_mid_run_fail_it_without_the_writer_threads_traceback(
        tmp_path, capsys, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter
    write, calls = RecordWriter.write, []

    def read_only(self, data):  # in the writer's own thread, as a file system gone read-only
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(self._writer.filename))
        return write(self, data)
    monkeypatch.setattr(RecordWriter, "write", read_only)
    code, _, err = train(tmp_path, capsys, GCE, "--tensorboard")
    line = one_error_line(err)
    folder = the_folder(tmp_path)
    assert code == 2 and "Read-only file system" in line
    assert f"make {os.path.join(folder, 'tensorboard')} writable" in line and "--result_dir" not in line
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "failed"
    monkeypatch.undo()
    assert_auto_finishes_it(tmp_path, capsys, "--tensorboard")


def test_a_file_the_run_cannot_write_mid_run_is_named_with_its_fix(tmp_path, capsys, monkeypatch):
    import core.files
    real = core.files.atomic_write_bytes

    def denied(path, data):
        if os.path.basename(path) == "train_probs.npy":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path, data)
    monkeypatch.setattr(core.files, "atomic_write_bytes", denied)
    code, _, err = train(tmp_path, capsys, GCE, "--record_train_probs")
    line = one_error_line(err)
    folder = the_folder(tmp_path)
    assert code == 1
    assert f"Permission denied ({os.path.join(folder, 'train_probs.npy')}): make it writable" in line
    assert "stopped in epoch 1" in line and "--if_exists auto" in line
    assert read_json(os.path.join(folder, "summary.json"))["status"] == "failed"
    monkeypatch.undo()
    assert_auto_finishes_it(tmp_path, capsys, "--record_train_probs")


# ---------------------------------------------------------------- a method's own code

def crashing(hook):
    """GCE whose `hook` raises the error a typo would (an attribute that is not there)."""
    def broken(self, *args):
        return self.a_typo

    return type(f"GCECrashIn_{hook}", (GCE,), {hook: broken})


@pytest.mark.parametrize("hook", ["setup", "train_step", "state_dict"])
def test_a_crash_in_any_hook_of_a_method_leaves_a_failed_run_that_auto_restarts(tmp_path, capsys, hook):
    code, _, err = train(tmp_path, capsys, crashing(hook))
    line = one_error_line(err)
    folder = the_folder(tmp_path)
    assert code == 1
    assert f"AttributeError: 'GCECrashIn_{hook}' object has no attribute 'a_typo'" in line
    assert "(at tests/test_reliability3.py:" in line and ", in broken)" in line
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "failed" and "a_typo" in summary["error"]
    with open(os.path.join(folder, "error.log")) as f:
        assert "Traceback" in f.read()
    assert os.listdir(str(tmp_path)) == ["train"]
    assert_auto_finishes_it(tmp_path, capsys)


class MisspeltKnob(GCE):
    """The knob q's value kept under another name: the base class reads getattr(self, 'q')."""

    def __init__(self, q):
        super().__init__(q)
        self.exponent = self.__dict__.pop("q")

    @property
    def label(self):
        return f"GCE q={self.exponent:g}"


class WrongHookArguments(GCE):
    def start_epoch(self, epoch):  # the engine passes (epoch, run)
        pass


@pytest.mark.parametrize("method_cls,expected", [
    (MisspeltKnob, "knob 'q' is no attribute of the instance (the base class reads getattr(self, 'q')): "
                   "store the flag's value as self.q in __init__"),
    (WrongHookArguments, "start_epoch(epoch) cannot take the engine's arguments: define it as "
                         "start_epoch(self, epoch, run)"),
])
def test_a_method_that_breaks_the_contract_is_refused_before_anything_is_written(tmp_path, method_cls, expected):
    cfg, method = gce(tmp_path, method_cls)
    with pytest.raises(UserError) as err:
        run(cfg, "train", method)
    assert str(err.value).startswith(f"method 'gce' (test_reliability3.{method_cls.__name__}): {expected}")
    assert os.listdir(str(tmp_path)) == []


# ---------------------------------------------------------------- no option dropped

@pytest.mark.parametrize("args,expected", [
    (["paper", "sln-clothing1m", "--warmup_args", "--bogus 1"], "the runs of the recipe sln-clothing1m need no"),
    (["paper", "sln-cifar10", "--warmup_args", "--n_epoch 3"], "the runs of the recipe sln-cifar10 need no"),
    (["paper", "--list", "--seeds", "1 2"], "--list lists the recipes and runs nothing, so --seeds"),
    (["gls", "--max_requeues", "3", "--dry-run"], "--max_requeues applies to --slurm"),
])
def test_a_sweep_option_that_would_reach_no_run_is_refused(tmp_path, capsys, monkeypatch, args, expected):
    import sweep
    monkeypatch.chdir(tmp_path)  # the sweep works from the repository root: back here after
    assert sweep.main(args + ["--result_dir", str(tmp_path)]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert os.listdir(str(tmp_path)) == []


def test_summarize_refuses_plots_it_would_not_draw_for_a_paper_table(tmp_path, capsys):
    import summarize
    with pytest.raises(SystemExit) as done:
        summarize.main([str(tmp_path), "--paper", "sln-cifar10", "--curves", "X", "--confusion", "Y"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert "--curves draws plots of summarize.py's own tables, not of a --paper table" in err
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("script,extra,expected", [
    ("train", ["--method", "gce", "--num_per_class", "5"], "--num_per_class is a flag of the data set clothing1m"),
    ("main_GLS_load", ["--lr_gamma", "0.5"], "--lr_gamma 0.5 multiplies the lr at --lr_milestones, and this run has none"),
    ("train", ["--method", "gce", "--noise_type", "clean", "--noise_rate", "0.3"], "noise type clean has no rate"),
    ("main_GLS_direct_train", ["--noise_path", "x.pt"], "--noise_path names a CIFAR-N label file"),
])
def test_a_flag_the_run_would_not_read_is_refused(script, extra, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        parse_flags(script, *ARGV, *extra)


def test_gpu_id_beside_an_explicit_device_is_refused():
    with pytest.raises(UserError, match="--gpu_id 2 picks the CUDA device when --device is auto"):
        parse_flags("noise_cifar_train", "--dataset", "digits", "--num_class", "10", "--device", "cpu",
                    "--gpu_id", "2")


# ---------------------------------------------------------------- start-up checks look at files

@pytest.mark.parametrize("kind", ["link to nothing", "folder"])
def test_a_clothing1m_image_that_cannot_be_opened_fails_the_start_up_check(tmp_path, kind):
    from data.clothing1m import Clothing1M
    from test_clothing1m import write_fake_clothing1m

    root = str(tmp_path)
    splits = write_fake_clothing1m(root, "merged")
    bad = splits["val"][2][0]
    os.remove(os.path.join(root, bad))
    if kind == "folder":
        os.mkdir(os.path.join(root, bad))
    else:
        os.symlink(os.path.join(root, "elsewhere.jpg"), os.path.join(root, bad))
    with pytest.raises(UserError) as err:
        Clothing1M(root)
    assert str(err.value).startswith(f"1 of the 14 val images listed under {root} cannot be opened: a "
                                     f"symbolic link to nothing or a folder in its place (first: {bad})")


def test_a_cifar_batch_that_is_a_link_to_nothing_is_named_as_such(tmp_path):
    from data.cifar import load_cifar

    write_fake_cifar(str(tmp_path))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.unlink()
    batch.symlink_to(tmp_path / "moved")
    with pytest.raises(UserError, match=f"{batch} is a symbolic link to nothing .*moved"):
        load_cifar("cifar10", str(tmp_path), download=False)


def test_a_label_file_that_is_a_link_to_nothing_is_not_downloaded_through_it(tmp_path):
    from data.cifarn import fetch_label_file

    path = tmp_path / "CIFAR-10_human.pt"
    path.symlink_to(tmp_path / "gone" / "CIFAR-10_human.pt")
    with pytest.raises(UserError, match=f"{path} is a symbolic link to nothing"):
        fetch_label_file("cifar10", str(path))
    assert sorted(os.listdir(str(tmp_path))) == ["CIFAR-10_human.pt"]


def test_a_warmup_checkpoint_flag_that_is_a_link_to_nothing_is_named_as_such(tmp_path):
    link = tmp_path / "best.pt"
    link.symlink_to(tmp_path / "gone.pt")
    with pytest.raises(UserError, match="--warmup_ckpt .*best.pt: a symbolic link to nothing"):
        run_in_process_load(["--warmup_ckpt", str(link), "--result_dir", str(tmp_path)])


def run_in_process_load(extra):
    import main_GLS_load
    return main_GLS_load.find_warmup_checkpoint(parse_flags("main_GLS_load", *ARGV, *extra))



# ---------------------------------------------------------------- an outside input gone: --noise_file

def test_a_run_whose_noise_file_is_gone_is_kept_and_resumed_from_its_own_folder(tmp_path):
    """--noise_file is read when the run starts: once the run holds its labels in its folder,
    the file may move. A finished run is kept by --if_exists auto, an interrupted one resumes
    to the metrics of a run never interrupted; a fresh start without the file is refused."""
    import shutil
    import signal

    import numpy as np

    from conftest import read_csv
    from data import load_dataset
    from methods.gls import GLS

    clean = load_dataset("digits").train_labels
    noisy = (clean + (np.arange(len(clean)) % 3 == 0)) % 10
    path = tmp_path / "labels.csv"
    path.write_text("label,label_noisy\n" + "".join(f"{c},{n}\n" for c, n in zip(clean, noisy)))
    argv = [*TINY, "--width", "4", "--n_epoch", "3", "--noise_file", str(path)]

    class StopAtTwo(GLS):
        def start_epoch(self, epoch, run_state):
            if epoch == 2:
                signal.raise_signal(signal.SIGTERM)

    def train(result_dir, *extra, method_cls=GLS):
        cfg = parse_flags("main_GLS_direct_train", *argv, "--result_dir", str(result_dir), *extra)
        return run(cfg, "main_GLS_direct_train", method_cls.from_config(cfg))

    def folder(name):
        scripts = tmp_path / name / "main_GLS_direct_train"
        return os.path.join(scripts, os.listdir(scripts)[0])

    assert train(tmp_path / "whole") == 0
    assert train(tmp_path / "parts", method_cls=StopAtTwo) == 143
    shutil.move(path, tmp_path / "moved.csv")
    assert train(tmp_path / "whole", "--if_exists", "auto") == 0  # finished: kept as it is
    assert train(tmp_path / "parts", "--if_exists", "auto") == 0  # resumed from its own labels
    rows = [[{k: v for k, v in r.items() if k != "epoch_time_s"} for r in read_csv(os.path.join(folder(n), "metrics.csv"))]
            for n in ("whole", "parts")]
    assert rows[0] == rows[1] and len(rows[0]) == 3
    assert read_json(os.path.join(folder("parts"), "summary.json"))["status"] == "finished"
    with pytest.raises(UserError, match="--noise_file .*labels.csv: no such file"):
        train(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
