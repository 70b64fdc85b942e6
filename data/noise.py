"""Synthetic label noise: clean labels -> noisy labels (PROTOCOL §3).

Noisy labels depend only on (labels, noise type, rate, noise seed), never on the
training seed. Every generator here draws from its own numpy Generator seeded by
the noise seed.
"""
import numpy as np

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
