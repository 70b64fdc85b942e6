"""ELR+ (methods/elr_plus.py) against float64 numpy transcriptions of its release
(shengliu66/ELR, ELR_plus/): the loss on fixed logits with mixup weights, two whole steps of
both networks (mixup, targets from the other network's average, SGD, the averages) on
linear networks, and the engine's columns of the mean of their logits, of each network and
of each average; the ramp-ups, the defaults per data set, the refusals, the documented
command lines of the release's plans, and a digits run stopped by SIGTERM and resumed."""
import math
import os
import re
import shlex

import numpy as np
import pytest
import torch

from conftest import ROOT, parse_flags
from errors import UserError
from methods.elr_plus import ELRPlus, MeanOfLogits, elr_plus_loss, ema_decay, sigmoid_rampup
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact
from utils.engine import evaluate_all
from utils.state import Network, RunState

pytestmark = pytest.mark.usefixtures("one_thread")


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_release_rampup(current, length):
    """ELR_plus/utils/util.py:45-52."""
    if length == 0:
        return 1.0
    current = np.clip(current, 0.0, length)
    return float(np.exp(-5.0 * (1.0 - current / length) ** 2))


def np_loss_and_grad(z, mixed, q, coef, weight_labels):
    """ELR_plus/model/loss.py:23-34 in numpy, and its gradient in z (unweighted labels)."""
    p_raw = np_softmax(z)
    p = np.clip(p_raw, 1e-4, 1 - 1e-4)
    y = mixed * q / (mixed * q).sum(1, keepdims=True) if weight_labels else mixed
    ce = np.mean(-(y * np.log(p_raw)).sum(1))
    inner = (q * p).sum(1)
    loss = ce + coef * np.mean(np.log(1 - inner))
    n = len(z)
    dp = np.where((p_raw > 1e-4) & (p_raw < 1 - 1e-4), q, 0.0)     # the clamp passes no gradient
    d_inner = p_raw * (dp - (dp * p_raw).sum(1, keepdims=True))     # softmax Jacobian times dp
    grad = (p_raw * y.sum(1, keepdims=True) - y) / n - coef / n * d_inner / (1 - inner)[:, None]
    return loss, grad


def test_loss_matches_numpy_on_fixed_logits_with_mixup_weights():
    z = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [12.0, 0.0, -1.0], [-0.5, 1.5, 0.0]])
    y = np.array([0, 2, 0, 1])
    lam, perm = 0.7, np.array([2, 0, 3, 1])
    onehot = np.eye(3)[y]
    mixed = lam * onehot + (1 - lam) * onehot[perm]
    t = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1]]) * 0.3
    q = lam * t + (1 - lam) * t[perm]
    for weight_labels in (False, True):
        zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
        loss = elr_plus_loss(zt, torch.tensor(mixed, dtype=torch.float32), torch.tensor(q, dtype=torch.float32),
                             2.5, weight_labels)
        expected, grad = np_loss_and_grad(z, mixed, q, 2.5, weight_labels)
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        if not weight_labels:
            loss.backward()
            np.testing.assert_allclose(zt.grad.numpy(), grad, rtol=1e-5, atol=1e-7)
    # row 2 is clamped at 1 - 1e-4: the regulariser there reads the clamped value
    assert np_softmax(z)[2, 0] > 1 - 1e-4


def test_ramp_ups_and_averaging_weights_are_the_releases():
    for current, length in [(0, 40000), (1, 40000), (20000, 40000), (40000, 40000), (50000, 40000), (3, 0)]:
        assert sigmoid_rampup(current, length) == pytest.approx(np_release_rampup(current, length), rel=1e-12)
    assert sigmoid_rampup(20000, 40000) == pytest.approx(math.exp(-1.25))
    # ELR_plus/trainer/trainer.py:326-329: step s (1-based) reads s + 1, or min(1 - 1/(s + 1), alpha)
    assert ema_decay(1, 0.997, "sigmoid", 40000) == pytest.approx(0.997 * np_release_rampup(2, 40000))
    assert [ema_decay(s, 0.9999, "average", 0) for s in (1, 2, 9)] == pytest.approx([0.5, 2 / 3, 0.9])
    assert ema_decay(10 ** 6, 0.9999, "average", 0) == 0.9999


def linear_run(inits, n, k, lr):
    """A RunState of linear networks (weights from `inits`, taken in order) on the CPU."""
    pending = list(inits)

    def build():
        w, b = pending.pop(0)
        model = torch.nn.Linear(w.shape[1], k)
        with torch.no_grad():
            model.weight.copy_(torch.tensor(w, dtype=torch.float32))
            model.bias.copy_(torch.tensor(b, dtype=torch.float32))
        return Network(model, model, torch.optim.SGD(model.parameters(), lr=lr))
    first = build()
    run = RunState.for_model(first.model, first.optimizer, torch.device("cpu"), num_classes=k,
                             noisy_labels=torch.zeros(n, dtype=torch.int64))
    run.build_network = build
    return run


