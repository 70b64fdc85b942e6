"""Synthetic label noise: clean labels -> noisy labels (PROTOCOL §3).

Noisy labels depend only on (labels, noise type, rate, noise seed), never on the
training seed. Every generator here draws from its own numpy Generator seeded by
the noise seed. Besides the class-conditional types: instance-dependent (IDN) labels
from a clean-trained network's probabilities, part-dependent instance noise, open-set
image replacement, and label files in the SLN release's CSV format.
"""
import numpy as np
from scipy.stats import truncnorm

from errors import UserError

ALIASES = {"sym": "symmetric"}

# pairflip (GLS "asymmetric"): each class swaps with its partner, both directions.
PAIRFLIP_PARTNER = {9: 1, 1: 9, 2: 0, 0: 2, 4: 7, 7: 4, 3: 5, 5: 3, 6: 8, 8: 6}
# asym on CIFAR-10 (SLN): truck->automobile, bird->airplane, deer->horse, cat<->dog.
ASYM_CIFAR10 = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def canonical_noise_type(noise_type):
    return ALIASES.get(noise_type, noise_type)


def _flip_target_map(noise_type, num_classes):
    """For class-conditional single-target noise: array c -> where c flips to (or c)."""
    target = np.arange(num_classes)
    if noise_type == "pairflip":
        if num_classes != 10:
            raise UserError(f"pairflip noise is defined for 10 classes (CIFAR-10), not {num_classes}; "
                            "use symmetric or asym noise")
        for c, d in PAIRFLIP_PARTNER.items():
            target[c] = d
    elif noise_type == "asym":
        if num_classes == 10:
            for c, d in ASYM_CIFAR10.items():
                target[c] = d
        elif num_classes == 100:
            target = (target + 1) % 100
        else:
            raise UserError(f"asym noise is defined for 10 or 100 classes, not {num_classes}")
    return target


def make_noisy_labels(clean_labels, noise_type, noise_rate, num_classes, seed=0):
    """Return noisy labels (np.int64) for the class-conditional noise types.

    clean      : the labels unchanged.
    symmetric  : with probability r the label moves to one of the other K-1 classes,
                 uniformly (the true class is excluded, so r is the flip rate).
    pairflip   : with probability r class c flips to its partner (PAIRFLIP_PARTNER).
    asym       : with probability r, CIFAR-10 classes 9->1, 2->0, 4->7, 3<->5 flip;
                 CIFAR-100 c -> (c+1) mod 100. Other classes keep their label.
    """
    clean = np.asarray(clean_labels, dtype=np.int64)
    noise_type = canonical_noise_type(noise_type)
    if not 0.0 <= noise_rate < 1.0:
        raise UserError(f"--noise_rate {noise_rate} is outside [0, 1)")
    rng = np.random.default_rng(seed)
    if noise_type == "clean":
        return clean.copy()
    flip = rng.random(len(clean)) < noise_rate
    if noise_type == "symmetric":
        shift = rng.integers(1, num_classes, size=len(clean))
        return np.where(flip, (clean + shift) % num_classes, clean)
    if noise_type in ("pairflip", "asym"):
        target = _flip_target_map(noise_type, num_classes)
        return np.where(flip, target[clean], clean)
    raise UserError(f"unknown class-conditional noise type {noise_type!r}")


def actual_noise_rate(clean_labels, noisy_labels):
    """Fraction of samples whose noisy label differs from the clean one."""
    return float(np.mean(np.asarray(clean_labels) != np.asarray(noisy_labels)))


def transition_matrix(clean_labels, noisy_labels, num_classes):
    """Empirical T[i, j] = P(noisy = j | clean = i); rows of absent classes are zero."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (np.asarray(clean_labels), np.asarray(noisy_labels)), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


# ---------------------------------------------------------------- label files

def load_noise_file(path):
    """Read a `label,label_noisy` CSV (the SLN release's format: a header, then one row per
    training image in train order; LF or CRLF line ends) -> (clean, noisy) int64 arrays."""
    try:
        with open(path) as f:  # universal newlines: CRLF reads as LF
            header = f.readline().strip()
            rows = [line.strip().split(",") for line in f if line.strip()]
    except OSError as exc:
        raise UserError(f"noise file {path} cannot be read ({exc.strerror}); check --noise_file") from None
    if header.replace(" ", "") != "label,label_noisy":
        raise UserError(f"{path}: header {header!r}, expected 'label,label_noisy' (the SLN "
                        "release's format: clean and noisy label of each training image, in train order)")
    try:
        table = np.array(rows, dtype=np.int64).reshape(len(rows), 2)
    except ValueError:
        raise UserError(f"{path}: every row must hold two integers, 'label,label_noisy'") from None
    return table[:, 0].copy(), table[:, 1].copy()


def noisy_labels_from_file(path, train_labels, num_classes):
    """The file's noisy labels, after checking that they belong to this training set."""
    clean, noisy = load_noise_file(path)
    if len(clean) != len(train_labels):
        raise UserError(f"{path} has {len(clean)} rows but the training set has {len(train_labels)} "
                        "images: the file was made for another data set; pass the one for --dataset")
    if min(clean.min(), noisy.min()) < 0 or max(clean.max(), noisy.max()) >= num_classes:
        raise UserError(f"{path} has labels outside 0..{num_classes - 1}: the file was made for "
                        "another data set (CIFAR-100 vs CIFAR-10?); pass the one for --dataset")
    wrong = np.flatnonzero(clean != np.asarray(train_labels))
    if len(wrong):
        raise UserError(f"{path}: its clean column differs from the training labels in {len(wrong)} "
                        f"rows (first: row {wrong[0]}): the file was made for another data set or "
                        "train order; pass the one for --dataset")
    return noisy


