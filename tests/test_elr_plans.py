"""The ELR release's plans as docs/REPRODUCTION.md runs them: the command lines written
there, parsed as train.py parses them, give the release's lr per epoch (transcribed from
its configurations) and its (lambda, beta); CIFAR-100N and pairflip get the defaults the
page says. No training."""
import os
import re
import shlex

import pytest

from conftest import ROOT, parse_flags


def documented_elr_commands():
    """The train.py --method elr command lines of REPRODUCTION.md's ELR subsection."""
    text = open(os.path.join(ROOT, "docs", "REPRODUCTION.md")).read()
    section = text[text.index("### `elr` (methods/elr.py)"):text.index("### `coteaching`")]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return [shlex.split(b.replace("\\\n", " "))[2:] for b in blocks if "--method elr" in b]


def release_plan(lr, epochs, milestones, gamma):
    """MultiStepLR stepped after every epoch (ELR/trainer/trainer.py:123-124): the lr of
    each epoch, 0-based."""
    return [lr * gamma ** sum(1 for m in milestones if epoch >= m) for epoch in range(epochs)]


@pytest.mark.parametrize("dataset, noise_type, epochs, milestones, lam_beta", [
    ("cifar100", "symmetric", 150, [80, 120], (7.0, 0.9)),   # ELR/config_cifar100.json:39-40, :49-58
    ("cifar10", "asym", 120, [40, 80], (1.0, 0.9)),          # ELR/config_cifar10_asym.json:39-40, :49-58
])
def test_documented_commands_run_the_release_plans(dataset, noise_type, epochs, milestones, lam_beta):
    from utils.engine import lr_at
    commands = [parse_flags("train", *argv) for argv in documented_elr_commands()]
    assert len(commands) == 2
    cfg = next(c for c in commands if (c.dataset, c.noise_type) == (dataset, noise_type))
    assert cfg.n_epoch == epochs
    assert [lr_at(e, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.n_epoch) for e in range(epochs)] \
        == pytest.approx(release_plan(0.02, epochs, milestones, 0.01))
    # ELR/config_*.json:17, :30-32: batch 128, SGD momentum 0.9 (no Nesterov), weight decay 1e-3
    assert (cfg.batch_size, cfg.momentum, cfg.nesterov, cfg.weight_decay) == (128, 0.9, False, 1e-3)
    assert (cfg.elr_lambda, cfg.elr_beta) == lam_beta


@pytest.mark.parametrize("dataset, noise_type, lam_beta", [
    ("cifar100", "noisy100", (7.0, 0.9)),   # CIFAR-100N: CIFAR-100's configuration
    ("cifar10", "aggre", (3.0, 0.7)),       # CIFAR-10N: CIFAR-10's
    ("cifar10", "pairflip", (3.0, 0.7)),    # pairflip: the symmetric defaults, a choice
])
def test_defaults_of_the_other_label_sets(dataset, noise_type, lam_beta):
    rate = ["--noise_rate", "0.4"] if noise_type == "pairflip" else []  # human labels take no rate
    cfg = parse_flags("train", "--method", "elr", "--dataset", dataset, "--noise_type", noise_type, *rate)
    assert (cfg.elr_lambda, cfg.elr_beta) == lam_beta
