"""Fuzzing the scripts' input: every bad flag, file, checkpoint and run folder ends with
`error: ...` naming the problem and the fix, exit status 2, no traceback, and no file
created or changed (an earlier finished run keeps every md5, the result folder its listing).

Each case of CASES is (id, script, argv, problem, fix, setup), problem and fix fragments
of the message (fix None where the message has none to offer): the script's main(argv) runs
in this process inside core.args.run_main, as its command line runs it (argparse's exit
and UserError give the status; any other exception is a traceback and fails the test).
`argv` items are formatted with the case's context ({R}: the shared result folder with
finished runs, {tmp}: the case's own folder, ...); `setup(c)` builds damaged inputs
before the snapshot is taken. Subprocesses only where a real process is needed: two
concurrent runs and signals, and python3 -m data.idn's exit status. ENGINE_DEFECTS are
the defects of the engine this fuzzing found, kept as cases now that they are fixed.
"""
import contextlib
import errno
import glob
import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.error

import numpy as np
import pytest
import torch

from conftest import ROOT, fail_writing, parse_flags, read_csv, read_json, write_fake_cifar
from core.args import run_main

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small models, loaded CPU

TINY4 = ["--dataset", "digits", "--model", "resnet18", "--width", "4", "--device", "cpu"]
GLS = TINY4 + ["--n_epoch", "1", "--result_dir", "{R}"]  # the shared finished run's flags
LOAD = TINY4 + ["--n_epoch", "1", "--result_dir", "{R}", "--lr", "0.001"]
SLN = TINY4 + ["--num_class", "10", "--noise_mode", "sym", "--correction", "-1", "--epochs", "1",
               "--result_dir", "{R}"]
RESUME = TINY4 + ["--n_epoch", "2", "--result_dir", "{tmp}/res", "--resume"]  # the interrupted run
NF = GLS + ["--noise_file", "{tmp}/labels.csv"]
IDN = ["--noise_rate", "0.2", "--out", "{tmp}/x.csv"]
C10 = ["--dataset", "cifar10", "--model", "resnet18", "--width", "4", "--device", "cpu", "--n_epoch", "1",
       "--batch_size", "32", "--result_dir", "{R}", "--data_root", "{tmp}/cifar"]
C1M = ["--datapath", "{tmp}/c1m", "--model", "resnet18", "--width", "4", "--image_size", "16",
       "--num_per_class", "1", "--epochs", "1", "--batch_size", "14", "--num_workers", "0",
       "--device", "cpu", "--result_dir", "{tmp}/res"]  # a run folder of its own: see ENGINE_DEFECTS


# ---------------------------------------------------------------- running and watching

def run_script(script, argv):
    """(exit status, stderr) of `script`'s main(argv) inside core.args.run_main."""
    main = importlib.import_module(script).main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(SystemExit) as exit_:
            run_main(lambda: main(argv))
    return exit_.value.code, err.getvalue()


def snapshot(*roots):
    """{path: md5} of every file below the roots, and every folder (the lock file's content
    names its last holder, so only its presence counts)."""
    seen = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            seen[folder] = "folder"
            for name in files:
                path = os.path.join(folder, name)
                if name == ".lock" or not os.path.isfile(path):
                    seen[path] = "present"
                    continue
                with open(path, "rb") as f:
                    seen[path] = hashlib.md5(f.read()).hexdigest()
    return seen


def changes(before, after):
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def only(pattern):
    (path,) = glob.glob(pattern)
    return path


def digits_labels():
    from data.digits import load_digits_split
    return load_digits_split()[1]


def interrupt_after_first_epoch(script, argv):
    """Run script's main(argv); SIGINT as epoch 1's checkpoint is written (a user's Ctrl-C)."""
    import utils.engine
    save_epoch = utils.engine.save_epoch

    def save_then_interrupt(run, folder):
        save_epoch(run, folder)
        if run.epoch == 1:
            signal.raise_signal(signal.SIGINT)
    utils.engine.save_epoch = save_then_interrupt
    try:
        return importlib.import_module(script).main(argv)
    finally:
        utils.engine.save_epoch = save_epoch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Finished runs sharing one result folder R (GLS from scratch, its CE warm-up, a clean
    warm-up with --record_train_probs, SLN-MO), an interrupted run template T, and a
    working directory of its own (a default ./data or ./results must not land in the repo)."""
    base = tmp_path_factory.mktemp("fuzz")
    R, T, cwd = (str(base / name) for name in ("results", "interrupted", "cwd"))
    os.makedirs(cwd)
    old_cwd = os.getcwd()
    os.chdir(cwd)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fmt = lambda argv: [a.format(R=R) for a in argv]  # noqa: E731
    for script, extra in (("main_GLS_direct_train", []), ("main_warmup", []),
                          ("main_warmup", ["--noise_type", "clean", "--record_train_probs"])):
        assert importlib.import_module(script).main(fmt(GLS) + extra) == 0
    assert importlib.import_module("noise_cifar_train").main(fmt(SLN)) == 0
    code = interrupt_after_first_epoch("main_GLS_direct_train", TINY4 + ["--n_epoch", "2", "--result_dir", T])
    assert code == 130
    torch.set_num_threads(threads)
    yield types.SimpleNamespace(
        R=R, T=T, cwd=cwd,
        F=only(f"{R}/main_GLS_direct_train/*"), W=only(f"{R}/main_warmup/*symmetric*"),
        Wc=only(f"{R}/main_warmup/*clean*"), S=only(f"{R}/noise_cifar_train/*"),
        labels=digits_labels())
    os.chdir(old_cwd)


@pytest.fixture
def ctx(world, tmp_path, monkeypatch):
    c = types.SimpleNamespace(**vars(world), tmp=str(tmp_path), monkeypatch=monkeypatch)
    return c


def refuse(c, script, argv, problem, fix, setup=None, code=2):
    """Run the case; assert its status, message and that nothing changed."""
    if setup is not None:
        setup(c)
    argv = [a.format(**vars(c)) for a in argv]
    watched = (c.R, c.tmp, c.cwd)
    before = snapshot(*watched)
    status, err = run_script(script, argv)
    assert status == code, err
    assert "Traceback" not in err
    assert "error: " in err and problem in err, err
    if fix is not None:  # a fragment, or a tuple of fragments one of which names the fix
        assert any(f in err for f in ((fix,) if isinstance(fix, str) else fix)), err
    assert changes(before, snapshot(*watched)) == []
    return err


# ---------------------------------------------------------------- setups

def write(path, text=None, raw=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if raw is None:
        raw = text.encode()
    with open(path, "wb") as f:
        f.write(raw)


def noise_csv(rows, header="label,label_noisy", end="\n"):
    return header + end + "".join(f"{a},{b}{end}" for a, b in rows)


def labels_file(make):
    """setup: {tmp}/labels.csv from make(clean labels) -> text or bytes."""
    def setup(c):
        content = make(c.labels)
        write(f"{c.tmp}/labels.csv", **({"raw": content} if isinstance(content, bytes) else {"text": content}))
    return setup


def shifted(labels):
    return [(y, (y + 1) % 10) for y in labels]


def with_row(index, row):
    def make(labels):
        rows = [f"{a},{b}" for a, b in shifted(labels)]
        rows[index] = row
        return "label,label_noisy\n" + "\n".join(rows) + "\n"
    return make


def interrupted(damage=None):
    """setup: a copy of the interrupted run under {tmp}/res (c.run its folder), then damage(c)."""
    def setup(c):
        shutil.copytree(c.T, f"{c.tmp}/res")
        c.run = only(f"{c.tmp}/res/main_GLS_direct_train/*")
        if damage is not None:
            damage(c)
    return setup


def edit_json(name, **changes_):
    def damage(c):
        path = os.path.join(c.run, name)
        with open(path) as f:
            obj = json.load(f)
        obj.update(changes_)
        write(path, json.dumps(obj))
    return damage


def edit_checkpoint(path_of, change):
    def damage(c):
        path = path_of(c)
        torch.save(change(torch.load(path, weights_only=True), c), path)
    return damage


def replace_file(name, text=None, raw=None, folder=False):
    def damage(c):
        path = os.path.join(c.run, name)
        os.remove(path)
        if folder:
            os.makedirs(path)
        elif text is not None or raw is not None:
            write(path, text, raw)
    return damage


def truncate(path_of, size=None):
    def damage(c):
        path = path_of(c)
        with open(path, "rb") as f:
            data = f.read()
        write(path, raw=data[: len(data) // 2 if size is None else size])
    return damage


def checkpoint_copy(change):
    """setup: {tmp}/ckpt.pt, the warm-up's best.pt changed by change(checkpoint, c)."""
    def setup(c):
        torch.save(change(torch.load(f"{c.W}/best.pt", weights_only=True), c), f"{c.tmp}/ckpt.pt")
    return setup


