"""The noise of the SLN experiments (data/noise.py, the noise types' make, data/idn.py):
label files (--noise_file, the released CSVs), IDN, part-dependent instance noise, open-set."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import noise_cifar_train
from conftest import TINY, parse_flags, read_json, real_label_file, write_fake_cifar
from data import load_dataset, prepare_data
from data.idn import average_probabilities, load_clean_checkpoints
from data.idn import main as idn_main
from data.noise import (ASYM_CIFAR10, idn_noisy_labels, instance_flip_probabilities,
                        load_noise_file, make_instance_noise, noisy_labels_from_file,
                        replace_with_open_set, save_noise_file)
from errors import UserError
from main_warmup import main as warmup_main


pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- label files

RELEASED = [("CIFAR10", "sym", 0.4), ("CIFAR10", "asym", 0.2), ("CIFAR10", "dependent", 0.4),
            ("CIFAR100", "sym", 0.4), ("CIFAR100", "asym", 0.4), ("CIFAR100", "dependent", 0.4)]


@pytest.mark.parametrize("folder, mode, rate", RELEASED)
def test_released_label_files_load(folder, mode, rate):
    """All six files of the SLN release: 50,000 rows, noise 0.4 (CIFAR-10 asym flips 5 of
    10 classes with prob. 0.4, so 0.2); IDN flips exactly round(0.4 * N) labels."""
    clean, noisy = load_noise_file(real_label_file("sln-noisy-labels", folder, f"{mode}0.4.csv"))
    k = 10 if folder == "CIFAR10" else 100
    assert len(clean) == len(noisy) == 50_000
    assert clean.min() == noisy.min() == 0 and clean.max() == noisy.max() == k - 1
    assert np.mean(clean != noisy) == pytest.approx(rate, abs=0.005)
    assert np.bincount(clean, minlength=k).tolist() == [50_000 // k] * k
    if mode == "dependent":
        assert np.sum(clean != noisy) == 20_000
    flipped = clean != noisy
    if mode == "asym" and k == 10:  # the release's asym is ours: 9->1, 2->0, 4->7, 3<->5
        assert all(ASYM_CIFAR10[c] == n for c, n in zip(clean[flipped], noisy[flipped]))
    if mode == "asym" and k == 100:
        assert np.array_equal(noisy[flipped], (clean[flipped] + 1) % 100)


def test_load_noise_file_reads_lf_and_crlf_alike(tmp_path):
    rows = [(3, 3), (0, 7), (9, 9)]
    for name, end in (("lf.csv", "\n"), ("crlf.csv", "\r\n")):
        (tmp_path / name).write_bytes(("label,label_noisy" + end + end.join(f"{a},{b}" for a, b in rows)
                                       + end).encode())
        clean, noisy = load_noise_file(str(tmp_path / name))
        assert clean.tolist() == [3, 0, 9] and noisy.tolist() == [3, 7, 9]
        assert clean.dtype == noisy.dtype == np.int64
    save_noise_file(str(tmp_path / "ours.csv"), [3, 0, 9], [3, 7, 9])
    assert [a.tolist() for a in load_noise_file(str(tmp_path / "ours.csv"))] == [[3, 0, 9], [3, 7, 9]]


@pytest.mark.parametrize("content, message", [
    ("clean,noisy\n1,2\n", "header"),
    ("label,label_noisy\n1,2\n3\n", "two integers"),
    ("label,label_noisy\n1,x\n", "two integers")])
def test_malformed_label_files_are_user_errors(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        load_noise_file(str(tmp_path / "bad.csv"))
    with pytest.raises(UserError, match="cannot be read"):
        load_noise_file(str(tmp_path / "missing.csv"))


def test_label_file_must_belong_to_the_training_set(tmp_path):
    labels = np.array([0, 1, 2, 3])
    path = str(tmp_path / "f.csv")
    save_noise_file(path, labels, [1, 1, 2, 3])
    assert noisy_labels_from_file(path, labels, 10).tolist() == [1, 1, 2, 3]
    with pytest.raises(UserError, match="4 rows but the training set has 5"):
        noisy_labels_from_file(path, np.array([0, 1, 2, 3, 4]), 10)
    with pytest.raises(UserError, match="clean column differs .* in 1 rows .*row 2"):
        noisy_labels_from_file(path, np.array([0, 1, 5, 3]), 10)
    save_noise_file(path, labels, [1, 1, 2, 12])
    with pytest.raises(UserError, match=r"outside 0\.\.9"):
        noisy_labels_from_file(path, labels, 10)


def digits_noise_file(path, rate=0.25, seed=0):
    """A label file for digits: `rate` of the labels moved by +1."""
    clean = load_dataset("digits").train_labels
    noisy = clean.copy()
    flip = np.random.default_rng(seed).random(len(clean)) < rate
    noisy[flip] = (noisy[flip] + 1) % 10
    save_noise_file(path, clean, noisy)
    return noisy


@pytest.mark.parametrize("script, noise_flag", [("main_warmup", "--noise_type"), ("noise_cifar_train", "--noise_mode")])
def test_noise_file_flag_in_every_script(tmp_path, script, noise_flag):
    expected = digits_noise_file(str(tmp_path / "labels.csv"))
    for noise_type in ("dependent", "sym"):  # the file wins over any label noise type
        cfg = parse_flags(script, "--dataset", "digits", noise_flag, noise_type, "--noise_file",
                          str(tmp_path / "labels.csv"))
        assert np.array_equal(prepare_data(cfg)[1], expected)


def test_dependent_noise_finds_the_released_layout_or_says_how_to_make_it(tmp_path):
    cfg = parse_flags("noise_cifar_train", "--dataset", "digits", "--datapath", str(tmp_path), "--noise_rate", "0.25")
    with pytest.raises(UserError, match="python3 -m data.idn") as error:
        prepare_data(cfg)
    assert os.path.join(str(tmp_path), "label_noisy", "dependent0.25.csv") in str(error.value)
    os.makedirs(tmp_path / "label_noisy")
    expected = digits_noise_file(str(tmp_path / "label_noisy" / "dependent0.25.csv"))
    assert np.array_equal(prepare_data(cfg)[1], expected)


@pytest.mark.parametrize("name", ["sym", "symmetric", "pairflip", "asym", "instance", "clean"])
def test_every_label_noise_name_works_in_both_parsers(name):
    common = ["--dataset", "digits"] + ([] if name == "clean" else ["--noise_rate", "0.3"])  # clean takes no rate
    gls = parse_flags("main_warmup", *common, "--noise_type", name)
    sln = parse_flags("noise_cifar_train", *common, "--noise_mode", name)
    gls_labels, sln_labels = prepare_data(gls)[1], prepare_data(sln)[1]
    assert np.array_equal(gls_labels, sln_labels)
    clean = load_dataset("digits").train_labels
    expected = {"clean": 0.0, "asym": 0.15}.get(name, 0.3)  # asym flips 5 of the 10 classes
    assert np.mean(gls_labels != clean) == pytest.approx(expected, abs=0.05)


# ---------------------------------------------------------------- IDN

def test_idn_flips_exactly_the_most_confident_to_their_most_probable_wrong_class():
    rng = np.random.default_rng(0)
    n, k, rate = 203, 5, 0.3
    clean = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    noisy = idn_noisy_labels(probs, clean, rate)
    # Independently: loop over samples, sort by the wrong-class probability.
    best = []
    for i in range(n):
        wrong = [(probs[i, c], c) for c in range(k) if c != clean[i]]
        best.append(max(wrong))
    ranked = sorted(range(n), key=lambda i: -best[i][0])
    count = round(rate * n)
    assert np.sum(noisy != clean) == count == 61
    for rank, i in enumerate(ranked):
        assert noisy[i] == (best[i][1] if rank < count else clean[i])


def test_idn_command_from_clean_checkpoints(tmp_path):
    """main_warmup on clean digits, then data.idn over its best and last checkpoints: the
    CSV flips round(0.3 * 1437) labels, from the average of the two networks' softmax."""
    assert warmup_main([*TINY, "--noise_type", "clean", "--n_epoch", "2", "--lr", "0.05",
                        "--result_dir", str(tmp_path)]) == 0
    (run,) = (tmp_path / "main_warmup").iterdir()
    paths = [str(run / "best.pt"), str(run / "last.pt")]
    out = str(tmp_path / "idn" / "dependent0.3.csv")
    assert idn_main(["--ckpt", *paths, "--noise_rate", "0.3", "--out", out, "--device", "cpu"]) == 0
    clean, noisy = load_noise_file(out)
    data = load_dataset("digits")
    assert np.array_equal(clean, data.train_labels)
    assert np.sum(clean != noisy) == round(0.3 * 1437) == 431

    # The averaged probabilities, computed here without the engine's loader.
    expected = sum(softmax_of_train_set(torch.load(path, weights_only=True)["model"], data)
                   for path in paths) / 2
    probs = average_probabilities(load_clean_checkpoints(paths), data, torch.device("cpu"))
    assert np.allclose(probs, expected, atol=1e-6)
    assert np.array_equal(noisy, idn_noisy_labels(probs, clean, 0.3))


