"""Instance-dependent noisy labels (IDN) from networks trained on clean labels (the SLN paper's
"dependent" noise; docs/REPRODUCTION.md).

The SLN paper averages a clean-label network's softmax over the training set across its
epochs. Record that average during the run, then make the labels from it:

    python3 main_warmup.py --dataset cifar10 --noise_type clean --record_train_probs \
        --data_root ./data/CIFAR10
    python3 -m data.idn --run RUN_DIR --noise_rate 0.4 \
        --out ./data/CIFAR10/label_noisy/dependent0.4.csv

RUN_DIR/train_probs.npy holds the softmax of the unaugmented training set averaged over
every epoch; several --run folders (seeds) are averaged with equal weight. Without a
recording, --ckpt RUN/best.pt RUN/last.pt averages the predictions of the checkpoints
given instead. noise.idn_noisy_labels then flips exactly round(r * N) samples to their
most probable wrong class, the most probable first. The output is the
`label,label_noisy` CSV that --noise_file reads, and that --noise_mode dependent finds
at <datapath>/label_noisy/dependent<rate>.csv. It is written atomically, and an existing
--out (which runs may read, e.g. the SLN release's own file) is replaced only with
--overwrite.
"""
import argparse
import os

import numpy as np
import torch

from core.args import Parser, check_device, finite_float, integer, run_main
from core.device import pick_device, predict
from core.files import RunFolder, load_checkpoint, read_json_file
from data import dataset_names, load_dataset
from data.download import folders_made_for
from data.noise import actual_noise_rate, idn_noisy_labels, save_noise_file
from errors import UserError
from models import build_model


def average_probabilities(checkpoints, data, device, batch_size=512):
    """Mean over the checkpoints of softmax(model(x)) for every training image, (N, K)."""
    loader = data.eval_loader("train", batch_size, device)
    total = torch.zeros(len(data.train_labels), data.num_classes, dtype=torch.float64, device=device)
    for path, ckpt in checkpoints:
        config = ckpt["config"]
        model = build_model(config["model"], data.num_classes, data.in_channels, config.get("width"))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise UserError(f"{path} does not fit {config['model']} for {data.name} "
                            f"({str(exc).splitlines()[0]})") from None
        logits, _ = predict(model.to(device), loader, len(total), data.num_classes, device)
        total += torch.softmax(logits.double(), dim=1)
    return (total / len(checkpoints)).cpu().numpy()


def check_clean_runs(sources):
    """sources: [(path, config)] of runs that must have trained on the clean labels of one
    data set; returns that data set's name."""
    for path, config in sources:
        if config.get("noise_type") != "clean" or config.get("noise_file"):
            raise UserError(f"{path} was trained on noisy labels ({config.get('noise_type')}); IDN "
                            "needs a network trained on clean labels: run main_warmup.py "
                            "--noise_type clean first")
    for path, config in sources:
        if config.get("dataset") not in dataset_names() or not isinstance(config.get("model"), str):
            raise UserError(f"{path}: its config names no known data set and model: pass a run "
                            "of this project's scripts")
    datasets = {config["dataset"] for _, config in sources}
    if len(datasets) > 1:
        raise UserError(f"the runs were trained on different data sets ({', '.join(sorted(datasets))})")
    return datasets.pop()


def load_clean_checkpoints(paths):
    """[(path, checkpoint)] of runs trained on clean labels of one data set."""
    checkpoints = [(path, load_checkpoint(path)) for path in paths]
    for path, ckpt in checkpoints:
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt:
            raise UserError(f"{path} holds no model and config: pass a best.pt or last.pt of a run")
    check_clean_runs([(path, ckpt["config"]) for path, ckpt in checkpoints])
    return checkpoints


def load_recorded_runs(run_dirs):
    """[(run_dir, config, epochs)] of clean-label runs made with --record_train_probs."""
    runs = []
    for folder in run_dirs:
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise UserError(f"{folder} is not a run folder (it has no config.json): pass the folder "
                            "of a clean-label run made with --record_train_probs")
        if not os.path.isfile(os.path.join(folder, "train_probs.npy")):
            raise UserError(f"{folder} has no train_probs.npy: train it with --record_train_probs "
                            "(or pass its checkpoints with --ckpt)")
        config = RunFolder(folder).read_json("config.json")
        summary, _ = read_json_file(os.path.join(folder, "summary.json"))
        runs.append((folder, config, (summary or {}).get("epochs_completed")))
    check_clean_runs([(folder, config) for folder, config, _ in runs])
    return runs


