"""CIFAR-N human labels (data/cifarn.py): the real files' rates, safe loading, the
download path, the synthetic twin, and training on human labels end to end."""
import os
import time

import numpy as np
import pytest
import torch

from conftest import parse_flags, read_json, run_cli, run_in_process, real_label_file, write_fake_cifar
from data import cifarn
from data.cifarn import load_human_labels, read_label_file
from data.noise import actual_noise_rate, transition_matrix, twin_labels
from errors import UserError

# Counted on the released label files: the fraction of labels that differ from clean_label.
MEASURED = {"aggre": 0.0901, "rand1": 0.1723, "rand2": 0.1812, "rand3": 0.1764, "worst": 0.4021,
            "clean": 0.0}
MEASURED_100 = {"noisy100": 0.4020, "clean100": 0.0}
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small models, loaded CPU


def cifar10n():
    return real_label_file("cifar-n", "CIFAR-10_human.pt")


def cifar100n():
    return real_label_file("cifar-n", "CIFAR-100_human.pt")


def write_label_file(path, **arrays):
    """A label file as CIFAR-N ships it: torch.save of a dict of numpy int64 arrays."""
    torch.save({k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()}, path)
    return str(path)


# ---------------------------------------------------------------- the real files

@pytest.mark.parametrize("noise_type,rate", MEASURED.items())
def test_cifar10n_rates_equal_the_measured_figures(noise_type, rate):
    noisy, clean = load_human_labels(cifar10n(), noise_type)
    assert noisy.dtype == clean.dtype == np.int64 and noisy.shape == clean.shape == (50_000,)
    assert actual_noise_rate(clean, noisy) == pytest.approx(rate, abs=5e-5)
    assert np.bincount(clean).tolist() == [5000] * 10  # CIFAR-10's balanced train set


@pytest.mark.parametrize("noise_type,rate", MEASURED_100.items())
def test_cifar100n_rates_equal_the_measured_figures(noise_type, rate):
    noisy, clean = load_human_labels(cifar100n(), noise_type)
    assert actual_noise_rate(clean, noisy) == pytest.approx(rate, abs=5e-5)
    assert np.bincount(clean).tolist() == [500] * 100


def test_a_cifar100_type_on_the_cifar10_file_names_the_other_file():
    with pytest.raises(UserError, match="noisy_label.*CIFAR-100_human.pt"):
        load_human_labels(cifar10n(), "noisy100")


def test_loading_never_runs_code_from_the_file(tmp_path):
    """Weights-only unpickling: a file whose pickle calls a function is refused, not run."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    torch.save({"clean_label": np.zeros(3, np.int64), "worse_label": Payload()}, path)
    with pytest.raises(UserError, match="cannot be read as a CIFAR-N label file"):
        read_label_file(str(path))
    assert not marker.exists()


# ---------------------------------------------------------------- download

def test_missing_file_is_downloaded_from_the_repository(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, root, filename, md5):
        calls.append((url, root, filename, md5))
        write_label_file(os.path.join(root, filename), clean_label=[1, 2], aggre_label=[1, 3])

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    labels, path = cifarn.cifarn_noisy_labels("cifar10", np.array([1, 2]), "aggre", None, str(tmp_path))
    assert labels.tolist() == [1, 3] and path == os.path.join(tmp_path, "CIFAR-10_human.pt")
    assert calls == [("https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/main/data/CIFAR-10_human.pt",
                      str(tmp_path), "CIFAR-10_human.pt", "96644db5574813cae939af5f7f2a0aec")]


def test_offline_the_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    target = os.path.join(tmp_path, "CIFAR-100_human.pt")
    with pytest.raises(UserError) as err:
        cifarn.cifarn_noisy_labels("cifar100", np.zeros(5, np.int64), "noisy100", None, str(tmp_path))
    message = str(err.value)
    assert target in message and "UCSC-REAL/cifar-10-100n" in message and "--noise_path" in message


# ---------------------------------------------------------------- checks against the data set

def test_a_type_of_the_other_cifar_is_an_error():
    with pytest.raises(UserError, match="worst is a cifar10 label set.*on cifar100 use"):
        parse_flags("main_warmup", "--noise_type", "worst", "--dataset", "cifar100")
    with pytest.raises(UserError, match="noisy100_twin is a cifar100 label set.*on cifar10 use"):
        parse_flags("noise_cifar_train", "--noise_mode", "noisy100_twin")
    with pytest.raises(UserError, match="use --dataset cifar10"):
        parse_flags("train", "--method", "gls", "--noise_type", "aggre", "--dataset", "digits")


def test_mismatched_label_file_exits_2_without_traceback(tmp_path):
    """The file's clean labels differ from the CIFAR train labels in 3 places."""
    _, labels = write_fake_cifar(str(tmp_path), n_train=100, n_test=10)
    clean = labels.copy()
    clean[[5, 17, 60]] = (clean[[5, 17, 60]] + 1) % 10
    path = write_label_file(tmp_path / "CIFAR-10_human.pt", clean_label=clean, worse_label=clean)
    done = run_cli("main_warmup.py", "--data_root", tmp_path, "--noise_type", "worst",
                   "--noise_path", path, "--device", "cpu", "--result_dir", tmp_path / "results")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "clean_label does not equal the cifar10 train labels" in done.stderr
    assert "3 differing labels" in done.stderr
    assert not os.path.exists(tmp_path / "results")


def test_label_file_of_another_length_is_an_error(tmp_path):
    _, labels = write_fake_cifar(str(tmp_path), n_train=100, n_test=10)
    path = write_label_file(tmp_path / "short.pt", clean_label=labels[:99], worse_label=labels[:99])
    with pytest.raises(UserError, match="99 vs 100 labels"):
        cifarn.cifarn_noisy_labels("cifar10", labels, "worst", path, str(tmp_path))


