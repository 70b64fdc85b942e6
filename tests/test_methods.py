"""The baseline methods' losses and selections (methods/gce.py, elr.py, forward.py,
coteaching.py) against independent float64 numpy computations on fixed logits."""
import numpy as np
import pytest
import torch

from methods.coteaching import coteaching_losses, forget_schedule
from methods.elr import elr_loss, released_defaults
from methods.forward import empirical_transition, estimate_transition, forward_loss
from methods.gce import gce_loss


def numpy_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g) * 2, torch.randint(0, 5, (16,), generator=g)


# ---------------------------------------------------------------- GCE

@pytest.mark.parametrize("q", [1e-4, 0.1, 0.5, 0.7, 1.0])
def test_gce_equals_its_formula(batch, q):
    logits, labels = batch
    p_y = numpy_softmax(logits.numpy())[np.arange(16), labels.numpy()]
    expected = np.mean((1 - p_y ** q) / q)
    assert gce_loss(logits, labels, q).item() == pytest.approx(expected, rel=1e-5)


def test_gce_limits_are_cross_entropy_and_mae(batch):
    logits, labels = batch
    p_y = numpy_softmax(logits.numpy())[np.arange(16), labels.numpy()]
    ce = np.mean(-np.log(p_y))
    assert gce_loss(logits, labels, 1e-5).item() == pytest.approx(ce, rel=1e-3)  # q -> 0
    assert gce_loss(logits, labels, 0.0).item() == pytest.approx(ce, rel=1e-6)   # defined as the limit
    assert gce_loss(logits, labels, 1.0).item() == pytest.approx(np.mean(1 - p_y), rel=1e-6)  # MAE


def test_gce_gradient_weighs_samples_by_p_y_to_the_q(batch):
    """dL_q/dz = p_y^q * dCE/dz per sample (the paper's gradient, eq. 5): numpy's, by hand."""
    logits, labels = batch
    q = 0.7
    z = logits.clone().requires_grad_(True)
    gce_loss(z, labels, q).backward()
    p = numpy_softmax(logits.numpy())
    onehot = np.eye(5)[labels.numpy()]
    p_y = p[np.arange(16), labels.numpy()]
    expected = (p_y ** q)[:, None] * (p - onehot) / 16
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- ELR

def numpy_elr_steps(batches, n, k, lam, beta):
    """The release's update and loss, in float64 numpy: one (loss, targets) per step."""
    t = np.zeros((n, k))
    out = []
    for z, y, idx in batches:
        p = np.clip(numpy_softmax(z), 1e-4, 1 - 1e-4)
        t[idx] = beta * t[idx] + (1 - beta) * p / p.sum(1, keepdims=True)
        ce = np.mean(-np.log(numpy_softmax(z)[np.arange(len(y)), y]))
        reg = np.mean(np.log(1 - (t[idx] * p).sum(1)))
        out.append((ce + lam * reg, t.copy()))
    return out


def test_elr_targets_and_loss_over_three_steps_match_numpy():
    g = torch.Generator().manual_seed(1)
    n, k, lam, beta = 12, 4, 3.0, 0.7
    # three batches, the second and third revisiting rows of the first
    indices = [torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([3, 4, 5, 6, 7, 8]), torch.tensor([0, 4, 8, 11])]
    batches = [(torch.randn(len(i), k, generator=g) * 3, torch.randint(0, k, (len(i),), generator=g), i)
               for i in indices]
    expected = numpy_elr_steps([(z.numpy(), y.numpy(), i.numpy()) for z, y, i in batches], n, k, lam, beta)
    targets = torch.zeros(n, k)
    for (z, y, i), (loss, t) in zip(batches, expected):
        assert elr_loss(z, y, targets, i, lam, beta).item() == pytest.approx(loss, rel=1e-5)
        np.testing.assert_allclose(targets.numpy(), t, rtol=1e-5, atol=1e-7)
    # rows never seen keep their zero target; rows seen once hold (1 - beta) p
    assert targets[[9, 10]].abs().sum() == 0
    assert targets[1].sum().item() == pytest.approx(1 - beta, rel=1e-6)
    assert targets[4].sum().item() == pytest.approx(1 - beta ** 3, rel=1e-6)  # seen three times


