"""PES (methods/pes.py): the confident selection and its class weights against numpy, the
re-initialisation of the last parts, the stage schedule (which weights each epoch trains)
in a tiny run, the flags, and a run stopped in the middle of the refinement and resumed
exactly."""
import numpy as np
import pytest
import torch

import test_methods_runs as runs
from conftest import parse_flags
from errors import UserError
from methods.pes import PES, confident_selection, last_parts, renew
from models import build_model
from test_method_dividemix import stopped_mid_epoch

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
    assert rows[0]["val_acc"]  # 10% of the noisy training set held out, as released


def test_defaults_are_the_releases():
    cfg = parse_flags("train", "--method", "pes", "--dataset", "cifar10")
    assert (cfg.T1, cfg.T2, cfg.T3, cfg.PES_lr) == (25, 7, 5, 1e-4)
    assert (cfg.lr, cfg.n_epoch, cfg.lr_milestones, cfg.weight_decay, cfg.nesterov, cfg.batch_size,
            cfg.model, cfg.val_fraction) == (0.1, 200, [0.5, 0.75], 1e-4, False, 128, "resnet18", 0.1)
    assert parse_flags("train", "--method", "pes", "--dataset", "cifar100").T1 == 30


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
