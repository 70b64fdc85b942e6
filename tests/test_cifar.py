"""data/cifar.py on fake folders written in the exact python-version format."""
import os
import pickle

import numpy as np
import pytest

from conftest import run_cli, write_fake_cifar
from data import load_dataset
from data.download import no_downloads
from data.cifar import SPECS, load_cifar
from errors import UserError


@pytest.mark.parametrize("name,k", [("cifar10", 10), ("cifar100", 100)])
def test_reads_fake_archive_layout(tmp_path, name, k):
    images, labels = write_fake_cifar(tmp_path, name, n_train=60, n_test=20)
    tr_x, tr_y, te_x, te_y = load_cifar(name, str(tmp_path), download=False)
    assert tr_x.shape == (60, 3, 32, 32) and tr_x.dtype == np.uint8
    assert te_x.shape == (20, 3, 32, 32)
    # Train order is data_batch_1..5 concatenated; pixels are channel-major (R, G, B planes).
    assert np.array_equal(tr_x, images) and np.array_equal(tr_y, labels)
    with no_downloads():
        data = load_dataset(name, str(tmp_path))
    assert data.num_classes == k and data.in_channels == 3


def test_channel_major_layout_matches_the_published_format(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][0]
    tr_x = load_cifar("cifar10", str(tmp_path), download=False)[0]
    # First 1024 bytes are the red plane row by row, then green, then blue.
    assert tr_x[0, 0, 0, 5] == raw[5]
    assert tr_x[0, 1, 2, 3] == raw[1024 + 2 * 32 + 3]
    assert tr_x[0, 2, 31, 31] == raw[3071]


def test_root_may_be_the_extracted_folder_itself(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    tr_x = load_cifar("cifar10", str(tmp_path / "cifar-10-batches-py"), download=False)[0]
    assert len(tr_x) == 10


def test_missing_folder_offline_names_path_archive_and_digits(tmp_path):
    with pytest.raises(UserError) as err:
        load_cifar("cifar10", str(tmp_path), download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg and "--dataset digits" in msg


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match="download failed: network unreachable"):
        load_cifar("cifar100", str(tmp_path), download=True)


@pytest.mark.parametrize("damage", ["truncate", "missing_batch", "missing_meta", "wrong_shape"])
def test_damaged_folder_is_a_clear_error(tmp_path, damage):
    write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=5)
    folder = tmp_path / "cifar-10-batches-py"
    if damage == "truncate":
        data = (folder / "data_batch_3").read_bytes()
        (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
    elif damage == "missing_batch":
        os.remove(folder / "data_batch_5")
    elif damage == "missing_meta":
        os.remove(folder / "batches.meta")
    else:
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({"data": np.zeros((5, 100), np.uint8), "labels": [0] * 5}, f)
    with pytest.raises(UserError, match="extract the archive again"):
        load_cifar("cifar10", str(tmp_path), download=False)


def test_damaged_folder_from_the_command_line_exits_2_without_traceback(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=5)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    out = run_cli("main_warmup.py", "--dataset", "cifar10", "--data_root", tmp_path,
                  "--result_dir", tmp_path / "results", "--device", "cpu")
    assert out.returncode == 2
    assert "data_batch_2 is missing" in out.stderr and "Traceback" not in out.stderr


def test_cifar_trains_end_to_end(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=64, n_test=32)
    out = run_cli("main_GLS_direct_train.py", "--dataset", "cifar10", "--data_root", tmp_path,
                  "--model", "resnet18", "--width", "4", "--n_epoch", "1", "--device", "cpu",
                  "--result_dir", tmp_path / "results", "--smooth_rate", "-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("results: ")


@pytest.mark.parametrize("name,value", [("cifar10", 10), ("cifar10", -1), ("cifar100", 100)])
def test_a_label_out_of_range_names_file_key_row_and_value(tmp_path, name, value):
    write_fake_cifar(tmp_path, name, n_train=30, n_test=10)
    folder, label_key = (("cifar-10-batches-py", "labels") if name == "cifar10"
                         else ("cifar-100-python", "fine_labels"))
    batch = tmp_path / folder / ("data_batch_2" if name == "cifar10" else "train")
    with open(batch, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry[label_key][3] = value
    with open(batch, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(UserError, match=rf"{batch}: key '{label_key}', row 3 holds {value}, outside 0\.\."):
        load_cifar(name, str(tmp_path), download=False)


def test_an_archive_with_a_bad_md5_is_named_as_such(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the released archive")
    with pytest.raises(UserError) as err:
        load_cifar("cifar10", str(tmp_path))
    message = str(err.value)
    assert "cifar-10-python.tar.gz is present but fails its md5 check" in message
    assert SPECS["cifar10"]["md5"] in message and "download failed" not in message
