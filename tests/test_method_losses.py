"""Methods sce, nce_rce, bootstrap and mixup: their losses against independent float64 numpy
transcriptions of the releases' formulas on fixed logits, their flags, defaults and
refusals, runs through train.py (the knob baselines train exactly as cross-entropy) and
mixup's exact resume after SIGTERM."""
import os

import numpy as np
import pytest
import torch

from conftest import parse_flags, read_csv, read_json
from errors import UserError
from methods.bootstrap import Bootstrap, bootstrap_loss
from methods.mixup import Mixup, mixup_inputs, mixup_loss
from methods.nce_rce import apl_loss
from methods._robust import reverse_cross_entropy
from methods.sce import sce_loss
from test_methods import batch, numpy_softmax  # noqa: F401 (batch: the fixture)
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, timeless, train
from utils.state import RunState

K = 5


def numpy_parts(logits, labels):
    """(p, log p, one-hot) in float64."""
    p = numpy_softmax(logits.numpy())
    return p, np.log(p), np.eye(K)[labels.numpy()]


def numpy_rce(p, onehot, prob_min):
    """The releases' RCE: -sum clip(p, prob_min, 1) * log clip(onehot, 1e-4, 1), per sample."""
    return -(np.clip(p, prob_min, 1.0) * np.log(np.clip(onehot, 1e-4, 1.0))).sum(1)


def grad_of(loss_fn, logits):
    z = logits.clone().requires_grad_(True)
    loss_fn(z).backward()
    return z.grad.numpy()


# ---------------------------------------------------------------- SCE

@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (6.0, 0.1), (1.0, 1.0), (0.0, 1.0), (2.0, 0.0)])
def test_sce_equals_the_released_formula(batch, alpha, beta):
    """loss.py:17-20 of the SCE release: alpha * mean CE + beta * mean RCE, the label clipped
    at 1e-4 (the prediction's 1e-7 clip of its CE term does not bind on these logits)."""
    logits, labels = batch
    p, log_p, onehot = numpy_parts(logits, labels)
    assert p[onehot == 1].min() > 1e-7
    expected = alpha * np.mean(-(onehot * log_p).sum(1)) + beta * np.mean(numpy_rce(p, onehot, 0.0))
    assert sce_loss(logits, labels, alpha, beta).item() == pytest.approx(expected, rel=1e-5)


def test_sce_rce_is_9_21_times_one_minus_p_y_and_its_gradient_matches(batch):
    """With the 1e-4 clip, RCE = -ln(1e-4) (1 - p_y): A = ln 1e-4 = -9.21, not -4. Its
    gradient: -A * d(1 - p_y)/dz = A * p_y (onehot - p), by hand."""
    logits, labels = batch
    p, _, onehot = numpy_parts(logits, labels)
    p_y = p[onehot == 1]
    A = np.log(1e-4)
    per_sample = reverse_cross_entropy(torch.softmax(logits, 1), labels).numpy()
    np.testing.assert_allclose(per_sample, -A * (1 - p_y), rtol=1e-5)
    grad = grad_of(lambda z: sce_loss(z, labels, 0.0, 1.0), logits)
    np.testing.assert_allclose(grad, A * p_y[:, None] * (onehot - p) / 16, rtol=1e-4, atol=1e-7)


def test_sce_at_its_baseline_is_cross_entropy_bit_for_bit(batch):
    from loss import gls_loss
    logits, labels = batch
    assert torch.equal(sce_loss(logits, labels, 1.0, 0.0), gls_loss(logits, labels, 0.0))
    assert torch.equal(bootstrap_loss(logits, labels, 1.0, "soft"), gls_loss(logits, labels, 0.0))


# ---------------------------------------------------------------- NCE+RCE, NFL+RCE

def numpy_nfl(p, onehot, gamma):
    terms = -(1 - p) ** gamma * np.log(p)
    return (terms * onehot).sum(1) / terms.sum(1)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (10.0, 0.1), (0.5, 2.0), (1.0, 0.0)])
def test_nce_rce_equals_the_released_formula(batch, alpha, beta):
    """APL loss.py:86-90 (NCE) and :51-57 (RCE, p clamped at 1e-7, label at 1e-4)."""
    logits, labels = batch
    p, log_p, onehot = numpy_parts(logits, labels)
    nce = (onehot * log_p).sum(1) / log_p.sum(1)
    expected = alpha * nce.mean() + beta * numpy_rce(p, onehot, 1e-7).mean()
    assert apl_loss(logits, labels, alpha, beta, "nce").item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("alpha,beta,gamma", [(1.0, 1.0, 0.5), (10.0, 0.1, 0.5), (2.0, 0.5, 2.0)])