def cifar(damage=None):
    """setup: a fake CIFAR-10 under {tmp}/cifar (100 train, 50 test images), then damage(batches folder)."""
    def setup(c):
        write_fake_cifar(f"{c.tmp}/cifar")
        if damage is not None:
            damage(f"{c.tmp}/cifar/cifar-10-batches-py")
    return setup


def batch(name, entry):
    def damage(folder):
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return damage


def human_file(entry):
    """setup: a fake CIFAR-10 and a CIFAR-N label file {tmp}/human.pt holding `entry`."""
    def setup(c):
        cifar()(c)
        torch.save(entry, f"{c.tmp}/human.pt")
    return setup


def offline(c):
    """torchvision's downloads fail as they do without a network (and never download)."""
    import torchvision.datasets.utils as tv

    def fail(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    c.monkeypatch.setattr(tv, "download_url", fail)
    c.monkeypatch.setattr(tv, "download_and_extract_archive", fail)


def clothing1m(damage, layout="merged"):
    """setup: a fake Clothing1M tree under {tmp}/c1m (tests/test_clothing1m.py), then damage(root, splits)."""
    def setup(c):
        from test_clothing1m import write_fake_clothing1m
        root = f"{c.tmp}/c1m"
        os.makedirs(root)
        damage(root, write_fake_clothing1m(root, layout))
    return setup


def append(rel, line):
    def damage(root, splits):
        with open(os.path.join(root, rel), "a") as f:
            f.write(line(splits) + "\n")
    return damage


def remove_images(split, count):
    def damage(root, splits):
        for rel, _ in splits[split][:count]:
            os.remove(os.path.join(root, rel))
    return damage


def idn_run(damage):
    """setup: a copy of the clean warm-up under {tmp}/run, then damage(folder)."""
    def setup(c):
        shutil.copytree(c.Wc, f"{c.tmp}/run")
        damage(f"{c.tmp}/run")
    return setup


def read_only(name):
    """setup: {tmp}/<name> refuses new entries, as a read-only folder does (root ignores modes)."""
    def setup(c):
        makedirs = os.makedirs

        def refused(path, *args, **kwargs):
            if f"{c.tmp}/{name}/" in os.path.abspath(path) + "/":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return makedirs(path, *args, **kwargs)
        os.makedirs(f"{c.tmp}/{name}")
        c.monkeypatch.setattr(os, "makedirs", refused)
    return setup


def wider_model():
    from models import build_model
    return build_model("resnet18", 10, 1, 8).state_dict()


def a_file(c):
    write(f"{c.tmp}/afile", "x")


# ---------------------------------------------------------------- the cases

D, L, N, I, S_, C = ("main_GLS_direct_train", "main_GLS_load", "noise_cifar_train", "data.idn",
                     "summarize", "noise_clothing1m_train")
INT = "pass one such as 10"
NUM = "pass one such as 0.1 or -2"
MUST_NOT_RESUME = "start the run again with --if_exists overwrite"
OVERWRITE = ("--if_exists overwrite",)  # any wording of the fix, for the defects below

CASES = [
    # -- numbers: ints as floats, strings, empty, negative, zero, huge, nan, inf
    ("n_epoch float", D, GLS + ["--n_epoch", "1.5"], "argument --n_epoch/--epochs: '1.5' is not an integer", INT, None),
    ("n_epoch word", D, GLS + ["--n_epoch", "one"], "'one' is not an integer", INT, None),
    ("n_epoch empty", D, GLS + ["--n_epoch", ""], "'' is not an integer", INT, None),
    ("n_epoch negative", D, GLS + ["--n_epoch", "-1"], "--n_epoch/--epochs -1", "must be at least 1", None),
    ("n_epoch zero", D, GLS + ["--n_epoch", "0"], "--n_epoch/--epochs 0", "must be at least 1", None),
    ("lr zero", D, GLS + ["--lr", "0"], "--lr 0.0", "must be positive", None),
    ("lr negative", D, GLS + ["--lr", "-0.1"], "--lr -0.1", "must be positive", None),
    ("lr negative scientific", D, GLS + ["--lr", "-1e-2"], "--lr -0.01", "must be positive", None),
    ("lr nan", D, GLS + ["--lr", "nan"], "argument --lr: 'nan' is not a finite number", NUM, None),
    ("lr inf", D, GLS + ["--lr", "inf"], "'inf' is not a finite number", NUM, None),
    ("lr -inf", D, GLS + ["--lr", "-inf"], "'-inf' is not a finite number", NUM, None),
    ("lr overflow", D, GLS + ["--lr", "1e400"], "'1e400' is not a finite number", NUM, None),
    ("lr word", D, GLS + ["--lr", "abc"], "'abc' is not a number", NUM, None),
    ("lr empty", D, GLS + ["--lr", ""], "'' is not a number", NUM, None),
    ("lr twice, last bad", D, GLS + ["--lr", "0.1", "--lr", "-1"], "--lr -1.0", "must be positive", None),
    ("smooth_rate nan", D, GLS + ["--smooth_rate", "nan"], "'nan' is not a finite number", NUM, None),
    ("smooth_rate above 1", D, GLS + ["--smooth_rate", "1.01"], "--smooth_rate 1.01 is above 1", "use r <= 1",
     None),
    ("wa nan", D, GLS + ["--wa", "nan"], "argument --wa: 'nan'", NUM, None),
    ("wa negative", D, GLS + ["--wa", "-1"], "--wa -1.0 and --wb 1.0", "both must be >= 0", None),
    ("wb negative", D, GLS + ["--wb", "-1"], "--wb -1.0", "both must be >= 0", None),
    ("wa and wb zero", D, GLS + ["--wa", "0", "--wb", "0"], "are both 0", "set one of them", None),
    ("noise_rate 1", D, GLS + ["--noise_rate", "1"], "--noise_rate 1.0", "[0, 1)", None),
    ("noise_rate negative", D, GLS + ["--noise_rate", "-0.1"], "--noise_rate -0.1", "[0, 1)", None),
    ("noise_rate nan", D, GLS + ["--noise_rate", "nan"], "'nan' is not a finite number", NUM, None),
    ("batch_size 1", D, GLS + ["--batch_size", "1"], "--batch_size 1", "must be at least 2", None),
    ("batch_size 0", D, GLS + ["--batch_size", "0"], "--batch_size 0", "must be at least 2", None),
    ("batch_size negative", D, GLS + ["--batch_size", "-5"], "--batch_size -5", "must be at least 2", None),
    ("batch_size float", D, GLS + ["--batch_size", "4.0"], "'4.0' is not an integer", INT, None),
    ("test_batch_size 0", D, GLS + ["--test_batch_size", "0"], "--test_batch_size 0", "must be at least 1", None),
    ("lr_milestones 0", D, GLS + ["--lr_milestones", "0"], "--lr_milestones [0.0]", "fractions of the run",
     None),
    ("lr_milestones 1", D, GLS + ["--lr_milestones", "1"], "--lr_milestones [1.0]", "in (0, 1)", None),
    ("lr_milestones epochs", D, GLS + ["--lr_milestones", "50"], "--lr_milestones [50.0]", "in (0, 1)", None),
    ("lr_milestones negative", D, GLS + ["--lr_milestones", "-0.5"], "--lr_milestones [-0.5]", "in (0, 1)", None),
    ("lr_milestones nan", D, GLS + ["--lr_milestones", "0.5", "nan"], "'nan' is not a finite number", NUM, None),
    ("lr_gamma 0", D, GLS + ["--lr_gamma", "0"], "--lr_gamma 0.0", "must be positive", None),
    ("lr_gamma -1", D, GLS + ["--lr_gamma", "-1"], "--lr_gamma -1.0", "must be positive", None),
    ("lr_gamma inf", D, GLS + ["--lr_gamma", "inf"], "'inf' is not a finite number", NUM, None),
    ("momentum 1.5", D, GLS + ["--momentum", "1.5"], "--momentum 1.5", "[0, 1)", None),
    ("momentum 1", D, GLS + ["--momentum", "1"], "--momentum 1.0", "[0, 1)", None),
    ("momentum negative", D, GLS + ["--momentum", "-0.1"], "--momentum -0.1", "[0, 1)", None),
    ("weight_decay negative scientific", D, GLS + ["--weight_decay", "-1e-4"], "--weight_decay -0.0001",
     "must be >= 0", None),
    ("weight_decay nan", D, GLS + ["--weight_decay", "nan"], "'nan' is not a finite number", NUM, None),
    ("nesterov without momentum", D, GLS + ["--momentum", "0", "--nesterov"], "--nesterov needs --momentum > 0",
     "--no-nesterov", None),
    ("val_fraction 0.5", D, GLS + ["--val_fraction", "0.5"], "--val_fraction 0.5", "[0, 0.5)", None),
    ("val_fraction negative", D, GLS + ["--val_fraction", "-0.1"], "--val_fraction -0.1", "[0, 0.5)", None),
    ("val_fraction holding out nothing", D, GLS + ["--val_fraction", "0.0001"],
     "--val_fraction 0.0001 holds out no image", "use at least 0.0063", None),
    ("loss_bound negative", D, GLS + ["--loss_bound", "-1"], "--loss_bound -1.0", "must be >= 0", None),
    ("loss_bound nan", D, GLS + ["--loss_bound", "nan"], "'nan' is not a finite number", NUM, None),
    ("print_freq 0", D, GLS + ["--print_freq", "0"], "--print_freq and --ckpt_every", "must be >= 1", None),
    ("ckpt_every negative", D, GLS + ["--ckpt_every", "-2"], "--print_freq and --ckpt_every", "must be >= 1",
     None),
    ("width 0", D, GLS + ["--width", "0"], "--width 0", "must be at least 1", None),
    ("width negative", D, GLS + ["--width", "-4"], "--width -4", "must be at least 1", None),
    ("width float", D, GLS + ["--width", "4.5"], "'4.5' is not an integer", INT, None),
    ("seed negative", D, GLS + ["--seed", "-1"], "--seed -1 is outside", "[0, 2^32)", None),
    ("seed 2^32", D, GLS + ["--seed", str(2 ** 32)], "--seed 4294967296", "[0, 2^32)", None),
    ("noise_seed negative", D, GLS + ["--noise_seed", "-3"], "--noise_seed -3", "[0, 2^32)", None),
    ("noise_seed 2^64", D, GLS + ["--noise_seed", str(2 ** 64)], "--noise_seed 18446744073709551616", "[0, 2^32)",
     None),
    ("num_per_class 0", D, GLS + ["--num_per_class", "0"], "--num_per_class 0", "or -1 for every image", None),
    ("num_per_class -2", D, GLS + ["--num_per_class", "-2"], "--num_per_class -2", "or -1 for every image", None),
    ("image_size 4", D, GLS + ["--image_size", "4"], "--image_size 4", "must be at least 8", None),
    ("num_workers negative", D, GLS + ["--num_workers", "-1"], "--num_workers -1", "must be >= 0", None),
    # -- names and choices
    ("noise_type unknown", D, GLS + ["--noise_type", "gauss"], "unknown noise type 'gauss'", "choose one of",
     None),
    ("noise_type empty", D, GLS + ["--noise_type", ""], "unknown noise type ''", "choose one of", None),
    ("noise_type capitalised", D, GLS + ["--noise_type", "Symmetric"], "'Symmetric'", "choose one of", None),
    ("noise_type with a space", D, GLS + ["--noise_type", " sym"], "' sym'", "choose one of", None),
    ("dataset unknown", D, GLS + ["--dataset", "mnist"], "--dataset 'mnist' is unknown", "choose one of cifar10",
     None),
    ("dataset empty", D, GLS + ["--dataset", ""], "--dataset '' is unknown", "choose one of", None),
    ("dataset capitalised", D, GLS + ["--dataset", "DIGITS"], "'DIGITS'", "choose one of", None),
    ("model unknown", D, GLS + ["--model", "vgg"], "--model 'vgg' is unknown", "choose one of", None),
    ("model empty", D, GLS + ["--model", ""], "--model '' is unknown", "choose one of", None),
    ("device tpu", D, GLS + ["--device", "tpu"], "--device 'tpu' is not a device", "use auto, cpu, cuda", None),
    ("device empty", D, GLS + ["--device", ""], "--device ''", "use auto, cpu, cuda", None),
    ("device cuda:-1", D, GLS + ["--device", "cuda:-1"], "--device 'cuda:-1'", "use auto, cpu, cuda", None),
    ("device capitalised", D, GLS + ["--device", "CPU"], "--device 'CPU'", "use auto, cpu, cuda", None),
    ("device with a space", D, GLS + ["--device", "cpu "], "--device 'cpu '", "use auto, cpu, cuda", None),
    ("precision fp8", D, GLS + ["--precision", "fp8"], "invalid choice: 'fp8'", "choose from", None),
    ("if_exists unknown", D, GLS + ["--if_exists", "maybe"], "invalid choice: 'maybe'", "choose from", None),
    ("unknown flag", D, GLS + ["--bogus", "1"], "unknown flag --bogus", "--help lists every flag", None),
    ("misspelt flag", D, GLS + ["--smooth-rate", "0.4"], "unknown flag --smooth-rate", "did you mean --smooth_rate",
     None),
    ("stray positional", D, GLS + ["extra"], "unexpected value 'extra'", "--flag VALUE", None),
    ("load flag on the direct script", D, GLS + ["--warmup_ckpt", "best"], "unknown flag --warmup_ckpt",
     "--help lists every flag", None),
    # -- contradictions
    ("resume and overwrite", D, GLS + ["--resume", "--overwrite"], "contradict each other", "keep one", None),
    ("if_exists refuse and resume", D, GLS + ["--if_exists", "refuse", "--resume"], "auto and refuse contradict",
     "keep one", None),
    ("retry_diverged without auto", D, GLS + ["--retry_diverged"], "--retry_diverged applies to --if_exists auto",
     "add it", None),
    ("no_pretrained and pretrained_path", D, GLS + ["--no_pretrained", "--pretrained_path", "{F}/config.json"],
     "exclude each other", "keep one", None),
    ("pretrained_path on a model without ImageNet weights", D, GLS + ["--pretrained_path", "{F}/config.json"],
     "--model resnet18 always starts from random weights", "drop --pretrained_path", None),
    ("resnet50 on 1-channel digits", D, GLS + ["--model", "resnet50"], "takes 3-channel images", "use resnet, resnet18",
     None),
    ("cnn on digits", D, GLS + ["--model", "cnn"], "--model cnn takes 3-channel 32x32 images", "use resnet", None),
    ("record_train_probs with val_fraction", D, GLS + ["--record_train_probs", "--val_fraction", "0.1"],
     "--record_train_probs predicts every training image", "no --val_fraction", None),
    ("clothing1m with val_fraction", D, GLS + ["--dataset", "clothing1m", "--val_fraction", "0.1"],
     "has a validation split of its own", "drop --val_fraction", None),
    ("clothing1m script with val_fraction", C, ["--val_fraction", "0.1", "--result_dir", "{R}"],
     "has a validation split of its own", "drop --val_fraction", None),
    ("clothing1m with symmetric noise", D, GLS + ["--dataset", "clothing1m", "--noise_type", "symmetric"],
     "clothing1m's labels are real noise", "use noise type real", None),
    ("clothing1m with a noise file", D, GLS + ["--dataset", "clothing1m", "--noise_file", "{F}/config.json"],
     "noise type real does not take them from a file", "drop one of the two", None),
    ("openset on digits", D, GLS + ["--noise_type", "openset"], "openset noise is defined for cifar10",
     "choose another noise type", None),
    ("real noise on digits", D, GLS + ["--noise_type", "real"], "noise type real means", "use a CIFAR-N type",
     None),
    ("CIFAR-N type on digits", D, GLS + ["--noise_type", "worst"], "noise type worst is a cifar10 label set",
     "use --dataset cifar10", None),
    ("pairflip on cifar100", D, GLS + ["--dataset", "cifar100", "--noise_type", "pairflip"],
     "pairflip noise is defined for 10 classes", "use symmetric noise", None),
    ("dependent noise without a file", D, GLS + ["--noise_type", "dependent"],
     "dependent (IDN) noise reads its labels from a file", "Pass --noise_file PATH", None),
    ("print_run_dir checks the flags first", D, GLS + ["--print_run_dir", "--lr", "-1"], "--lr -1.0",
     "must be positive", None),
    # -- paths
    ("result_dir is a file", D, GLS + ["--result_dir", "{F}/config.json"], "is a file, not a folder",
     "pass a folder", None),
    ("result_dir empty", D, GLS + ["--result_dir", ""], "--result_dir is empty", "pass a folder", None),
    ("result_dir below a file", D, GLS + ["--result_dir", "{F}/config.json/x"],
     "cannot create or lock the run folder", "--result_dir must be a folder you can write to", None),
    ("result_dir read-only", D, GLS + ["--result_dir", "{tmp}/ro/results"], "cannot create or lock the run folder",
     "--result_dir must be a folder you can write to", read_only("ro")),
    ("data_root is a file", D, GLS + ["--data_root", "{F}/config.json"], "--data_root/--datapath", "pass a folder",
     None),
    ("data_root empty", D, GLS + ["--data_root", ""], "--data_root/--datapath is empty", "pass a folder", None),
    ("noise_file missing", D, GLS + ["--noise_file", "{tmp}/none.csv"], "none.csv: no such file",
     "pass the path of an existing file", None),
    ("noise_file is a folder", D, GLS + ["--noise_file", "{tmp}"], "a folder, not a file",
     "pass the path of an existing file", None),
    ("noise_file empty string", D, GLS + ["--noise_file", ""], "--noise_file : no such file", "pass the path",
     None),
    ("noise_file is a device", D, GLS + ["--noise_file", "/dev/null"], "not a regular file", "pass the path",
     None),
    ("noise_file dangling symlink", D, GLS + ["--noise_file", "{tmp}/link.csv"], "a symbolic link to nothing",
     "pass the path",
     lambda c: os.symlink(f"{c.tmp}/nowhere.csv", f"{c.tmp}/link.csv")),
    ("noise_path is a folder", D, GLS + ["--noise_path", "{tmp}"], "--noise_path", "a folder, not a file", None),
    ("pretrained_path missing", D, GLS + ["--model", "resnet50", "--dataset", "cifar10", "--pretrained_path",
                                          "{tmp}/w.pth"], "w.pth: no such file", "pass the path", None),
    # -- noise files: --noise_file {tmp}/labels.csv
    ("noise file wrong header", D, NF, "header 'clean,noisy'",
     "expected 'label,label_noisy'", labels_file(lambda y: noise_csv(shifted(y), header="clean,noisy"))),
    ("noise file without header", D, NF, "header '",
     "expected 'label,label_noisy'", labels_file(lambda y: noise_csv(shifted(y))[len("label,label_noisy\n"):])),
    ("noise file semicolons", D, NF, "header 'label;label_noisy'",
     "expected 'label,label_noisy'", labels_file(lambda y: noise_csv(shifted(y)).replace(",", ";"))),
    ("noise file too short", D, NF, "has 1432 rows but the training set has 1437",
     "pass the one for --dataset", labels_file(lambda y: noise_csv(shifted(y[:-5])))),
    ("noise file too long", D, NF, "has 1438 rows", "pass the one for --dataset",
     labels_file(lambda y: noise_csv(shifted(y) + [(0, 0)]))),
    ("noise file label 10", D, NF, "column label_noisy, row 0 holds 10, outside 0..9",
     "pass the one for --dataset", labels_file(lambda y: noise_csv([(y[0], 10)] + shifted(y[1:])))),
    ("noise file label -1", D, NF, "column label_noisy, row 0 holds -1, outside 0..9",
     "pass the one for --dataset", labels_file(lambda y: noise_csv([(y[0], -1)] + shifted(y[1:])))),
    ("noise file of other clean labels", D, NF,
     "its clean column differs from the training labels in 1 rows (first: row 0)", "pass the one for --dataset",
     labels_file(lambda y: noise_csv([((y[0] + 3) % 10, 0)] + shifted(y[1:])))),
    ("noise file empty", D, NF, "labels.csv is empty",
     "pass the `label,label_noisy` CSV", labels_file(lambda y: "")),
    ("noise file header only", D, NF, "has 0 rows",
     "pass the one for --dataset", labels_file(lambda y: "label,label_noisy\n")),
    ("noise file binary", D, NF, "is not a text CSV",
     "pass the `label,label_noisy` CSV", labels_file(lambda y: bytes(range(256)) * 4)),
    ("noise file UTF-16", D, NF, "is not a text CSV", "pass the",
     labels_file(lambda y: noise_csv(shifted(y)).encode("utf-16"))),
    ("noise file gzip", D, NF, "is not a text CSV", "pass the",
     labels_file(lambda y: b"\x1f\x8b\x08\x00" + bytes(60))),
    ("noise file float label", D, NF, "labels.csv:5: '3,4.5' is not two integers",
     "fix that line", labels_file(with_row(3, "3,4.5"))),
    ("noise file three columns", D, NF, "labels.csv:2: '1,2,3'",
     "fix that line", labels_file(with_row(0, "1,2,3"))),
    ("noise file one column", D, NF, "labels.csv:3: '7' is not two integers",
     "fix that line", labels_file(with_row(1, "7"))),
    ("noise file tabs", D, NF, "is not two integers", "fix that line",
     labels_file(with_row(0, "1\t2"))),
    ("noise file huge label", D, NF, "is not two integers", "fix that line",
     labels_file(with_row(0, "1," + "9" * 30))),
    ("noise file NUL bytes", D, NF, "is not two integers", "fix that line",
     labels_file(lambda y: b"label,label_noisy\n" + bytes(50))),
    ("noise file with a finished run overwritten", D, GLS + ["--overwrite", "--noise_file", "{tmp}/labels.csv"],
     "header 'clean,noisy'", "expected 'label,label_noisy'",
     labels_file(lambda y: noise_csv(shifted(y), header="clean,noisy"))),
    # -- SLN flags
    ("num_class 100 on digits", N, SLN + ["--num_class", "100"], "--num_class 100 does not match digits",
     "pass --num_class 10", None),
    ("num_class 0", N, SLN + ["--num_class", "0"], "--num_class 0 does not match", "pass --num_class 10", None),
    ("num_class float", N, SLN + ["--num_class", "10.0"], "'10.0' is not an integer", INT, None),
    ("sigma negative", N, SLN + ["--sigma", "-0.5"], "--sigma -0.5", "must be >= 0", None),
    ("sigma inf", N, SLN + ["--sigma", "inf"], "argument --sigma: 'inf'", NUM, None),
    ("ema_decay 1", N, SLN + ["--ema_decay", "1"], "--ema_decay 1.0 is outside [0, 1)",
     "0 means no momentum model", None),
    ("ema_decay negative", N, SLN + ["--ema_decay", "-0.1"], "--ema_decay -0.1", "[0, 1)", None),
    ("ema_decay nan", N, SLN + ["--ema_decay", "nan"], "'nan' is not a finite number", NUM, None),
    ("gpu_id negative", N, SLN + ["--gpu_id", "-1"], "--gpu_id -1", "must be >= 0", None),
    ("correction float", N, SLN + ["--correction", "1.5"], "'1.5' is not an integer", INT, None),
    ("correction_aug unknown", N, SLN + ["--correction_aug", "maybe"], "invalid choice: 'maybe'", "choose from",
     None),
    ("noise_mode empty", N, SLN + ["--noise_mode", ""], "unknown noise type ''", "choose one of", None),
    ("epochs 0", N, SLN + ["--epochs", "0"], "--n_epoch/--epochs 0", "must be at least 1", None),
    ("datapath is a file", N, SLN + ["--datapath", "{tmp}/afile"], "--data_root/--datapath", "pass a folder",
     a_file),
    ("noise_source unknown", N, SLN + ["--noise_source", "web"], "invalid choice: 'web'", "choose from", None),
    ("noise_mode real on digits", N, SLN + ["--noise_mode", "real"], "noise type real means", "use a CIFAR-N type",
     None),
    # -- warm-up checkpoints of main_GLS_load.py
    ("warmup_ckpt missing", L, LOAD + ["--warmup_ckpt", "{tmp}/none.pt"], "--warmup_ckpt", "pass the path", None),
    ("warmup_ckpt empty", L, LOAD + ["--warmup_ckpt", ""], "--warmup_ckpt : no such file", "pass the path", None),
    ("warmup_ckpt a folder", L, LOAD + ["--warmup_ckpt", "{tmp}"], "a folder, not a file", "pass the path", None),
    ("warmup_ckpt truncated", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"], "cannot be read", None,
     lambda c: write(f"{c.tmp}/ckpt.pt", raw=open(f"{c.W}/best.pt", "rb").read()[:5000])),
    ("warmup_ckpt empty file", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"], "cannot be read", None,
     lambda c: write(f"{c.tmp}/ckpt.pt", "")),
    ("warmup_ckpt of no record", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"],
     "holds no record of the noisy labels and model", "train the warm-up again",
     checkpoint_copy(lambda ck, c: {k: v for k, v in ck.items() if k != "identity"})),
    ("warmup_ckpt a bare state_dict", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"], "holds no record",
     "train the warm-up again", checkpoint_copy(lambda ck, c: ck["model"])),
    ("warmup_ckpt a tensor", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"], "holds a Tensor",
     "train the warm-up again", checkpoint_copy(lambda ck, c: torch.zeros(3))),
    ("warmup_ckpt copied from other labels", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"],
     "was trained on other noisy labels", "start from the warm-up of the same noise",
     checkpoint_copy(lambda ck, c: {**ck, "identity": {**ck["identity"], "labels_sha1": "0" * 40}})),
    ("warmup_ckpt a copy of a run on other labels", L, LOAD + ["--warmup_ckpt", "{tmp}/copy.pt"],
     "was trained on other noisy labels", "start from the warm-up of the same noise",
     lambda c: shutil.copy(f"{c.Wc}/best.pt", f"{c.tmp}/copy.pt")),
    ("warmup_ckpt of the clean warm-up", L, LOAD + ["--warmup_ckpt", "{Wc}/best.pt"],
     "noise_type 'clean' vs 'symmetric'", "start from the warm-up of the same noise", None),
    ("warmup_ckpt of an SLN run at rate 0.4", L, LOAD + ["--warmup_ckpt", "{S}/best.pt"], "noise_rate 0.4 vs 0.2",
     "start from the warm-up of the same noise", None),
    ("warmup_ckpt of another width", L, LOAD + ["--width", "8", "--warmup_ckpt", "{W}/best.pt"],
     "was trained with width=4, this run has width=8", "pass a checkpoint of the same data set, model", None),
    ("warmup_ckpt of other weights", L, LOAD + ["--warmup_ckpt", "{tmp}/ckpt.pt"], "does not fit this model", None,
     checkpoint_copy(lambda ck, c: {**ck, "model": {"x": torch.zeros(1)}})),
    ("no warm-up to find", L, LOAD + ["--noise_rate", "0.3"], "no finished warm-up run",
     "--noise_rate 0.3 --model resnet18 --width 4", None),
    ("no warm-up of this val split", L, LOAD + ["--val_fraction", "0.1"], "no finished warm-up run",
     "--width 4 --seed 0 --val_fraction 0.1", None),
    ("two matching warm-ups", L, LOAD + ["--result_dir", "{tmp}/res"], "several warm-up runs match",
     "choose one with --warmup_ckpt PATH",
     lambda c: [shutil.copytree(c.W, f"{c.tmp}/res/main_warmup/{name}") for name in ("a", "b")]),
    ("only an unfinished warm-up", L, LOAD + ["--result_dir", "{tmp}/res"],
     "no finished warm-up run (1 unfinished)", "Run it first",
     lambda c: (shutil.copytree(c.W, f"{c.tmp}/res/main_warmup/a"),
                write(f"{c.tmp}/res/main_warmup/a/summary.json", '{"status": "interrupted"}'))),
    ("warm-up folder is a file", L, LOAD + ["--result_dir", "{tmp}/res"], "no finished warm-up run",
     "Run it first", lambda c: write(f"{c.tmp}/res/main_warmup", "x")),
    # -- run folders: --resume of the interrupted run, damaged
    ("resume: last.pt truncated", D, RESUME, "last.pt cannot be read", None,
     interrupted(truncate(lambda c: f"{c.run}/last.pt"))),
    ("resume: last.pt empty", D, RESUME, "last.pt cannot be read", None,
     interrupted(truncate(lambda c: f"{c.run}/last.pt", 0))),
    ("resume: last.pt text", D, RESUME, "last.pt cannot be read", None,
     interrupted(replace_file("last.pt", "hello"))),
    ("resume: last.pt a folder", D, RESUME, "last.pt is not a regular file", OVERWRITE,
     interrupted(replace_file("last.pt", folder=True))),
    ("resume: last.pt missing keys", D, RESUME, "last.pt lacks optimizer, method, state, rng", MUST_NOT_RESUME,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: {"model": ck["model"]}))),
    ("resume: last.pt a list", D, RESUME, "last.pt holds a list", MUST_NOT_RESUME,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: [1, 2]))),
    ("resume: last.pt of another width", D, RESUME, "last.pt does not fit this run", MUST_NOT_RESUME,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: {**ck, "model": wider_model()}))),
    ("resume: last.pt optimizer damaged", D, RESUME, "last.pt does not fit this run", MUST_NOT_RESUME,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: {**ck, "optimizer": {"x": 1}}))),
    ("resume: config.json of other settings", D, RESUME, "was started with other settings (lr)",
     "resume with the original flags", interrupted(edit_json("config.json", lr=0.5))),
    ("resume: config.json of a newer flag", D, RESUME, "was started with other settings (new_flag)",
     "resume with the original flags", interrupted(edit_json("config.json", new_flag=1))),
    ("resume: config.json corrupt", D, RESUME, "config.json is not readable JSON",
     "start the run again with --if_exists overwrite", interrupted(replace_file("config.json", "{"))),
    ("resume: config.json empty", D, RESUME, "config.json is not readable JSON", "--if_exists overwrite",
     interrupted(replace_file("config.json", ""))),
    ("resume: config.json a list", D, RESUME, "config.json", "--if_exists overwrite",
     interrupted(replace_file("config.json", "[]"))),
    ("resume: config.json missing", D, RESUME, "config.json is missing", "--if_exists overwrite",
     interrupted(replace_file("config.json"))),
    ("resume: noisy_labels.npy of another length", D, RESUME, "the noisy labels made now differ",
     MUST_NOT_RESUME, interrupted(lambda c: np.save(f"{c.run}/noisy_labels.npy", np.zeros(10, dtype=np.int64)))),
    ("resume: noisy_labels.npy of other labels", D, RESUME, "the noisy labels made now differ", MUST_NOT_RESUME,
     interrupted(lambda c: np.save(f"{c.run}/noisy_labels.npy", (np.load(f"{c.run}/noisy_labels.npy") + 1) % 10))),
    ("resume: noisy_labels.npy missing", D, RESUME, "noisy_labels.npy is missing", "--if_exists overwrite",
     interrupted(replace_file("noisy_labels.npy"))),
    ("resume: noisy_labels.npy garbage", D, RESUME, "noisy_labels.npy cannot be read", "--if_exists overwrite",
     interrupted(replace_file("noisy_labels.npy", "xx"))),
    ("resume: noisy_labels.npy of objects", D, RESUME, "noisy_labels.npy cannot be read", "--if_exists overwrite",
     interrupted(lambda c: np.save(f"{c.run}/noisy_labels.npy", np.array([{}], dtype=object), allow_pickle=True))),
    ("resume: .lock is a folder", D, RESUME, "cannot create or lock the run folder", "--result_dir",
     interrupted(replace_file(".lock", folder=True))),
    ("resume: run folder is a file", D, RESUME, "cannot create or lock the run folder", "--result_dir",
     interrupted(lambda c: (shutil.rmtree(c.run), write(c.run, "x")))),
    ("unfinished run without --resume", D, RESUME[:-1], "holds an unfinished run (status: interrupted)",
     "--if_exists auto (or --resume) continues it", interrupted()),
    ("unfinished run without last.pt", D, RESUME[:-1], "it has no checkpoint (last.pt) to continue from",
     "--if_exists overwrite starts it again", interrupted(replace_file("last.pt"))),
    ("finished run without --if_exists", D, GLS, "already holds a finished run",
     "Pass --if_exists auto to leave it as it is", None),
    ("finished run, no CUDA", D, GLS + ["--device", "cuda", "--seed", "9"], "no CUDA device is visible",
     "use --device cpu", lambda c: torch.cuda.is_available() and pytest.skip("CUDA is visible")),
    # -- CIFAR folders: --data_root {tmp}/cifar
    ("cifar batch missing", D, C10, "data_batch_3 is missing", "extract the archive again",
     cifar(lambda f: os.remove(f"{f}/data_batch_3"))),
    ("cifar test batch missing", D, C10, "test_batch is missing", "extract the archive again",
     cifar(lambda f: os.remove(f"{f}/test_batch"))),
    ("cifar meta missing", D, C10, "batches.meta is missing", "extract the archive again",
     cifar(lambda f: os.remove(f"{f}/batches.meta"))),
    ("cifar batch truncated", D, C10, "data_batch_2 is not a readable CIFAR pickle", "extract the archive again",
     cifar(lambda f: open(f"{f}/data_batch_2", "r+b").truncate(100))),
    ("cifar batch empty file", D, C10, "data_batch_2 is not a readable CIFAR pickle", "extract the archive again",
     cifar(lambda f: open(f"{f}/data_batch_2", "w").close())),
    ("cifar batch a folder", D, C10, "data_batch_1 is not a readable CIFAR pickle", "extract the archive again",
     cifar(lambda f: (os.remove(f"{f}/data_batch_1"), os.makedirs(f"{f}/data_batch_1")))),
    ("cifar batch of other keys", D, C10, "lacks the keys 'data' and 'labels'", "extract the archive again",
     cifar(batch("data_batch_1", {"x": 1}))),
    ("cifar batch a list", D, C10, "lacks the keys", "extract the archive again",
     cifar(batch("data_batch_1", [1, 2]))),
    ("cifar batch of 100 columns", D, C10, "expected uint8 data of shape (N, 3072)", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}))),
    ("cifar batch of floats", D, C10, "got float32 (4, 3072)", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}))),
    ("cifar labels out of range", D, C10, "key 'labels', row 3 holds 10, outside 0..9",
     "point --data_root/--datapath at its folder",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}))),
    ("cifar labels strings", D, C10, "labels <U1 (4,)", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 3072), np.uint8), "labels": ["a"] * 4}))),
    ("cifar labels two per image", D, C10, "labels int64 (4, 2)", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 3072), np.uint8), "labels": [[0, 1]] * 4}))),
    ("cifar fewer labels than images", D, C10, "labels int64 (3,)", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}))),
    ("cifar test batch without images", D, C10, "test_batch: expected uint8 data of shape (N, 3072), N > 0",
     "extract the archive again",
     cifar(batch("test_batch", {"data": np.zeros((0, 3072), np.uint8), "labels": []}))),
    ("cifar train batch without images", D, C10, "data_batch_1: expected uint8 data", "extract the archive again",
     cifar(batch("data_batch_1", {"data": np.zeros((0, 3072), np.uint8), "labels": []}))),
    ("cifar missing offline, folder made for it", D, C10[:-1] + ["{tmp}/new/cifar"], "cifar10 not found",
     "Download cifar-10-python.tar.gz", offline),
    ("CIFAR-N file not a label file", D, C10 + ["--noise_type", "worst", "--noise_path", "{tmp}/human.pt"],
     "cannot be read as a CIFAR-N label file", "download it again",
     lambda c: (cifar()(c), write(f"{c.tmp}/human.pt", "not a torch file"))),
    ("CIFAR-N file of other images", D, C10 + ["--noise_type", "worst", "--noise_path", "{tmp}/human.pt"],
     "its clean_label does not equal the cifar10 train labels", "use the released CIFAR-10_human.pt",
     human_file({"clean_label": np.zeros(5, np.int64), "worse_label": np.zeros(5, np.int64)})),
    ("CIFAR-N file without the type's key", D, C10 + ["--noise_type", "worst", "--noise_path", "{tmp}/human.pt"],
     "has no 'worse_label' labels", "worst needs CIFAR-10_human.pt",
     human_file({"clean_label": np.zeros(5, np.int64)})),
    ("CIFAR-N file a list", D, C10 + ["--noise_type", "aggre", "--noise_path", "{tmp}/human.pt"], "holds a list",
     "download it again", human_file([1, 2])),
    ("CIFAR-N labels two per image", D, C10 + ["--noise_type", "worst", "--noise_path", "{tmp}/human.pt"],
     "expected two integer arrays", "download the file again",
     human_file({"clean_label": np.zeros((5, 2), np.int64), "worse_label": np.zeros((5, 2), np.int64)})),
    ("CIFAR-N labels strings", D, C10 + ["--noise_type", "worst", "--noise_path", "{tmp}/human.pt"],
     "expected two integer arrays", "download the file again",
     human_file({"clean_label": ["a"] * 5, "worse_label": ["b"] * 5})),
    ("CIFAR-N missing offline, folder made for it", D, C10 + ["--noise_type", "worst", "--noise_path",
                                                             "{tmp}/new/CIFAR-10_human.pt"],
     "is missing and could not be downloaded", "point --noise_path at it", lambda c: (cifar()(c), offline(c))),
    ("SLN label file missing offline", N, SLN + ["--dataset", "cifar10", "--datapath", "{tmp}/cifar",
                                                 "--noise_rate", "0.4"],
     "the SLN release's label file", "draw the labels instead with --noise_source generate",
     lambda c: (cifar()(c), offline(c))),
    ("openset without CIFAR-100", D, C10 + ["--noise_type", "openset"],
     "openset noise takes its images from CIFAR-100", "extract cifar-100-python.tar.gz", cifar()),
    ("openset from too small a CIFAR-100", D, C10 + ["--noise_type", "openset", "--noise_rate", "0.5"],
     "needs 50 images, the open set has 10", "lower --noise_rate",
     lambda c: (cifar()(c), write_fake_cifar(f"{c.tmp}/cifar", "cifar100", n_train=10))),
    # -- Clothing1M trees: --datapath {tmp}/c1m
    ("clothing1m train image missing", C, C1M, "1 of the 41 train images listed are missing",
     "complete the images/ folder", clothing1m(remove_images("train", 1))),
    ("clothing1m 7 val images missing", C, C1M, "7 of the 14 val images listed are missing",
     "complete the images/ folder", clothing1m(remove_images("val", 7))),
    ("clothing1m test image missing", C, C1M, "1 of the 14 test images", "fix the annotation files",
     clothing1m(remove_images("test", 1))),
    ("clothing1m without images/", C, C1M, "41 of the 41 train images listed are missing",
     "complete the images/ folder", clothing1m(lambda root, s: shutil.rmtree(f"{root}/images"))),
    ("clothing1m label 14", C, C1M, "clean_test.txt:15: label 14 is outside 0..13", "fix that line",
     clothing1m(append("clean_test.txt", lambda s: s["test"][0][0] + " 14"))),
    ("clothing1m label -1", C, C1M, "label -1 is outside 0..13", "fix that line",
     clothing1m(append("clean_val.txt", lambda s: s["val"][0][0] + " -1"))),
    ("clothing1m line without label", C, C1M, "clean_val.txt:15:", "fix that line",
     clothing1m(append("clean_val.txt", lambda s: s["val"][0][0]))),
    ("clothing1m float label", C, C1M, "is not `image_path label`", "fix that line",
     clothing1m(append("clean_val.txt", lambda s: s["val"][0][0] + " 1.0"))),
    ("clothing1m empty train list", C, C1M, "the Clothing1M train list", "extract the annotations again",
     clothing1m(lambda root, s: write(f"{root}/noisy_train.txt", ""))),
    ("clothing1m list missing", C, C1M, "no Clothing1M annotations under", "point --datapath/--data_root at it",
     clothing1m(lambda root, s: os.remove(f"{root}/noisy_train.txt"))),
    ("clothing1m list a folder", C, C1M, "clean_test.txt cannot be read", "extract the annotations again",
     clothing1m(lambda root, s: (os.remove(f"{root}/clean_test.txt"), os.makedirs(f"{root}/clean_test.txt")))),
    ("clothing1m list binary", C, C1M, "clean_test.txt is not a text file", "extract them again",
     clothing1m(lambda root, s: write(f"{root}/clean_test.txt", raw=bytes(range(256))))),
    ("clothing1m key without label", C, C1M, "1 keys have no label in", "extract them again from one release",
     clothing1m(append("annotations/clean_val_key_list.txt", lambda s: "images/7/77/nowhere.jpg"), "released")),
    ("clothing1m kv line without label", C, C1M, "noisy_label_kv.txt:43:", "fix that line",
     clothing1m(append("annotations/noisy_label_kv.txt", lambda s: "images/x.jpg banana"), "released")),
    ("clothing1m key list missing", C, C1M, "no Clothing1M annotations under", "point --datapath/--data_root",
     clothing1m(lambda root, s: os.remove(f"{root}/annotations/clean_test_key_list.txt"), "released")),
    ("clothing1m folder missing", C, C1M[:1] + ["{tmp}/nowhere"] + C1M[2:], "Clothing1M folder",
     "point --datapath/--data_root at the folder", None),
    # -- python3 -m data.idn (IDN: --noise_rate 0.2 --out {tmp}/x.csv)
    ("idn without source", I, IDN, "one of the arguments --run --ckpt", "--help lists every flag", None),
    ("idn with both sources", I, ["--run", "{Wc}", "--ckpt", "{Wc}/best.pt"] + IDN,
     "not allowed with argument --run", "--help lists every flag", None),
    ("idn noise_rate 1", I, ["--run", "{Wc}"] + IDN + ["--noise_rate", "1"], "--noise_rate 1.0", "[0, 1)", None),
    ("idn noise_rate -0.1", I, ["--run", "{Wc}"] + IDN + ["--noise_rate", "-1e-1"], "--noise_rate -0.1", "[0, 1)",
     None),
    ("idn noise_rate nan", I, ["--run", "{Wc}"] + IDN + ["--noise_rate", "nan"], "'nan'", NUM, None),
    ("idn batch_size 0", I, ["--ckpt", "{Wc}/best.pt"] + IDN + ["--batch_size", "0"], "--batch_size 0",
     "must be at least 1", None),
    ("idn device tpu", I, ["--run", "{Wc}"] + IDN + ["--device", "tpu"], "--device 'tpu'", "use auto, cpu", None),
    ("idn out a folder", I, ["--run", "{Wc}"] + IDN + ["--out", "{tmp}"], "is a folder",
     "pass the path of the CSV file", None),
    ("idn out empty", I, ["--run", "{Wc}"] + IDN + ["--out", ""], "--out '' is empty", "pass the path", None),
    ("idn out below a file", I, ["--run", "{Wc}"] + IDN + ["--out", "{tmp}/afile/x.csv"], "cannot be written",
     "pass a writable path", a_file),
    ("idn out exists", I, ["--run", "{Wc}"] + IDN + ["--out", "{tmp}/afile"], "afile exists",
     "--overwrite to replace it", a_file),
    ("idn run of noisy labels", I, ["--run", "{W}"] + IDN, "has no train_probs.npy",
     "train it with --record_train_probs", None),
    ("idn run missing", I, ["--run", "{tmp}/none"] + IDN, "is not a run folder",
     "pass the folder of a clean-label run", None),
    ("idn train_probs truncated", I, ["--run", "{tmp}/run"] + IDN, "train_probs.npy cannot be read",
     "start the run again", idn_run(lambda f: open(f"{f}/train_probs.npy", "r+b").truncate(200))),
    ("idn train_probs of another shape", I, ["--run", "{tmp}/run"] + IDN, "has shape (5, 10), not (1437, 10)",
     "train the run again", idn_run(lambda f: np.save(f"{f}/train_probs.npy", np.zeros((5, 10))))),
    ("idn train_probs nan", I, ["--run", "{tmp}/run"] + IDN, "are not all finite", "use another clean-label run",
     idn_run(lambda f: np.save(f"{f}/train_probs.npy", np.full((1437, 10), np.nan)))),
    ("idn train_probs strings", I, ["--run", "{tmp}/run"] + IDN, "not probabilities", "train the run again",
     idn_run(lambda f: np.save(f"{f}/train_probs.npy", np.full((1437, 10), "a")))),
    ("idn run with corrupt config", I, ["--run", "{tmp}/run"] + IDN, "config.json is not readable JSON",
     "start the run again", idn_run(lambda f: write(f"{f}/config.json", "{"))),
    ("idn ckpt of noisy labels", I, ["--ckpt", "{W}/best.pt"] + IDN, "was trained on noisy labels (symmetric)",
     "run main_warmup.py --noise_type clean first", None),
    ("idn ckpt not a checkpoint", I, ["--ckpt", "{F}/config.json"] + IDN, "cannot be read", None, None),
    # -- summarize.py
    ("summarize out a file", S_, ["{R}", "--out", "{F}/config.json"], "is a file, not a folder",
     "pass a folder", None),
    ("summarize out below a file", S_, ["{R}", "--out", "{F}/config.json/x"], "cannot be created",
     "pass another folder", None),
    ("summarize out a run folder", S_, ["{R}", "--out", "{F}"], "is a run folder", "pass another folder", None),
    ("summarize out empty", S_, ["{R}", "--out", ""], "--out is empty", "pass a folder", None),
    ("summarize results missing", S_, ["{tmp}/none", "--out", "{tmp}/out"], "is not a folder",
     "pass the folder the runs were written to", None),
    ("summarize results a file", S_, ["{F}/config.json", "--out", "{tmp}/out"], "is not a folder",
     "pass the folder the runs were written to", None),
    ("summarize results without runs", S_, ["{tmp}", "--out", "{tmp}/out"], "holds no readable run folder",
     "pass the --result_dir of your runs", None),
]

