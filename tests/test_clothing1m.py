"""Clothing1M (data/clothing1m.py, models/resnet50.py, noise_clothing1m_train.py): the
annotation formats, the per-epoch balanced subset, the JPEG loader, ResNet-50, and the
scripts end to end on a fake tree of tiny JPEGs."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, InterruptedSLN, parse_flags, read_csv, read_json, run_in_process, real_label_file
from data.clothing1m import (MEAN, STD, BalancedSubset, Clothing1M, JpegFiles, read_annotations,
                             read_image_list)
from errors import UserError
from methods.sln import SLN
from models import build_model
from utils.engine import run

CLASSES = 14
# Noisy train images per class: uneven, as in the real set, so balancing has work to do.
TRAIN_PER_CLASS = [2 + c % 3 for c in range(CLASSES)]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small models, loaded CPU


def write_fake_clothing1m(root, layout):
    """A Clothing1M folder of 20x24 JPEGs: images/<d>/<dd>/<n>.jpg, and annotations in the
    released format (kv files + key lists, in annotations/, with extra kv entries as in the
    real files) or as merged `path label` lists beside images/.
    Returns {'train'|'val'|'test': [(path, label)]}."""
    from PIL import Image

    rng = np.random.default_rng(0)
    splits = {"train": [], "val": [], "test": []}
    counts = {"train": TRAIN_PER_CLASS, "val": [1] * CLASSES, "test": [1] * CLASSES}
    n = 0
    for split, per_class in counts.items():
        for c in range(CLASSES):
            for _ in range(per_class[c]):
                rel = f"images/{n % 3}/{n % 5:02d}/{1000 + n},{n}.jpg"
                os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
                pixels = np.clip(c * 18 + rng.integers(0, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, rel), quality=95)
                splits[split].append((rel, c))
                n += 1

    def write(path, lines):
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))

    if layout == "merged":
        for split, name in (("train", "noisy_train.txt"), ("val", "clean_val.txt"), ("test", "clean_test.txt")):
            write(os.path.join(root, name), [f"{p} {y}" for p, y in splits[split]])
    else:
        ann = os.path.join(root, "annotations")
        os.makedirs(ann, exist_ok=True)
        write(os.path.join(ann, "noisy_label_kv.txt"),
              [f"{p} {y}" for p, y in splits["train"]] + ["images/9/99/unused.jpg 3"])
        write(os.path.join(ann, "clean_label_kv.txt"),
              [f"{p} {y}" for p, y in splits["val"] + splits["test"]] + ["images/9/98/clean_train.jpg 5"])
        write(os.path.join(ann, "noisy_train_key_list.txt"), [p for p, _ in splits["train"]])
        write(os.path.join(ann, "clean_val_key_list.txt"), [p for p, _ in splits["val"]])
        write(os.path.join(ann, "clean_test_key_list.txt"), [p for p, _ in splits["test"]])
    return splits


@pytest.fixture(scope="module")
def released_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clothing1m_released"))
    return root, write_fake_clothing1m(root, "released")


@pytest.fixture(scope="module")
def merged_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clothing1m_merged"))
    return root, write_fake_clothing1m(root, "merged")


# ---------------------------------------------------------------- annotation files

@pytest.mark.parametrize("name,count", [("clean_val.txt", 14_313), ("clean_test.txt", 10_526)])
def test_real_lists_parse(name, count):
    entries = read_image_list(real_label_file("clothing1m-lists", name))
    assert len(entries) == count
    labels = np.array([y for _, y in entries])
    assert labels.min() == 0 and labels.max() == 13 and len(np.unique(labels)) == 14
    assert all(p.startswith("images/") and p.endswith(".jpg") for p, _ in entries)
    assert len({p for p, _ in entries}) == count  # no image twice


def test_both_annotation_formats_read_the_same_splits(released_tree, merged_tree):
    released, merged = read_annotations(released_tree[0]), read_annotations(merged_tree[0])
    assert released == released_tree[1] and merged == merged_tree[1]
    assert [len(released[s]) for s in ("train", "val", "test")] == [sum(TRAIN_PER_CLASS), 14, 14]


def test_bad_list_lines_name_file_and_line(tmp_path):
    path = tmp_path / "clean_val.txt"
    path.write_text("images/0/00/a.jpg 3\nimages/0/00/b.jpg\n")
    with pytest.raises(UserError, match=r"clean_val.txt:2: .* is not `image_path label`"):
        read_image_list(str(path))
    for value in (14, -1, 99):
        path.write_text(f"images/0/00/a.jpg 3\nimages/0/00/b.jpg {value}\n")
        with pytest.raises(UserError, match=rf"clean_val.txt:2: label {value} is outside 0..13"):
            read_image_list(str(path))


def test_a_key_without_label_is_an_error(tmp_path):
    root = str(tmp_path)
    write_fake_clothing1m(root, "released")
    with open(os.path.join(root, "annotations", "clean_val_key_list.txt"), "a") as f:
        f.write("images/7/77/nowhere.jpg\n")
    with pytest.raises(UserError, match="1 keys have no label in .*clean_label_kv.txt.*nowhere.jpg"):
        read_annotations(root)


def test_no_annotations_names_both_formats(tmp_path):
    with pytest.raises(UserError, match="noisy_label_kv.txt.*noisy_train.txt, clean_val.txt, clean_test.txt"):
        read_annotations(str(tmp_path))


def test_missing_images_are_counted_and_the_first_named(tmp_path):
    root = str(tmp_path)
    splits = write_fake_clothing1m(root, "merged")
    gone = [p for p, _ in splits["train"][3:10]]
    for p in gone:
        os.remove(os.path.join(root, p))
    with pytest.raises(UserError) as err:
        Clothing1M(root)
    message = str(err.value)
    assert f"7 of the {sum(TRAIN_PER_CLASS)} train images listed are missing" in message
    assert all(p in message for p in gone[:5]) and gone[5] not in message


def test_an_unreadable_image_is_a_clear_error_from_a_worker(tmp_path):
    root = str(tmp_path)
    splits = write_fake_clothing1m(root, "merged")
    broken = splits["test"][3][0]
    with open(os.path.join(root, broken), "wb") as f:
        f.write(b"not a jpeg")
    data = Clothing1M(root, image_size=16, num_workers=2)
    with pytest.raises(UserError) as err:
        list(data.eval_loader("test", 4, "cpu"))
    message = str(err.value)
    assert message.startswith(os.path.join(root, broken)) and "cannot be read as an image" in message
    assert "Traceback" not in message and "\n" not in message


# ---------------------------------------------------------------- sampling and loading

def test_each_epoch_subset_is_class_balanced_and_fresh():
    labels = np.repeat(np.arange(CLASSES), [50 + 10 * c for c in range(CLASSES)])
    subset = BalancedSubset(labels, 20, seed=3)
    epochs = [subset.indices(e) for e in range(3)]
    for idx in epochs:
        assert np.bincount(labels[idx], minlength=CLASSES).tolist() == [20] * CLASSES
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert len({tuple(idx) for idx in epochs}) == 3
    assert np.array_equal(BalancedSubset(labels, 20, seed=3).indices(1), epochs[1])  # resume
    assert not np.array_equal(BalancedSubset(labels, 20, seed=4).indices(1), epochs[1])
    order, seeds = subset.shuffled(1)
    assert np.array_equal(np.sort(order), epochs[1]) and not np.array_equal(order, epochs[1])
    assert len(np.unique(seeds)) == len(order)
    # A class smaller than num_per_class gives all its members.
    assert len(BalancedSubset(labels, 55, seed=0)) == 50 + 55 * (CLASSES - 1)


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    xs, ys, idxs = zip(*loader)
    return torch.cat(xs), torch.cat(ys), torch.cat(idxs)


def test_train_loader_balances_by_noisy_label_and_is_worker_independent(merged_tree):
    root, splits = merged_tree
    data = Clothing1M(root, image_size=16, num_per_class=2, num_workers=0)
    noisy = torch.as_tensor(data.noisy_train_labels)
    loader = data.train_loader(noisy, 5, "cpu", seed=0)
    assert len(loader) == 6  # 28 images a epoch in batches of 5
    x0, y0, i0 = epoch_batches(loader, 0)
    x1, y1, i1 = epoch_batches(loader, 1)
    assert x0.shape == (28, 3, 16, 16) and x0.dtype == torch.float32
    for y, i in ((y0, i0), (y1, i1)):
        assert torch.equal(y, noisy[i])  # indices address the full noisy list
        assert torch.bincount(y, minlength=CLASSES).tolist() == [2] * CLASSES
    assert set(i0.tolist()) != set(i1.tolist())
    # Same epoch again, and with two worker processes: the same batches, bit for bit.
    workers = Clothing1M(root, image_size=16, num_per_class=2, num_workers=2)
    xw, yw, iw = epoch_batches(workers.train_loader(noisy, 5, "cpu", seed=0), 1)
    assert torch.equal(i1, iw) and torch.equal(x1, xw)
    assert torch.equal(epoch_batches(loader, 1)[0], x1)
    # The label-correction loader: the same epoch's subset, in order, unaugmented.
    train_eval = loader.in_order(8, augment=False)
    assert len(train_eval) == 4
    _, ye, ie = epoch_batches(train_eval, 1)
    assert torch.equal(ie, torch.sort(i1).values) and torch.equal(ye, noisy[ie])


def test_transforms(tmp_path):
    """Test: resize the shorter side to round(s * 256/224), centre crop s (torchvision's
    Resize + CenterCrop). Train: an s x s window of the resized image, mirrored about half
    the time, the same for the same seed."""
    import torchvision.transforms as T

    size = 16
    image = T.functional.to_pil_image(torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8))
    image.save(tmp_path / "a.png")
    files = JpegFiles(str(tmp_path), ["a.png"], size)
    reference = T.Compose([T.Resize(18), T.CenterCrop(size), T.PILToTensor()])(image)
    assert torch.equal(files[(0, None)][0], reference)
    resized = T.functional.pil_to_tensor(T.Resize(18)(image))  # 18 x 24
    windows = [resized[:, top:top + size, left:left + size] for top in range(3) for left in range(9)]
    mirrored = []
    for seed in range(12):
        crop, index = files[(0, seed)]
        assert index == 0 and crop.shape == (3, size, size)
        plain = any(torch.equal(crop, w) for w in windows)
        flipped = any(torch.equal(crop.flip(2), w) for w in windows)
        assert plain or flipped
        mirrored.append(flipped and not plain)
    assert 0 < sum(mirrored) < 12
    assert torch.equal(files[(0, 5)][0], files[(0, 5)][0])


def test_eval_loader_normalises_with_clothing1m_statistics(merged_tree):
    root, splits = merged_tree
    data = Clothing1M(root, image_size=16, num_workers=0)
    x, y, idx = next(iter(data.eval_loader("val", 4, "cpu")))
    assert idx.tolist() == [0, 1, 2, 3] and y.tolist() == [s[1] for s in splits["val"][:4]]
    raw = data.files["val"][(2, None)][0].float() / 255
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(x[2], expected, atol=1e-5)


# ---------------------------------------------------------------- ResNet-50

def test_resnet50_has_a_new_14_way_head():
    model = build_model("resnet50", 14, pretrained=False)
    assert model.fc.in_features == 2048 and model.fc.out_features == 14
    assert sum(p.numel() for p in model.parameters()) == 23_536_718
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 14)


def test_resnet50_loads_imagenet_weights_from_a_file(tmp_path):
    from torchvision.models import resnet50

    imagenet = resnet50(weights=None)  # stands in for the 1000-class ImageNet weights
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model("resnet50", 14, pretrained=True, pretrained_path=str(path))
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[2].bn3.running_var, imagenet.layer4[2].bn3.running_var)
    assert model.fc.out_features == 14
    torch.save({"conv1.weight": imagenet.conv1.weight}, path)
    with pytest.raises(UserError, match="do not fit torchvision's resnet50"):
        build_model("resnet50", 14, pretrained=True, pretrained_path=str(path))


def test_resnet50_offline_without_weights_is_a_clear_error(monkeypatch):
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="resnet50-0676ba61.pth and pass --pretrained_path.*--no_pretrained"):
        build_model("resnet50", 14, pretrained=True)
    with pytest.raises(UserError, match="--width does not apply"):
        build_model("resnet50", 14, width=8, pretrained=False)


# ---------------------------------------------------------------- the scripts end to end

def test_sln_script_trains_on_the_released_layout_with_soft_label_correction(released_tree, tmp_path):
    """Two epochs of 14 images (one a class) at 32x32; label correction from epoch 1."""
    root, splits = released_tree
    results = str(tmp_path / "results")
    code = run_in_process("noise_clothing1m_train", [
        "--datapath", root, "--no_pretrained", "--image_size", "32", "--num_per_class", "1",
        "--epochs", "2", "--batch_size", "14", "--test_batch_size", "14", "--num_workers", "2",
        "--device", "cpu", "--result_dir", results])
    assert code == 0
    (run,) = [os.path.join(results, "noise_clothing1m_train", d)
              for d in os.listdir(os.path.join(results, "noise_clothing1m_train"))]
    assert os.path.basename(run).startswith("clothing1m-real-resnet50-slnmolc-sigma0.2-c1")
    summary = read_json(os.path.join(run, "summary.json"))
    assert summary["status"] == "finished" and summary["actual_noise_rate"] is None
    assert read_json(os.path.join(run, "noise.json")) == {
        "actual_noise_rate": None, "transition_matrix": None, "noise_type": "real", "arrays": [],
        "provenance": {"source": "data set", "dataset": "clothing1m"}}
    rows = read_csv(os.path.join(run, "metrics.csv"))
    assert [float(r["lr"]) for r in rows] == [1e-3, 1e-4]
    for suffix in ("", "_ema"):
        best = max(rows, key=lambda r: float(r[f"val_acc{suffix}"]))
        assert summary[f"best_val_acc{suffix}"] == pytest.approx(float(best[f"val_acc{suffix}"]))
        assert summary[f"test_acc_at_best_val{suffix}"] == pytest.approx(float(best[f"test_acc{suffix}"]))
    # the plain network at the momentum model's best validation epoch (the release's net.pth)
    best_ema = max(rows, key=lambda r: float(r["val_acc_ema"]))
    assert summary["test_acc_noema_at_best_val_ema"] == pytest.approx(float(best_ema["test_acc"]))
    noisy = np.load(os.path.join(run, "noisy_labels.npy"))
    assert noisy.tolist() == [y for _, y in splits["train"]]
    # Epoch 2 corrected the targets of its subset with soft predictions; the rest stay one-hot.
    targets = torch.load(os.path.join(run, "last.pt"), weights_only=True)["method"]["targets"]
    subset = BalancedSubset(noisy, 1, seed=0).indices(1)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(noisy), CLASSES).float()
    rest = np.setdiff1d(np.arange(len(noisy)), subset)
    assert torch.equal(targets[rest], onehot[rest])
    assert torch.allclose(targets[subset].sum(1), torch.ones(len(subset)))
    assert (targets[subset] != onehot[subset]).any(1).sum() >= len(subset) - 1  # all but the max-loss one


def test_gls_script_takes_clothing1m_and_defaults_to_its_real_labels(merged_tree, tmp_path):
    root, _ = merged_tree
    results = str(tmp_path / "results")
    common = ["--dataset", "clothing1m", "--data_root", root, "--model", "resnet18", "--width", "4",
              "--image_size", "16", "--num_per_class", "2", "--n_epoch", "1", "--batch_size", "14",
              "--num_workers", "0", "--device", "cpu", "--result_dir", results]
    assert run_in_process("main_GLS_direct_train", common) == 0
    (run,) = os.listdir(os.path.join(results, "main_GLS_direct_train"))
    summary = read_json(os.path.join(results, "main_GLS_direct_train", run, "summary.json"))
    assert summary["noise_type"] == "real" and summary["status"] == "finished"
    assert {"best_val_acc", "test_acc_at_best_val", "best_test_acc"} <= set(summary)
    with pytest.raises(UserError, match="clothing1m's labels are real noise"):
        run_in_process("main_GLS_direct_train", common + ["--noise_type", "symmetric"])
    with pytest.raises(UserError, match="validation split of its own"):
        run_in_process("main_GLS_direct_train", common + ["--val_fraction", "0.1", "--overwrite"])


def test_resume_on_clothing1m_reproduces_the_uninterrupted_run(merged_tree, tmp_path):
    """Three epochs with label correction from the second; interrupted as the third starts
    and resumed with another worker count: the same subsets, crops, targets and weights."""
    root, _ = merged_tree
    argv = ["--datapath", root, "--model", "resnet18", "--width", "4", "--image_size", "16",
            "--num_per_class", "2", "--epochs", "3", "--batch_size", "7", "--device", "cpu"]

    def start(result_dir, workers, stop=None, resume=False):
        cfg = parse_flags("noise_clothing1m_train", *argv, "--num_workers", str(workers), "--result_dir",
                          str(tmp_path / result_dir), *(["--resume"] if resume else []))
        args = (cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch)
        kwargs = dict(soft=True, carry_targets=False)  # as noise_clothing1m_train.py builds it
        method = InterruptedSLN(*args, stop=stop, **kwargs) if stop else SLN(*args, **kwargs)
        return run(cfg, "noise_clothing1m_train", method)

    assert start("whole", workers=0) == 0
    assert start("parts", workers=0, stop=2) == 130
    assert start("parts", workers=2, resume=True) == 0
    (whole,) = (tmp_path / "whole" / "noise_clothing1m_train").iterdir()
    (parts,) = (tmp_path / "parts" / "noise_clothing1m_train").iterdir()
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]
    assert timeless(read_csv(parts / "metrics.csv")) == timeless(read_csv(whole / "metrics.csv"))
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(parts / "last.pt", weights_only=True)
    assert torch.equal(a["method"]["targets"], b["method"]["targets"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def worker_count(pid):
    """The child processes of `pid` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return len(f.read().split())
    except OSError:
        return 0


