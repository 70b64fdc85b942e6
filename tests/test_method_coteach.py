"""Co-teaching+, JoCoR and the forget rate they share with Co-teaching: each selection rule
against a numpy transcription of its release's function on planted logits and labels, the
one step over two networks against one optimiser over both, the default forget rate of
each noise model, the refusals, tiny runs and exact resume after SIGTERM."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import parse_flags, read_json, write_fake_cifar
from errors import UserError
from methods import get_method
from methods.coteaching_plus import coteaching_plus_losses, keep_counts
from methods.jocor import jocor_losses, minimize_jointly
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, train
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- numpy transcriptions

def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y]


def release_coteaching_plus(l1, l2, y, forget_rate, step, ce_on_softmax=True):
    """xingruiyu/coteaching_plus loss.py:37-82 (and loss_coteaching, :10-35) in numpy:
    (loss 1, loss 2, the batch rows network 1 selected, those network 2 selected). The
    release's loss is the mean divided once more by the number kept; this returns the mean
    and that number."""
    o1, o2 = (np.exp(np_log_softmax(z)) if ce_on_softmax else np.asarray(z, np.float64) for z in (l1, l2))
    disagree = np.flatnonzero(np.argmax(l1, 1) != np.argmax(l2, 1))
    if len(disagree) == 0:
        weight = float(step < 5000)
        return np_ce(o1, y).mean() * weight, np_ce(o2, y).mean() * weight, None, None, 0
    c1, c2 = np_ce(o1[disagree], y[disagree]), np_ce(o2[disagree], y[disagree])
    s1, s2 = np.argsort(c1, kind="stable"), np.argsort(c2, kind="stable")
    num = int((1 - forget_rate) * len(disagree))
    if num == 0:
        num = len(disagree)
    u1, u2 = s1[:num], s2[:num]
    return c1[u2].mean(), c2[u1].mean(), disagree[u1], disagree[u2], num


def release_jocor(l1, l2, y, forget_rate, co_lambda):
    """hongxin001/JoCoR algorithm/loss.py:8-40 in numpy: (loss, the kept rows)."""
    lp, lq = np_log_softmax(l1), np_log_softmax(l2)
    p, q = np.exp(lp), np.exp(lq)
    kl_pq = (q * (lq - lp)).sum(1)   # kl_loss_compute(y_1, y_2): KL(softmax(y_2) || softmax(y_1))
    kl_qp = (p * (lp - lq)).sum(1)
    pick = np_ce(l1, y) * (1 - co_lambda) + np_ce(l2, y) * (1 - co_lambda) + co_lambda * kl_pq + co_lambda * kl_qp
    order = np.argsort(pick, kind="stable")
    kept = order[:int((1 - forget_rate) * len(pick))]
    return pick[kept].mean(), kept


# ---------------------------------------------------------------- planted batches

def planted_batch():
    """12 samples, 4 classes. Rows 0-5: both networks predict the label with confidence
    (agreement, the smallest losses); rows 6-11: the networks predict different classes,
    with the label's logit planted at decreasing heights, so that the small-loss rows among
    the disagreeing ones are known."""
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    l1, l2 = np.zeros((12, 4)), np.zeros((12, 4))
    for i in range(6):
        l1[i, y[i]], l2[i, y[i]] = 6.0, 5.0 + 0.1 * i
    heights = [2.9, 2.5, 2.0, 1.0, 0.2, -1.0]
    for j, i in enumerate(range(6, 12)):
        other = (y[i] + 1) % 4
        l1[i, y[i]], l1[i, other] = heights[j], 3.0              # network 1: the other class
        l2[i, y[i]], l2[i, (other + 1) % 4] = heights[::-1][j] + 0.05, 3.0  # network 2: a third one
    return l1, l2, y


def torch_of(*arrays):
    return [torch.tensor(a, dtype=torch.float32) if a.dtype.kind == "f" else torch.tensor(a) for a in arrays]


@pytest.mark.parametrize("ce_on_softmax", [True, False])
@pytest.mark.parametrize("forget_rate", [0.0, 0.5, 0.9])
def test_coteaching_plus_selects_small_loss_among_disagreements_as_released(forget_rate, ce_on_softmax):
    l1, l2, y = planted_batch()
    t1, t2, ty = torch_of(l1, l2, y)
    loss, peer_loss, keep, peer_keep, disagree = coteaching_plus_losses(
        t1, t2, ty, keep_counts(forget_rate, len(y)), ce_on_softmax, early=True)
    r1, r2, u1, u2, num = release_coteaching_plus(l1, l2, y, forget_rate, step=0, ce_on_softmax=ce_on_softmax)
    assert disagree.tolist() == [False] * 6 + [True] * 6
    assert sorted(np.flatnonzero(keep.numpy())) == sorted(u1)
    assert sorted(np.flatnonzero(peer_keep.numpy())) == sorted(u2)
    assert loss.item() == pytest.approx(r1, rel=1e-5) and peer_loss.item() == pytest.approx(r2, rel=1e-5)
    # the planted order: network 1's smallest losses are rows 6, 7, ...; network 2's 11, 10, ...
    expected = {0.0: 6, 0.5: 3, 0.9: 6}[forget_rate]  # at 0.9, int(0.6) = 0 keeps all six
    assert num == expected
    assert sorted(u1) == list(range(6, 6 + expected)) and sorted(u2) == list(range(12 - expected, 12))
    assert not keep[:6].any()  # the agreeing rows, the smallest losses of all, are never kept


def test_coteaching_plus_without_disagreement_trains_on_the_whole_batch_until_step_5000():
    l1, _, y = planted_batch()
    t1, ty = torch_of(l1, y)
    for early in (True, False):
        loss, peer_loss, keep, peer_keep, disagree = coteaching_plus_losses(
            t1, t1.clone(), ty, keep_counts(0.5, len(y)), True, early)
        expected, _, _, _, _ = release_coteaching_plus(l1, l1, y, 0.5, step=0 if early else 5000)
        assert not disagree.any()
        assert loss.item() == pytest.approx(expected, rel=1e-5) and peer_loss.item() == pytest.approx(expected, rel=1e-5)
        assert keep.tolist() == peer_keep.tolist() == [early] * len(y)


def test_keep_counts_are_the_release_int_and_all_where_int_gives_none():
    assert keep_counts(0.25, 8).tolist() == [0, 1, 1, 2, 3, 3, 4, 5, 6]
    assert keep_counts(0.9, 5).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("co_lambda", [0.0, 0.1, 0.65, 0.9])
@pytest.mark.parametrize("forget_rate", [0.0, 0.5])
def test_jocor_joint_loss_and_selection_match_the_release(co_lambda, forget_rate):
    l1, l2, y = planted_batch()
    loss, keep = jocor_losses(*torch_of(l1, l2, y), forget_rate, co_lambda)
    expected, kept = release_jocor(l1, l2, y, forget_rate, co_lambda)
    assert sorted(keep.tolist()) == sorted(kept.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_jocor_co_regularisation_changes_the_selection_on_planted_labels():
    """Row 0: both networks sure of the label. Row 1: both mildly for it, with equal softmaxes
    (cross-entropy 0.74 each, no KL). Row 2: they predict different classes. Row 3: both for
    the label, one surely, one less (small cross-entropy, KL 0.47). Half is kept: on
    cross-entropy alone rows 0 and 3, with lambda 0.9 rows 0 and 1."""
    y = np.array([0, 0, 0, 0])
    l1 = np.array([[8.0, 0, 0, 0], [1.0, 0, 0, 0], [6.0, 0, 0, 0], [4.0, 0, 0, 0]])
    l2 = np.array([[8.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 6, 0, 0], [2.0, 0, 0, 0]])
    for co_lambda, expected in ((0.0, [0, 3]), (0.9, [0, 1])):
        _, kept = release_jocor(l1, l2, y, 0.5, co_lambda)
        assert sorted(kept.tolist()) == expected
        _, keep = jocor_losses(*torch_of(l1, l2, y), 0.5, co_lambda)
        assert sorted(keep.tolist()) == expected


def test_jocor_gradient_is_the_release_gradient_through_both_networks():
    """The release's kl_div(log_softmax(y1), softmax(y2)) differentiates its target too: the
    gradient of the kept joint loss reaches both networks' logits, as here."""
    l1, l2, y = planted_batch()
    a1, a2, ty = torch_of(l1, l2, y)
    b1, b2 = a1.clone().requires_grad_(), a2.clone().requires_grad_()
    a1.requires_grad_(), a2.requires_grad_()
    loss, keep = jocor_losses(a1, a2, ty, 0.5, 0.9)
    loss.backward()
    kl = lambda pred, target: F.kl_div(F.log_softmax(pred, 1), F.softmax(target, 1), reduction="none").sum(1)
    pick = 0.1 * F.cross_entropy(b1, ty, reduction="none") + 0.1 * F.cross_entropy(b2, ty, reduction="none") \
        + 0.9 * kl(b1, b2) + 0.9 * kl(b2, b1)
    pick[keep].mean().backward()
    assert torch.allclose(a1.grad, b1.grad, atol=1e-6) and torch.allclose(a2.grad, b2.grad, atol=1e-6)
    assert a2.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
])
def test_one_backward_and_both_optimisers_step_as_one_optimiser_over_both(make):
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(2)]
    twins = [torch.nn.Linear(5, 3) for _ in range(2)]
    for net, twin in zip(nets, twins):
        twin.load_state_dict(net.state_dict())
    run = RunState.for_model(nets[0], make(nets[0].parameters()), torch.device("cpu"))
    from utils.state import Network
    run.networks["peer"] = Network(nets[1], nets[1], make(nets[1].parameters()))
    joint = make([p for t in twins for p in t.parameters()])
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))

    def loss_of(a, b):
        return (F.cross_entropy(a(x), y) + 0.5 * F.cross_entropy(b(x), y)
                + ((a(x).softmax(1) - b(x).softmax(1)) ** 2).sum())
    for _ in range(4):
        minimize_jointly(run, loss_of(*nets))
        joint.zero_grad()
        loss_of(*twins).backward()
        joint.step()
    for net, twin in zip(nets, twins):
        for p, q in zip(net.parameters(), twin.parameters()):
            assert torch.equal(p, q)


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("method", ["coteaching", "coteaching_plus", "jocor"])
@pytest.mark.parametrize("flags,expected", [
    (["--dataset", "cifar10", "--noise_type", "asym", "--noise_rate", "0.4"], 0.2),
    (["--dataset", "cifar100", "--noise_type", "asym", "--noise_rate", "0.4"], 0.4),
    (["--dataset", "cifar10", "--noise_type", "symmetric", "--noise_rate", "0.5"], 0.5),
    (["--dataset", "cifar10", "--noise_type", "pairflip", "--noise_rate", "0.45"], 0.45),
    (["--dataset", "digits", "--noise_type", "clean"], 0.0),
    (["--dataset", "cifar10", "--noise_type", "instance", "--noise_rate", "0.3"], 0.3),
    (["--dataset", "cifar10", "--noise_type", "asym", "--noise_rate", "0.4", "--forget_rate", "0.35"], 0.35),
])
def test_the_forget_rate_defaults_to_the_expected_wrong_fraction(method, flags, expected):
    cfg = parse_flags("train", "--method", method, *flags)
    assert cfg.forget_rate == expected


