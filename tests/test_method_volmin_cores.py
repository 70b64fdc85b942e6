"""VolMinNet (methods/volminnet.py) and CORES² (methods/cores.py): their formulas, T's update
and the sieve against independent float64 numpy transcriptions of the releases' code, their
flags and refusals, and tiny train.py runs with exact resume after SIGTERM."""
import os

import numpy as np
import pytest
import torch

import train as train_script
from conftest import parse_flags, read_csv, read_json
from errors import UserError
from methods.cores import Cores, beta_schedule, cores_loss, kept_prior
from methods.volminnet import VolMinNet, transition_from_weights, volmin_loss
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, timeless, train
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------- VolMinNet: T and its loss

def numpy_sig_t(w):
    """models.py, sig_t.forward: I + sigmoid(w) * co (co: ones off the diagonal), each row
    divided by its L1 norm."""
    k = w.shape[0]
    co = np.ones((k, k))
    co[np.diag_indices(k)] = 0
    t = np.eye(k) + 1 / (1 + np.exp(-w)) * co
    return t / np.abs(t).sum(1, keepdims=True)


def numpy_volmin_loss(z, y, w, lam):
    """main.py: nll_loss(log(softmax @ T), y) + lam * slogdet(T).logabsdet."""
    t = numpy_sig_t(w)
    out = numpy_softmax(z) @ t
    return np.mean(-np.log(out[np.arange(len(y)), y])) + lam * np.linalg.slogdet(t)[1]


def numpy_volmin_grad(z, y, w, lam):
    """The gradient of numpy_volmin_loss with respect to w, by hand: with A = I + s(w) * co,
    r_i = sum_j A_ij and T = A / r,
      dL/dT_ij = -1/B sum_n [y_n = j] p_ni / (p_n . T[:, y_n])  +  lam * (T^-T)_ij
      dL/dA_ij = (dL/dT_ij - sum_k dL/dT_ik T_ik) / r_i
      dL/dw_ij = dL/dA_ij * s(w_ij) (1 - s(w_ij)) * co_ij."""
    k, b = w.shape[0], len(y)
    co = np.ones((k, k))
    co[np.diag_indices(k)] = 0
    s = 1 / (1 + np.exp(-w))
    a = np.eye(k) + s * co
    r = a.sum(1, keepdims=True)
    t = a / r
    p = numpy_softmax(z)
    q = (p @ t)[np.arange(b), y]
    grad_t = np.zeros((k, k))
    for n in range(b):
        grad_t[:, y[n]] -= p[n] / q[n] / b
    grad_t += lam * np.linalg.inv(t).T
    grad_a = (grad_t - (grad_t * t).sum(1, keepdims=True)) / r
    return grad_a * s * (1 - s) * co


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 4, generator=g) * 2, torch.randint(0, 4, (12,), generator=g)


def test_transition_is_the_releases_sig_t_and_starts_near_the_identity():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 5, generator=g) * 3
    np.testing.assert_allclose(transition_from_weights(w).numpy(), numpy_sig_t(w.numpy().astype(np.float64)),
                               rtol=1e-6, atol=1e-7)
    t0 = transition_from_weights(torch.full((10, 10), -2.0)).numpy()  # the release's init 2
    d = 1 / (1 + 9 / (1 + np.exp(2)))
    np.testing.assert_allclose(np.diag(t0), d, rtol=1e-6)
    assert 0.48 < d < 0.49
    np.testing.assert_allclose(t0.sum(1), 1, rtol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 1e-4, 0.3])
def test_volmin_loss_is_the_releases_formula(batch, lam):
    logits, labels = batch
    g = torch.Generator().manual_seed(4)
    w = torch.randn(4, 4, generator=g) - 2
    loss = volmin_loss(logits, labels, transition_from_weights(w), lam).item()
    expected = numpy_volmin_loss(logits.numpy(), labels.numpy(), w.numpy().astype(np.float64), lam)
    assert loss == pytest.approx(expected, rel=1e-5)


