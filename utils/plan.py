"""Planning a run without running it: from a script's flags to the run they would make.

    plan = plan_run(preset, argv)        or   plan_script("main_GLS_load", argv)
    plan.cfg, plan.method, plan.run_dir, plan.made_by()

Nothing is read or written but the code and, for made_by, the data: a refusal is the
UserError the script itself would print (a refused flag is a core.args.FlagError with the
parser's own message). The scripts train through it (utils.cli.run_preset), and the
tools that plan many runs (sweep.py, summarize.py, preflight.py) read the same facts from
it instead of running a script to read what it prints.

made_by is what a run of these flags would record now to say what made it: its code
(the script, the method's, data set's and noise type's files and their imports), its data
(the data set's fingerprint and the noisy labels) and the method's outside inputs.
`Identities` computes it, the code part once per set of code files and the data part once
per data setting, so that checking a sweep of many runs loads each data set once.
"""
import functools
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Optional

from core.args import flag_dests, flag_errors_raise
from core.files import warn
from errors import UserError

from . import identity as ident

# The flags that decide the data and the noisy labels, besides those that data sets and
# noise types declare themselves (data.add_data_flags).
DATA_FLAGS = ("dataset", "data_root", "noise_type", "noise_rate", "noise_seed", "noise_source",
              "noise_file", "noise_path")


@dataclass
class RunPlan:
    """A run as its flags define it. `script`: the script's name without .py; `init_from`:
    () -> the checkpoint its weights start from (looked up only when the run trains);
    `comparable`: the settings that pair it with a CE run of another script."""
    preset: object
    cfg: object
    method: object
    run_dir: str
    init_from: Optional[Callable]
    comparable: dict

    @property
    def script(self):
        return self.preset.script

    def made_by(self, identities=None):
        """What this run would record now as made_by's code, data and outside inputs."""
        return (identities or Identities()).made_by(self.cfg, self.script, self.method)


def plan_run(preset, argv=None):
    """The RunPlan of a preset's flags (utils.cli.Preset), or the UserError the script would
    print for them."""
    from .cli import comparable_settings
    from .results import run_dir

    with flag_errors_raise():
        cfg, method_cls = preset.parse(argv)
    method = method_cls.from_config(cfg, **preset.method_options)
    method.check_contract(cfg)
    init_from = functools.partial(preset.init_from, cfg) if preset.init_from else None
    return RunPlan(preset, cfg, method, run_dir(vars(cfg), preset.script, method.tag), init_from,
                   comparable_settings(cfg, preset, method_cls))


def plan_script(name, argv=None):
    """plan_run of a script of this repository by name ("main_warmup" or "main_warmup.py")."""
    return plan_run(script_preset(name, argv), argv)


def script_preset(name, argv=None):
    """The Preset of a script by name for these flags (train.py's depends on its --method)."""
    name = name[:-len(".py")] if name.endswith(".py") else name
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise UserError(f"cannot import {name}.py ({exc}): run with the project's Python, e.g. "
                        ".venv/bin/python") from None
    if not hasattr(module, "preset"):
        raise UserError(f"{name}.py is not a training script of this repository (it has no preset)")
    with flag_errors_raise():
        return module.preset(list(argv or []))


def code_paths(cfg, script, method):
    """The files the run's code starts from: the script, the method's, the data set's and
    the noise type's (utils/identity.py follows their imports)."""
    from data import declared_in
    from methods import methods

    return [os.path.join(ident.ROOT, f"{script}.py"), methods().files[method.name],
            declared_in(cfg.dataset), declared_in(cfg.noise_type)]


def present_inputs(method):
    """{"inputs": ...} of the method's outside inputs that are there to be compared (a warning
    for each one that is gone: the run needs it no more), or {} when it has none."""
    inputs = ident.input_identity(method.inputs())
    for flag, entry in inputs.items():
        if entry["sha1"] is None:
            warn(f"{flag}'s {entry['path']} is gone, so it cannot be compared with the one this run was "
                 "made from; the run needs it no more")
    return {"inputs": inputs} if inputs else {}


class Identities:
    """made_by's code, data and outside inputs of runs as they would record them now, each
    part computed once: the code per set of code files, the data per data setting."""

    def __init__(self):
        self.git = None
        self.code, self.data = {}, {}

    def made_by(self, cfg, script, method):
        paths = tuple(code_paths(cfg, script, method))
        if paths not in self.code:
            if self.git is None:
                self.git = ident.git_identity()
            self.code[paths] = {**ident.source_identity(paths), **self.git}
        key = tuple(repr(getattr(cfg, k, None)) for k in data_flags())
        if key not in self.data:
            self.data[key] = data_identity(cfg)
        return {"code": self.code[paths], **({"data": self.data[key]} if self.data[key] else {}),
                **present_inputs(method)}


@functools.lru_cache(maxsize=None)
def data_flags():
    """DATA_FLAGS and the flags that data sets and noise types declare."""
    import argparse

    from data import add_data_flags

    declared = argparse.ArgumentParser(add_help=False)
    add_data_flags(declared, {})
    return DATA_FLAGS + tuple(sorted(flag_dests(declared) - set(DATA_FLAGS)))


def data_identity(cfg):
    """{data_sha1, labels_sha1} of a run's data, or None (with a warning) when they cannot be
    read without a download: then only the code is compared."""
    from data import prepare_data
    from data.download import no_downloads

    try:
        with no_downloads():
            data, noisy, _, _ = prepare_data(cfg)
    except UserError as exc:
        warn(f"the data of {cfg.dataset} under {cfg.data_root} cannot be loaded to check them "
             f"({str(exc).splitlines()[0]}); only the code is compared")
        return None
    return {"data_sha1": ident.data_fingerprint(data), "labels_sha1": ident.labels_sha1(noisy)}