def test_elr_gradient_reaches_the_prediction_not_the_target():
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(3, 4, generator=g) * 2).requires_grad_(True)
    y, idx = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    targets = torch.zeros(3, 4)
    targets[:] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # an earlier target
    before = targets.clone()
    elr_loss(z, y, targets, idx, 3.0, 0.7).backward()
    # numpy gradient of CE + lam * mean log(1 - <p, t>) with t held fixed (after the update)
    zn = z.detach().numpy().astype(np.float64)
    p = numpy_softmax(zn)  # no entry is clamped at these logits
    assert (p > 1e-4).all() and (p < 1 - 1e-4).all()
    t = 0.7 * before.numpy() + 0.3 * p
    onehot = np.eye(4)[y.numpy()]
    inner = (t * p).sum(1, keepdims=True)
    d_reg_dp = -t / (1 - inner)                    # d log(1 - <p, t>) / dp
    d_reg_dz = p * (d_reg_dp - (d_reg_dp * p).sum(1, keepdims=True))
    expected = ((p - onehot) + 3.0 * d_reg_dz) / 3
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert targets.grad is None


def test_elr_lambda_zero_is_cross_entropy(batch):
    logits, labels = batch
    p_y = numpy_softmax(logits.numpy())[np.arange(16), labels.numpy()]
    loss = elr_loss(logits, labels, torch.zeros(16, 5), torch.arange(16), 0.0, 0.7)
    assert loss.item() == pytest.approx(np.mean(-np.log(p_y)), rel=1e-6)


def test_elr_defaults_are_the_released_configurations():
    assert released_defaults("cifar10", "symmetric") == (3.0, 0.7)
    assert released_defaults("cifar10", "asym") == (1.0, 0.9)
    assert released_defaults("cifar100", "symmetric") == (7.0, 0.9)
    assert released_defaults("cifar100", "asym") == (7.0, 0.9)
    assert released_defaults("digits", "symmetric") == (3.0, 0.7)


# ---------------------------------------------------------------- Co-teaching

def numpy_ce(z, y):
    return -np.log(numpy_softmax(z)[np.arange(len(y)), y])


def test_coteaching_keeps_the_small_loss_samples_and_trains_each_network_on_its_peers_choice():
    """10 samples; labels 7, 8, 9 are planted wrong (both networks put their mass elsewhere).
    The main network also finds sample 0 hard and the peer sample 1: with 40% forgotten, each
    keeps the six others, and each network's loss is over the samples its PEER kept."""
    k = 4
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    right = torch.nn.functional.one_hot(labels, k).float() * 4.0
    wrong = torch.nn.functional.one_hot((labels + 1) % k, k).float() * 6.0
    logits = torch.where(torch.arange(10)[:, None] >= 7, wrong, right)
    logits = logits + torch.linspace(0, 0.3, 10)[:, None] * torch.tensor([0.0, 1.0, 0.0, 0.0])  # no ties
    peer_logits = logits.clone()
    logits[0], peer_logits[1] = wrong[0], wrong[1]
    z, pz = logits.clone().requires_grad_(True), peer_logits.clone().requires_grad_(True)
    loss, peer_loss, keep, peer_keep = coteaching_losses(z, pz, labels, 0.4)
    assert sorted(keep.tolist()) == [1, 2, 3, 4, 5, 6]       # the main network's choice
    assert sorted(peer_keep.tolist()) == [0, 2, 3, 4, 5, 6]  # the peer's
    ce, peer_ce = numpy_ce(logits.numpy(), labels.numpy()), numpy_ce(peer_logits.numpy(), labels.numpy())
    assert loss.item() == pytest.approx(ce[[0, 2, 3, 4, 5, 6]].mean(), rel=1e-6)
    assert peer_loss.item() == pytest.approx(peer_ce[[1, 2, 3, 4, 5, 6]].mean(), rel=1e-6)
    (loss + peer_loss).backward()
    # gradient (p - onehot) / 6 on the rows the peer kept, nothing elsewhere
    expected = np.zeros((10, k))
    rows = [0, 2, 3, 4, 5, 6]
    expected[rows] = (numpy_softmax(logits.numpy()) - np.eye(k)[labels.numpy()])[rows] / 6
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert (pz.grad[[0, 7, 8, 9]] == 0).all() and (pz.grad[1] != 0).any()