def drive(method, logits_source, labels, steps, scaler=None):
    """Run `steps` train_steps of `method` on one fixed batch, the network frozen (lr 0), so
    that only T moves; returns (the logits, W after each step)."""
    model = torch.nn.Linear(3, 4)
    with torch.no_grad():
        model.weight.copy_(logits_source[0])
        model.bias.copy_(logits_source[1])
    run = RunState.for_model(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.device("cpu"),
                             scaler=scaler, num_classes=4, noisy_labels=labels, true_labels=None)
    method.setup(run)
    method.start_epoch(0, run)
    x = torch.eye(3).repeat(4, 1)  # 12 rows
    out = []
    for _ in range(steps):
        method.train_step(run, x, labels, torch.arange(len(labels)))
        out.append(method.weights.detach().clone().double().numpy())
    return model(x).detach().double().numpy(), out


@pytest.mark.parametrize("optimizer,lam,lr", [("sgd", 1e-4, 0.5), ("sgd", 0.3, 0.2), ("adam", 1e-4, 0.01),
                                              ("adam", 0.3, 0.01)])
def test_t_update_is_a_hand_computed_optimiser_step(batch, optimizer, lam, lr):
    """Two steps of W: SGD with momentum 0.9 (buf = g1, then 0.9 g1 + g2) or Adam (betas 0.9,
    0.999, eps 1e-8, bias-corrected), from the hand-computed gradient; the diagonal of W gets
    no gradient and stays at -init."""
    _, labels = batch
    g = torch.Generator().manual_seed(5)
    source = (torch.randn(4, 3, generator=g) * 2, torch.randn(4, generator=g))
    method = VolMinNet(lam=lam, init=2.0, optimizer=optimizer, lr=lr, milestones=[0.5], n_epoch=4)
    z, ws = drive(method, source, labels, 2)
    y = labels.numpy()
    w = np.full((4, 4), -2.0)
    m = v = buf = np.zeros((4, 4))
    for step in (1, 2):
        grad = numpy_volmin_grad(z, y, w, lam)
        if optimizer == "sgd":
            buf = grad if step == 1 else 0.9 * buf + grad
            w = w - lr * buf
        else:
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad ** 2
            w = w - lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        np.testing.assert_allclose(ws[step - 1], w, rtol=1e-4, atol=1e-6)
    assert np.abs(ws[1] + 2).max() > 1e-3  # T moved
    np.testing.assert_array_equal(np.diag(ws[1]), -2.0)


def test_t_steps_through_the_fp16_gradient_scaler_unscaled(batch):
    """With --precision fp16's scaler the loss is scaled (65536) for the backward; T's step
    is unscaled by it, the same as without a scaler."""
    _, labels = batch
    g = torch.Generator().manual_seed(5)
    source = (torch.randn(4, 3, generator=g) * 2, torch.randn(4, generator=g))
    _, plain = drive(VolMinNet(lam=0.3, lr=0.2), source, labels, 2)
    _, scaled = drive(VolMinNet(lam=0.3, lr=0.2), source, labels, 2, scaler=torch.amp.GradScaler("cpu"))
    np.testing.assert_allclose(scaled[1], plain[1], rtol=1e-6, atol=1e-7)
    assert np.abs(plain[1] + 2).max() > 1e-3


def test_t_learning_rate_is_divided_by_ten_at_30_and_60_of_80_epochs(batch):
    _, labels = batch
    method = VolMinNet(optimizer="sgd", n_epoch=80)
    run = RunState.for_model(torch.nn.Linear(3, 4), torch.optim.SGD(torch.nn.Linear(3, 4).parameters(), lr=0.1),
                             torch.device("cpu"), num_classes=4, noisy_labels=labels, true_labels=None)
    method.setup(run)
    lrs = []
    for epoch in (0, 29, 30, 59, 60, 79):
        method.start_epoch(epoch, run)
        lrs.append(method.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rel=1e-12)


# ---------------------------------------------------------------- CORES: the release's functions

def numpy_f_beta(epoch):
    """loss.py, f_beta."""
    beta = np.concatenate((np.linspace(0.0, 0.0, num=10), np.linspace(0.0, 2, num=30), np.linspace(2, 2, num=60)))
    return beta[epoch]


