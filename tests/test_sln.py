"""SLN (Chen et al., ICLR 2021): loss.sln_targets, loss.corrected_targets, methods.sln.SLN
(momentum model, label correction, checkpoint state) and noise_cifar_train.py."""
import contextlib
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import noise_cifar_train
from conftest import TINY, InterruptedSLN, parse_flags, read_csv, read_json, write_fake_cifar
from data.noise import make_noisy_labels, save_noise_file
from errors import UserError
from loss import corrected_targets, sln_targets, soft_cross_entropy
from methods.sln import SLN
from utils.engine import run
from utils.state import RunState


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- targets and loss

def test_sln_perturbation_has_mean_zero_and_std_sigma():
    labels = torch.randint(0, 10, (40_000,), generator=torch.Generator().manual_seed(1))
    sigma = 0.5
    noise = sln_targets(labels, 10, sigma, torch.Generator().manual_seed(2)) - F.one_hot(labels, 10)
    assert abs(noise.mean().item()) < 0.002          # 400k draws: 4 standard errors
    assert noise.std().item() == pytest.approx(sigma, rel=0.005)
    per_class = noise.std(dim=0)                     # every class gets the same perturbation
    assert torch.allclose(per_class, torch.full((10,), sigma), rtol=0.02)


def test_sln_targets_are_fresh_per_call_and_exact_at_sigma_zero():
    labels = torch.tensor([0, 3, 9, 3])
    g = torch.Generator().manual_seed(0)
    first, second = sln_targets(labels, 10, 1.0, g), sln_targets(labels, 10, 1.0, g)
    assert not torch.equal(first, second)
    # The rows of one call are independent too: no draw is shared between samples.
    assert not torch.equal(first[1] - F.one_hot(labels[1], 10), first[3] - F.one_hot(labels[3], 10))
    assert torch.equal(sln_targets(labels, 10, 0.0), F.one_hot(labels, 10).float())


