"""Instance-dependent noisy labels (IDN) from networks trained on clean labels (PROTOCOL §3).

    python3 main_warmup.py --dataset cifar10 --noise_type clean --data_root ./data/CIFAR10
    python3 -m data.idn --ckpt RUN/best.pt RUN/last.pt --noise_rate 0.4 \
        --out ./data/CIFAR10/label_noisy/dependent0.4.csv

Every checkpoint's network predicts the training set without augmentation; the softmax
is averaged over the checkpoints (epochs or seeds of clean-label runs: pass as many as
you have), and noise.idn_noisy_labels flips exactly round(r * N) samples to their most
probable wrong class, the most probable first. The output is the `label,label_noisy`
CSV that --noise_file reads, and that --noise_mode dependent finds at
<datapath>/label_noisy/dependent<rate>.csv.
"""
import argparse
import os

import torch

from data import load_dataset
from data.noise import actual_noise_rate, idn_noisy_labels, save_noise_file
from errors import UserError
from models import build_model
from utils.cli import run_main
from utils.engine import pick_device
from utils.results import load_checkpoint


@torch.no_grad()
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
        model.to(device).eval()
        for x, _, idx in loader:
            total[idx] += torch.softmax(model(x).double(), dim=1)
    return (total / len(checkpoints)).cpu().numpy()


def load_clean_checkpoints(paths):
    """[(path, checkpoint)] of runs trained on clean labels of one data set."""
    checkpoints = [(path, load_checkpoint(path)) for path in paths]
    for path, ckpt in checkpoints:
        config = ckpt.get("config")
        if not config or "model" not in ckpt:
            raise UserError(f"{path} holds no model and config: pass a best.pt or last.pt of a run")
        if config.get("noise_type") != "clean" or config.get("noise_file"):
            raise UserError(f"{path} was trained on noisy labels ({config.get('noise_type')}); IDN "
                            "needs a network trained on clean labels: run main_warmup.py "
                            "--noise_type clean first")
    datasets = {ckpt["config"]["dataset"] for _, ckpt in checkpoints}
    if len(datasets) > 1:
        raise UserError(f"the checkpoints were trained on different data sets ({', '.join(sorted(datasets))})")
    return checkpoints


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", nargs="+", required=True,
                   help="checkpoints of runs on clean labels; their softmax outputs are averaged")
    p.add_argument("--noise_rate", type=float, required=True, help="fraction of labels to flip")
    p.add_argument("--out", required=True, help="the CSV to write (label,label_noisy)")
    p.add_argument("--data_root", default=None, help="default: the first checkpoint's run's")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch_size", type=int, default=512)
    args = p.parse_args(argv)
    if not 0.0 <= args.noise_rate < 1.0:
        raise UserError(f"--noise_rate {args.noise_rate} is outside [0, 1)")
    checkpoints = load_clean_checkpoints(args.ckpt)
    config = checkpoints[0][1]["config"]
    data = load_dataset(config["dataset"], args.data_root or config.get("data_root", "./data"))
    probs = average_probabilities(checkpoints, data, pick_device(args.device), args.batch_size)
    noisy = idn_noisy_labels(probs, data.train_labels, args.noise_rate)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_noise_file(args.out, data.train_labels, noisy)
    print(f"{args.out}: {data.name}, {len(noisy)} labels, {int((noisy != data.train_labels).sum())} "
          f"flipped (noise rate {actual_noise_rate(data.train_labels, noisy):.4f}), "
          f"from {len(checkpoints)} checkpoint(s)")
    return 0


if __name__ == "__main__":
    run_main(main)