def test_nfl_rce_equals_the_released_formula(batch, alpha, beta, gamma):
    """APL loss.py:362-375 (NFL): the focal loss over its sum over every class."""
    logits, labels = batch
    p, _, onehot = numpy_parts(logits, labels)
    expected = alpha * numpy_nfl(p, onehot, gamma).mean() + beta * numpy_rce(p, onehot, 1e-7).mean()
    assert apl_loss(logits, labels, alpha, beta, "nfl", gamma).item() == pytest.approx(expected, rel=1e-5)
    # gamma 0: NFL is NCE
    assert apl_loss(logits, labels, alpha, beta, "nfl", 0.0).item() == \
        pytest.approx(apl_loss(logits, labels, alpha, beta, "nce").item(), rel=1e-6)


def test_nfl_gradient_holds_the_focal_weights_fixed(batch):
    """The release detaches (1 - p)^g (loss.py:365, :368: logpt.data): with w fixed, the
    gradient of N / S (N = w_y a_y, S = sum_k w_k a_k, a = -log p, da_k/dz_j = p_j - [k = j])
    is (dN S - N dS) / S^2, by hand."""
    logits, labels = batch
    gamma = 0.5
    p, log_p, onehot = numpy_parts(logits, labels)
    w, a = (1 - p) ** gamma, -log_p
    N, S = (w * a * onehot).sum(1), (w * a).sum(1)
    w_y = (w * onehot).sum(1)
    dN = w_y[:, None] * (p - onehot)
    dS = p * w.sum(1, keepdims=True) - w
    expected = (dN * S[:, None] - N[:, None] * dS) / S[:, None] ** 2 / 16
    grad = grad_of(lambda z: apl_loss(z, labels, 1.0, 0.0, "nfl", gamma), logits)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-8)


def test_rce_clamps_the_prediction_only_where_asked():
    """A confident row: p_k ~ e^-30 < 1e-7 for k != y. The APL release clamps p at 1e-7
    (RCE = 4 * 1e-7 * 9.21); the SCE release (Keras) does not."""
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0])
    p = numpy_softmax(logits.numpy())
    onehot = np.eye(K)[[0]]
    clamped = reverse_cross_entropy(torch.softmax(logits, 1), labels, 1e-7).numpy()
    as_is = reverse_cross_entropy(torch.softmax(logits, 1), labels).numpy()
    np.testing.assert_allclose(clamped, numpy_rce(p, onehot, 1e-7), rtol=1e-5)
    np.testing.assert_allclose(as_is, numpy_rce(p, onehot, 0.0), rtol=1e-4)
    assert clamped[0] == pytest.approx(-4 * 1e-7 * np.log(1e-4), rel=1e-5) and as_is[0] < 1e-10


# ---------------------------------------------------------------- bootstrapping

