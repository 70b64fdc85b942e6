"""Generalized label smoothing started from the CE warm-up (Wei et al., ICML 2022).

Finds the checkpoint main_warmup.py wrote for the same data set, noise and model
under --result_dir (best test accuracy by default, as released; --warmup_ckpt
best|last|PATH), checks it was trained on the same noisy labels (its record of them:
data set, noise, seed or file, a hash of the labels) and model, and trains
wa * CE + wb * GLS(r) from it. summary.json's initial_test_acc is the accuracy of
the loaded weights before the first step.

Released protocol (docs/REPRODUCTION.md): ResNet-34 from the warm-up, 100 epochs at a
constant lr 1e-6, SGD momentum 0.9 Nesterov, weight decay 1e-4, batch 128 (test 64),
wa=0, wb=1, smooth rate 0.1.

    python3 main_GLS_load.py --noise_type symmetric --noise_rate 0.2 --smooth_rate -2.0
"""
from methods import GLS
from utils.cli import find_warmup_checkpoint, gls_parser, run_main, validate_gls
from utils.engine import run

DEFAULTS = dict(n_epoch=100, lr=1e-6, lr_milestones=[], momentum=0.9, nesterov=True,
                weight_decay=1e-4, batch_size=128, test_batch_size=64, wa=0.0, wb=1.0, smooth_rate=0.1,
                noise_source="generate")


def main(argv=None):
    parser = gls_parser(__doc__, DEFAULTS)
    parser.add_argument("--warmup_ckpt", default="best",
                        help="best or last checkpoint of the matching warm-up run, or a path")
    cfg = parser.parse_args(argv)
    validate_gls(cfg)
    init_from = None if cfg.print_run_dir else find_warmup_checkpoint(cfg, cfg.warmup_ckpt)
    return run(cfg, "main_GLS_load", GLS(cfg.smooth_rate, cfg.wa, cfg.wb), init_from=init_from)


if __name__ == "__main__":
    run_main(main)
