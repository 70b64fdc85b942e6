"""data/noise.py: actual rates, transition structure, seeding."""
import numpy as np
import pytest

from data.noise import (ASYM_CIFAR10, PAIRFLIP_PARTNER, actual_noise_rate, make_noisy_labels,
                        transition_matrix)
from errors import UserError

N = 50_000


def balanced_labels(k, n=N):
    return np.arange(n) % k


def binomial_tolerance(p, n, sigmas=5):
    return sigmas * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("name", ["symmetric", "sym"])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
@pytest.mark.parametrize("k", [10, 100])
def test_symmetric_rate_and_uniform_off_diagonal(name, rate, k):
    clean = balanced_labels(k)
    noisy = make_noisy_labels(clean, name, rate, k, seed=1)
    assert abs(actual_noise_rate(clean, noisy) - rate) < binomial_tolerance(rate, N)
    t = transition_matrix(clean, noisy, k)
    # Each class has N/k samples; an off-diagonal cell has probability rate/(k-1).
    per_class = N // k
    cell = rate / (k - 1)
    off = t[~np.eye(k, dtype=bool)]
    assert abs(off.mean() - cell) < 1e-3
    assert np.abs(off - cell).max() < binomial_tolerance(cell, per_class, 6)
    assert np.abs(np.diag(t) - (1 - rate)).max() < binomial_tolerance(rate, per_class, 6)


def test_symmetric_never_flips_to_the_true_class():
    clean = balanced_labels(10)
    noisy = make_noisy_labels(clean, "symmetric", 0.9, 10, seed=0)
    # With rate 0.9 a "flip" to the same class would show as a diagonal near 0.1 + 0.9/10.
    assert abs(np.mean(noisy == clean) - 0.1) < binomial_tolerance(0.1, N)


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_pairflip_structure_is_exact(rate):
    clean = balanced_labels(10)
    noisy = make_noisy_labels(clean, "pairflip", rate, 10, seed=3)
    t = transition_matrix(clean, noisy, 10)
    allowed = np.eye(10, dtype=bool)
    for c, d in PAIRFLIP_PARTNER.items():
        allowed[c, d] = True
        assert abs(t[c, d] - rate) < binomial_tolerance(rate, N // 10)
    assert np.all(t[~allowed] == 0)
    assert abs(actual_noise_rate(clean, noisy) - rate) < binomial_tolerance(rate, N)


def test_asym_cifar10_structure_is_exact():
    rate = 0.4
    clean = balanced_labels(10)
    noisy = make_noisy_labels(clean, "asym", rate, 10, seed=0)
    t = transition_matrix(clean, noisy, 10)
    for c in range(10):
        if c in ASYM_CIFAR10:
            assert abs(t[c, ASYM_CIFAR10[c]] - rate) < binomial_tolerance(rate, N // 10)
            assert t[c, c] + t[c, ASYM_CIFAR10[c]] == pytest.approx(1.0)
        else:
            assert t[c, c] == 1.0
    assert (ASYM_CIFAR10 == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3})
    # Five of ten classes flip: overall about r / 2.
    assert abs(actual_noise_rate(clean, noisy) - rate / 2) < binomial_tolerance(rate / 2, N)


def test_asym_cifar100_moves_to_next_class():
    clean = balanced_labels(100)
    noisy = make_noisy_labels(clean, "asym", 0.4, 100, seed=0)
    flipped = noisy != clean
    assert np.all(noisy[flipped] == (clean[flipped] + 1) % 100)
    assert abs(flipped.mean() - 0.4) < binomial_tolerance(0.4, N)


def test_clean_is_unchanged_copy():
    clean = balanced_labels(10, 100)
    noisy = make_noisy_labels(clean, "clean", 0.5, 10, seed=0)
    assert np.array_equal(noisy, clean) and noisy is not clean


def test_noise_seed_determines_labels():
    clean = balanced_labels(10, 5000)
    a = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=7)
    b = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=7)
    c = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=8)
    assert np.array_equal(a, b)
    assert np.mean(a != c) > 0.3


@pytest.mark.parametrize("noise_type,k", [("pairflip", 100), ("asym", 14)])
def test_noise_types_that_do_not_fit_the_class_count_are_errors(noise_type, k):
    with pytest.raises(UserError, match=noise_type):
        make_noisy_labels(balanced_labels(k, 1000), noise_type, 0.2, k, seed=0)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rates_outside_unit_interval_are_errors(rate):
    with pytest.raises(UserError, match="noise_rate"):
        make_noisy_labels(balanced_labels(10, 100), "symmetric", rate, 10, seed=0)