@pytest.mark.parametrize("extra,expected", [
    (["--method", "coteaching_plus", "--init_epoch", "-1"], "--init_epoch -1 must be >= 0"),
    (["--method", "jocor", "--co_lambda", "1.5"], "--co_lambda 1.5 is outside [0, 1]"),
    (["--method", "jocor", "--co_lambda", "-0.1"], "--co_lambda -0.1 is outside [0, 1]"),
    (["--method", "jocor", "--forget_rate", "1"], "--forget_rate 1.0 is outside [0, 1)"),
    (["--method", "coteaching_plus", "--dataset", "cifar10", "--noise_type", "worst"],
     "noise type worst has no noise model"),
    (["--method", "jocor", "--dataset", "cifar10", "--noise_type", "worst"], "pass --forget_rate"),
])
def test_bad_values_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *SMALL, *extra)
    assert expected in str(err.value)


def test_per_data_set_defaults_are_the_releases():
    plus = {d: parse_flags("train", "--method", "coteaching_plus", "--dataset", d).init_epoch
            for d in ("cifar10", "cifar100", "digits")}
    assert plus == {"cifar10": 20, "cifar100": 5, "digits": 20}
    lam = lambda *f: parse_flags("train", "--method", "jocor", *f).co_lambda
    assert lam("--dataset", "cifar10") == 0.9 and lam("--dataset", "cifar100") == 0.85
    assert lam("--dataset", "cifar10", "--noise_type", "symmetric", "--noise_rate", "0.8") == 0.65
    assert lam("--dataset", "digits") == 0.9