def softmax_of_train_set(state_dict, data):
    """The softmax of a ResNet-18 width 8 on digits' unaugmented training images, computed
    here without the engine's loader (float64, (N, 10))."""
    from models import build_model
    x = (torch.as_tensor(data.train_images).float() / 255 - data.mean[0]) / data.std[0]
    model = build_model("resnet18", 10, 1, 8)
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return F.softmax(model.eval()(x).double(), dim=1).numpy()


def test_recorded_train_probs_average_every_epoch_and_make_the_idn_labels(tmp_path, monkeypatch):
    """--record_train_probs: train_probs.npy is the mean over the 3 epochs of the softmax of
    the network as each epoch ended (weights captured here as the engine saves them), and
    data.idn --run makes the IDN labels of that mean."""
    import utils.engine
    weights = []
    save_epoch = utils.engine.save_epoch

    def capture(run, folder):
        weights.append({k: v.clone() for k, v in run.model.state_dict().items()})
        return save_epoch(run, folder)

    monkeypatch.setattr(utils.engine, "save_epoch", capture)
    assert warmup_main([*TINY, "--noise_type", "clean", "--n_epoch", "3", "--lr", "0.05",
                        "--record_train_probs", "--result_dir", str(tmp_path)]) == 0
    (run,) = (tmp_path / "main_warmup").iterdir()
    data = load_dataset("digits")
    assert len(weights) == 3
    expected = sum(softmax_of_train_set(w, data) for w in weights) / 3
    recorded = np.load(run / "train_probs.npy")
    assert recorded.shape == (1437, 10) and np.allclose(recorded, expected, atol=1e-6)
    # The epochs' networks differ, so the mean is not any one epoch's softmax.
    assert not np.allclose(recorded, softmax_of_train_set(weights[-1], data), atol=1e-3)

    out = str(tmp_path / "dependent0.25.csv")
    assert idn_main(["--run", str(run), "--noise_rate", "0.25", "--out", out]) == 0
    clean, noisy = load_noise_file(out)
    assert np.array_equal(clean, data.train_labels)
    assert np.array_equal(noisy, idn_noisy_labels(recorded, clean, 0.25))
    assert np.sum(clean != noisy) == round(0.25 * 1437)