# ---------------------------------------------------------------- the synthetic twin

def test_twin_reproduces_the_per_class_flip_rates_of_worst():
    noisy, clean = load_human_labels(cifar10n(), "worst")
    human, path = cifarn.cifarn_noisy_labels("cifar10", clean, "worst_twin", cifar10n(), ".")
    assert np.array_equal(human, noisy) and path == cifar10n()  # the twin copies the worst labels
    twin = twin_labels(clean, human, 10, seed=0)
    T_human, T_twin = transition_matrix(clean, noisy, 10), transition_matrix(clean, twin, 10)
    # 5,000 samples a class: a rate's standard error is at most 0.007.
    assert np.abs(np.diag(T_twin) - np.diag(T_human)).max() < 0.03
    assert np.abs(T_twin - T_human).max() < 0.03
    assert actual_noise_rate(clean, twin) == pytest.approx(0.4021, abs=0.01)
    # Same rates, other samples: the human set's instance dependence is gone.
    assert np.mean(twin != noisy) > 0.3


def test_twin_of_cifar100n_and_its_seed():
    noisy, clean = load_human_labels(cifar100n(), "noisy100")
    twin0 = twin_labels(clean, noisy, 100, seed=0)
    again = twin_labels(clean, noisy, 100, seed=0)
    twin1 = twin_labels(clean, noisy, 100, seed=1)
    assert np.array_equal(twin0, again) and not np.array_equal(twin0, twin1)
    assert actual_noise_rate(clean, twin0) == pytest.approx(0.4020, abs=0.01)
    flip_human = 1 - np.diag(transition_matrix(clean, noisy, 100))
    flip_twin = 1 - np.diag(transition_matrix(clean, twin0, 100))
    assert np.abs(flip_twin - flip_human).max() < 0.1  # 500 a class: standard error <= 0.023
    assert np.abs(flip_twin - flip_human).mean() < 0.02


def test_twin_draws_only_transitions_the_human_set_has():
    clean = np.repeat(np.arange(3), 1000)
    human = clean.copy()
    human[:300] = 2      # class 0: 30% -> 2
    human[1000:1100] = 0  # class 1: 10% -> 0
    twin = twin_labels(clean, human, 3, seed=4)
    T = transition_matrix(clean, twin, 3)
    assert T[0, 1] == 0 and T[1, 2] == 0 and np.all(T[2] == [0, 0, 1])
    assert T[0, 2] == pytest.approx(0.3, abs=0.05) and T[1, 0] == pytest.approx(0.1, abs=0.04)


# ---------------------------------------------------------------- end to end

def test_fake_cifar10_trains_end_to_end_on_worst_labels(tmp_path):
    """50,000 random images in the real pickle format labelled with the file's clean_label;
    one epoch of a width-1 PreAct ResNet-18 on the worst human labels. The slowest test
    here: 96 s on a loaded 2-core CPU (50 steps of 1,000 32x32 images, ~1.1 s each)."""
    worse, clean = load_human_labels(cifar10n(), "worst")
    write_fake_cifar(str(tmp_path), n_train=50_000, n_test=20, labels=clean)
    results = tmp_path / "results"
    started = time.time()
    code = run_in_process("main_warmup", [
        "--data_root", str(tmp_path), "--noise_type", "worst", "--noise_path", cifar10n(),
        "--n_epoch", "1", "--model", "preact_resnet18", "--width", "1", "--batch_size", "1000",
        "--device", "cpu", "--result_dir", str(results)])
    print(f"one epoch on 50,000 images: {time.time() - started:.1f}s")
    assert code == 0
    (run,) = [os.path.join(results, "main_warmup", d) for d in os.listdir(results / "main_warmup")]
    assert os.path.basename(run).startswith("cifar10-worst")
    assert np.array_equal(np.load(os.path.join(run, "noisy_labels.npy")), worse)
    summary = read_json(os.path.join(run, "summary.json"))
    assert summary["status"] == "finished" and summary["epochs_completed"] == 1
    assert summary["actual_noise_rate"] == pytest.approx(0.40208)
    T = np.array(read_json(os.path.join(run, "noise.json"))["transition_matrix"])
    assert np.allclose(T, transition_matrix(clean, worse, 10))


# ---------------------------------------------------------------- every label in range

@pytest.mark.parametrize("key,value,noise_type", [
    ("worse_label", 10, "worst"), ("worse_label", -1, "worst"), ("clean_label", 10, "aggre"),
    ("worse_label", -1, "worst_twin"), ("aggre_label", 255, "aggre_twin")])
def test_a_label_out_of_range_names_file_key_row_and_value_before_anything_is_written(
        tmp_path, key, value, noise_type):
    root, results = tmp_path / "data", tmp_path / "results"
    _, clean = write_fake_cifar(str(root), "cifar10", n_train=40, n_test=10)
    arrays = {k: np.array(clean) for k in ("clean_label", "aggre_label", "worse_label")}
    arrays[key][17] = value
    path = write_label_file(root / "CIFAR-10_human.pt", **arrays)
    with pytest.raises(UserError) as err:
        run_in_process("main_warmup", ["--dataset", "cifar10", "--data_root", str(root), "--noise_type",
                                       noise_type, "--model", "resnet18", "--width", "4", "--n_epoch", "1",
                                       "--device", "cpu", "--result_dir", str(results)])
    assert f"{path}: key {key}, index 17 holds {value}, outside 0..9" in str(err.value)
    assert not results.exists()
