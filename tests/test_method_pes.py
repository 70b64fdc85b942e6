"""PES and PES-semi (methods/pes.py): the confident selection and its class weights against
numpy, the re-initialisation of the last parts, the stage schedule (which weights each
epoch trains) in tiny runs, PES-semi's batch sizes, weighted loss and one step against a
transcription of the release, the flags, and runs stopped in the middle of the refinement
and resumed exactly."""
import numpy as np
import pytest
import torch

import test_methods_runs as runs
from conftest import parse_flags
from errors import UserError
from methods.pes import (PES, SemiStep, confident_selection, last_parts, renew, semi_batch_sizes,
                         weighted_mixed_cross_entropy)
from models import build_model
from test_method_dividemix import stopped_mid_epoch
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")


def test_confident_samples_are_those_predicted_as_their_label_and_classes_are_weighted():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(40, 4))
    labels = rng.integers(0, 3, 40)  # class 3 never a label: weight 0
    confident, weights = confident_selection(torch.as_tensor(probs), torch.as_tensor(labels), 4)
    expected = probs.argmax(1) == labels
    np.testing.assert_array_equal(confident.numpy(), expected)
    counts = np.bincount(labels[expected], minlength=4).astype(float)
    with np.errstate(divide="ignore"):
        cw = np.mean(counts[counts != 0]) / counts  # PES_cs.py:91-97
    cw[cw == np.inf] = 0
    np.testing.assert_allclose(weights.numpy(), cw, rtol=1e-6)


