"""DivideMix (methods/dividemix.py, methods/_mixmatch.py): co-divide against scikit-learn's
GMM fitted here, label co-refinement, co-guessing, sharpening and the mixing against numpy,
one whole step against a line-by-line transcription of the release's train(), the flags,
and a tiny run stopped mid-epoch after the warm-up and resumed exactly."""
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

import test_methods_runs as runs
from conftest import parse_flags, read_csv
from errors import UserError
from methods import _mixmatch as mm
from methods.dividemix import DivideMix, Step
from utils.state import Network, RunState

pytestmark = pytest.mark.usefixtures("one_thread")


def np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_sharpen(p, t):
    pt = p ** (1 / t)
    return pt / pt.sum(1, keepdims=True)


# ---------------------------------------------------------------- co-divide

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # ten iterations, as released
def test_co_divide_fits_the_gmm_to_normalised_losses_and_each_network_trains_on_its_peers_split():
    rng = np.random.default_rng(0)
    n, k = 200, 4
    labels = rng.integers(0, k, n)
    logits = {name: rng.normal(size=(n, k)) * 3 for name in ("main", "peer")}
    for name, z in logits.items():  # half the samples fit their label well
        z[np.arange(n // 2), labels[: n // 2]] += 8 if name == "main" else 6
    method = DivideMix(warm_up=1, p_threshold=0.5, seed=7)
    method.labels, method.batch_size, method.clean = torch.as_tensor(labels), 16, None
    models = {"": "main", "peer": "peer"}
    run = SimpleNamespace(networks={key: SimpleNamespace(model=m) for key, m in models.items()},
                          predict=lambda model: (torch.as_tensor(logits[model], dtype=torch.float32), None))
    method.start_epoch(1, run)
    states = np.random.default_rng([7, 1, 3]).integers(0, 2 ** 31, size=2)
    expected = []
    for j, name in enumerate(("main", "peer")):
        z = logits[name].astype(np.float32)
        loss = -np.log(np_softmax(z.astype(np.float64)))[np.arange(n), labels]
        loss = (loss - loss.min()) / (loss.max() - loss.min())
        gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4,
                              random_state=int(states[j])).fit(loss.reshape(-1, 1))
        expected.append(gmm.predict_proba(loss.reshape(-1, 1))[:, np.argmin(gmm.means_[:, 0])])
        np.testing.assert_allclose(method.prob[j], expected[-1], atol=1e-5)
    (net, peer, lab, prob), (net2, peer2, lab2, prob2) = method.plan["sets"]
    assert (net, peer, net2, peer2) == ("", "peer", "peer", "")
    np.testing.assert_array_equal(lab, np.flatnonzero(expected[1] > 0.5))   # the peer's division
    np.testing.assert_array_equal(lab2, np.flatnonzero(expected[0] > 0.5))  # the main's division
    assert 0 < len(lab) < n and 0 < len(lab2) < n
    assert method.columns["labelled_fraction"] == len(lab) / n
    # batches of 16 over each labelled set; a last batch of one sample joins the one before
    # (here both sets, of 129 and 113, end with one)
    assert (len(lab), len(lab2)) == (129, 113) and method.plan["steps"] == 8 + 7


def test_the_loss_history_is_averaged_over_the_last_epochs():
    method = DivideMix(warm_up=0, gmm_history=2)
    method.labels, method.batch_size, method.clean = torch.tensor([0, 1, 0, 1]), 2, None
    batches = iter([torch.tensor([[5.0, 0], [0, 5], [0, 5], [5, 0]])] * 2 + [torch.tensor([[0.0, 5], [5, 0], [5, 0], [0, 5]])] * 2
                   + [torch.zeros(4, 2)] * 2)
    run = SimpleNamespace(networks={"": SimpleNamespace(model=0), "peer": SimpleNamespace(model=1)},
                          predict=lambda model: (next(batches), None))
    for epoch in range(3):
        method.divide(run, epoch)
    # the last two epochs: flipped logits (losses 1, 1, 0, 0 after scaling), then all equal (0)
    assert method.history.shape == (2, 2, 4)
    np.testing.assert_allclose(method.history.mean(0)[0].numpy(), [0.5, 0.5, 0, 0], atol=1e-6)


# ---------------------------------------------------------------- MixMatch pieces

def test_refinement_guessing_and_sharpening_match_numpy():
    rng = np.random.default_rng(1)
    b, k, t = 5, 3, 0.5
    onehot = np.eye(k)[rng.integers(0, k, b)]
    w = rng.uniform(size=b)
    p1, p2 = np_softmax(rng.normal(size=(b, k))), np_softmax(rng.normal(size=(b, k)))
    refined = np_sharpen(w[:, None] * onehot + (1 - w[:, None]) * (p1 + p2) / 2, t)
    got = mm.refine_labels(*(torch.as_tensor(a) for a in (onehot, w, p1, p2)), t)
    np.testing.assert_allclose(got.numpy(), refined, rtol=1e-12)
    four = [np_softmax(rng.normal(size=(b, k))) for _ in range(4)]
    np.testing.assert_allclose(mm.guess_labels([torch.as_tensor(p) for p in four], t).numpy(),
                               np_sharpen(sum(four) / 4, t), rtol=1e-12)
    p = np.array([[0.6, 0.3, 0.1]])
    np.testing.assert_allclose(mm.sharpen(torch.as_tensor(p), 0.5).numpy(), [[36 / 46, 9 / 46, 1 / 46]])


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_mixing_keeps_the_larger_weight_on_each_samples_own_input(lam):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2, 3, 3)), rng.uniform(size=(6, 4))
    perm = np.array([3, 0, 5, 1, 2, 4])
    big = max(lam, 1 - lam)
    mx, my = mm.mix(torch.as_tensor(x), torch.as_tensor(y), lam, torch.as_tensor(perm))
    np.testing.assert_allclose(mx.numpy(), big * x + (1 - big) * x[perm], rtol=1e-12)
    np.testing.assert_allclose(my.numpy(), big * y + (1 - big) * y[perm], rtol=1e-12)