# Defects the fuzzing found in utils/engine.py and utils/results.py, fixed since (they were
# strict xfails until then). Their runs may write, so each writes below its own {tmp}.
ENGINE_DEFECTS = [
    ("resume: last.pt of another method's run", D, RESUME, "is the checkpoint of another run", OVERWRITE,
     interrupted(lambda c: shutil.copy(f"{c.S}/last.pt", f"{c.run}/last.pt"))),
    ("resume: last.pt state not a dict", D, RESUME, "holds no consistent training state", OVERWRITE,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: {**ck, "state": 5}))),
    ("resume: last.pt RNG state damaged", D, RESUME, "last.pt does not fit this run", OVERWRITE,
     interrupted(edit_checkpoint(lambda c: f"{c.run}/last.pt", lambda ck, c: {**ck, "rng": {"python": 1}}))),
    ("resume: summary.json a folder", D, RESUME, "summary.json is not a regular file", OVERWRITE,
     interrupted(replace_file("summary.json", folder=True))),
    ("warmup_ckpt whose model is no state dict", L, LOAD + ["--result_dir", "{tmp}/res", "--warmup_ckpt",
                                                            "{tmp}/ckpt.pt"],
     "does not fit this model", "--warmup_ckpt", checkpoint_copy(lambda ck, c: {**ck, "model": "x"})),
    ("warmup_ckpt garbage names a fix", L, LOAD + ["--result_dir", "{tmp}/res", "--warmup_ckpt", "{F}/config.json"],
     "cannot be read", ("--warmup_ckpt", "main_warmup.py"), None),
    ("resume: last.pt truncated names a fix", D, RESUME, "last.pt cannot be read", OVERWRITE,
     interrupted(truncate(lambda c: f"{c.run}/last.pt"))),
    ("clothing1m test image not a JPEG", C, C1M, "cannot be read as an image", "replace or delist it",
     clothing1m(lambda root, s: write(os.path.join(root, s["test"][0][0]), "not a jpeg"))),
]


