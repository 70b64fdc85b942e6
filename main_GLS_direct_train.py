"""Generalized label smoothing trained from scratch (Wei et al., ICML 2022).

Loss wa * CE + wb * GLS(r) (loss.gls_loss): r > 0 positive smoothing, r < 0
negative smoothing, r = 0 cross-entropy.

Released protocol (docs/REPRODUCTION.md): ResNet-34, 200 epochs, lr 0.1 / 0.01 / 0.001
changing at 1/2 and 3/4 of training, SGD momentum 0.9 Nesterov, weight decay
1e-4, batch 128 (test 64), wa=0, wb=1, smooth rate 0.1.

    python3 main_GLS_direct_train.py --noise_type symmetric --noise_rate 0.2 --smooth_rate -2.0
"""
from methods import GLS
from utils.cli import gls_parser, run_main, validate_gls
from utils.engine import run

DEFAULTS = dict(n_epoch=200, lr=0.1, lr_milestones=[0.5, 0.75], momentum=0.9, nesterov=True,
                weight_decay=1e-4, batch_size=128, test_batch_size=64, wa=0.0, wb=1.0, smooth_rate=0.1,
                noise_source="generate")


def main(argv=None):
    cfg = gls_parser(__doc__, DEFAULTS).parse_args(argv)
    validate_gls(cfg)
    return run(cfg, "main_GLS_direct_train", GLS(cfg.smooth_rate, cfg.wa, cfg.wb))


if __name__ == "__main__":
    run_main(main)
