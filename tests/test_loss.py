"""loss.gls_loss against an independent numpy computation and torch's label smoothing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loss import gls_loss, gls_targets, soft_cross_entropy

PAPER_RATES = [0.8, 0.6, 0.4, 0.2, 0.0, -0.2, -0.4, -0.6, -0.8, -1.0, -2.0, -4.0, -6.0, -8.0]


def numpy_gls(logits, labels, r):
    """(1 - r) * NLL(y) + r * mean_k(-log p_k), batch mean, in float64 numpy."""
    z = logits.astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    nll = -log_p[np.arange(len(labels)), labels]
    return np.mean((1 - r) * nll + r * (-log_p.mean(1)))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 10, generator=g) * 3, torch.randint(0, 10, (32,), generator=g)


@pytest.mark.parametrize("r", PAPER_RATES)
def test_gls_equals_soft_target_cross_entropy(batch, r):
    logits, labels = batch
    expected = numpy_gls(logits.numpy(), labels.numpy(), r)
    assert gls_loss(logits, labels, r).item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    soft = soft_cross_entropy(logits, gls_targets(labels, 10, r))
    assert soft.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("r", [0.0, 0.1, 0.4, 0.8, 1.0])
def test_positive_rates_equal_torch_label_smoothing(batch, r):
    logits, labels = batch
    torch_ls = F.cross_entropy(logits, labels, label_smoothing=r)
    assert gls_loss(logits, labels, r).item() == pytest.approx(torch_ls.item(), rel=1e-6)


@pytest.mark.parametrize("r", [-0.2, -1.0, -8.0])
def test_negative_rates_differ_from_cross_entropy(r):
    # Confident, correct logits: CE is small and mean_k(-log p_k) large, so GLS - CE =
    # r * (mean_k(-log p_k) - CE) is large and negative.
    logits = torch.full((4, 10), -5.0)
    labels = torch.tensor([0, 3, 5, 9])
    logits[torch.arange(4), labels] = 5.0
    ce = F.cross_entropy(logits, labels).item()
    uniform = (-F.log_softmax(logits, 1).mean(1)).mean().item()
    nls = gls_loss(logits, labels, r).item()
    assert nls == pytest.approx(ce + r * (uniform - ce), rel=1e-5)
    assert nls < ce - 0.1 * abs(r) * uniform


def test_gls_target_sums_to_one_and_leaves_simplex_for_negative_r():
    t = gls_targets(torch.tensor([2]), 5, -2.0)[0]
    assert t.sum().item() == pytest.approx(1.0)
    assert t[2].item() == pytest.approx(3.0 - 2.0 / 5)
    assert t[0].item() == pytest.approx(-0.4)


@pytest.mark.parametrize("wa,wb,r", [(1.0, 0.0, 0.5), (0.3, 0.7, -2.0), (2.0, 1.0, 0.4)])
def test_wa_wb_combine_ce_and_gls(batch, wa, wb, r):
    logits, labels = batch
    ce = F.cross_entropy(logits, labels).item()
    gls = numpy_gls(logits.numpy(), labels.numpy(), r)
    assert gls_loss(logits, labels, r, wa=wa, wb=wb).item() == pytest.approx(wa * ce + wb * gls, rel=1e-5)


def test_loss_is_fp32_under_bf16_logits(batch):
    logits, labels = batch
    assert gls_loss(logits.bfloat16(), labels, -2.0).dtype == torch.float32


def test_torch_label_smoothing_silently_ignores_negative_rates(batch):
    """Why gls_loss exists: torch returns plain CE for r < 0 instead of NLS."""
    logits, labels = batch
    torch_neg = F.cross_entropy(logits, labels, label_smoothing=-0.5).item()
    assert torch_neg == pytest.approx(F.cross_entropy(logits, labels).item())
    assert gls_loss(logits, labels, -0.5).item() != pytest.approx(torch_neg, rel=1e-3)