@pytest.mark.parametrize("case_id,script,argv,problem,fix,setup",
                         [pytest.param(*case, id=case[0]) for case in CASES + ENGINE_DEFECTS])
def test_bad_input_is_refused_naming_problem_and_fix_and_changes_nothing(ctx, case_id, script, argv, problem, fix,
                                                                         setup):
    refuse(ctx, script, argv, problem, fix, setup)


def test_the_case_ids_are_unique():
    ids = [case[0] for case in CASES + ENGINE_DEFECTS]
    assert len(ids) == len(set(ids)) > 200


# ---------------------------------------------------------------- what must be accepted

@pytest.mark.parametrize("value,tag", [("-2", "r-2"), ("-2.", "r-2"), ("-1e0", "r-1"), ("-.5", "r-0.5"),
                                       ("-2E-1", "r-0.2")])
def test_negative_numbers_in_any_notation_are_values(ctx, value, tag):
    """argparse took -2. and -1e0 for options: valid NLS rates ended "expected one argument"."""
    before = snapshot(ctx.R, ctx.cwd)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert importlib.import_module(D).main([a.format(R=ctx.R) for a in GLS]
                                               + ["--smooth_rate", value, "--print_run_dir"]) == 0
    assert f"-{tag}-seed0-" in out.getvalue()
    assert changes(before, snapshot(ctx.R, ctx.cwd)) == []


