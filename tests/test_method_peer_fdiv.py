"""Peer loss (methods/peer.py) and f-divergence (methods/fdiv.py): their losses against numpy
transcriptions of the paper's formula and of the release's functions on fixed logits and
labels, the peer draws, the flags they refuse, and runs through train.py (CE equality at
the knob baseline, exact resume after SIGTERM: the random peer draws are part of the run)."""
import math
import os

import numpy as np
import pytest
import torch

from conftest import parse_flags, read_csv, read_json, run_in_process
from data.loader import DeviceLoader
from errors import UserError
from methods._peer import augmented_images, draw_peer_indices
from methods.fdiv import DIVERGENCES, fdiv_loss, stable_cross_entropy
from methods.peer import peer_loss
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, timeless, train

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(7)
LOGITS = RNG.normal(0, 2, (6, 4))
LABELS = np.array([0, 3, 1, 1, 2, 0])
PEER_LOGITS = RNG.normal(0, 2, (6, 4))
PEER_LABELS = np.array([2, 2, 0, 3, 1, 3])


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_ce(z, y):
    return -np.mean(np.log(np_softmax(z)[np.arange(len(y)), y]))


def tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float32 if a.dtype.kind == "f" else torch.int64) for a in arrays]


# ---------------------------------------------------------------- peer loss