def recorded_probabilities(runs, data):
    """Mean over the runs of their train_probs.npy, (N, K), checked against the data set."""
    total = 0.0
    for folder, _, _ in runs:
        probs = RunFolder(folder).load_npy("train_probs.npy")
        if probs.shape != (len(data.train_labels), data.num_classes):
            raise UserError(f"{folder}/train_probs.npy has shape {probs.shape}, not "
                            f"({len(data.train_labels)}, {data.num_classes}) of {data.name}'s training set: "
                            "the recording is damaged; train the run again with --record_train_probs")
        if probs.dtype.kind != "f":
            raise UserError(f"{folder}/train_probs.npy holds {probs.dtype} values, not probabilities: "
                            "the recording is damaged; train the run again with --record_train_probs")
        total = total + probs
    return total / len(runs)


def main(argv=None):
    p = Parser(prog="python3 -m data.idn", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", nargs="+", metavar="RUN_DIR",
                        help="folders of clean-label runs made with --record_train_probs: their "
                             "softmax averaged over every epoch (the protocol's IDN)")
    source.add_argument("--ckpt", nargs="+", metavar="PATH",
                        help="checkpoints of clean-label runs; their softmax outputs are averaged")
    p.add_argument("--noise_rate", type=finite_float, required=True, help="fraction of labels to flip")
    p.add_argument("--out", required=True, help="the CSV to write (label,label_noisy)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (runs that read it would then get other labels)")
    p.add_argument("--data_root", default=None, help="the data set's folder (default: the first run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (for --ckpt)")
    p.add_argument("--batch_size", type=integer, default=512, help="prediction batch size (for --ckpt)")
    args = p.parse_args(argv)
    if not 0.0 <= args.noise_rate < 1.0:
        raise UserError(f"--noise_rate {args.noise_rate} is outside [0, 1)")
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size} must be at least 1")
    if not args.out or os.path.isdir(args.out):
        raise UserError(f"--out {args.out!r} is {'a folder' if args.out else 'empty'}: pass the path "
                        "of the CSV file to write")
    if os.path.exists(args.out) and not args.overwrite:
        raise UserError(f"--out {args.out} exists, and runs may read their labels from it: pass "
                        "another path, or --overwrite to replace it")
    check_device(args.device)
    if args.run:
        runs = load_recorded_runs(args.run)
        config = runs[0][1]
    else:
        checkpoints = load_clean_checkpoints(args.ckpt)
        config = checkpoints[0][1]["config"]
    data = load_dataset(config["dataset"], args.data_root or config.get("data_root", "./data"))
    if args.run:
        probs = recorded_probabilities(runs, data)
        source = " + ".join(f"{os.path.basename(os.path.normpath(folder))} ({epochs} epochs)"
                            for folder, _, epochs in runs)
    else:
        probs = average_probabilities(checkpoints, data, pick_device(args.device), args.batch_size)
        source = f"{len(checkpoints)} checkpoint(s)"
    if not np.isfinite(probs).all():  # a damaged recording, or a network that diverged
        raise UserError(f"the probabilities from {source} are not all finite: the recording is damaged "
                        "or the network diverged; use another clean-label run")
    noisy = idn_noisy_labels(probs, data.train_labels, args.noise_rate)
    try:
        with folders_made_for(os.path.dirname(os.path.abspath(args.out))):
            save_noise_file(args.out, data.train_labels, noisy)
    except OSError as exc:
        raise UserError(f"--out {args.out} cannot be written ({exc.strerror or exc}): pass a "
                        "writable path") from None
    print(f"{args.out}: {data.name}, {len(noisy)} labels, {int((noisy != data.train_labels).sum())} "
          f"flipped (noise rate {actual_noise_rate(data.train_labels, noisy):.4f}), "
          f"from {source}")
    return 0


if __name__ == "__main__":
    run_main(main)