@pytest.mark.parametrize("variant", ["crlf", "cr", "bom", "spaces", "blank lines"])
def test_noise_files_read_alike_whatever_their_line_ends(tmp_path, variant):
    from data.noise import load_noise_file
    rows = [(3, 5), (0, 0), (9, 1)]
    text = {"crlf": noise_csv(rows, end="\r\n"), "cr": noise_csv(rows, end="\r"),
            "bom": "\ufeff" + noise_csv(rows),
            "spaces": "label, label_noisy\n" + "".join(f"{a}, {b}\n" for a, b in rows),
            "blank lines": noise_csv(rows) + "\n\n"}[variant]
    (tmp_path / "f.csv").write_bytes(text.encode())
    clean, noisy = load_noise_file(str(tmp_path / "f.csv"))
    assert clean.tolist() == [3, 0, 9] and noisy.tolist() == [5, 0, 1]


@pytest.mark.parametrize("variant", ["crlf", "bom"])
def test_clothing1m_lists_read_alike_whatever_their_line_ends(tmp_path, variant):
    from data.clothing1m import read_image_list
    text = "images/0/00/a.jpg 3\nimages/0/01/b c.jpg 13\n"
    raw = text.replace("\n", "\r\n").encode() if variant == "crlf" else b"\xef\xbb\xbf" + text.encode()
    (tmp_path / "l.txt").write_bytes(raw)
    assert read_image_list(str(tmp_path / "l.txt")) == [("images/0/00/a.jpg", 3), ("images/0/01/b c.jpg", 13)]