def test_two_steps_of_both_networks_match_numpy():
    """Network 1 steps on targets from network 2's average as it stood, then its own average
    moves; network 2 steps on targets from network 1's average just moved (the same batch,
    its own mixup draw), as ELR_plus/trainer/trainer.py:102-120 with the networks in turn;
    then the engine evaluates the mean of their logits (trainer.py:231-234) and each model."""
    rng = np.random.default_rng(3)
    n, d, k, lr, beta, lam_reg, ema_alpha = 10, 5, 3, 0.3, 0.6, 2.0, 0.9
    inits = [(rng.normal(size=(k, d)), rng.normal(size=k)) for _ in range(4)]  # net1, net2, ema1, ema2
    x = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    batches = [np.array([0, 3, 5, 7]), np.array([3, 1, 9, 5])]   # sample 3 and 5 seen twice
    method = ELRPlus(lam_reg, beta, mixup_alpha=1.0, ema_alpha=ema_alpha, ema_update="sigmoid", ema_step=4,
                     coef_step=3)
    run = linear_run(inits, n, k, lr)
    method.setup(run)
    np.random.seed(11)
    torch.manual_seed(12)
    for idx in batches:
        method.train_step(run, torch.tensor(x[idx], dtype=torch.float32), torch.tensor(y[idx]), torch.tensor(idx))
    # the numpy transcription, drawing lambda and the permutations from the same seeds
    np.random.seed(11)
    torch.manual_seed(12)
    nets = [[w.copy(), b.copy()] for w, b in inits[:2]]
    emas = [[w.copy(), b.copy()] for w, b in inits[2:]]
    targets = [np.zeros((n, k)), np.zeros((n, k))]
    for step, idx in enumerate(batches, start=1):
        coef = lam_reg * np_release_rampup(step, 3)
        decay = ema_alpha * np_release_rampup(step + 1, 4)
        for net in (0, 1):
            lam = np.random.beta(1.0, 1.0)
            lam = max(lam, 1 - lam)
            perm = torch.randperm(len(idx)).numpy()
            xb, onehot = x[idx], np.eye(k)[y[idx]]
            xm = lam * xb + (1 - lam) * xb[perm]
            w, b = nets[net]
            z = xm @ w.T + b
            ew, eb = emas[1 - net]
            s = np_softmax(xb @ ew.T + eb)
            t = targets[net]
            t[idx] = beta * t[idx] + (1 - beta) * s / s.sum(1, keepdims=True)
            q = lam * t[idx] + (1 - lam) * t[idx][perm]
            _, g = np_loss_and_grad(z, lam * onehot + (1 - lam) * onehot[perm], q, coef, False)
            nets[net] = [w - lr * g.T @ xm, b - lr * g.sum(0)]
            emas[net] = [decay * e + (1 - decay) * v for e, v in zip(emas[net], nets[net])]
    for net, name in enumerate(("", "net2")):
        model = run.networks[name].model
        np.testing.assert_allclose(model.weight.detach().numpy(), nets[net][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.bias.detach().numpy(), nets[net][1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(method.emas[net].model.weight.numpy(), emas[net][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(method.emas[net].model.bias.numpy(), emas[net][1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(method.targets[net].numpy(), targets[net], rtol=1e-5, atol=1e-7)
    assert method.step == 2 and (targets[0][[2, 4, 6, 8]] == 0).all()
    # the engine's main columns are the mean of the two networks' logits; the networks and
    # the averages get suffixed columns (test_loss: the mean cross-entropy of each)
    assert isinstance(method.evaluated_model(run), MeanOfLogits)
    run.method = method
    run.eval_splits = {"test": OneBatch(torch.tensor(x, dtype=torch.float32), torch.tensor(y))}
    columns = evaluate_all(run)
    logits = {"_main": x @ nets[0][0].T + nets[0][1], "_net2": x @ nets[1][0].T + nets[1][1],
              "_ema1": x @ emas[0][0].T + emas[0][1], "_ema2": x @ emas[1][0].T + emas[1][1]}
    logits[""] = 0.5 * (logits["_main"] + logits["_net2"])
    for suffix, z in logits.items():
        ce = -np.log(np_softmax(z)[np.arange(n), y]).mean()
        assert columns[f"test_loss{suffix}"] == pytest.approx(ce, rel=1e-5), suffix
        assert columns[f"test_acc{suffix}"] == pytest.approx(100.0 * (z.argmax(1) == y).mean()), suffix


class OneBatch:
    """An evaluation loader of one batch (x, y, indices) on the CPU."""
    device = torch.device("cpu")

    def __init__(self, x, y):
        self.batch = (x, y, torch.arange(len(y)))

    def __iter__(self):
        return iter([self.batch])


@pytest.mark.parametrize("argv, expected", [
    (SMALL, (3.0, 0.7, 0.997, "sigmoid", 40000, 0, False)),          # every other data set: CIFAR-10's
    (["--dataset", "cifar10"], (3.0, 0.7, 0.997, "sigmoid", 40000, 0, False)),
    (["--dataset", "cifar10", "--noise_type", "asym"], (1.0, 0.9, 0.997, "sigmoid", 40000, 0, False)),
    (["--dataset", "cifar100"], (7.0, 0.9, 0.997, "sigmoid", 40000, 40000, True)),
    (["--dataset", "cifar100", "--noise_type", "noisy100"], (7.0, 0.9, 0.997, "sigmoid", 40000, 40000, True)),
    (["--dataset", "clothing1m"], (3.0, 0.7, 0.9999, "average", 0, 0, False)),
])
def test_defaults_follow_the_releases_configuration_files(argv, expected):
    cfg = parse_flags("train", "--method", "elr_plus", *argv)
    assert (cfg.elr_plus_lambda, cfg.elr_plus_beta, cfg.elr_plus_ema_alpha, cfg.elr_plus_ema_update,
            cfg.elr_plus_ema_step, cfg.elr_plus_coef_step, cfg.elr_plus_weight_labels) == expected
    assert (cfg.elr_plus_mixup_alpha, cfg.elr_plus_warmup) == (1.0, 0)


def test_a_typed_default_shares_the_run_folder():
    cfg = parse_flags("train", "--method", "elr_plus", *SMALL)
    typed = parse_flags("train", "--method", "elr_plus", *SMALL, "--elr_plus_lambda", "3", "--elr_plus_beta", "0.7",
                        "--elr_plus_ema_alpha", "0.997", "--elr_plus_coef_step", "0", "--no-elr_plus_weight_labels")
    assert vars(typed) == vars(cfg)


@pytest.mark.parametrize("extra, expected", [
    (["--elr_plus_lambda", "-1"], "--elr_plus_lambda -1.0 must be >= 0"),
    (["--elr_plus_beta", "1"], "--elr_plus_beta 1.0 is outside [0, 1)"),
    (["--elr_plus_mixup_alpha", "-0.5"], "--elr_plus_mixup_alpha -0.5 must be >= 0"),
    (["--elr_plus_ema_alpha", "1"], "--elr_plus_ema_alpha 1.0 is outside [0, 1)"),
    (["--elr_plus_ema_step", "-1"], "--elr_plus_ema_step -1 must be >= 0"),
    (["--elr_plus_coef_step", "-2"], "--elr_plus_coef_step -2 must be >= 0"),
    (["--elr_plus_warmup", "-1"], "--elr_plus_warmup -1 must be >= 0"),
    (["--elr_plus_warmup", "3", "--n_epoch", "3"], "--elr_plus_warmup 3 leaves none of the 3 epochs"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", "--method", "elr_plus", *SMALL, *extra)
    assert expected in str(err.value)


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A warm-up epoch, then ELR+; stopped as epoch 3 starts and resumed. Every network and
    average is evaluated; the warm-up counts no step (1437 images, batches of 256: six)."""
    rows, last = assert_sigterm_resume_is_exact("elr_plus", ["--elr_plus_warmup", "1"], tmp_path, n_epoch=3, stop=2)
    assert set(last["networks"]) == {"net2"}
    for suffix in ("", "_main", "_net2", "_ema1", "_ema2"):
        assert rows[-1][f"test_acc{suffix}"], suffix
    assert last["method"]["step"] == 12
    for row, step in zip(rows, (0, 6, 12)):
        assert float(row["ema_decay"]) == pytest.approx(0.997 * np_release_rampup(step + 1, 40000), rel=1e-9)
        assert float(row["elr_plus_coef"]) == 3.0
    # each target row is a mix of probability vectors: mass 1 - 0.7^3 after three visits
    for key in ("targets1", "targets2"):
        assert torch.allclose(last["method"][key].sum(1), torch.full((1437,), 1 - 0.7 ** 3), atol=1e-5)
    assert any(k.startswith("ema2.") and k.endswith("running_mean") for k in last["method"])


def documented_commands():
    """The train.py --method elr_plus command lines of REPRODUCTION.md's ELR+ subsection."""
    text = open(os.path.join(ROOT, "docs", "REPRODUCTION.md")).read()
    section = text[text.index("### `elr_plus` (methods/elr_plus.py)"):]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return [shlex.split(b.replace("\\\n", " "))[2:] for b in blocks if "--method elr_plus" in b]


@pytest.mark.parametrize("dataset, epochs, milestone", [
    ("cifar10", 200, 150),    # ELR_plus/config_cifar10.json:79-80, :85
    ("cifar100", 250, 200),   # ELR_plus/config_cifar100.json:78-79, :84
])
def test_documented_commands_run_the_release_plans(dataset, epochs, milestone):
    """MultiStepLR, gamma 0.1, stepped after every epoch (ELR_plus/trainer/trainer.py:153-154);
    SGD lr 0.02, momentum 0.9, weight decay 5e-4, batch 128 (config_*.json:32, :43-59)."""
    from utils.engine import lr_at
    commands = [parse_flags("train", *argv) for argv in documented_commands()]
    assert len(commands) == 2
    cfg = next(c for c in commands if c.dataset == dataset)
    assert cfg.n_epoch == epochs
    assert [lr_at(e, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch) for e in range(epochs)] == \
        pytest.approx([0.02 * (0.1 if e >= milestone else 1.0) for e in range(epochs)])
    assert (cfg.batch_size, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.model) == \
        (128, 0.9, False, 5e-4, "preact_resnet18")
