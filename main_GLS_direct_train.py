"""Generalized label smoothing trained from scratch (Wei et al., ICML 2022).

Loss wa * CE + wb * GLS(r) (loss.gls_loss): r > 0 positive smoothing, r < 0
negative smoothing, r = 0 cross-entropy.

Released protocol (docs/REPRODUCTION.md): ResNet-34, 200 epochs, lr 0.1 / 0.01 / 0.001
changing at 1/2 and 3/4 of training, SGD momentum 0.9 Nesterov, weight decay
1e-4, batch 128 (test 64), wa=0, wb=1, smooth rate 0.1.

    python3 main_GLS_direct_train.py --noise_type symmetric --noise_rate 0.2 --smooth_rate 0.4

Negative rates from scratch may diverge (the loss is unbounded below) or collapse to
near-chance accuracy; the paper trains NLS after the CE warm-up (main_GLS_load.py).
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from core.args import run_main  # noqa: E402

DEFAULTS = dict(n_epoch=200, lr=0.1, lr_milestones=[0.5, 0.75], momentum=0.9, nesterov=True,
                weight_decay=1e-4, batch_size=128, test_batch_size=64, wa=0.0, wb=1.0, smooth_rate=0.1,
                noise_source="generate")


def preset(argv=None):
    from utils.cli import Preset
    return Preset("main_GLS_direct_train", "gls", DEFAULTS, __doc__, family="gls")


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


if __name__ == "__main__":
    run_main(main)