def test_renewal_resets_exactly_the_last_parts_from_its_seed():
    model = build_model("resnet18", 10, 1, 4)
    with torch.no_grad():  # as if trained: every weight and statistic moved
        for v in model.state_dict().values():
            v.add_(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    renew(last_parts(model, 1), seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the run's RNG is left as it was
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {k for k in before if k.startswith(("layers.3.", "linear."))}
    assert torch.equal(model.layers[3][0].bn1.running_var, torch.ones(32))  # statistics reset too
    again = {k: v.clone() for k, v in model.state_dict().items()}
    renew(last_parts(model, 1), seed=5)
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    assert [type(m).__name__ for m in last_parts(model, 0)] == ["Linear"]


class Recording(PES):
    """Records the parameters at the start of every epoch."""
    snapshots = []

    def start_epoch(self, epoch, run_state):
        Recording.snapshots.append({k: v.detach().clone() for k, v in run_state.model.named_parameters()})
        super().start_epoch(epoch, run_state)


def test_the_stage_schedule_trains_the_whole_network_then_the_last_parts_then_the_rest(tmp_path):
    """T1 1, T2 1, T3 1: epoch 0 trains every weight; epoch 1 (the refinement) only the last
    stage and the head; epoch 2 every weight but those (the release's SGD never sees them)."""
    Recording.snapshots = []
    code, (folder,) = runs.train(["--method", "pes", *runs.SMALL, "--n_epoch", "3", "--T1", "1", "--T2", "1",
                                  "--T3", "1", "--result_dir", str(tmp_path)], Recording)
    assert code == 0
    last = torch.load(f"{folder}/last.pt", weights_only=True)["model"]
    snaps = Recording.snapshots + [{k: last[k] for k in Recording.snapshots[0]}]
    late = {k for k in snaps[0] if k.startswith(("layers.3.", "linear."))}
    for epoch, trained in [(0, set(snaps[0])), (1, late), (2, set(snaps[0]) - late)]:
        changed = {k for k in snaps[0] if not torch.equal(snaps[epoch][k], snaps[epoch + 1][k])}
        assert changed == trained, epoch
    rows = runs.read_csv(f"{folder}/metrics.csv")
    assert rows[1]["confident_fraction"] == "" and 0 < float(rows[2]["confident_fraction"]) <= 1


def test_defaults_are_the_releases():
    cfg = parse_flags("train", "--method", "pes", "--dataset", "cifar10")
    assert (cfg.T1, cfg.T2, cfg.T3, cfg.PES_lr) == (25, 7, 5, 1e-4)
    assert (cfg.lr, cfg.n_epoch, cfg.lr_milestones, cfg.weight_decay, cfg.nesterov, cfg.batch_size,
            cfg.model, cfg.val_fraction) == (0.1, 200, [0.5, 0.75], 1e-4, False, 128, "resnet18", 0.1)
    cfg = parse_flags("train", "--method", "pes", "--dataset", "cifar100")
    assert cfg.T1 == 30 and cfg.model == "resnet"  # ResNet-34, by its canonical name
    assert parse_flags("train", "--method", "pes", "--dataset", "digits").n_epoch == 200  # train.py's protocol


@pytest.mark.parametrize("flags, message", [
    (["--T1", "-1"], "--T1 -1 must be >= 0"),
    (["--T2", "0", "--T3", "0"], "--T2 0 and --T3 0 leave epoch T1 without a step"),
    (["--PES_lr", "0"], "--PES_lr 0.0 must be > 0"),
    (["--model", "wrn28_2"], "--model wrn28_2 has none it knows"),
])
def test_bad_flags_are_refused(flags, message):
    with pytest.raises(UserError, match=message):
        parse_flags("train", "--method", "pes", "--dataset", "digits", *flags)


def test_sigterm_in_the_refinement_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped after two steps of epoch 1, the refinement after T1 = 1 epoch (Adam and the
    re-initialised parts live within it), resumed, then an epoch on the confident set."""
    monkeypatch.setattr(runs, "interrupted", stopped_mid_epoch)
    rows, last = runs.assert_sigterm_resume_is_exact(
        "pes", ["--T1", "1", "--T2", "1", "--T3", "1"], tmp_path, n_epoch=3, stop=1)
    assert last["method"]["confident"].dtype == torch.bool and rows[2]["confident_clean_fraction"]


# ---------------------------------------------------------------- PES-semi

def test_semi_batch_sizes_class_weights_and_weighted_loss_match_the_release():
    assert semi_batch_sizes(100, 300, 128) == (64, 64)        # more unconfident: half and half
    assert semi_batch_sizes(300, 100, 128) == (96, 32)        # int(100 / 400 * 128) unlabelled
    assert semi_batch_sizes(500, 0, 128) == (128, 0)
    probs = torch.eye(3)[[0, 0, 0, 0, 0, 0, 0, 1, 2, 2]].double()
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 2, 2])
    _, weights = confident_selection(probs, labels, 3, clip=3)
    np.testing.assert_allclose(weights.numpy(), [(10 / 3) / 7, 3.0, (10 / 3) / 2], rtol=1e-6)  # 10/3 clipped to 3
    rng = np.random.default_rng(4)
    z, t, w = rng.normal(size=(6, 3)), rng.dirichlet(np.ones(3), 6), rng.uniform(size=3)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = np.sum(-np.mean(logp * t, 0) * w)  # PES_semi.py:127-128
    got = weighted_mixed_cross_entropy(torch.as_tensor(z), torch.as_tensor(t), torch.as_tensor(w))
    assert got.item() == pytest.approx(expected)


def test_a_semi_step_equals_a_transcription_of_the_release():
    """semi_step against PES_semi.py:96-136 written out with plain torch on a copy."""
    torch.manual_seed(1)
    k, d, b, bu, lam_u, t = 3, 5, 4, 2, 9.0, 0.5
    net, copy = torch.nn.Linear(d, k).double(), torch.nn.Linear(d, k).double()
    copy.load_state_dict(net.state_dict())
    run = RunState.for_model(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"))
    method = PES(semi=True, T=t)
    method.num_classes, method.weights = k, torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    x1, x2, u1, u2 = (torch.randn(n, d, dtype=torch.float64) for n in (b, b, bu, bu))
    y, perm = torch.tensor([2, 0, 1, 2]), torch.randperm(2 * b + 2 * bu)
    loss, _ = method.semi_step(run, SemiStep(x1, x2, u1, u2, 0.3, perm, lam_u), y)

    targets_x = torch.zeros(b, k, dtype=torch.float64).scatter_(1, y.view(-1, 1), 1)
    with torch.no_grad():
        pu = (torch.softmax(copy(u1), dim=1) + torch.softmax(copy(u2), dim=1)) / 2
        ptu = pu ** (1 / t)
        targets_u = ptu / ptu.sum(dim=1, keepdim=True)
    all_inputs = torch.cat([x1, x2, u1, u2])
    all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
    lam = max(0.3, 0.7)
    mixed_input = lam * all_inputs + (1 - lam) * all_inputs[perm]
    mixed_target = lam * all_targets + (1 - lam) * all_targets[perm]
    logits = copy(mixed_input)
    lx = torch.sum(-torch.mean(torch.log_softmax(logits[:2 * b], dim=1) * mixed_target[:2 * b], 0) * method.weights)
    lu = torch.mean((torch.softmax(logits[2 * b:], dim=1) - mixed_target[2 * b:]) ** 2)
    expected = lx + lam_u * lu
    optimizer = torch.optim.SGD(copy.parameters(), lr=0.1)
    expected.backward()
    optimizer.step()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(net.weight, copy.weight, atol=1e-7)


def test_semi_defaults_and_refusals():
    cfg = parse_flags("train", "--method", "pes", "--semi", "on", "--dataset", "cifar10")
    assert (cfg.T1, cfg.T2, cfg.T3, cfg.lambda_u, cfg.alpha, cfg.T) == (20, 5, 0, 150.0, 4.0, 0.5)
    assert parse_flags("train", "--method", "pes", "--semi", "on", "--dataset", "cifar100").T1 == 35
    with pytest.raises(UserError, match="PES-semi refines the head alone"):
        parse_flags("train", "--method", "pes", "--semi", "on", "--T3", "2")


def test_semi_refines_the_head_then_trains_the_rest_and_resumes_exactly(tmp_path, monkeypatch):
    """T1 1, T2 1: epoch 1 re-initialises and trains the head, then MixMatch trains every
    other weight; epoch 2 the same minus the head. Stopped in epoch 1 after two steps (the
    refinement's), resumed: the uninterrupted run's metrics and weights."""
    Recording.snapshots = []
    flags = ["--semi", "on", "--T1", "1", "--T2", "1", "--batch_size", "128"]
    monkeypatch.setattr(runs, "interrupted", stopped_mid_epoch)
    monkeypatch.setattr(runs, "get_method", lambda name: Recording)  # the uninterrupted run records first
    rows, last = runs.assert_sigterm_resume_is_exact("pes", flags, tmp_path, n_epoch=3, stop=1)
    snaps = Recording.snapshots[:3] + [{k: last["model"][k] for k in Recording.snapshots[0]}]
    head = {k for k in snaps[0] if k.startswith("linear.")}
    changed = {k for k in snaps[0] if not torch.equal(snaps[2][k], snaps[3][k])}
    assert changed == set(snaps[0]) - head
    assert 0 < float(rows[1]["confident_fraction"]) < 1 and rows[1]["confident_clean_fraction"]