# ---------------------------------------------------------------- runs

def test_coteaching_on_fake_cifar10_asym_records_forget_rate_0_2(tmp_path):
    root = str(tmp_path / "data")
    write_fake_cifar(root, "cifar10", n_train=40, n_test=10)
    code, (folder,) = train(["--method", "coteaching", "--dataset", "cifar10", "--data_root", root,
                             "--noise_type", "asym", "--noise_rate", "0.4", "--model", "resnet18",
                             "--width", "2", "--device", "cpu", "--n_epoch", "1", "--batch_size", "20",
                             "--result_dir", str(tmp_path / "results")])
    assert code == 0
    assert read_json(os.path.join(folder, "config.json"))["forget_rate"] == 0.2
    assert "-f0.2-" in os.path.basename(folder)


def test_coteaching_plus_resumes_exactly_across_its_switch_to_disagreement(tmp_path):
    rows, _ = assert_sigterm_resume_is_exact("coteaching_plus", ["--init_epoch", "2"], tmp_path, n_epoch=3, stop=1)
    first, later = rows[0], rows[1:]
    # epoch 1 is plain co-teaching: each network keeps int((1 - R) * batch) of every batch
    assert float(first["kept_fraction"]) > 0.9
    for row in later:  # then only disagreeing samples are kept, fewer than disagree
        assert float(row["kept_fraction"]) <= float(row["disagree_fraction"]) + 1e-12
        assert 0 <= float(row["kept_clean_fraction_peer"]) <= 1
    assert "test_acc_peer" in first