def test_coteaching_keeps_int_of_the_remembered_share_and_at_least_one():
    z = torch.randn(7, 3)
    y = torch.zeros(7, dtype=torch.int64)
    assert len(coteaching_losses(z, z, y, 0.3)[2]) == 4   # int(0.7 * 7) = 4, as released
    assert len(coteaching_losses(z, z, y, 0.0)[2]) == 7
    assert len(coteaching_losses(z[:2], z[:2], y[:2], 0.6)[2]) == 1  # int(0.8) = 0 -> 1


@pytest.mark.parametrize("tau,t_k,c,n_epoch", [(0.4, 10, 1.0, 30), (0.2, 5, 2.0, 12), (0.5, 10, 0.5, 6),
                                               (0.4, 1, 1.0, 5), (0.4, 0, 1.0, 5), (0.0, 10, 1.0, 4)])
def test_forget_schedule_is_the_releases_read_at_epoch_plus_one(tau, t_k, c, n_epoch):
    """R of engine epoch e is the release's rate_schedule[e + 1]: tau^c (e + 1) / (T_k - 1)
    while e + 1 < T_k, then tau."""
    expected = [tau ** c * (e + 1) / (t_k - 1) if e + 1 < t_k else tau for e in range(n_epoch)]
    np.testing.assert_allclose(forget_schedule(tau, t_k, c, n_epoch), expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- forward correction

PAIR_T = np.array([[0.6, 0.4, 0.0, 0.0],
                   [0.0, 0.7, 0.3, 0.0],
                   [0.0, 0.0, 1.0, 0.0],
                   [0.2, 0.2, 0.2, 0.4]])


def test_forward_loss_and_gradient_with_a_known_matrix(batch):
    """-log (T^T p)_y, and its gradient p_j (1 - T[j, y] / (T^T p)_y) by hand, with zeros in T."""
    logits, labels = batch[0][:, :4], batch[1] % 4
    z = logits.clone().requires_grad_(True)
    loss = forward_loss(z, labels, torch.log(torch.tensor(PAIR_T, dtype=torch.float32)))
    loss.backward()
    p = numpy_softmax(logits.numpy())
    y = labels.numpy()
    q_y = (p @ PAIR_T)[np.arange(16), y]
    assert loss.item() == pytest.approx(np.mean(-np.log(q_y)), rel=1e-6)
    expected = p * (1 - PAIR_T[:, y].T / q_y[:, None]) / 16
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_forward_with_the_identity_is_cross_entropy(batch):
    logits, labels = batch
    p_y = numpy_softmax(logits.numpy())[np.arange(16), labels.numpy()]
    loss = forward_loss(logits, labels, torch.log(torch.eye(5)))
    assert loss.item() == pytest.approx(np.mean(-np.log(p_y)), rel=1e-6)


def test_empirical_transition_counts_the_labels_by_hand():
    true = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    noisy = np.array([0, 0, 1, 2, 1, 0, 2, 1])
    T = empirical_transition(true, noisy, 4)
    np.testing.assert_array_equal(T, [[0.5, 0.25, 0.25, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_estimated_transition_takes_the_anchor_below_the_97th_percentile():
    """Column i of 100 samples holds distinct values; the 97th percentile ('higher') of 100
    values is the 98th smallest, so the three largest are outliers and the anchor is the
    sample with the fourth largest p(i|x). Percentile 100: the sample with the largest."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=100)
    T = estimate_transition(probs, 97)
    T100 = estimate_transition(probs, 100)
    for i in range(3):
        order = np.argsort(probs[:, i])
        np.testing.assert_allclose(T[i], probs[order[-4]] / probs[order[-4]].sum(), rtol=1e-12)
        np.testing.assert_allclose(T100[i], probs[order[-1]] / probs[order[-1]].sum(), rtol=1e-12)
    assert np.allclose(T.sum(1), 1)