def test_idn_run_folders_are_checked(tmp_path):
    """A folder without a recording, a noisy-label run and a recording of the wrong shape
    are refused, each naming the fix."""
    assert warmup_main([*TINY, "--noise_type", "clean", "--n_epoch", "1",
                        "--result_dir", str(tmp_path)]) == 0
    (run,) = (tmp_path / "main_warmup").iterdir()
    out = ["--noise_rate", "0.2", "--out", str(tmp_path / "x.csv")]
    with pytest.raises(UserError, match="--record_train_probs"):
        idn_main(["--run", str(run), *out])
    with pytest.raises(UserError, match="no config.json"):
        idn_main(["--run", str(tmp_path), *out])
    np.save(run / "train_probs.npy", np.full((100, 10), 0.1))
    with pytest.raises(UserError, match=r"shape \(100, 10\), not \(1437, 10\)"):
        idn_main(["--run", str(run), *out])
    config = read_json(run / "config.json")
    (run / "config.json").write_text(json.dumps({**config, "noise_type": "symmetric"}))
    with pytest.raises(UserError, match="clean labels"):
        idn_main(["--run", str(run), *out])
    assert not os.path.exists(tmp_path / "x.csv")


def test_idn_refuses_a_network_trained_on_noisy_labels(tmp_path):
    ckpt = {"model": {}, "config": {"dataset": "digits", "model": "resnet18", "noise_type": "symmetric"}}
    torch.save(ckpt, tmp_path / "noisy.pt")
    with pytest.raises(UserError, match="clean labels"):
        load_clean_checkpoints([str(tmp_path / "noisy.pt")])