def numpy_loss_cores(epoch, z, t, noise_prior):
    """loss.py, loss_cores, in float64: (loss, loss_v)."""
    beta = numpy_f_beta(epoch)
    p = numpy_softmax(z)
    loss = -np.log(p[np.arange(len(t)), t])
    loss_ = -np.log(p + 1e-8)
    loss_sel = loss - np.mean(loss_, 1)
    loss = loss - beta * np.sum(noise_prior * loss_, 1)
    loss_v = np.zeros(len(t))
    for i in range(len(t)):
        if epoch <= 30:
            loss_v[i] = 1.0
        elif loss_sel[i] <= 0:
            loss_v[i] = 1.0
    if loss_v.sum() == 0:
        return np.mean(loss_v * loss) / 100000000, loss_v
    return np.sum(loss_v * loss) / loss_v.sum(), loss_v


def test_beta_schedule_is_the_releases_table_and_then_holds():
    assert beta_schedule(2.0, 10, 30, 100) == [numpy_f_beta(e) for e in range(100)]
    longer = beta_schedule(2.0, 10, 30, 120)
    assert longer[:100] == [numpy_f_beta(e) for e in range(100)] and longer[100:] == [2.0] * 20
    assert beta_schedule(1.5, 1, 3, 6) == pytest.approx([0.0, 0.0, 0.75, 1.5, 1.5, 1.5])
    assert beta_schedule(2.0, 10, 30, 5) == [0.0] * 5


@pytest.fixture
def planted():
    """16 samples of 5 classes; the network is confident about the true class of each; the
    labels of samples 3, 7, 8, 12 are planted wrong. Sample 5 is clean but hard (its mass
    spread); sample 8 is noisy with a label the network finds plausible (its logit 1.5 below
    the true class's), so that its loss stays below its mean loss over the classes: the
    sieve keeps it. Returns (logits, labels, the samples the sieve must drop)."""
    g = torch.Generator().manual_seed(7)
    true = torch.randint(0, 5, (16,), generator=g)
    logits = torch.randn(16, 5, generator=g) * 0.5
    logits[torch.arange(16), true] += 4.0
    logits[5] = torch.tensor([0.3, 0.1, 0.2, 0.0, 0.25])
    true[5] = 0
    labels = true.clone()
    noisy = [3, 7, 8, 12]
    labels[noisy] = (true[noisy] + torch.tensor([1, 2, 3, 4])) % 5
    logits[8, labels[8]] = logits[8, true[8]] - 1.5
    return logits, labels, [3, 7, 12]


@pytest.mark.parametrize("epoch", [0, 12, 30, 31, 45, 99])
def test_cores_loss_and_sieve_match_the_releases_function(planted, epoch):
    logits, labels, noisy = planted
    prior = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15])
    z = logits.clone().requires_grad_(True)
    loss, keep = cores_loss(z, labels, prior, beta_schedule(2.0, 10, 30, 100)[epoch], sieve=epoch >= 31)
    expected, loss_v = numpy_loss_cores(epoch, logits.numpy(), labels.numpy(), prior.numpy().astype(np.float64))
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(keep.numpy(), loss_v.astype(bool))
    if epoch >= 31:  # the planted noisy labels, and only they, are sieved out
        assert sorted(np.flatnonzero(~keep.numpy())) == noisy
        loss.backward()
        assert (z.grad[noisy] == 0).all() and (z.grad[[0, 5]] != 0).any(dim=1).all()
    else:
        assert keep.all()


def test_cores_keeping_nothing_is_a_zero_loss_and_beta_zero_without_sieve_is_ce(planted):
    logits, labels, _ = planted
    wrong = (logits.argmax(1) + 1) % 5  # every label against a confident network
    logits_all_wrong = logits.clone()
    logits_all_wrong[5] = logits[0]
    loss, keep = cores_loss(logits_all_wrong, wrong, torch.full((5,), 0.2), 2.0, sieve=True)
    assert not keep.any() and loss.item() == 0.0
    p_y = numpy_softmax(logits.numpy())[np.arange(16), labels.numpy()]
    loss, keep = cores_loss(logits, labels, torch.full((5,), 0.2), 0.0, sieve=False)
    assert keep.all() and loss.item() == pytest.approx(np.mean(-np.log(p_y)), rel=1e-6)


