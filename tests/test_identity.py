"""What made a run (utils/identity.py, made_by) and the refusal to reuse a stale result:
a run made by other code or data is never reported finished or resumed by --if_exists
auto; the banner before the first epoch; collapsed runs named as such."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, parse_flags, read_json, run_in_process, write_fake_cifar
from data import load_dataset
from errors import UserError
from models import build_model
from utils.identity import data_fingerprint

TINY4 = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu"]


def digests(folder):
    """{name: md5} of a run folder's files (the lock's content names its holder: left out)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name != ".lock":
            with open(path, "rb") as f:
                out[name] = hashlib.md5(f.read()).hexdigest()
    return out


def only_run(root, script):
    (name,) = os.listdir(os.path.join(root, script))
    return os.path.join(root, script, name)


# ---------------------------------------------------------------- code

@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the project to edit, with one finished CE warm-up made by it."""
    base = tmp_path_factory.mktemp("identity")
    copy = base / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", "results", ".git", "__pycache__",
                                                              "*.pyc", ".pytest_cache"))
    results = str(base / "results")
    proc = run_copy(copy, "main_warmup.py", *TINY4, "--n_epoch", "1", "--result_dir", results)
    assert proc.returncode == 0, proc.stderr
    return copy, results, only_run(results, "main_warmup")


def run_copy(copy, script, *argv):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(copy / script), *argv], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)


def auto(repo_):
    copy, results, _ = repo_
    return run_copy(copy, "main_warmup.py", *TINY4, "--n_epoch", "1", "--result_dir", results, "--if_exists", "auto")


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_a_comment_a_docstring_or_a_new_plugin_file_keep_the_run_finished(repo):
    copy, _, folder = repo
    edit(copy / "loss.py", "import torch\n", "import torch  # a comment about nothing\n\n\n")
    edit(copy / "loss.py", "Cross-entropy against arbitrary targets", "Cross entropy (reworded) against any targets")
    (copy / "methods" / "zz_unused.py").write_text(
        "from methods import Method\n\n\nclass Unused(Method):\n    name = 'unused'\n")
    before = digests(folder)
    proc = auto(repo)
    assert proc.returncode == 0, proc.stderr
    assert "already finished; nothing to do" in proc.stdout
    assert digests(folder) == before


def test_changed_code_is_refused_naming_the_change_and_nothing_changes(repo):
    copy, results, folder = repo
    recorded = read_json(os.path.join(folder, "config.json"))["made_by"]["code"]["source_sha1"]
    edit(copy / "loss.py", "nll = -log_p.gather(1, labels[:, None]).squeeze(1)",
         "nll = 0.0 - log_p.gather(1, labels[:, None]).squeeze(1)")
    try:
        before = digests(folder)
        proc = auto(repo)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"code: source hash {recorded[:10]} -> " in proc.stderr
        assert "--if_exists overwrite" in proc.stderr and "--keep_stale" in proc.stderr
        assert digests(folder) == before
        # the deliberate keep is recorded in the run
        kept = run_copy(copy, "main_warmup.py", *TINY4, "--n_epoch", "1", "--result_dir", results,
                        "--if_exists", "auto", "--keep_stale")
        assert kept.returncode == 0, kept.stderr
        summary = read_json(os.path.join(folder, "summary.json"))
        (entry,) = summary["kept_stale"]
        assert entry["changes"][0].startswith(f"code: source hash {recorded[:10]}")
        assert entry["code_now"] != recorded and summary["status"] == "finished"
        assert {k: v for k, v in digests(folder).items() if k != "summary.json"} == \
            {k: v for k, v in before.items() if k != "summary.json"}
    finally:
        edit(copy / "loss.py", "nll = 0.0 - log_p", "nll = -log_p")


def test_an_unfinished_run_of_other_code_is_not_resumed(repo):
    copy, results, _ = repo
    argv = [*TINY4, "--n_epoch", "3", "--result_dir", results, "--seed", "1"]
    first = run_copy(copy, "main_warmup.py", *argv)
    assert first.returncode == 0, first.stderr
    folder = [f for f in os.listdir(os.path.join(results, "main_warmup")) if "seed1" in f][0]
    folder = os.path.join(results, "main_warmup", folder)
    summary = read_json(os.path.join(folder, "summary.json"))
    summary["status"] = "interrupted"  # as a run stopped after its last checkpoint
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)
    edit(copy / "data" / "loader.py", "yield self.normalize(x), self.labels[idx], idx",
         "yield self.normalize(x).clone(), self.labels[idx], idx")
    try:
        before = digests(folder)
        proc = run_copy(copy, "main_warmup.py", *argv, "--if_exists", "auto")
        assert proc.returncode == 2 and "holds a unfinished run" not in proc.stderr
        assert "holds an unfinished run made by other code" in proc.stderr and "code: source hash" in proc.stderr
        assert digests(folder) == before
    finally:
        edit(copy / "data" / "loader.py", ".normalize(x).clone()", ".normalize(x)")


# ---------------------------------------------------------------- data

def test_other_data_under_the_same_root_are_refused(tmp_path):
    root, results = str(tmp_path / "data"), str(tmp_path / "results")
    write_fake_cifar(root, "cifar10", n_train=60, n_test=20, seed=0)
    argv = ["--dataset", "cifar10", "--data_root", root, "--model", "resnet18", "--width", "4",
            "--device", "cpu", "--n_epoch", "1", "--batch_size", "32", "--result_dir", results]
    assert run_in_process("main_warmup", argv) == 0
    folder = only_run(results, "main_warmup")
    recorded = read_json(os.path.join(folder, "config.json"))["made_by"]["data"]["data_sha1"]
    assert run_in_process("main_warmup", argv + ["--if_exists", "auto"]) == 0  # the same data
    write_fake_cifar(root, "cifar10", n_train=60, n_test=20, seed=1)  # other images, same place
    before = digests(folder)
    with pytest.raises(UserError, match=f"data: data fingerprint {recorded[:10]} -> "):
        run_in_process("main_warmup", argv + ["--if_exists", "auto"])
    assert digests(folder) == before
    # data that cannot be loaded (gone, and no download allowed in a check): the code alone decides
    shutil.rmtree(os.path.join(root, "cifar-10-batches-py"))
    assert run_in_process("main_warmup", argv + ["--if_exists", "auto"]) == 0
    assert digests(folder) == before


def test_an_edited_label_file_is_refused(tmp_path):
    from data.noise import save_noise_file

    clean = load_dataset("digits").train_labels
    noisy = clean.copy()
    noisy[:100] = (noisy[:100] + 1) % 10
    path, results = str(tmp_path / "labels.csv"), str(tmp_path / "results")
    save_noise_file(path, clean, noisy)
    argv = [*TINY4, "--n_epoch", "1", "--noise_file", path, "--result_dir", results]
    assert run_in_process("main_warmup", argv) == 0
    noisy[100] = (noisy[100] + 1) % 10
    save_noise_file(path, clean, noisy)
    with pytest.raises(UserError, match="data: noisy labels"):
        run_in_process("main_warmup", argv + ["--if_exists", "auto"])


def test_made_by_records_the_code_command_versions_device_and_data(tmp_path):
    argv = [*TINY4, "--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_GLS_direct_train", argv) == 0
    folder = only_run(str(tmp_path), "main_GLS_direct_train")
    made_by = read_json(os.path.join(folder, "config.json"))["made_by"]
    assert read_json(os.path.join(folder, "summary.json"))["made_by"] == made_by
    code = made_by["code"]
    assert len(code["source_sha1"]) == 40
    # the import closure of the script, the method, the data set and the noise type; not others'
    assert {"main_GLS_direct_train.py", "methods/gls.py", "loss.py", "data/digits.py", "data/noise.py",
            "utils/engine.py", "models/resnet.py"} <= set(code["source_files"])
    assert not {"methods/sln.py", "data/clothing1m.py", "data/cifarn.py", "summarize.py", "sweep.py",
                "main_warmup.py"} & set(code["source_files"])
    assert made_by["versions"]["torch"] == torch.__version__ and made_by["versions"]["numpy"] == np.__version__
    assert made_by["device"] == "cpu" and made_by["host"]
    noisy = np.load(os.path.join(folder, "noisy_labels.npy"))
    assert made_by["data"]["labels_sha1"] == hashlib.sha1(noisy.astype(np.int64).tobytes()).hexdigest()
    assert made_by["data"]["data_sha1"] == data_fingerprint(load_dataset("digits"))


def test_the_data_fingerprint_changes_with_any_image_or_label():
    data = load_dataset("digits")
    base = data_fingerprint(data)
    assert data_fingerprint(load_dataset("digits")) == base
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        other = load_dataset("digits")
        array = getattr(other, name).copy()
        array.flat[7] = (int(array.flat[7]) + 1) % (10 if "labels" in name else 256)
        setattr(other, name, array)
        assert data_fingerprint(other) != base, name


def test_old_run_folders_without_a_record_get_a_clear_message(tmp_path):
    argv = [*TINY4, "--n_epoch", "2", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv) == 0
    folder = only_run(str(tmp_path), "main_warmup")
    for name in ("config.json", "summary.json"):
        record = read_json(os.path.join(folder, name))
        record.pop("made_by")
        if name == "summary.json":
            record["config"].pop("made_by")
        with open(os.path.join(folder, name), "w") as f:
            json.dump(record, f)
    for status in ("finished", "interrupted"):
        summary = read_json(os.path.join(folder, "summary.json"))
        summary["status"] = status
        with open(os.path.join(folder, "summary.json"), "w") as f:
            json.dump(summary, f)
        with pytest.raises(UserError, match="(?s)records no code or data identity.*--keep_stale"):
            run_in_process("main_warmup", argv + ["--if_exists", "auto"])


# ---------------------------------------------------------------- run names

def test_equal_settings_written_differently_share_a_run_folder(capsys):
    def folder(*argv):
        assert run_in_process("main_GLS_direct_train", [*TINY4, *argv, "--print_run_dir"]) == 0
        return capsys.readouterr().out.strip().splitlines()[-1]

    assert folder("--smooth_rate", "-0") == folder("--smooth_rate", "0") == folder("--smooth_rate", "0.0")
    assert folder("--model", "resnet34") == folder("--model", "resnet")
    assert folder("--noise_type", "sym") == folder("--noise_type", "symmetric")


# ---------------------------------------------------------------- the banner

def test_the_banner_says_what_is_about_to_happen(tmp_path, capsys):
    argv = [*TINY, "--noise_rate", "0.4", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv + ["--n_epoch", "2"]) == 0
    out = capsys.readouterr().out
    warm = only_run(str(tmp_path), "main_warmup")
    rate = read_json(os.path.join(warm, "noise.json"))["actual_noise_rate"]
    params = sum(p.numel() for p in build_model("resnet18", 10, 1, width=8).parameters())
    assert f"run folder: {warm} (new)" in out
    assert "device: cpu (cpu), precision fp32" in out
    assert f"data: digits, 1437 training images, 360 test images; noise symmetric, actual rate {rate:.4f}" in out
    assert f"model: resnet18, {params:,} parameters; method: CE (main_warmup)" in out
    assert out.index("run folder:") < out.index("epoch 1/2")
    assert run_in_process("main_GLS_load", argv + ["--n_epoch", "1", "--smooth_rate", "-0.4"]) == 0
    assert f"started from: {os.path.join(warm, 'best.pt')}" in capsys.readouterr().out
    assert run_in_process("main_warmup", argv + ["--n_epoch", "2", "--overwrite"]) == 0
    assert f"run folder: {warm} (restarted" in capsys.readouterr().out


def test_a_cpu_fallback_of_a_cuda_build_is_warned_about(monkeypatch, tmp_path, capsys):
    from core.device import cpu_fallback_warning

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    argv = [*TINY4[:-2], "--n_epoch", "1", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv + ["--device", "auto"]) == 0
    err = capsys.readouterr().err
    assert "--device auto found no usable CUDA device" in err and "built for CUDA 12.4" in err
    cpu = torch.device("cpu")
    assert cpu_fallback_warning("cpu", cpu) is None  # asked for: no warning
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build: nothing to warn about
    assert cpu_fallback_warning("auto", cpu) is None


# ---------------------------------------------------------------- collapse

def test_a_collapsed_run_is_named_as_such(tmp_path, capsys):
    argv = [*TINY4, "--n_epoch", "1", "--result_dir", str(tmp_path)]
    # lr 1e-6 leaves the network where it started: near chance
    assert run_in_process("main_GLS_direct_train", argv + ["--lr", "1e-6", "--smooth_rate", "-2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = read_json(os.path.join(only_run(str(tmp_path), "main_GLS_direct_train"), "summary.json"))
    test_labels = load_dataset("digits").test_labels
    chance = 100 * np.bincount(test_labels).max() / len(test_labels)
    assert summary["status"] == "finished" and summary["collapsed"] is True
    assert summary["chance_acc"] == pytest.approx(chance, abs=1e-3)
    assert summary["last_test_acc"] < chance + 0.1 * (100 - chance)
    assert "collapsed" in out[-3] and out[-2].startswith("result: ") and out[-1].startswith("results: ")


def test_a_trained_run_is_not_collapsed(tmp_path):
    argv = [*TINY, "--n_epoch", "4", "--result_dir", str(tmp_path)]
    assert run_in_process("main_warmup", argv) == 0
    summary = read_json(os.path.join(only_run(str(tmp_path), "main_warmup"), "summary.json"))
    assert summary["collapsed"] is False and summary["last_test_acc"] > 19