# ---------------------------------------------------------------- part-dependent instance noise

def test_instance_flip_probabilities_match_the_published_per_sample_loop():
    """The loop of Xia et al.'s code: A = x W[y]; A[y] = -inf; A = f * softmax(A); A[y] += 1 - f."""
    rng = np.random.default_rng(1)
    features, flip_rates = rng.normal(size=(6, 12)), rng.uniform(0.2, 0.6, 6)
    projection, label = rng.normal(size=(12, 4)), 2
    probs = instance_flip_probabilities(features, label, flip_rates, projection)
    for i in range(6):
        a = torch.tensor(features[i])[None].mm(torch.tensor(projection)).squeeze(0)
        a[label] = -float("inf")
        a = flip_rates[i] * F.softmax(a, dim=0)
        a[label] += 1 - flip_rates[i]
        assert np.allclose(probs[i], a.numpy())
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_instance_noise_is_seeded_instance_dependent_and_near_the_rate():
    data = load_dataset("digits")
    make = lambda seed: make_instance_noise(data.train_images, data.train_labels, 0.4, 10,
                                            data.mean, data.std, seed)
    noisy = make(0)
    assert np.array_equal(noisy, make(0)) and not np.array_equal(noisy, make(1))
    # Flip rates ~ truncated N(0.4, 0.1): 1437 samples put the actual rate within 0.04.
    assert np.mean(noisy != data.train_labels) == pytest.approx(0.4, abs=0.04)
    assert noisy.min() >= 0 and noisy.max() <= 9
    # Not class-conditional: samples of one class flip to several classes, by their image.
    targets = [len(set(noisy[(data.train_labels == c) & (noisy != c)])) for c in range(10)]
    assert max(targets) >= 3


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.05, 0.1, 0.3])
def test_instance_noise_near_zero_follows_the_truncated_normal(rate):
    """At rate 0 no label changes; just above 0 the truncation at 0 lifts the mean flip rate
    above r: the actual rate follows the mean of N(r, 0.1) truncated to [0, 1]."""
    from scipy.stats import truncnorm

    data = load_dataset("digits")
    noisy = make_instance_noise(data.train_images, data.train_labels, rate, 10, data.mean, data.std, 0)
    actual = np.mean(noisy != data.train_labels)
    if rate == 0:
        assert actual == 0.0
        return
    expected = truncnorm(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1).mean()
    sd = np.sqrt(expected * (1 - expected) / len(noisy))
    assert actual == pytest.approx(expected, abs=4 * sd)
    if rate <= 0.05:
        assert actual > rate + 0.02  # the lift the README describes


# ---------------------------------------------------------------- open-set

def openset_cfg(root, dataset="cifar10", rate=0.3, seed=0):
    return SimpleNamespace(dataset=dataset, data_root=str(root), noise_type="openset",
                           noise_rate=rate, noise_seed=seed, noise_file=None, noise_source="generate")