def test_prior_is_the_releases_update_from_the_sieved_out_counts():
    """phase1.py: noise_prior_cur = noise_prior * N - (sieved-out samples per noisy class),
    normalised; noise_prior the noisy labels' distribution (data/cifar.py)."""
    g = torch.Generator().manual_seed(8)
    noisy = torch.randint(0, 6, (200,), generator=g)
    kept = torch.rand(200, generator=g) > 0.3
    n = noisy.numpy()
    noise_prior = np.bincount(n, minlength=6) / 200
    delta = np.bincount(n[~kept.numpy()], minlength=6)
    expected = noise_prior * 200 - delta
    np.testing.assert_allclose(kept_prior(noisy, kept, 6).numpy(), expected / expected.sum(), rtol=1e-6)
    np.testing.assert_allclose(kept_prior(noisy, torch.ones(200, dtype=torch.bool), 6).numpy(), noise_prior,
                               rtol=1e-6)


# ---------------------------------------------------------------- the command line

def test_help_shows_the_flags_with_their_defaults():
    """train.py --method NAME --help's text (its parser, in this process)."""
    for method, pieces in {"volminnet": ["--vol_lambda", "(default: 0.0001)", "4.5 on CIFAR-100",
                                         "adam on CIFAR-100", "(default: [0.375, 0.75])"],
                           "cores": ["--cores_beta", "(default: 2.0)", "--cores_warmup", "(default: 31)",
                                     "--no-cores_sieve", "--cores_beta_ramp"]}.items():
        text = " ".join(train_script.preset(["--method", method]).parser().format_help().split())
        for piece in pieces:
            assert piece in text, (method, piece)