@pytest.mark.parametrize("beta", [0.95, 0.8, 0.5, 0.0])
def test_soft_bootstrap_equals_its_formula_and_its_gradient_lowers_the_entropy(batch, beta):
    """loss-correction loss.py:56-62: -sum (beta y + (1 - beta) p) log p, p with its gradient:
    d/dz_j = beta (p_j - y_j) + (1 - beta) dH/dz_j, H = -sum p log p,
    dH/dz_j = -p_j (log p_j + H), by hand."""
    logits, labels = batch
    p, log_p, onehot = numpy_parts(logits, labels)
    expected = np.mean(-((beta * onehot + (1 - beta) * p) * log_p).sum(1))
    assert bootstrap_loss(logits, labels, beta, "soft").item() == pytest.approx(expected, rel=1e-5)
    H = -(p * log_p).sum(1, keepdims=True)
    grad = (beta * (p - onehot) + (1 - beta) * -p * (log_p + H)) / 16
    np.testing.assert_allclose(grad_of(lambda z: bootstrap_loss(z, labels, beta, "soft"), logits), grad,
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("beta", [0.8, 0.5, 0.0])
def test_hard_bootstrap_equals_its_formula(batch, beta):
    """SCE release loss.py:63-73: -sum (beta y + (1 - beta) onehot(argmax p)) log p; the
    argmax target has no gradient: d/dz = beta (p - y) + (1 - beta) (p - onehot(argmax p))."""
    logits, labels = batch
    p, log_p, onehot = numpy_parts(logits, labels)
    hard = np.eye(K)[p.argmax(1)]
    assert (hard != onehot).any(1).sum() >= 8  # the prediction disagrees with many labels
    expected = np.mean(-((beta * onehot + (1 - beta) * hard) * log_p).sum(1))
    assert bootstrap_loss(logits, labels, beta, "hard").item() == pytest.approx(expected, rel=1e-5)
    grad = (beta * (p - onehot) + (1 - beta) * (p - hard)) / 16
    np.testing.assert_allclose(grad_of(lambda z: bootstrap_loss(z, labels, beta, "hard"), logits), grad,
                               rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- mixup

def test_mixup_mixes_inputs_and_labels_with_a_fixed_lambda(batch):
    """mixup-cifar10 train.py:132-138 with lam 0.3 and a fixed permutation."""
    logits, labels = batch
    x = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)
    index = torch.tensor([2, 0, 3, 1])
    np.testing.assert_allclose(mixup_inputs(x, index, 0.3).numpy(),
                               0.3 * x.numpy() + 0.7 * x.numpy()[[2, 0, 3, 1]], rtol=1e-6)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    _, log_p, onehot = numpy_parts(logits, labels)
    expected = 0.3 * np.mean(-(onehot * log_p).sum(1)) + 0.7 * np.mean(-(onehot[perm.numpy()] * log_p).sum(1))
    assert mixup_loss(logits, labels, labels[perm], 0.3).item() == pytest.approx(expected, rel=1e-5)


def test_mixup_step_draws_lambda_from_numpy_and_the_pairs_from_torch():
    """One step of a linear model: lambda = np.random.beta(a, a), the permutation
    torch.randperm(n), both from the seeded global RNGs (the release's sources); the step's
    loss is the numpy mixup loss of those draws, and the SGD step moves the weights by
    -lr * its gradient, computed here by hand."""
    n, d, alpha, lr = 8, 3, 0.4, 0.1
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, K, (n,), generator=g)
    model = torch.nn.Linear(d, K, bias=False)
    W = model.weight.detach().numpy().astype(np.float64).copy()
    run = RunState.for_model(model, torch.optim.SGD(model.parameters(), lr=lr), torch.device("cpu"))
    np.random.seed(5)
    torch.manual_seed(6)
    loss, logits = Mixup(alpha).train_step(run, x, y, torch.arange(n))
    np.random.seed(5)
    torch.manual_seed(6)
    lam, perm = np.random.beta(alpha, alpha), torch.randperm(n).numpy()
    xm = lam * x.numpy() + (1 - lam) * x.numpy()[perm]
    p = numpy_softmax(xm @ W.T)
    ya, yb = np.eye(K)[y.numpy()], np.eye(K)[y.numpy()[perm]]
    expected = lam * np.mean(-np.log((p * ya).sum(1))) + (1 - lam) * np.mean(-np.log((p * yb).sum(1)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(logits.numpy(), xm @ W.T, rtol=1e-5, atol=1e-6)
    grad = ((p - lam * ya - (1 - lam) * yb) / n).T @ xm
    np.testing.assert_allclose(model.weight.detach().numpy(), W - lr * grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- flags

def test_defaults_follow_the_release_per_data_set_and_a_typed_default_shares_the_folder():
    cfg = parse_flags("train", "--method", "sce", *SMALL)
    assert (cfg.sce_alpha, cfg.sce_beta) == (0.1, 1.0)
    cfg100 = parse_flags("train", "--method", "sce", "--dataset", "cifar100")
    assert (cfg100.sce_alpha, cfg100.sce_beta) == (6.0, 0.1)
    assert vars(parse_flags("train", "--method", "sce", *SMALL, "--sce_alpha", "0.1", "--sce_beta", "1")) == vars(cfg)
    apl = parse_flags("train", "--method", "nce_rce", *SMALL)
    assert (apl.apl_alpha, apl.apl_beta, apl.active, apl.focal_gamma) == (1.0, 1.0, "nce", None)
    apl100 = parse_flags("train", "--method", "nce_rce", "--dataset", "cifar100", "--active", "nfl")
    assert (apl100.apl_alpha, apl100.apl_beta, apl100.focal_gamma) == (10.0, 0.1, 0.5)
    assert parse_flags("train", "--method", "bootstrap", *SMALL).boot_beta == 0.95
    assert parse_flags("train", "--method", "bootstrap", "--boot", "hard", *SMALL).boot_beta == 0.8
    assert parse_flags("train", "--method", "mixup", *SMALL).mixup_alpha == 1.0


@pytest.mark.parametrize("extra,expected", [
    (["--method", "sce", "--sce_alpha", "-1"], "--sce_alpha -1.0 must be >= 0"),
    (["--method", "sce", "--sce_beta", "-0.5"], "--sce_beta -0.5 must be >= 0"),
    (["--method", "sce", "--sce_alpha", "0", "--sce_beta", "0"], "leave no loss to train on"),
    (["--method", "nce_rce", "--apl_beta", "-1"], "--apl_beta -1.0 must be >= 0"),
    (["--method", "nce_rce", "--apl_alpha", "0", "--apl_beta", "0"], "leave no loss to train on"),
    (["--method", "nce_rce", "--focal_gamma", "1"], "--focal_gamma 1.0 applies to --active nfl only"),
    (["--method", "nce_rce", "--active", "nfl", "--focal_gamma", "-1"], "--focal_gamma -1.0 must be >= 0"),
    (["--method", "bootstrap", "--boot_beta", "1.5"], "--boot_beta 1.5 is outside [0, 1]"),
    (["--method", "bootstrap", "--boot", "hard", "--boot_beta", "-0.1"], "--boot_beta -0.1 is outside [0, 1]"),
    (["--method", "mixup", "--mixup_alpha", "-1"], "--mixup_alpha -1.0 must be >= 0"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *extra, *SMALL)
    assert expected in str(err.value)


def test_labels_tags_and_knobs():
    assert Bootstrap(0.8, "hard").tag == "boothard-b0.8" and Bootstrap(1.0, "hard").is_ce()
    assert Mixup(0.0).tag == "ce" and Mixup(0.0).is_ce() and not Mixup(1.0).is_ce()
    from methods.nce_rce import NCERCE
    m = NCERCE(1.0, 0.0, "nfl", 0.5)
    assert (m.tag, m.label, m.knob_values(), m.is_ce()) == ("nfl-g0.5-a1", "NFL gamma=0.5 alpha=1",
                                                            {"apl_beta": 0.0}, False)


# ---------------------------------------------------------------- runs

def test_the_knob_baselines_train_exactly_as_cross_entropy(tmp_path):
    """sce (1, 0), bootstrap beta 1 and mixup alpha 0 end bit-identical to gls at smooth rate 0."""
    _, (ce,) = train(["--method", "gls", "--smooth_rate", "0", *SMALL, "--n_epoch", "1",
                      "--result_dir", str(tmp_path / "ce")])
    rows = timeless(read_csv(os.path.join(ce, "metrics.csv")))
    for name, flags, knobs in [("sce", ["--sce_alpha", "1", "--sce_beta", "0"], {"sce_alpha": 1.0, "sce_beta": 0.0}),
                               ("bootstrap", ["--boot_beta", "1"], {"boot_beta": 1.0}),
                               ("mixup", ["--mixup_alpha", "0"], {"mixup_alpha": 0.0})]:
        code, (folder,) = train(["--method", name, *flags, *SMALL, "--n_epoch", "1",
                                 "--result_dir", str(tmp_path / name)])
        assert code == 0
        assert timeless(read_csv(os.path.join(folder, "metrics.csv"))) == rows, name
        summary = read_json(os.path.join(folder, "summary.json"))
        assert summary["is_ce"] and summary["knobs"] == knobs and summary["method"] == "ce", name


@pytest.mark.parametrize("name,flags,knobs,tag", [
    ("sce", [], {"sce_alpha": 0.1, "sce_beta": 1.0}, "sce-a0.1-b1"),
    ("nce_rce", ["--active", "nfl"], {"apl_beta": 1.0}, "nfl-g0.5-rce-a1-b1"),
    ("bootstrap", ["--boot", "hard"], {"boot_beta": 0.8}, "boothard-b0.8"),
])
def test_a_default_run_trains_and_records_its_knobs(tmp_path, name, flags, knobs, tag):
    code, (folder,) = train(["--method", name, *flags, *SMALL, "--n_epoch", "1", "--result_dir", str(tmp_path)])
    assert code == 0
    summary = read_json(os.path.join(folder, "summary.json"))
    assert summary["status"] == "finished" and not summary["is_ce"]
    assert summary["knobs"] == knobs and summary["method"] == tag
    assert float(read_csv(os.path.join(folder, "metrics.csv"))[0]["train_loss"]) > 0


def test_mixup_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows, _ = assert_sigterm_resume_is_exact("mixup", [], tmp_path, n_epoch=2, stop=1)
    summary = read_json(os.path.join(tmp_path / "whole" / "train", os.listdir(tmp_path / "whole" / "train")[0],
                                     "summary.json"))
    assert summary["knobs"] == {"mixup_alpha": 1.0} and not summary["is_ce"]