@pytest.mark.parametrize("layout", ["sln", "gls"])
def test_openset_replaces_exactly_round_rN_images_by_cifar100_images(tmp_path, layout):
    """SLN layout: <root>/CIFAR10 and <root>/CIFAR100; GLS layout: both in one --data_root."""
    cifar10_root = tmp_path / "CIFAR10" if layout == "sln" else tmp_path
    cifar100_root = tmp_path / "CIFAR100" if layout == "sln" else tmp_path
    original, clean = write_fake_cifar(str(cifar10_root), "cifar10", n_train=101, n_test=10, seed=1)
    open_images, _ = write_fake_cifar(str(cifar100_root), "cifar100", n_train=150, n_test=10, seed=2)
    data, noisy, _, _ = prepare_data(openset_cfg(cifar10_root))
    changed = np.flatnonzero((data.train_images != original).any(axis=(1, 2, 3)))
    assert len(changed) == round(0.3 * 101) == 30
    pool = {img.tobytes() for img in open_images}
    assert all(data.train_images[i].tobytes() in pool for i in changed)
    assert len({data.train_images[i].tobytes() for i in changed}) == 30  # distinct images
    assert np.array_equal(noisy, clean) and np.array_equal(data.train_labels, clean)
    assert np.array_equal(data.noise_arrays["open_set_index"], changed)
    again, _, _, _ = prepare_data(openset_cfg(cifar10_root))
    assert np.array_equal(again.train_images, data.train_images)  # same seed, same choice
    other, _, _, _ = prepare_data(openset_cfg(cifar10_root, seed=1))
    assert not np.array_equal(other.noise_arrays["open_set_index"], changed)


def test_replace_with_open_set_keeps_the_rest():
    train = np.zeros((10, 3, 2, 2), dtype=np.uint8)
    pool = np.arange(1, 8, dtype=np.uint8)[:, None, None, None].repeat(3, 1).repeat(2, 2).repeat(2, 3)
    images, replaced, sources = replace_with_open_set(train, pool, 0.4, seed=3)
    assert len(replaced) == 4 and len(set(sources)) == 4
    assert np.array_equal(images[replaced], pool[sources])
    assert not images[np.setdiff1d(np.arange(10), replaced)].any()
    assert not train.any()  # the input is left alone


def test_openset_errors(tmp_path):
    write_fake_cifar(str(tmp_path / "CIFAR10"), "cifar10", n_train=20, n_test=10)
    with pytest.raises(UserError, match="from CIFAR-100, not found in .*CIFAR100"):
        prepare_data(openset_cfg(tmp_path / "CIFAR10"))
    # the flag checks, made before anything loads
    with pytest.raises(UserError, match="defined for cifar10"):
        parse_flags("noise_cifar_train", "--dataset", "digits", "--noise_mode", "openset")
    (tmp_path / "x.csv").write_text("label,label_noisy\n")
    with pytest.raises(UserError, match="--noise_file"):
        parse_flags("noise_cifar_train", "--noise_mode", "openset", "--noise_file", str(tmp_path / "x.csv"))


def test_openset_run_saves_which_images_were_replaced(tmp_path):
    write_fake_cifar(str(tmp_path / "CIFAR10"), "cifar10", n_train=60, n_test=20, seed=1)
    write_fake_cifar(str(tmp_path / "CIFAR100"), "cifar100", n_train=60, n_test=20, seed=2)
    assert noise_cifar_train.main([
        "--noise_mode", "openset", "--noise_rate", "0.5", "--datapath", str(tmp_path / "CIFAR10"),
        "--epochs", "1", "--model", "resnet18", "--width", "4", "--device", "cpu",
        "--result_dir", str(tmp_path / "results")]) == 0
    (run,) = (tmp_path / "results" / "noise_cifar_train").iterdir()
    assert len(np.load(run / "open_set_index.npy")) == 30
    # Labels are kept, images replaced: the replaced fraction is the actual noise.
    assert read_json(run / "noise.json")["open_set_fraction"] == pytest.approx(30 / 60)
    assert read_json(run / "summary.json")["actual_noise_rate"] == pytest.approx(30 / 60)
    assert read_json(run / "summary.json")["status"] == "finished"