@pytest.mark.parametrize("extra,expected", [
    (["--method", "volminnet", "--vol_lambda", "-1"], "--vol_lambda -1.0 must be >= 0"),
    (["--method", "volminnet", "--vol_lr", "-0.1"], "--vol_lr -0.1 must be >= 0"),
    (["--method", "volminnet", "--vol_lr_milestones", "0.5", "1.5"], "must be fractions of the run in (0, 1)"),
    (["--method", "cores", "--cores_beta", "-2"], "--cores_beta -2.0 must be >= 0"),
    (["--method", "cores", "--cores_warmup", "-1"], "--cores_warmup -1 must be >= 0"),
    (["--method", "cores", "--cores_beta_ramp", "-3"], "--cores_beta_ramp -3 must be >= 0"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *extra, *SMALL)
    assert expected in str(err.value)


def test_volminnet_defaults_follow_the_data_set_and_an_explicit_value_shares_the_folder():
    cfg = parse_flags("train", "--method", "volminnet", *SMALL)
    assert (cfg.vol_optimizer, cfg.vol_init, cfg.vol_lambda, cfg.vol_lr) == ("sgd", 2.0, 1e-4, 0.01)
    cfg100 = parse_flags("train", "--method", "volminnet", "--dataset", "cifar100")
    assert (cfg100.vol_optimizer, cfg100.vol_init) == ("adam", 4.5)
    typed = parse_flags("train", "--method", "volminnet", *SMALL, "--vol_optimizer", "sgd", "--vol_init", "2")
    assert vars(typed) == vars(cfg)
    assert VolMinNet.from_config(cfg).knob_values() == {"vol_lambda": 1e-4}
    assert not VolMinNet.from_config(cfg).is_ce()


def test_cores_knobs_and_ce():
    cfg = parse_flags("train", "--method", "cores", *SMALL)
    method = Cores.from_config(cfg)
    assert method.knob_values() == {"cores_beta": 2.0, "cores_sieve": True} and not method.is_ce()
    ce = Cores.from_config(parse_flags("train", "--method", "cores", *SMALL, "--cores_beta", "0", "--no-cores_sieve"))
    assert ce.is_ce() and ce.tag == "ce" and ce.label == "CE"
    assert not Cores.from_config(parse_flags("train", "--method", "cores", *SMALL, "--cores_beta", "0")).is_ce()


# ---------------------------------------------------------------- runs

def test_volminnet_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows, last = assert_sigterm_resume_is_exact("volminnet", ["--vol_lr", "0.5"], tmp_path)
    whole, = (tmp_path / "whole" / "train").iterdir()
    parts, = (tmp_path / "parts" / "train").iterdir()
    resumed = torch.load(parts / "last.pt", weights_only=True)["method"]
    momentum = last["method"]["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.abs().max() > 0 and torch.equal(momentum, resumed["optimizer"]["state"][0]["momentum_buffer"])
    t = transition_from_weights(last["method"]["weights"])
    noise = read_json(whole / "noise.json")
    true_t = torch.tensor(noise["transition_matrix"], dtype=torch.float32)
    assert float(rows[-1]["transition_error"]) == pytest.approx(
        ((t - true_t).abs().sum() / true_t.abs().sum()).item(), rel=1e-4)
    assert float(rows[0]["transition_error"]) != float(rows[-1]["transition_error"])  # T learned


def test_cores_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Beta 0, 0, then 1, 2 (warm-up 2 epochs, ramp 2), the sieve from the third epoch on,
    interrupted after it: the sieve's decisions and prior carry over exactly."""
    flags = ["--cores_beta_warmup", "2", "--cores_beta_ramp", "2", "--cores_warmup", "2"]
    rows, last = assert_sigterm_resume_is_exact("cores", flags, tmp_path, n_epoch=4, stop=3)
    assert [float(r["cores_beta"]) for r in rows] == [0.0, 0.0, 0.0, 2.0]  # linspace(0, 2, 2) = 0, 2
    for r in rows:
        assert float(r["cores_lr"]) == pytest.approx(float(r["lr"]) / (1 + float(r["cores_beta"])), rel=1e-12)
    assert [float(r["kept_fraction"]) for r in rows[:2]] == [1.0, 1.0]
    assert all(0.3 < float(r["kept_fraction"]) < 1.0 for r in rows[2:])
    kept = last["method"]["kept"]
    assert float(rows[-1]["kept_fraction"]) == pytest.approx(kept.sum().item() / len(kept), rel=1e-12)
    whole, = (tmp_path / "whole" / "train").iterdir()
    noisy = torch.as_tensor(np.load(whole / "noisy_labels.npy"))
    clean = 1 - read_json(whole / "noise.json")["actual_noise_rate"]
    assert float(rows[-1]["kept_clean_fraction"]) > clean  # the sieve drops mostly noisy labels
    # the prior the last epoch trained with: the noisy labels' distribution over the samples
    # the third epoch kept, no longer that of all the labels
    prior = last["method"]["prior"]
    assert prior.sum().item() == pytest.approx(1.0, rel=1e-6)
    assert (prior - kept_prior(noisy, torch.ones_like(kept), 10)).abs().max() > 1e-3


def test_cores_beta_zero_without_sieve_trains_exactly_as_cross_entropy(tmp_path):
    common = [*SMALL, "--n_epoch", "2"]
    _, (cores,) = train(["--method", "cores", "--cores_beta", "0", "--no-cores_sieve", *common,
                         "--result_dir", str(tmp_path / "a")])
    _, (gls,) = train(["--method", "gls", "--smooth_rate", "0", *common, "--result_dir", str(tmp_path / "b")])
    ours = [{k: v for k, v in r.items() if not k.startswith(("cores_", "kept_"))}
            for r in timeless(read_csv(os.path.join(cores, "metrics.csv")))]
    assert ours == timeless(read_csv(os.path.join(gls, "metrics.csv")))
    summary = read_json(os.path.join(cores, "summary.json"))
    assert summary["is_ce"] and summary["knobs"] == {"cores_beta": 0.0, "cores_sieve": False}
