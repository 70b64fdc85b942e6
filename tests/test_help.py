"""--help of every script shows every flag's default, 0, False and empty included, once."""
import argparse
import importlib
import re

import pytest

from methods import methods

SCRIPTS = ["main_warmup", "main_GLS_direct_train", "main_GLS_load", "noise_cifar_train",
           "noise_clothing1m_train", "train"]


def help_entries(parser):
    """{option string: its help text as printed} from parser.format_help()."""
    text = parser.format_help()
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-[-\w]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {k: re.sub(r"\s+", " ", v) for k, v in entries.items()}


def parsers():
    for script in SCRIPTS[:-1]:
        yield script, importlib.import_module(script).preset([]).parser()
    train = importlib.import_module("train")
    for name in methods():
        yield f"train --method {name}", train.preset(["--method", name]).parser()


@pytest.mark.parametrize("script,parser", list(parsers()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_default_is_shown_once(script, parser):
    entries = help_entries(parser)
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS or action.help is None:
            continue
        entry = entries[action.option_strings[0]]
        assert entry.count("(default:") <= 1, (script, entry)
        if action.default is not None:
            shown = "%(default)" in action.help or f"(default: {action.default})" in entry
            assert shown, (script, action.option_strings[0], action.default, entry)


def test_the_zero_defaults_the_protocols_depend_on_are_printed():
    warmup = help_entries(importlib.import_module("main_warmup").preset([]).parser())
    assert "(default: 0.0)" in warmup["--momentum"] and "(default: 0.0)" in warmup["--wb"]
    assert "(default: 0)" in warmup["--seed"] and "(default: 0)" in warmup["--noise_seed"]
    assert "(default: 0.0)" in warmup["--val_fraction"]
    sln = help_entries(importlib.import_module("noise_cifar_train").preset([]).parser())
    assert "(default: False)" in sln["--nesterov"] and "(default: 0)" in sln["--gpu_id"]
    assert sln["--noise_mode"].count("(default: dependent)") == 1
