"""Noise transition matrices (methods/transition.py) and the methods trained through one:
backward correction against numpy with a known T, T-Revision's losses and its revision
step by hand, the estimate read from the checkpoint the release selects, the estimator's
identity in made_by, and runs that go on after the folder estimated from has moved."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

import methods.transition as transition
import sweep
from conftest import read_csv, read_json
from errors import UserError
from methods.backward import Backward, backward_loss
from methods.forward import Forward
from methods.trevision import TRevision, reweight_loss, revision_loss
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, interrupted, timeless, train
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4
# a row-stochastic, invertible T with unequal rows
KNOWN_T = np.array([[0.7, 0.2, 0.1, 0.0],
                    [0.1, 0.6, 0.2, 0.1],
                    [0.0, 0.3, 0.6, 0.1],
                    [0.2, 0.0, 0.1, 0.7]])
VAL = ["--val_fraction", "0.1"]


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, K)) * 2
    logits[0, 2] = -40.0  # p ~ 1e-18: the clip at 1e-7 decides this term
    return logits, np.array([0, 1, 2, 3, 1, 2])


def nothing_written(folder):
    return not os.path.exists(folder) or not os.listdir(folder)


def np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------- backward correction

def test_backward_loss_and_gradient_with_a_known_matrix_match_numpy(batch):
    z, y = batch
    p = np.clip(np_softmax(z), 1e-7, 1 - 1e-7)
    inverse = np.linalg.inv(KNOWN_T)
    expected = -np.mean([inverse[y[i]] @ np.log(p[i]) for i in range(len(y))])
    method = Backward()
    method.set_matrix(torch.tensor(KNOWN_T, dtype=torch.float32))
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    loss = method.loss(logits, torch.tensor(y), None)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # d/dz_k of -sum_j c_j log p_j = p_k sum_j c_j - c_k, c = row y of T^-1 (rows sum to 1);
    # an entry held by the clip passes no gradient through its log
    q = np_softmax(z)
    c = inverse[y]
    held = (q < 1e-7) | (q > 1 - 1e-7)
    grad = q * np.where(held, 0.0, c).sum(1, keepdims=True) - np.where(held, 0.0, c)
    np.testing.assert_allclose(logits.grad.numpy(), grad / len(y), rtol=1e-4, atol=1e-6)


def test_backward_with_the_identity_is_cross_entropy(batch):
    z, y = (torch.tensor(batch[0][1:], dtype=torch.float32), torch.tensor(batch[1][1:]))
    loss = backward_loss(z, y, torch.eye(K))
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), rel=1e-6)


def test_backward_refuses_a_singular_matrix(tmp_path):
    """Every label flipped to one class: no inverse, refused before anything is written."""
    run = RunState(num_classes=3, true_labels=torch.tensor([0, 1, 2, 0, 1, 2]),
                   noisy_labels=torch.tensor([0, 0, 0, 0, 0, 0]))
    with pytest.raises(UserError) as err:
        Backward().setup(run)
    assert "no usable inverse" in str(err.value) and "--method forward" in str(err.value)


# ---------------------------------------------------------------- T-Revision

def np_weights(z, y, T, delta, times):
    """p_y / ((T + times_i dT)^T p)_y and the cross-entropies, by numpy."""
    p = np_softmax(z)
    n = len(y)
    noisy = np.array([sum(p[i, k] * (T[k, y[i]] + times[i] * delta[k, y[i]]) for k in range(K)) for i in range(n)])
    ce = -np.log(p[np.arange(n), y])
    return p, p[np.arange(n), y] / noisy, ce, noisy


def test_reweight_and_revision_losses_match_numpy(batch):
    z, y = batch
    delta = np.random.default_rng(0).normal(size=(K, K)) * 0.01
    for fn, d, times in ((lambda l, t: reweight_loss(l, t, torch.tensor(KNOWN_T)), np.zeros((K, K)), np.ones(6)),
                         (lambda l, t: revision_loss(l, t, torch.tensor(KNOWN_T), torch.tensor(delta), True),
                          delta, np.arange(1, 7)),
                         (lambda l, t: revision_loss(l, t, torch.tensor(KNOWN_T), torch.tensor(delta), False),
                          delta, np.ones(6))):
        _, beta, ce, _ = np_weights(z, y, KNOWN_T, d, times)
        loss = fn(torch.tensor(z), torch.tensor(y))
        assert loss.item() == pytest.approx(np.mean(beta * ce), rel=1e-5)


def test_reweighting_passes_no_gradient_through_its_weight(batch):
    """beta is a constant (the release wraps it in a new Variable): the gradient is beta times
    that of the cross-entropy, p - onehot."""
    z, y = batch
    logits = torch.tensor(z, requires_grad=True)
    reweight_loss(logits, torch.tensor(y), torch.tensor(KNOWN_T)).backward()
    p, beta, _, _ = np_weights(z, y, KNOWN_T, np.zeros((K, K)), np.ones(6))
    np.testing.assert_allclose(logits.grad.numpy(), beta[:, None] * (p - np.eye(K)[y]) / len(y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("accumulate", [True, False])
def test_a_revision_step_moves_dT_by_the_hand_computed_adam_step(batch, accumulate):
    """One step of the revision stage from dT = 0: the gradient of the loss in dT is
    dL/d dT[k, y_i] = -1/n sum_i CE_i p_iy times_i p_ik / s_i^2 (s_i = (T^T p_i)_y), and
    Adam's first step is -lr g / (|g| + eps) (bias-corrected moments g and g^2; the
    weight decay adds 0 at dT = 0)."""
    z, y = batch
    x = torch.eye(6, dtype=torch.float64)
    model = torch.nn.Linear(6, K, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(z).T)  # logits of row i of x: z[i]
    run = RunState.for_model(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"),
                             num_classes=K, true_labels=torch.tensor(y), noisy_labels=torch.tensor(y))
    method = TRevision(revision_epochs=1, lr_revision=1e-3, revision_loss="release" if accumulate else "paper",
                       n_epoch=2, weight_decay=1e-4)
    method.setup(run)
    method.set_matrix(torch.tensor(KNOWN_T))
    method.delta = torch.zeros(K, K, dtype=torch.float64, requires_grad=True)
    method.optimizer = torch.optim.Adam(list(model.parameters()) + [method.delta], lr=1e-3, weight_decay=1e-4)
    method.start_epoch(1, run)  # the revision epoch
    times = np.arange(1, 7) if accumulate else np.ones(6)
    p, beta, ce, noisy = np_weights(z, y, KNOWN_T, np.zeros((K, K)), times)
    g = np.zeros((K, K))
    for i in range(6):
        g[:, y[i]] += -ce[i] * p[i, y[i]] * times[i] * p[i] / noisy[i] ** 2 / 6
    before = model.weight.detach().clone()
    loss, _ = method.train_step(run, x, torch.tensor(y), torch.arange(6))
    assert loss.item() == pytest.approx(np.mean(beta * ce), rel=1e-5)
    np.testing.assert_allclose(method.delta.grad.numpy(), g, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(method.delta.detach().numpy(), -1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-4, atol=1e-9)
    assert (method.revised().numpy() != KNOWN_T).any()
    assert not torch.equal(model.weight, before)  # the network is revised with it (main.py:85)


def test_trevision_needs_a_validation_split_and_its_stages_fit_the_run():
    from conftest import parse_flags

    with pytest.raises(UserError) as err:
        parse_flags("train", "--method", "trevision", *SMALL)
    assert "--val_fraction 0.1" in str(err.value)
    with pytest.raises(UserError) as err:
        parse_flags("train", "--method", "trevision", *SMALL, *VAL, "--n_epoch", "4", "--revision_epochs", "4")
    assert "--revision_epochs 4 must be in [0, --n_epoch 4)" in str(err.value)
    cfg = parse_flags("train", "--method", "trevision", *SMALL, *VAL, "--n_epoch", "400")
    assert (cfg.revision_epochs, cfg.lr_revision, cfg.revision_loss, cfg.estimate_augment) == \
        (200, 5e-7, "release", True)


def test_trevision_sigterm_at_the_revision_then_resume_is_exact(tmp_path):
    """Stopped as the revision starts (epoch 2 of 3): the model kept for it, dT and the Adam
    state come back from last.pt."""
    rows, ckpt = assert_sigterm_resume_is_exact("trevision", [*VAL, "--lr_revision", "1e-3", "--revision_epochs", "1"],
                                                tmp_path, n_epoch=3, stop=2)
    assert ckpt["method"]["best_weights"] is None and ckpt["method"]["delta"].abs().sum() > 0
    assert [float(r["revision_abs_sum"]) == 0 for r in rows] == [True, True, False]
    # the revision starts from the reweighting epoch of best T-corrected validation accuracy
    best = max(rows[:2], key=lambda r: float(r["corrected_val_acc"]))
    assert float(ckpt["method"]["best_val"]) == float(best["corrected_val_acc"])


def test_backward_sigterm_then_resume_is_exact(tmp_path):
    assert_sigterm_resume_is_exact("backward", [], tmp_path, n_epoch=2, stop=1)


# ---------------------------------------------------------------- the estimate

@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    """A three-epoch CE run with a noisy validation split (best.pt: best validation accuracy;
    best_val_loss.pt: lowest validation loss)."""
    root = tmp_path_factory.mktemp("ce")
    code, (folder,) = train(["--method", "gls", "--smooth_rate", "0", *SMALL, *VAL, "--n_epoch", "3",
                             "--result_dir", str(root)])
    assert code == 0
    return folder


def estimate(tmp_path, ce, method="forward", extra=()):
    return train(["--method", method, *SMALL, *VAL, "--n_epoch", "1", "--transition", "estimate",
                  "--estimate_from", ce, *extra, "--result_dir", str(tmp_path)])


def test_forward_estimates_from_the_model_of_lowest_noisy_validation_loss(tmp_path, ce_run, monkeypatch):
    rows = read_csv(os.path.join(ce_run, "metrics.csv"))
    lowest = 1 + int(np.argmin([float(r["val_loss"]) for r in rows]))
    ckpt = torch.load(os.path.join(ce_run, "best_val_loss.pt"), weights_only=True)
    assert (ckpt["epoch"], ckpt["selected_by"]) == (lowest, "val_loss")
    loaded, seen = [], []
    real_load, real_estimate = transition.load_checkpoint, transition.estimate_transition
    monkeypatch.setattr(transition, "load_checkpoint", lambda path, **kw: loaded.append(path) or real_load(path, **kw))
    monkeypatch.setattr(transition, "estimate_transition", lambda p, q: seen.append(p) or real_estimate(p, q))
    code, (fwd,) = estimate(tmp_path, ce_run)
    assert code == 0 and loaded == [os.path.join(ce_run, "best_val_loss.pt")]
    probs = seen[0]  # the training rows' softmax: the anchor rule by hand
    n = len(probs)
    expected = np.empty((10, 10))
    for i in range(10):
        order = np.argsort(probs[:, i])
        rank = int(np.ceil(0.97 * (n - 1)))  # the 97th percentile ('higher') is the value of that
        anchor = order[rank - 1]             # 0-based rank; the anchor is the image just below it
        expected[i] = probs[anchor] / probs[anchor].sum()
    T = torch.load(os.path.join(fwd, "last.pt"), weights_only=True)["method"]["transition"].numpy()
    np.testing.assert_allclose(T, expected, rtol=1e-4, atol=1e-6)
    made_by = read_json(os.path.join(fwd, "config.json"))["made_by"]
    inputs = made_by["inputs"]["--estimate_from"]
    assert inputs["path"] == os.path.abspath(os.path.join(ce_run, "best_val_loss.pt"))
    with open(inputs["path"], "rb") as f:
        assert inputs["sha1"] == hashlib.sha1(f.read()).hexdigest()
    # another noise rate: other labels, refused before anything is written
    with pytest.raises(UserError) as err:
        estimate(tmp_path / "other", ce_run, extra=["--noise_rate", "0.2"])
    assert "was trained on other labels" in str(err.value) and "labels_sha1" in str(err.value)
    assert nothing_written(tmp_path / "other" / "train")


def test_an_estimate_from_a_run_without_validation_split_is_refused(tmp_path):
    code, (ce,) = train(["--method", "gls", "--smooth_rate", "0", *SMALL, "--n_epoch", "1",
                         "--result_dir", str(tmp_path / "ce")])
    for method, rule in (("forward", "lowest noisy-validation loss"), ("backward", "lowest noisy-validation loss"),
                         ("trevision", "best noisy-validation accuracy")):
        with pytest.raises(UserError) as err:
            train(["--method", method, *SMALL, "--n_epoch", "2", "--transition", "estimate",
                   "--estimate_from", ce, *(VAL if method == "trevision" else ()),
                   "--result_dir", str(tmp_path / method)])
        assert rule in str(err.value) and "--val_fraction 0.1" in str(err.value), method
        assert nothing_written(tmp_path / method / "train")  # refused before anything is written


def test_a_missing_estimate_folder_is_refused_on_a_fresh_start(tmp_path):
    with pytest.raises(UserError) as err:
        estimate(tmp_path, str(tmp_path / "nonexistent"))
    assert "is no folder" in str(err.value)
    assert nothing_written(tmp_path / "train")


def test_trevision_starts_from_the_estimators_weights(tmp_path, ce_run):
    """main.py:224-226: the reweighting starts from the model T was estimated from (best.pt
    of the run with a validation split: best noisy-validation accuracy)."""
    ckpt = torch.load(os.path.join(ce_run, "best.pt"), weights_only=True)
    assert ckpt["selected_by"] == "val_acc"
    code, (run,) = estimate(tmp_path, ce_run, "trevision", ["--n_epoch", "2", "--lr", "1e-9"])
    assert code == 0
    summary = read_json(os.path.join(run, "summary.json"))
    assert summary["initial_test_acc"] == pytest.approx(ckpt["test_acc"])


# ---------------------------------------------------------------- identity and a moved input

def copy_run(ce, tmp_path):
    dest = tmp_path / "estimator"
    shutil.copytree(ce, dest)
    return str(dest)


def test_a_changed_estimator_checkpoint_makes_the_finished_run_stale(tmp_path, ce_run, capsys):
    ce = copy_run(ce_run, tmp_path)
    code, _ = estimate(tmp_path / "runs", ce, "backward")
    assert code == 0
    path = os.path.join(ce, "best_val_loss.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, path)
    with pytest.raises(UserError) as err:
        estimate(tmp_path / "runs", ce, "backward", ["--if_exists", "auto"])
    assert "input: --estimate_from" in str(err.value) and "best_val_loss.pt" in str(err.value)
    capsys.readouterr()  # a sweep's planning finds it stale too
    assert sweep.main(["train.py", "--method", "backward", *SMALL, *VAL, "--n_epoch", "1", "--transition", "estimate",
                       "--estimate_from", ce, "--result_dir", str(tmp_path / "runs"), "--seeds", "0"]) == 2
    assert "input: --estimate_from" in capsys.readouterr().err  # refused before anything starts


def test_a_moved_estimator_keeps_the_finished_run_and_resumes_the_interrupted_one(tmp_path, ce_run, capsys):
    ce = copy_run(ce_run, tmp_path)
    argv = ["--method", "forward", *SMALL, *VAL, "--n_epoch", "2", "--transition", "estimate",
            "--estimate_from", ce]
    code, (done,) = train(argv + ["--result_dir", str(tmp_path / "done")])
    assert code == 0
    code, (parts,) = train(argv + ["--result_dir", str(tmp_path / "parts")], interrupted(Forward, 1))
    assert code == 143
    started = torch.load(os.path.join(parts, "last.pt"), weights_only=True)["method"]["transition"]
    os.rename(ce, ce + "-moved")
    capsys.readouterr()
    code, _ = train(argv + ["--result_dir", str(tmp_path / "done"), "--if_exists", "auto"])
    out = capsys.readouterr()
    assert code == 0 and "already finished" in out.out and "is gone" in out.err
    # a sweep plans it as finished (nothing to train), with the same warning, and no refusal
    assert sweep.main(["train.py", *argv, "--result_dir", str(tmp_path / "done"), "--seeds", "0", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "is gone" in out.err and "no folder" not in out.out + out.err
    code, _ = train(argv + ["--result_dir", str(tmp_path / "parts"), "--resume"])
    assert code == 0
    finished = torch.load(os.path.join(parts, "last.pt"), weights_only=True)["method"]["transition"]
    assert torch.equal(finished, started)  # T from its own last.pt, not estimated again
    assert timeless(read_csv(os.path.join(parts, "metrics.csv"))) == timeless(read_csv(os.path.join(done, "metrics.csv")))

