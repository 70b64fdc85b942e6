"""scikit-learn's digits: 1,797 real 8x8 handwritten digits, the offline data set.

Pixel values 0..16 are scaled to uint8 0..255 so the data takes the same path as
CIFAR. One fixed, seeded, stratified split: 1,437 train / 360 test images.
"""
import numpy as np

from .base import DataSet, DatasetSpec

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_split():
    """Return (train_images, train_labels, test_images, test_labels), images (N,1,8,8) uint8."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return tr_x, tr_y, te_x, te_y


def load(root, cfg):
    tr_x, tr_y, te_x, te_y = load_digits_split()
    mean = (float(tr_x.mean()) / 255,)
    std = (float(tr_x.std()) / 255,)
    # 8x8 digits: shift by at most one pixel, never mirror (a mirrored 2 is no 2).
    return DataSet("digits", 10, tr_x, tr_y, te_x, te_y, mean, std, pad=1, flip=False)


# It reads no file of its own (scikit-learn ships it): files says so, so that a finished
# sweep of it is confirmed without planning (sweeps/confirm.py).
DIGITS = DatasetSpec("digits", 10, 1, 8, load,
                     "scikit-learn's 1,797 real 8x8 handwritten digits (offline; 1,437 train, 360 test)",
                     files=lambda cfg: [], imports=("sklearn.datasets", "sklearn.model_selection"))