def test_rampup_and_penalties_match_the_release_formulas():
    for current, expected in [(9.5, 0.0), (10.0, 0.0), (18.0, 12.5), (26.0, 25.0), (40.0, 25.0)]:
        assert mm.linear_rampup(current, 10, 25.0) == pytest.approx(expected)
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    p = np_softmax(z)
    mean = p.mean(0)
    assert mm.uniform_prior_penalty(torch.as_tensor(z)).item() == pytest.approx(np.sum(np.log((1 / 3) / mean)) / 3)
    assert mm.negative_entropy(torch.as_tensor(z)).item() == pytest.approx(np.mean(np.sum(p * np.log(p), 1)))


def test_one_step_equals_a_transcription_of_the_release():
    """train_step on fixed batches against Train_cifar.py:62-117 written out with plain
    torch on copies of the networks: the loss and the trained network's new weights."""
    torch.manual_seed(0)
    k, d, b, bu, lam_u, t = 3, 5, 4, 6, 7.0, 0.5
    nets = [torch.nn.Linear(d, k).double() for _ in range(2)]
    copies = [torch.nn.Linear(d, k).double() for _ in range(2)]
    for c, n in zip(copies, nets):
        c.load_state_dict(n.state_dict())
    run = RunState.for_model(nets[0], torch.optim.SGD(nets[0].parameters(), lr=0.1), torch.device("cpu"))
    run.networks["peer"] = Network(nets[1], nets[1], torch.optim.SGD(nets[1].parameters(), lr=0.1))
    method = DivideMix(T=t, alpha=4.0)
    method.num_classes = k
    x1, x2, u1, u2 = (torch.randn(n, d, dtype=torch.float64) for n in (b, b, bu, bu))
    y, w = torch.tensor([0, 2, 1, 2]), torch.tensor([0.9, 0.2, 0.6, 0.99], dtype=torch.float64)
    perm = torch.randperm(2 * b + 2 * bu)
    step = Step("", x1, peer="peer", x2=x2, w=w, u1=u1, u2=u2, lam=0.35, perm=perm, lambda_u=lam_u)
    loss, _ = method.train_step(run, step, y, torch.arange(b))

    net, net2 = copies
    with torch.no_grad():
        pu = sum(torch.softmax(m(u), dim=1) for m in (net, net2) for u in (u1, u2)) / 4
        ptu = pu ** (1 / t)
        targets_u = ptu / ptu.sum(dim=1, keepdim=True)
        px = (torch.softmax(net(x1), dim=1) + torch.softmax(net(x2), dim=1)) / 2
        labels_x = torch.zeros(b, k, dtype=torch.float64).scatter_(1, y.view(-1, 1), 1)
        px = w.view(-1, 1) * labels_x + (1 - w.view(-1, 1)) * px
        ptx = px ** (1 / t)
        targets_x = ptx / ptx.sum(dim=1, keepdim=True)
    lam = max(0.35, 0.65)
    all_inputs = torch.cat([x1, x2, u1, u2])
    all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
    mixed_input = lam * all_inputs + (1 - lam) * all_inputs[perm]
    mixed_target = lam * all_targets + (1 - lam) * all_targets[perm]
    logits = net(mixed_input)
    lx = -torch.mean(torch.sum(torch.log_softmax(logits[:2 * b], dim=1) * mixed_target[:2 * b], dim=1))
    lu = torch.mean((torch.softmax(logits[2 * b:], dim=1) - mixed_target[2 * b:]) ** 2)
    prior = torch.ones(k, dtype=torch.float64) / k
    penalty = torch.sum(prior * torch.log(prior / torch.softmax(logits, dim=1).mean(0)))
    expected = lx + lam_u * lu + penalty
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    optimizer.zero_grad()
    expected.backward()
    optimizer.step()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(nets[0].weight, net.weight, atol=1e-6) and torch.equal(nets[1].weight, net2.weight)


