"""data/loader.py: exact crops of the zero-padded image, exact mirrors, normalisation,
every index once per epoch, order fixed by (seed, epoch)."""
import numpy as np
import pytest
import torch

from data.cifar import SPECS
from data.loader import DeviceLoader

MEAN, STD = SPECS["cifar10"]["mean"], SPECS["cifar10"]["std"]


def make_images(n=40, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, n)


def denormalize(x):
    m = np.array(MEAN).reshape(1, 3, 1, 1)
    s = np.array(STD).reshape(1, 3, 1, 1)
    return np.rint((x * s + m) * 255).astype(np.int64)


def test_crop_is_the_window_of_the_padded_image():
    images, _ = make_images(8)
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    top = torch.tensor([0, 8, 3, 5, 1, 7, 2, 4])
    left = torch.tensor([8, 0, 6, 2, 4, 1, 3, 5])
    out = DeviceLoader.crop(torch.from_numpy(padded), top, left, 32, 32).numpy()
    for i in range(8):
        assert np.array_equal(out[i], padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32])


def test_training_batches_are_crops_or_mirrored_crops_of_the_originals():
    images, labels = make_images(24)
    loader = DeviceLoader(images, labels, 8, MEAN, STD, "cpu", train=True, pad=4, seed=1)
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4))).astype(np.int64)
    shifts, flips = set(), 0
    for x, y, idx in loader:
        pixels = denormalize(x.numpy())
        for img, i in zip(pixels, idx.numpy()):
            matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                       if np.array_equal(img, (lambda w: w[..., ::-1] if f else w)(
                           padded[i, :, dy:dy + 32, dx:dx + 32]))]
            assert matches, "an augmented image is not a window of its padded original"
            shifts.add(matches[0][:2])
            flips += matches[0][2]
        assert np.array_equal(y.numpy(), labels[idx.numpy()])
    assert len(shifts) > 5 and 0 < flips < 24


def test_normalisation_constants():
    images, labels = make_images(5)
    loader = DeviceLoader(images, labels, 5, MEAN, STD, "cpu", train=False)
    x, _, _ = next(iter(loader))
    expected = (images / 255.0 - np.array(MEAN).reshape(1, 3, 1, 1)) / np.array(STD).reshape(1, 3, 1, 1)
    assert np.allclose(x.numpy(), expected, atol=1e-5)
    assert SPECS["cifar10"]["mean"] == (0.4914, 0.4822, 0.4465)
    assert SPECS["cifar10"]["std"] == (0.2023, 0.1994, 0.2010)
    assert SPECS["cifar100"]["mean"] == (0.5071, 0.4867, 0.4408)
    assert SPECS["cifar100"]["std"] == (0.2675, 0.2565, 0.2761)


def test_every_index_once_per_epoch_and_order_set_by_seed_and_epoch():
    images, labels = make_images(37)
    loader = DeviceLoader(images, labels, 8, MEAN, STD, "cpu", train=True, seed=3)
    assert len(loader) == 5

    def epoch_order(e):
        loader.set_epoch(e)
        return torch.cat([idx for _, _, idx in loader]).numpy()
    first = epoch_order(0)
    assert sorted(first) == list(range(37))
    assert np.array_equal(first, epoch_order(0))
    assert not np.array_equal(first, epoch_order(1))


def test_eval_loader_is_in_order_without_augmentation():
    images, labels = make_images(10)
    loader = DeviceLoader(images, labels, 4, MEAN, STD, "cpu", train=False)
    idx = torch.cat([i for _, _, i in loader]).numpy()
    assert list(idx) == list(range(10))
    x = torch.cat([x for x, _, _ in loader]).numpy()
    assert np.array_equal(denormalize(x), images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_loader_matches_cpu_semantics():
    images, labels = make_images(16)
    loader = DeviceLoader(images, labels, 16, MEAN, STD, "cuda", train=False)
    x, y, _ = next(iter(loader))
    assert x.is_cuda and np.array_equal(denormalize(x.cpu().numpy()), images)


def test_augmented_in_order_loader_for_label_correction():
    """shuffle=False: every sample in train order, each a crop (or mirrored crop) of itself;
    a stream of its own (stream=1) draws other crops than training does for the same seed
    and epoch; a new epoch draws new ones; (seed, epoch, stream) fixes them."""
    images, labels = make_images(24)
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4))).astype(np.int64)

    def epoch_pixels(stream, epoch, shuffle=False):
        loader = DeviceLoader(images, labels, 10, MEAN, STD, "cpu", train=True, seed=3,
                              shuffle=shuffle, stream=stream)
        loader.set_epoch(epoch)
        batches = list(loader)
        idx = torch.cat([b[2] for b in batches])
        return torch.cat([b[0] for b in batches]).numpy(), idx.numpy(), torch.cat([b[1] for b in batches])

    x, idx, y = epoch_pixels(1, 0)
    assert idx.tolist() == list(range(24)) and y.tolist() == labels.tolist()
    pixels = denormalize(x)
    for i in range(24):
        windows = [padded[i, :, t:t + 32, l:l + 32] for t in range(9) for l in range(9)]
        assert any(np.array_equal(pixels[i], w) or np.array_equal(pixels[i], w[:, :, ::-1]) for w in windows)
    train_x, train_idx, _ = epoch_pixels(0, 0, shuffle=True)
    train_in_order = train_x[np.argsort(train_idx)]
    assert not np.allclose(x, train_in_order)            # not the training crops
    assert not np.allclose(x, epoch_pixels(1, 1)[0])     # fresh crops each epoch
    assert np.array_equal(x, epoch_pixels(1, 0)[0])      # and reproducible
