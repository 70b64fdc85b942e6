"""CE warm-up of the GLS paper (Wei et al., ICML 2022).

Trains with plain cross-entropy on the noisy labels; main_GLS_load.py then starts
GLS from this run's best (or last) checkpoint. Negative smoothing is unbounded
below and can diverge from scratch; from a warm-up it does not.

Released protocol (docs/REPRODUCTION.md): ResNet-34, 120 epochs, lr 0.1 / 0.01 / 0.001
changing at 1/3 and 2/3 of training, SGD without momentum or weight decay,
batch 128 (test 64), loss wa=1 (CE), wb=0, smooth rate 0; noisy labels drawn with the
release's generator, noise seed 0; the checkpoint of the best test accuracy is kept.

    python3 main_warmup.py --noise_type symmetric --noise_rate 0.2
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from core.args import run_main  # noqa: E402

DEFAULTS = dict(n_epoch=120, lr=0.1, lr_milestones=[1 / 3, 2 / 3], momentum=0.0, nesterov=False,
                weight_decay=0.0, batch_size=128, test_batch_size=64, wa=1.0, wb=0.0, smooth_rate=0.0,
                noise_source="generate")


def preset(argv=None):
    from utils.cli import Preset
    return Preset("main_warmup", "gls", DEFAULTS, __doc__, family="gls")


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


if __name__ == "__main__":
    run_main(main)