def test_a_damaged_warmup_config_is_skipped_with_a_warning(ctx, capsys):
    """main_GLS_load.py's search: damaged config.json files (not JSON, a noise type that is no
    string) are skipped with a warning naming them; the good warm-up is still found."""
    from main_GLS_load import find_warmup_checkpoint
    root = f"{ctx.tmp}/res/main_warmup"
    shutil.copytree(ctx.W, f"{root}/good")
    for name, text in (("bad-json", "{bad"), ("bad-type", '{"noise_type": {"a": 1}}')):
        shutil.copytree(ctx.W, f"{root}/{name}")
        write(f"{root}/{name}/config.json", text)
    cfg = parse_flags("main_GLS_load", *[a.format(R=f"{ctx.tmp}/res") for a in GLS])
    assert find_warmup_checkpoint(cfg) == f"{root}/good/best.pt"
    err = capsys.readouterr().err
    assert f"skipping the warm-up folder {root}/bad-json: its config.json is not readable JSON" in err
    assert f"skipping the warm-up folder {root}/bad-type" in err


def test_the_shared_runs_trained_as_asked(world):
    """--n_epoch 1 trains at --lr (a milestone that rounds to epoch 0 must not apply at
    once), and every run of the module fixture finished."""
    rows = read_csv(f"{world.F}/metrics.csv")
    assert [float(r["lr"]) for r in rows] == [0.1]
    for folder in (world.F, world.W, world.Wc, world.S):
        assert read_json(f"{folder}/summary.json")["status"] == "finished"