def test_jocor_at_lambda_0_dropping_nothing_trains_its_main_network_as_cross_entropy(tmp_path):
    runs = [train(["--method", *method, *SMALL, "--n_epoch", "1", "--result_dir", str(tmp_path / name)])[1][0]
            for name, method in (("jocor", ["jocor", "--co_lambda", "0", "--forget_rate", "0"]),
                                 ("ce", ["gls", "--smooth_rate", "0"]))]
    jocor, ce = (torch.load(os.path.join(f, "last.pt"), weights_only=True)["model"] for f in runs)
    assert all(torch.equal(jocor[k], ce[k]) for k in ce)
    assert read_json(os.path.join(runs[0], "summary.json"))["is_ce"]
    for flags in (["--forget_rate", "0"], ["--co_lambda", "0"]):  # co-regularised, or dropping
        assert not get_method("jocor").from_config(parse_flags("train", "--method", "jocor", *SMALL, *flags)).is_ce()


def test_jocor_resumes_exactly(tmp_path):
    rows, last = assert_sigterm_resume_is_exact("jocor", [], tmp_path, n_epoch=3, stop=1)
    assert [float(r["forget_rate"]) for r in rows] == pytest.approx([0.4 / 9, 0.8 / 9, 1.2 / 9])
    assert all(0 < float(r["kept_clean_fraction"]) <= 1 for r in rows)
    assert "peer" in last["networks"]
    summary = read_json(os.path.join(str(tmp_path / "whole"), "train", os.listdir(tmp_path / "whole" / "train")[0],
                                     "summary.json"))
    assert summary["knobs"] == {"co_lambda": 0.9} and summary["knob_baselines"] == {"co_lambda": 0.0}