def test_scancel_with_dataloader_workers_ends_interrupted_and_resumable(merged_tree, tmp_path):
    """scancel (and Ctrl-C) signal the whole process group, DataLoader workers included: the
    workers ignore it, the run finishes its step, saves, and ends `interrupted` with exit
    143; the same command with --if_exists auto then completes it."""
    root, _ = merged_tree
    argv = [sys.executable, os.path.join(ROOT, "noise_clothing1m_train.py"), "--datapath", root,
            "--no_pretrained", "--model", "resnet18", "--width", "4", "--image_size", "16",
            "--num_per_class", "2", "--epochs", "4", "--batch_size", "7", "--num_workers", "2",
            "--device", "cpu", "--result_dir", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a SLURM job step
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "noise_clothing1m_train").glob("*/metrics.csv"))
        # after the first epoch, while the workers of a loader are alive
        if found and len(read_csv(found[0])) >= 1 and worker_count(proc.pid) >= 2:
            metrics = found[0]
            os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.005)
    out, err = proc.communicate(timeout=120)
    assert metrics is not None, err
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    summary = read_json(metrics.parent / "summary.json")
    assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 4
    again = subprocess.run(argv + ["--if_exists", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"run folder: {metrics.parent} (resumed after epoch" in again.stdout
    assert read_json(metrics.parent / "summary.json")["status"] == "finished"
    assert len(read_csv(metrics)) == 4