def test_a_last_batch_of_one_sample_trains(ctx):
    """1437 digits = 2 * 718 + 1 (= 4 * 359 + 1, the reported --batch_size 4): the single last
    sample joins the batch before, as BatchNorm cannot train on one sample."""
    argv = TINY4 + ["--n_epoch", "1", "--batch_size", "718", "--result_dir", ctx.tmp]
    assert run_script(D, argv)[0] == 0
    assert read_json(only(f"{ctx.tmp}/{D}/*/summary.json"))["status"] == "finished"


def test_overwrite_replaces_a_finished_run(ctx):
    shutil.copytree(ctx.R, f"{ctx.tmp}/res")
    folder = ctx.F.replace(ctx.R, f"{ctx.tmp}/res")
    before = snapshot(folder)
    status, err = run_script(D, [a.format(R=f"{ctx.tmp}/res") for a in GLS] + ["--overwrite"])
    assert status == 0, err
    assert f"{folder}/summary.json" in changes(before, snapshot(folder))
    assert read_json(f"{folder}/summary.json")["status"] == "finished"


def test_summarize_skips_damaged_runs_with_warnings(ctx):
    """A config with a NaN smooth rate (a hand edit) is skipped, a damaged summary.json is
    listed as unfinished, a malformed metrics.csv left out of --curves: each named, exit 0."""
    for folder in (ctx.F, ctx.W, ctx.Wc, ctx.S):  # not all of R: a failing case may have added a run
        shutil.copytree(folder, folder.replace(ctx.R, f"{ctx.tmp}/res"))
    direct, sln = (only(f"{ctx.tmp}/res/{script}/*") for script in (D, N))
    config = read_json(f"{direct}/config.json")
    write(f"{direct}/config.json", json.dumps({**config, "smooth_rate": float("nan")}))
    write(f"{sln}/metrics.csv", "epoch,lr\n1,x\n")
    clean = only(f"{ctx.tmp}/res/main_warmup/*clean*")
    write(f"{clean}/summary.json", "{")
    before = snapshot(f"{ctx.tmp}/res")
    status, err = run_script(S_, [f"{ctx.tmp}/res", "--out", f"{ctx.tmp}/out", "--match", "substring", "--curves", "digits"])
    assert status == 0, err
    assert f"skipping {direct}: config.json has smooth_rate nan, not a finite number" in err
    assert f"{sln}: metrics.csv line 2 has 'x', not a number" in err
    assert f"{clean}: summary.json is not readable JSON" in err
    assert "Traceback" not in err and "Warning" not in err
    assert changes(before, snapshot(f"{ctx.tmp}/res")) == []
    assert [r["run_dir"] for r in read_csv(f"{ctx.tmp}/out/unfinished.csv")] == [clean]