# ---------------------------------------------------------------- flags

def test_defaults_are_the_releases_per_data_set_and_noise():
    cfg = parse_flags("train", "--method", "dividemix", "--dataset", "cifar10")
    assert (cfg.warm_up, cfg.lambda_u, cfg.p_threshold, cfg.T, cfg.alpha) == (10, 25.0, 0.5, 0.5, 4.0)
    assert (cfg.lr, cfg.n_epoch, cfg.batch_size, cfg.weight_decay, cfg.momentum, cfg.nesterov, cfg.model) == \
           (0.02, 301, 64, 5e-4, 0.9, False, "preact_resnet18")
    assert cfg.lr_milestones == [0.5] and cfg.gmm_history == 1 and cfg.conf_penalty == "off"
    cfg = parse_flags("train", "--method", "dividemix", "--dataset", "cifar100", "--noise_rate", "0.9")
    assert cfg.warm_up == 30 and cfg.gmm_history == 5
    cfg = parse_flags("train", "--method", "dividemix", "--noise_type", "asym", "--lr", "0.1")
    assert cfg.conf_penalty == "on" and cfg.lr == 0.1
    assert parse_flags("train", "--method", "gce").lr == 0.1  # other methods keep train.py's protocol
    assert parse_flags("train", "--method", "dividemix", "--dataset", "digits").lr == 0.1  # no release protocol


@pytest.mark.parametrize("flags, message", [
    (["--p_threshold", "1"], "--p_threshold 1.0 is outside [0, 1)"),
    (["--T", "0"], "--T 0.0 must be > 0"),
    (["--alpha", "-1"], "--alpha -1.0 must be > 0"),
    (["--lambda_u", "-2"], "--lambda_u -2.0 must be >= 0"),
    (["--warm_up", "-1"], "--warm_up -1 must be >= 0"),
    (["--gmm_history", "0"], "--gmm_history 0 must be >= 1"),
])
def test_bad_flags_are_refused(flags, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_flags("train", "--method", "dividemix", "--dataset", "digits", *flags)


# ---------------------------------------------------------------- runs

def stopped_mid_epoch(method_cls, stop, at_step=1):
    """SIGTERM after step `at_step` of epoch `stop` (0-based): some steps of the epoch have
    trained both networks when the engine stops."""
    class Interrupted(method_cls):
        def start_epoch(self, epoch, run_state):
            super().start_epoch(epoch, run_state)
            self.count = 0 if epoch == stop else None

        def train_step(self, run_state, x, y, idx):
            out = super().train_step(run_state, x, y, idx)
            if self.count is not None:
                self.count += 1
                if self.count == at_step + 1:
                    signal.raise_signal(signal.SIGTERM)
            return out
    return Interrupted


def test_sigterm_mid_epoch_after_the_warm_up_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "interrupted", stopped_mid_epoch)
    rows, last = runs.assert_sigterm_resume_is_exact(
        "dividemix", ["--warm_up", "1", "--batch_size", "512", "--gmm_history", "2"], tmp_path, n_epoch=3, stop=2)
    assert rows[0]["labelled_fraction"] == "" and 0 < float(rows[1]["labelled_fraction"]) < 1
    assert 0 < float(rows[2]["labelled_clean_fraction_peer"]) <= 1
    for row in rows:  # the mean of the two networks is the main column; each has its own
        assert row["test_acc"] and row["test_acc_main"] and row["test_acc_peer"]
    assert last["method"]["history"].shape == (2, 2, 1437) and last["method"]["prob"].shape == (2, 1437)
    folder = os.path.join(tmp_path, "whole", "train", os.listdir(tmp_path / "whole" / "train")[0])
    assert read_csv(os.path.join(folder, "metrics.csv")) == rows


