"""bench/method_cost.py as a smoke test: tiny, seconds (its figures live in docs/BENCHMARKS.md)."""
import importlib
import json
import math
import os

import pytest
import torch

from conftest import ROOT, run_cli

TINY = ["--width", "4", "--batch_size", "512", "--threads", "1"]
DIGITS_TRAIN = 1437  # data/digits.py: 1,437 training images


def test_method_cost_times_ce_and_the_methods_named(tmp_path):
    out = tmp_path / "cost.json"
    proc = run_cli("bench/method_cost.py", "--methods", "gce sln", "--epochs", "2", *TINY, "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["device"] and r["torch_version"] == torch.__version__
    assert (r["model"], r["width"], r["batch_size"], r["epochs"]) == ("resnet18", 4, 512, 2)
    ce, gce, sln = r["results"]
    assert [x["method"] for x in r["results"]] == ["ce", "gce", "sln"]
    assert ce["flags"] == "--method gls --smooth_rate 0"
    batches = math.ceil(DIGITS_TRAIN / 512)
    for x in r["results"]:
        assert x["batches_per_epoch"] == batches and x["steps_per_epoch"] == batches
        assert len(x["epochs"]) == 2
        assert x["s_per_step"] > 0 and x["train_s_per_epoch"] >= x["s_per_step"]
        assert x["ratio_to_ce"] == pytest.approx(x["s_per_step"] / ce["s_per_step"])
        assert x["epoch_s"] == pytest.approx(x["train_s_per_epoch"] + x["extra_s_per_epoch"] + x["eval_s_per_epoch"])
        assert x["epoch_ratio_to_ce"] == pytest.approx(x["epoch_s"] / ce["epoch_s"])
        assert x["one_off_s"] is None
        # the first epoch is the warm-up: the medians are the second's
        assert x["train_s_per_epoch"] == pytest.approx(x["epochs"][1]["train_s"])
    assert ce["ratio_to_ce"] == 1.0
    assert (ce["eval_models"], gce["eval_models"], sln["eval_models"]) == (1, 1, 2)  # and its momentum model
    assert "sln" in proc.stdout and "x CE" in proc.stdout


@pytest.mark.parametrize("flags, message", [(["--methods", "gce nosuch"], "unknown method(s) nosuch"),
                                            (["--methods", "pes", "--epochs", "2"], "--epochs 2: at least 3")])
def test_method_cost_refuses_bad_flags(flags, message, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))  # as `python bench/method_cost.py` has it
    method_cost = importlib.import_module("method_cost")
    with pytest.raises(SystemExit) as exit_:
        method_cost.parse_args([*flags, *TINY])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