def test_soft_cross_entropy_is_minus_sum_t_log_softmax_averaged():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)) * 3
    targets = np.eye(4)[[0, 1, 2, 3, 1]] + 0.7 * rng.normal(size=(5, 4))  # off the simplex
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(targets * log_p).sum(axis=1).mean()
    got = soft_cross_entropy(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_corrected_targets_hand_computed_example():
    """Three samples whose label probabilities are 1/2, 1/4, 1/8: the losses are ln 2,
    2 ln 2, 3 ln 2, so the min-max normalised losses are exactly 0, 1/2, 1."""
    probs = torch.tensor([[1 / 2, 1 / 4, 1 / 4],    # label 0, prediction 0
                          [5 / 8, 1 / 4, 1 / 8],    # label 1, prediction 0
                          [1 / 8, 3 / 4, 1 / 8]])   # label 2, prediction 1
    labels = torch.tensor([0, 1, 2])
    logits = probs.log() + 1.5  # a shift leaves the softmax unchanged
    hard = torch.tensor([[1.0, 0.0, 0.0],           # l=0: the prediction
                         [0.5, 0.5, 0.0],           # l=1/2: half label, half prediction
                         [0.0, 0.0, 1.0]])          # l=1: the label
    soft = torch.tensor([[1 / 2, 1 / 4, 1 / 4],
                         [5 / 16, 5 / 8, 1 / 16],   # 1/2 * (0, 1, 0) + 1/2 * (5/8, 1/4, 1/8)
                         [0.0, 0.0, 1.0]])
    onehot = F.one_hot(labels, 3).float()
    assert torch.allclose(corrected_targets(logits, labels, onehot), hard, atol=1e-6)
    assert torch.allclose(corrected_targets(logits, labels, onehot, soft=True), soft, atol=1e-6)


def test_corrected_targets_measure_the_loss_against_the_current_targets():
    """From the second correction on the loss is -sum_k t_ik log p_ik against the current
    soft targets t (the release's utils.py:get_output, 2-D targets), while the mixing
    keeps the noisy one-hot. Here t moves sample 0's loss to the top: 0.5 ln 2 + 0.5 * 3 ln 2."""
    probs = torch.tensor([[1 / 2, 1 / 4, 1 / 8, 1 / 8],
                          [1 / 8, 1 / 2, 1 / 4, 1 / 8],
                          [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    labels = torch.tensor([0, 1, 3])
    current = torch.tensor([[0.5, 0.0, 0.5, 0.0],     # loss 0.5 ln 2 + 0.5 * 3 ln 2 = 2 ln 2
                            [0.0, 1.0, 0.0, 0.0],     # ln 2
                            [0.0, 0.0, 0.0, 1.0]])    # 2 ln 2
    l = torch.tensor([1.0, 0.0, 1.0])[:, None]
    prediction = F.one_hot(probs.argmax(1), 4).float()
    expected = l * F.one_hot(labels, 4).float() + (1 - l) * prediction
    assert torch.allclose(corrected_targets(probs.log(), labels, current), expected, atol=1e-6)
    # against the noisy one-hot instead, sample 0 has the lowest loss (ln 2) and takes its prediction
    again = corrected_targets(probs.log(), labels, F.one_hot(labels, 4).float())
    assert torch.equal(again[0], prediction[0])


# ---------------------------------------------------------------- the momentum model

def small_bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def fake_ctx(model, x=None, labels=None, batch=4, x_aug=None):
    """The engine's RunState over a toy training set; the training loaders yield their
    batches out of order, as a loader over a subset could. The augmented one yields
    `x_aug` (default: x itself)."""
    plain, augmented = [], []
    if x is not None:
        x_aug = x if x_aug is None else x_aug
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        plain = [(x[i], labels[i], i) for i in order.split(batch)]
        augmented = [(x_aug[i], labels[i], i) for i in order.split(batch)]
    return RunState.for_model(model, None, torch.device("cpu"), num_classes=3, noisy_labels=labels,
                              train_eval_loader=plain, autocast=contextlib.nullcontext,
                              train_aug_loader=augmented)


def test_ema_starts_equal_and_is_a_separate_copy():
    model = small_bn_model()
    method = SLN(0.5, ema_decay=0.9)
    method.setup(fake_ctx(model))
    for (name, e), m in zip(method.ema.state_dict().items(), model.state_dict().values()):
        assert torch.equal(e, m), name
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(method.ema[0].weight, model[0].weight)
    assert method.eval_models() == {"ema": method.ema}
    assert SLN(0.5, ema_decay=0.0).eval_models() == {}


def test_ema_equals_closed_form_average_of_the_trajectory():
    """e_k = d^k theta_0 + sum_{j=1..k} (1 - d) d^(k-j) theta_j, for the parameters and
    the BN running statistics; the integer batch counter is copied."""
    model, decay, steps = small_bn_model(), 0.8, 6
    method = SLN(0.5, ema_decay=decay)
    method.setup(fake_ctx(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snapshot = lambda: {k: v.clone().double() for k, v in model.state_dict().items()}
    trajectory = [snapshot()]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=g) * 2 + 1, torch.randint(0, 3, (16,), generator=g)
        loss = method.loss(model(x), y, torch.arange(16))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(model)
        trajectory.append(snapshot())
    ema = method.ema.state_dict()
    for name, value in ema.items():
        if name.endswith("num_batches_tracked"):
            assert value.item() == steps
            continue
        expected = decay ** steps * trajectory[0][name] + sum(
            (1 - decay) * decay ** (steps - j) * trajectory[j][name] for j in range(1, steps + 1))
        assert torch.allclose(value.double(), expected, atol=1e-6), name
    for name in ("3.weight", "1.running_mean", "1.running_var"):  # it lags the model
        assert (ema[name].double() - trajectory[-1][name]).abs().max() > 1e-3, name


# ---------------------------------------------------------------- label correction

def test_label_correction_starts_after_correction_epochs_and_sets_sigma_to_zero():
    model = small_bn_model()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    ctx = fake_ctx(model, x, labels)
    method = SLN(0.5, ema_decay=0.5, correction=2, n_epoch=4)
    method.setup(ctx)
    with torch.no_grad():  # make the momentum model differ from the model
        model[3].bias.add_(torch.tensor([3.0, 0.0, -3.0]))
    for epoch in (0, 1):
        method.start_epoch(epoch, ctx)
        assert method.sigma == 0.5 and method.targets is None
    method.start_epoch(2, ctx)
    assert method.sigma == 0.0
    with torch.no_grad():
        expected = corrected_targets(method.ema.eval()(x), labels, F.one_hot(labels, 3).float())
    assert torch.allclose(method.targets, expected)
    # The corrected phase trains on the table rows of the batch's samples, with no noise.
    idx = torch.tensor([7, 2, 5])
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(method.loss(logits, labels[idx], idx), soft_cross_entropy(logits, expected[idx]))


def test_label_correction_over_a_subset_normalises_over_that_subset():
    """A loader over part of the training set (Clothing1M's per-epoch subset): the min-max
    runs over the samples it yields; the others keep their one-hot noisy label."""
    model = small_bn_model()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    ctx = fake_ctx(model, x, labels)
    subset = torch.tensor([8, 1, 4, 6])
    ctx.train_eval_loader = ctx.train_aug_loader = [(x[subset], labels[subset], subset)]
    method = SLN(0.5, ema_decay=0.9, correction=1, n_epoch=3)
    method.setup(ctx)
    method.start_epoch(1, ctx)
    with torch.no_grad():
        expected = corrected_targets(method.ema(x[subset]), labels[subset], F.one_hot(labels[subset], 3).float())
    assert torch.allclose(method.targets[subset], expected)
    rest = torch.tensor([0, 2, 3, 5, 7, 9])
    assert torch.equal(method.targets[rest], F.one_hot(labels[rest], 3).float())


def release_corrections(ema_outputs, noisy, soft, carry):
    """An independent computation of the release's label correction, epoch after epoch
    (chenpf1025/SLN noise_cifar_train.py:87-97 and utils.py:63-81; Clothing1M:
    noise_clothing1m_train.py:109-128). `ema_outputs`: the momentum model's logits at each
    correction, in numpy. The training set's targets start as the noisy labels (1-D: the
    loss is cross-entropy); each correction replaces them with soft targets, which the next
    correction's loss is measured against (2-D), unless the data set is rebuilt each epoch
    (carry=False, Clothing1M). The mixing always uses the noisy one-hot."""
    k = ema_outputs[0].shape[1]
    noisy_targets = np.eye(k)[noisy]
    dataset_targets = noisy  # 1-D until the first correction
    history = []
    for logits in ema_outputs:
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        if dataset_targets.ndim == 1:
            losses = -log_softmax[np.arange(len(noisy)), dataset_targets]
        else:
            losses = -np.sum(log_softmax * dataset_targets, axis=1)
        output = np.exp(log_softmax)
        if not soft:
            output = np.eye(k)[output.argmax(axis=1)]
        losses = (losses - min(losses)) / (max(losses) - min(losses))
        targets = losses.reshape(-1, 1) * noisy_targets + (1 - losses.reshape(-1, 1)) * output
        history.append(targets)
        dataset_targets = targets if carry else noisy
    return history


@pytest.mark.parametrize("soft,carry", [(False, True), (True, False)])
def test_three_consecutive_corrections_match_the_release(soft, carry):
    """CIFAR (hard, targets carried) and Clothing1M (soft, fresh noisy targets each epoch):
    three corrections in a row, the momentum model changing between them, against
    release_corrections."""
    torch.manual_seed(0)
    model = small_bn_model()
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    ctx = fake_ctx(model, x, labels)
    method = SLN(0.5, ema_decay=0.9, correction=1, n_epoch=5, soft=soft, carry_targets=carry)
    method.setup(ctx)
    got, outputs = [], []
    for epoch in (1, 2, 3):
        with torch.no_grad():  # the momentum model moves between corrections
            method.ema[3].weight.add_(torch.randn(3, 6, generator=torch.Generator().manual_seed(epoch)))
            outputs.append(method.ema.eval()(x).double().numpy())
        method.start_epoch(epoch, ctx)
        got.append(method.targets.double().numpy())
    expected = release_corrections(outputs, labels.numpy(), soft, carry)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    # carrying the targets changes the third correction: the two rules differ here
    other = release_corrections(outputs, labels.numpy(), soft, not carry)
    assert np.abs(other[2] - expected[2]).max() > 0.05


@pytest.mark.parametrize("augment", [True, False])
def test_correction_predicts_on_augmented_images_unless_asked_not_to(augment):
    """--correction_aug on (the default, as released) predicts through the training
    augmentation; off on the images themselves."""
    model = small_bn_model()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(8))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    x_aug = x.flip(0) * 3  # anything the plain loader never yields
    ctx = fake_ctx(model, x, labels, x_aug=x_aug)
    method = SLN(0.5, ema_decay=0.9, correction=1, n_epoch=3, correction_aug=augment)
    method.setup(ctx)
    method.start_epoch(1, ctx)
    with torch.no_grad():
        seen = method.ema.eval()(x_aug if augment else x)
    expected = corrected_targets(seen, labels, F.one_hot(labels, 3).float())
    assert torch.allclose(method.targets, expected)


@pytest.mark.parametrize("correction, n_epoch, corrects", [
    (250, 300, True), (1, 10, True), (299, 300, True),
    (-1, 300, False), (0, 300, False), (300, 300, False), (400, 300, False)])
def test_correction_outside_1_to_epochs_minus_1_means_never(correction, n_epoch, corrects):
    assert (SLN(0.5, 0.999, correction, n_epoch).correction is not None) == corrects


def test_method_tags():
    assert SLN(0.5, 0.0, -1, 300).tag == "sln-sigma0.5"
    assert SLN(0.5, 0.999, -1, 300).tag == "slnmo-sigma0.5"
    assert SLN(0.5, 0.999, 250, 300).tag == "slnmolc-sigma0.5-c250"
    assert SLN(0.5, 0.0, 250, 300).tag == "slnlc-sigma0.5-c250"
    assert SLN(0.0, 0.0, -1, 300).tag == "ce"


# ---------------------------------------------------------------- the script

def parse(*argv):
    return parse_flags("noise_cifar_train", *argv)


def test_released_command_line_parses_to_the_release_protocol():
    cfg = parse("--sigma", "0.2", "--noise_mode", "asym", "--correction", "250", "--dataset",
                "cifar100", "--num_class", "100", "--datapath", "./data/CIFAR100")
    assert (cfg.sigma, cfg.noise_type, cfg.correction, cfg.dataset, cfg.num_class, cfg.data_root) == \
        (0.2, "asym", 250, "cifar100", 100, "./data/CIFAR100")
    defaults = parse()
    assert (defaults.model, defaults.n_epoch, defaults.lr, defaults.lr_milestones, defaults.batch_size) == \
        ("wrn28_2", 300, 0.001, [], 128)
    assert (defaults.momentum, defaults.nesterov, defaults.weight_decay) == (0.9, False, 5e-4)
    assert (defaults.noise_type, defaults.noise_rate, defaults.sigma, defaults.correction) == \
        ("dependent", 0.4, 0.5, 250)
    assert (defaults.dataset, defaults.num_class, defaults.data_root, defaults.gpu_id) == \
        ("cifar10", 10, "./data/CIFAR10", 0)
    assert defaults.ema_decay == 0.999 and defaults.noise_file is None


def test_num_class_is_the_data_sets_unless_given_and_then_must_match():
    assert parse("--dataset", "cifar100").num_class == 100
    assert parse("--dataset", "cifar100", "--num_class", "100").num_class == 100
    with pytest.raises(UserError, match="--num_class 10 does not match cifar100.*pass --num_class 100"):
        parse("--dataset", "cifar100", "--num_class", "10")
    with pytest.raises(UserError, match="ema_decay"):
        parse("--ema_decay", "1.0")
    with pytest.raises(UserError, match="sigma"):
        parse("--sigma", "-0.1")


def test_gpu_id_picks_the_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = parse("--gpu_id", "1")
    assert cfg.device == "cuda:1"
    with pytest.raises(UserError, match="--gpu_id 1 picks the CUDA device when --device is auto"):
        parse("--gpu_id", "1", "--device", "cpu")  # two choices of the device: one would be dropped
    with pytest.raises(UserError, match="--gpu_id 2"):
        parse("--gpu_id", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = parse("--gpu_id", "1")
    assert cfg.device == "auto"


def test_released_cifar100_command_runs(tmp_path):
    """The seed command line, unchanged, plus a short run on a small fake CIFAR-100 laid
    out as the SLN release reads it: its labels from <datapath>/label_noisy/asym0.4.csv."""
    root = tmp_path / "CIFAR100"
    _, clean = write_fake_cifar(str(root), "cifar100", n_train=200, n_test=50)
    os.makedirs(root / "label_noisy")
    in_file = make_noisy_labels(clean, "asym", 0.4, 100, seed=5)
    save_noise_file(root / "label_noisy" / "asym0.4.csv", clean, in_file)
    code = noise_cifar_train.main([
        "--sigma", "0.2", "--noise_mode", "asym", "--correction", "250", "--dataset", "cifar100",
        "--num_class", "100", "--datapath", str(root),
        "--epochs", "1", "--model", "resnet18", "--width", "4", "--device", "cpu",
        "--result_dir", str(tmp_path / "results")])
    assert code == 0
    (folder,) = (tmp_path / "results" / "noise_cifar_train").iterdir()
    assert folder.name.startswith("cifar100-asym0.4-resnet18-slnmo-sigma0.2-seed0-")
    noisy = np.load(folder / "noisy_labels.npy")
    assert np.array_equal(noisy, in_file)
    provenance = read_json(folder / "noise.json")["provenance"]
    assert provenance["source"] == "file" and provenance["path"].endswith("label_noisy/asym0.4.csv")
    assert provenance["released_file"] is False  # not the released 50,000-row file
    summary = read_json(folder / "summary.json")
    assert summary["status"] == "finished" and "last_test_acc_ema" in summary


def test_resume_after_label_correction_reproduces_the_uninterrupted_run(tmp_path):
    """Interrupted after 3 of 4 epochs, with correction from epoch 3 on (0-based 2):
    the resumed run must load the momentum model, the targets and sigma = 0, and end
    bit-identical to a run that was never interrupted."""
    argv = [*TINY, "--noise_mode", "sym", "--noise_rate", "0.4", "--epochs", "4", "--lr", "0.01",
            "--sigma", "0.5", "--correction", "2", "--ema_decay", "0.9"]

    def start(result_dir, method_kwargs=None, resume=False):
        cfg = parse(*argv, "--result_dir", str(tmp_path / result_dir), *(["--resume"] if resume else []))
        method = (InterruptedSLN(cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch, **method_kwargs)
                  if method_kwargs else SLN(cfg.sigma, cfg.ema_decay, cfg.correction, cfg.n_epoch))
        return run(cfg, "noise_cifar_train", method)

    assert start("whole") == 0
    assert start("parts", {"stop": 3}) == 130
    assert start("parts", resume=True) == 0
    (whole,) = (tmp_path / "whole" / "noise_cifar_train").iterdir()
    (parts,) = (tmp_path / "parts" / "noise_cifar_train").iterdir()
    assert whole.name == parts.name and "slnmolc-sigma0.5-c2" in whole.name

    timeless = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]
    rows = read_csv(whole / "metrics.csv")
    assert timeless(read_csv(parts / "metrics.csv")) == timeless(rows)
    assert "test_acc_ema" in rows[0] and len(rows) == 4
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(parts / "last.pt", weights_only=True)
    assert a["method"]["sigma"] == b["method"]["sigma"] == 0.0
    assert torch.equal(a["method"]["targets"], b["method"]["targets"])
    for part in ("model", "ema"):
        source = a["model"] if part == "model" else a["method"]["ema"]
        target = b["model"] if part == "model" else b["method"]["ema"]
        for name in source:
            assert torch.equal(source[name], target[name]), (part, name)
    summary = read_json(whole / "summary.json")
    assert summary["last_test_acc_ema"] == float(rows[-1]["test_acc_ema"])
    assert summary["best_test_acc_ema"] == max(float(r["test_acc_ema"]) for r in rows)


def test_sln_ends_clearly_above_ce_on_digits_with_40_percent_symmetric_noise(tmp_path):
    """Digits, 40% symmetric noise, ResNet-18 width 8, 150 epochs, lr 0.004 constant,
    batch 512: the SLN paper's regime (lr / batch as 0.001 / 128), where CE memorises the
    noise and SLN does not.

    Measured on 2026-11-21 (CPU, seed 0, the released draw of the noisy labels, about 30 s
    per run at one thread): CE peaks at 87.2% (epoch 62) and ends at 72.8%, fitting 65.5%
    of the noisy labels (60% are right; mem_noisy 26.2%); SLN sigma 1.0 ends at 85.8%
    (mem_noisy 3.6%): a margin of 13.1 points. Mean of the last 10 epochs: 72.6% vs 87.3%
    (14.7). The momentum model (decay 0.99; 0.999 would average over ~80 digits epochs)
    ends at 90.6% (17.8). Asserted: between half and three quarters of each margin.
    """
    common = [*TINY, "--noise_mode", "sym", "--noise_rate", "0.4", "--epochs", "150",
              "--lr", "0.004", "--batch_size", "512", "--test_batch_size", "512",
              "--correction", "-1", "--ckpt_every", "150", "--result_dir", str(tmp_path)]
    assert noise_cifar_train.main([*common, "--sigma", "0", "--ema_decay", "0"]) == 0
    assert noise_cifar_train.main([*common, "--sigma", "1.0", "--ema_decay", "0.99"]) == 0
    runs = {p.name.split("-")[3]: p for p in (tmp_path / "noise_cifar_train").iterdir()}
    ce, sln = (read_csv(runs[tag] / "metrics.csv") for tag in ("ce", "slnmo"))
    acc = lambda rows, column="test_acc": [float(r[column]) for r in rows]
    assert acc(sln)[-1] - acc(ce)[-1] >= 10.0
    assert np.mean(acc(sln)[-10:]) - np.mean(acc(ce)[-10:]) >= 9.0
    assert acc(sln, "test_acc_ema")[-1] - acc(ce)[-1] >= 11.0
    assert max(acc(ce)) - acc(ce)[-1] >= 7.0  # CE did peak and then fit the noise