def test_the_plan_visits_each_labelled_sample_once_and_cycles_the_unlabelled_ones():
    """Steps of one epoch after the warm-up on 23 rows: each network's labelled batches cover
    its labelled set (the peer's division) exactly once; its unlabelled batches, one a step,
    run through permutations of the unlabelled set, a new one when the last runs out; each
    step holds two different augmentations of the same rows, and its mixing weight and
    lambda_u are the release's."""
    from data.loader import DeviceLoader
    images = np.arange(23 * 16, dtype=np.uint8).reshape(23, 1, 4, 4)
    loader = DeviceLoader(images, np.zeros(23), 4, (0.0,), (1.0,), "cpu", train=True, pad=1, flip=True)
    method = DivideMix(warm_up=1, lambda_u=25.0, seed=3)
    method.labels, method.batch_size, method.epoch = torch.zeros(23, dtype=torch.int64), 4, 5
    prob = np.zeros((2, 23))
    prob[0, :15], prob[1, 3:6] = 0.9, 0.8  # main's division: 15 labelled; the peer's: 3
    labelled = [np.flatnonzero(p > 0.5) for p in prob]
    plan = {"warm_up": False, "sets": [("", "peer", labelled[1], prob[1]), ("peer", "", labelled[0], prob[0])]}
    steps = list(method.steps(loader, plan))
    assert [s.net for s, _, _ in steps] == [""] + ["peer"] * 4  # batches of 3; then 4, 4, 4, 3
    for net, lab, unl in (("", labelled[1], 20), ("peer", labelled[0], 8)):
        mine = [(s, idx) for s, _, idx in steps if s.net == net]
        seen = torch.cat([idx for _, idx in mine]).numpy()
        assert sorted(seen) == sorted(lab)
        for s, idx in mine:
            assert s.x1.shape == s.x2.shape == (len(idx), 1, 4, 4) and not torch.equal(s.x1, s.x2)
            assert torch.equal(s.w, torch.as_tensor(prob[1 if net == "" else 0][idx.numpy()], dtype=torch.float32))
            assert 0 <= s.lambda_u <= 25.0 and 0 < s.lam < 1 and sorted(s.perm.tolist()) == list(range(len(s.perm)))
        assert mine[0][0].lambda_u == pytest.approx(25.0 * (5 - 1) / 16)  # epoch 5, batch 0, warm-up 1
    # the unlabelled streams: the main's 20 rows, one batch of 4; the peer's 8 rows in
    # batches of 4, so each two batches are a permutation of them
    unlabelled = [np.setdiff1d(np.arange(23), lab) for lab in labelled]
    (main_u,) = [s.u_idx.numpy() for s, _, _ in steps if s.net == ""]
    assert len(main_u) == 4 and set(main_u) <= set(unlabelled[1])
    peer_u = [s.u_idx.numpy() for s, _, _ in steps if s.net == "peer"]
    for first, second in (peer_u[:2], peer_u[2:]):
        assert sorted(np.concatenate([first, second])) == list(unlabelled[0])
    assert not np.array_equal(np.concatenate(peer_u[:2]), np.concatenate(peer_u[2:]))