def save_noise_file(path, clean_labels, noisy_labels):
    """Write the `label,label_noisy` CSV that load_noise_file reads."""
    table = np.stack([np.asarray(clean_labels), np.asarray(noisy_labels)], axis=1)
    np.savetxt(path, table, fmt="%d", delimiter=",", header="label,label_noisy", comments="")


# ---------------------------------------------------------------- instance-dependent noise

def idn_noisy_labels(probs, clean_labels, noise_rate):
    """Instance-dependent noise (IDN, PROTOCOL §3) from a clean-trained network's probabilities.

    probs (N, K): the network's softmax on the training set, averaged over checkpoints.
    w_i = argmax_{k != y_i} p_ik is sample i's most probable wrong class and q_i = p_{i w_i};
    the round(r * N) samples with the largest q_i flip to w_i (equal q_i: lower index first).
    The noise rate is exactly round(r * N) / N.
    """
    clean = np.asarray(clean_labels, dtype=np.int64)
    rows = np.arange(len(clean))
    wrong = np.array(probs, dtype=np.float64)
    wrong[rows, clean] = -np.inf
    target = wrong.argmax(axis=1)
    confidence = wrong[rows, target]
    flipped = np.argsort(-confidence, kind="stable")[:int(round(noise_rate * len(clean)))]
    noisy = clean.copy()
    noisy[flipped] = target[flipped]
    return noisy


def instance_flip_probabilities(features, label, flip_rates, projection):
    """Part-dependent noise of Xia et al. (NeurIPS 2020) for the samples of one class y:

        a_i = x_i W_y                         (x_i the flattened normalised image, W_y (D, K))
        a_iy = -inf                           (the flip goes to another class)
        P_i = (1 - f_i) * onehot(y) + f_i * softmax(a_i)

    Returns P (n, K), each row the distribution of sample i's noisy label.
    """
    scores = (np.asarray(features) @ np.asarray(projection)).astype(np.float64)
    scores[:, label] = -np.inf
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = flip_rates[:, None] * scores / scores.sum(axis=1, keepdims=True)
    probs[:, label] += 1.0 - flip_rates
    return probs


def make_instance_noise(images, labels, noise_rate, num_classes, mean, std, seed=0, flip_std=0.1):
    """Part-dependent instance noise (Xia et al., NeurIPS 2020), as in the GLS code base.

    Each sample's flip rate f_i is drawn from a normal around r with std 0.1 truncated to
    [0, 1]; each class c gets a random Gaussian projection W_c (D x K) of the image; the
    noisy label is drawn from instance_flip_probabilities. The expected noise rate is
    about r. images: uint8 (N, C, H, W), normalised with the data set's mean/std.
    """
    clean = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= noise_rate < 1.0:
        raise UserError(f"--noise_rate {noise_rate} is outside [0, 1)")
    rng = np.random.default_rng(seed)
    n = len(clean)
    low, high = (0.0 - noise_rate) / flip_std, (1.0 - noise_rate) / flip_std
    flip_rates = truncnorm(low, high, loc=noise_rate, scale=flip_std).rvs(n, random_state=rng)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    probs = np.zeros((n, num_classes))
    for c in range(num_classes):
        # W_c is drawn for every class, present or not, so it depends on the seed only.
        projection = rng.standard_normal((images[0].size, num_classes), dtype=np.float32)
        rows = np.flatnonzero(clean == c)
        features = ((images[rows] / np.float32(255) - mean) / std).reshape(len(rows), -1)
        probs[rows] = instance_flip_probabilities(features, c, flip_rates[rows], projection)
    # Inverse-CDF draw: the first class whose cumulative probability reaches u.
    u = rng.random(n)
    noisy = (probs.cumsum(axis=1) < u[:, None]).sum(axis=1)
    return np.minimum(noisy, num_classes - 1)


# ---------------------------------------------------------------- open-set noise

def replace_with_open_set(train_images, open_images, noise_rate, seed=0):
    """Open-set noise (PROTOCOL §3): round(r * N) training images, chosen at random, are
    replaced by distinct random images of another data set; their labels are kept.

    Returns (images, replaced, sources): the new image array, the replaced training
    indices (sorted) and the open-set index each one received.
    """
    n = len(train_images)
    count = int(round(noise_rate * n))
    if count > len(open_images):
        raise UserError(f"open-set noise {noise_rate} needs {count} images, the open set has "
                        f"{len(open_images)}; lower --noise_rate")
    if open_images.shape[1:] != train_images.shape[1:]:
        raise UserError(f"open-set images have shape {open_images.shape[1:]}, the training "
                        f"images {train_images.shape[1:]}")
    rng = np.random.default_rng(seed)
    replaced = np.sort(rng.choice(n, count, replace=False))
    sources = rng.choice(len(open_images), count, replace=False)
    images = train_images.copy()
    images[replaced] = open_images[sources]
    return images, replaced, sources