@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 3.0, -5.0])
def test_peer_loss_is_ce_minus_alpha_times_ce_of_the_peer_pairs(alpha):
    """The paper's l(f(x_i), y_i) - alpha l(f(x_j1), y_j2), with l cross-entropy, on a fixed peer sample."""
    expected = np_ce(LOGITS, LABELS) - alpha * np_ce(PEER_LOGITS, PEER_LABELS)
    got = peer_loss(*tensors(LOGITS, LABELS, PEER_LOGITS, PEER_LABELS), alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- f-divergence

def release_activation_and_conjugate(div):
    """CIFAR-10/runner.py's activation(x) and conjugate(x), transcribed to numpy."""
    if div == "kl":
        return (lambda x: -np.mean(x)), (lambda x: -np.mean(np.exp(x - 1.0)))
    if div == "jeffrey":
        return (lambda x: -np.mean(x)), (lambda x: -np.mean(x + x * x / 4.0 + x * x * x / 16.0))
    if div == "pearson":
        return (lambda x: -np.mean(x)), (lambda x: -np.mean(x * x / 4.0 + x))
    if div == "jensen_shannon":
        return ((lambda x: -np.mean(-np.log(1.0 + np.exp(-x))) - np.log(2.0)),
                (lambda x: -np.mean(x + np.log(1.0 + np.exp(-x))) + np.log(2.0)))
    if div == "total_variation":
        return (lambda x: -np.mean(np.tanh(x) / 2.0)), (lambda x: -np.mean(np.tanh(x) / 2.0))
    raise KeyError(div)


@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("divergence", ["total_variation", "jensen_shannon", "pearson", "kl", "jeffrey"])
def test_fdiv_loss_is_the_releases_activation_minus_conjugate(divergence, eps):
    """loss = activation(p_reg) - conjugate(p_peer), p the softmax at the label (+ eps on CIFAR-100)."""
    activation, conjugate = release_activation_and_conjugate(divergence)
    prob_reg = np_softmax(LOGITS)[np.arange(6), LABELS] + eps
    prob_peer = np_softmax(PEER_LOGITS)[np.arange(6), PEER_LABELS] + eps
    expected = activation(prob_reg) - conjugate(prob_peer)
    got = fdiv_loss(*tensors(LOGITS, LABELS, PEER_LOGITS, PEER_LABELS), divergence, eps)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("divergence", ["total_variation", "jensen_shannon", "pearson", "kl", "jeffrey"])
def test_each_conjugate_is_the_fenchel_conjugate_of_the_paper_generator_at_g(divergence):
    """f*(g(v)) from the table of f-GAN (Nowozin et al. 2016, table 2, which the paper uses):
    sup_u (t u - f(u)), computed on a grid, at t = g(v). Jeffrey's is the release's expansion
    t + t^2/4 + t^3/16 of its conjugate about t = 0: close for small t only."""
    generators = {
        "total_variation": lambda u: 0.5 * np.abs(u - 1),
        "jensen_shannon": lambda u: -(u + 1) * np.log((1 + u) / 2) + u * np.log(u),
        "pearson": lambda u: (u - 1) ** 2,
        "kl": lambda u: u * np.log(u),
        "jeffrey": lambda u: (u - 1) * np.log(u),
    }
    g, conjugate = DIVERGENCES[divergence]
    u = np.linspace(1e-4, 40, 400001)
    for v in (0.05, 0.3) if divergence == "jeffrey" else (0.05, 0.3, 0.7, 0.95):
        t = g(torch.tensor(v, dtype=torch.float64)).item()
        expected = np.max(t * u - generators[divergence](u))
        assert conjugate(torch.tensor(v, dtype=torch.float64)).item() == pytest.approx(expected, abs=2e-3), v


def test_the_warm_up_loss_is_the_releases_stable_cross_entropy():
    expected = -np.mean(np.log(np_softmax(LOGITS)[np.arange(6), LABELS] + 1e-5))
    got = stable_cross_entropy(*tensors(LOGITS, LABELS))
    assert got.item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- the peer draws

def test_peer_draws_repeat_no_row_and_disjoint_draws_share_none():
    torch.manual_seed(0)
    images, labels = draw_peer_indices(100, 30, "cpu", disjoint=True)
    assert len(set(images.tolist())) == 30 and len(set(labels.tolist())) == 30
    assert not set(images.tolist()) & set(labels.tolist())
    images, labels = draw_peer_indices(100, 30, "cpu", disjoint=False)
    assert len(set(images.tolist())) == 30 and len(set(labels.tolist())) == 30
    assert images.tolist() != labels.tolist()
    images, labels = draw_peer_indices(10, 8, "cpu", disjoint=True)  # past n rows: wraps around
    assert sorted(images.tolist() + labels.tolist()[:2]) == list(range(10))


def test_peer_images_are_the_loaders_images_cropped_and_normalised():
    """With padding 1 and no flip, each peer image is a 1-pixel shift of the drawn image,
    normalised like the loader's batches."""
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 6, 6), dtype=np.uint8)
    loader = DeviceLoader(images, np.arange(5), 2, [0.5], [0.25], "cpu", train=True, pad=1, flip=False)
    rows = torch.tensor([4, 0, 4])
    x = augmented_images(loader, rows)
    padded = np.pad(images.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for k, r in enumerate(rows.tolist()):
        windows = [(padded[r, :, a:a + 6, b:b + 6] - 127.5) / 63.75 for a in range(3) for b in range(3)]
        assert any(np.allclose(x[k].numpy(), w, atol=1e-5) for w in windows), k


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("extra,expected", [
    (["--method", "fdiv", "--warmup", "-1"], "--warmup -1 is outside [0, --n_epoch"),
    (["--method", "fdiv", "--warmup", "3", "--n_epoch", "3"], "--warmup 3 is outside [0, --n_epoch 3)"),
    (["--method", "fdiv", "--dataset", "clothing1m"], "--method fdiv draws random peer images"),
    (["--method", "peer", "--dataset", "clothing1m"], "--method peer draws random peer images"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *SMALL, *extra)
    assert expected in str(err.value)


def test_an_unknown_divergence_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_flags("train", "--method", "fdiv", "--divergence", "hellinger", *SMALL)
    assert exit_.value.code == 2 and "invalid choice: 'hellinger'" in capsys.readouterr().err


def test_help_shows_the_flags_and_defaults(capsys):
    for method, pieces in {"peer": ["--alpha ALPHA", "(default: 1.0)"],
                           "fdiv": ["--divergence {total_variation,jensen_shannon,pearson,kl,jeffrey}",
                                    "(default: total_variation)", "--warmup WARMUP", "(default 0,"]}.items():
        with pytest.raises(SystemExit) as exit_:
            run_in_process("train", ["--method", method, "--help"])
        assert exit_.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for piece in pieces:
            assert piece in text, (method, piece)


def test_defaults_and_cifar100s_epsilon():
    from methods import get_method
    cfg = parse_flags("train", "--method", "fdiv", *SMALL)
    assert (cfg.divergence, cfg.warmup) == ("total_variation", 0)
    assert get_method("fdiv").from_config(cfg).eps == 0.0
    cfg100 = parse_flags("train", "--method", "fdiv", "--dataset", "cifar100")
    assert get_method("fdiv").from_config(cfg100).eps == 1e-5
    peer = parse_flags("train", "--method", "peer", *SMALL)
    assert peer.alpha == 1.0
    assert "--alpha" in get_method("peer").from_config(peer).divergence_hint("train")
    assert get_method("peer")(0.0).divergence_hint("train") == ""


# ---------------------------------------------------------------- runs

def test_peer_alpha0_trains_exactly_as_cross_entropy(tmp_path):
    """peer at alpha 0 (its knob baseline) and gls at smooth rate 0 (plain CE) end bit-identical."""
    _, (peer,) = train(["--method", "peer", "--alpha", "0", *SMALL, "--n_epoch", "2",
                        "--result_dir", str(tmp_path / "a")])
    _, (gls,) = train(["--method", "gls", "--smooth_rate", "0", *SMALL, "--n_epoch", "2",
                       "--result_dir", str(tmp_path / "b")])
    assert timeless(read_csv(os.path.join(peer, "metrics.csv"))) == timeless(read_csv(os.path.join(gls, "metrics.csv")))
    summary = read_json(os.path.join(peer, "summary.json"))
    assert summary["is_ce"] and summary["knobs"] == {"alpha": 0.0} and summary["method"] == "ce"


def test_peer_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows, _ = assert_sigterm_resume_is_exact("peer", [], tmp_path)
    summary = read_json(os.path.join(tmp_path / "whole" / "train", os.listdir(tmp_path / "whole" / "train")[0],
                                     "summary.json"))
    assert summary["knobs"] == {"alpha": 1.0} and not summary["is_ce"]
    # the peer term is subtracted: past the first epoch the mean training loss is below CE's
    # lower bound of 0
    assert float(rows[-1]["train_loss"]) < 0


def test_fdiv_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Warm-up of one epoch (stable CE, positive), then Pearson: the peer draws begin at epoch 1."""
    rows, _ = assert_sigterm_resume_is_exact("fdiv", ["--divergence", "pearson", "--warmup", "1"], tmp_path)
    assert float(rows[0]["train_loss"]) > math.log(10) * 0.5  # cross-entropy on 10 classes
    # -mean p + mean (p^2 / 4 + p) of the peers is within [-1, 1.25]
    assert all(-1.0 <= float(r["train_loss"]) <= 1.25 for r in rows[1:])