# ---------------------------------------------------------------- full disk, signals

@pytest.mark.parametrize("name", ["config.json", "last.pt"])
def test_a_full_disk_ends_with_a_message_and_the_run_continues_after(ctx, name):
    argv = TINY4 + ["--n_epoch", "1", "--result_dir", ctx.tmp]
    fail_writing(ctx.monkeypatch, name, times=1)
    status, err = run_script(D, argv)
    assert status == 1 and "Traceback" not in err
    assert "error: No space left on device" in err and "then rerun the same command with --if_exists auto" in err
    assert glob.glob(f"{ctx.tmp}/*/*/.tmp*") == []
    if name == "last.pt":
        assert read_json(only(f"{ctx.tmp}/{D}/*/summary.json"))["status"] == "failed"
    ctx.monkeypatch.undo()
    assert run_script(D, argv + ["--if_exists", "auto"])[0] == 0
    assert read_json(only(f"{ctx.tmp}/{D}/*/summary.json"))["status"] == "finished"


@pytest.mark.parametrize("sig,times,code", [(signal.SIGTERM, 1, 143), (signal.SIGINT, 2, 130)])
def test_a_signal_while_the_data_load_stops_before_any_file(ctx, sig, times, code):
    import utils.engine
    prepare_data = utils.engine.prepare_data

    def signalled(cfg, *args):
        for _ in range(times):
            signal.raise_signal(sig)
        return prepare_data(cfg, *args)
    ctx.monkeypatch.setattr(utils.engine, "prepare_data", signalled)
    assert run_script(D, TINY4 + ["--n_epoch", "1", "--result_dir", ctx.tmp])[0] == code
    assert os.listdir(ctx.tmp) == []


def test_two_identical_runs_and_two_sigterms(tmp_path):
    """While a run trains, the same command (even with --overwrite) is refused by the real
    CLI: exit 2, the holder named, no traceback; two SIGTERMs end the run `interrupted`
    with exit 143 and a checkpoint to resume from."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, os.path.join(ROOT, f"{D}.py"), *TINY4, "--n_epoch", "500",
            "--result_dir", str(tmp_path)]
    first = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        deadline = time.time() + 120
        while not glob.glob(f"{tmp_path}/{D}/*/metrics.csv") and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        folder = os.path.dirname(only(f"{tmp_path}/{D}/*/metrics.csv"))
        second = subprocess.run(argv + ["--overwrite"], cwd=tmp_path, capture_output=True, text=True, env=env,
                                timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"error: {folder} is in use by pid {first.pid}" in second.stderr
        assert "Wait for that run to end" in second.stderr
        assert os.listdir(tmp_path) == [D] and os.listdir(f"{tmp_path}/{D}") == [os.path.basename(folder)]
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 143 and "Traceback" not in err, err
    summary = read_json(f"{folder}/summary.json")
    assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 500
    assert os.path.exists(f"{folder}/last.pt") and "--if_exists auto (or --resume)" in out


def test_python_m_data_idn_exits_2_without_traceback(world, tmp_path):
    out = subprocess.run([sys.executable, "-m", "data.idn", "--run", world.Wc, "--noise_rate", "0.2",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: --out '{tmp_path}' is a folder: pass the path of the CSV file to write" in out.stderr
    assert os.listdir(tmp_path) == []


def test_scancel_of_clothing1m_with_dataloader_workers_ends_interrupted(tmp_path):
    """scancel signals the whole process group, DataLoader workers included: the run must
    end `interrupted` with exit 143 and no traceback, its last.pt kept for --if_exists auto."""
    from test_clothing1m import worker_count, write_fake_clothing1m
    root = str(tmp_path / "c1m")
    os.makedirs(root)
    write_fake_clothing1m(root, "merged")
    argv = [sys.executable, os.path.join(ROOT, f"{C}.py"), *C1M, "--epochs", "50", "--num_workers", "2",
            "--no_pretrained", "--num_per_class", "2", "--batch_size", "7"]
    argv = [a.format(tmp=str(tmp_path)) for a in argv]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        deadline, metrics = time.time() + 120, []
        while time.time() < deadline and proc.poll() is None and not metrics:
            found = glob.glob(f"{tmp_path}/res/{C}/*/metrics.csv")
            if found and worker_count(proc.pid) >= 2:  # after an epoch, while workers decode
                metrics = found
                os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.005)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert metrics and proc.returncode == 143, err
    assert "Traceback" not in err
    folder = os.path.dirname(metrics[0])
    summary = read_json(f"{folder}/summary.json")
    assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 50
    assert os.path.exists(f"{folder}/last.pt")
