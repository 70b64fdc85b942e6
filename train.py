"""Any method of methods/ with the training engine: python3 train.py --method NAME [flags].

    python3 train.py --method gls --smooth_rate -2.0 --noise_type symmetric --noise_rate 0.4
    python3 train.py --method sln --sigma 1.0 --noise_type symmetric --noise_rate 0.4
    python3 train.py --help                     lists the methods
    python3 train.py --method NAME --help       shows that method's flags with their defaults

Every engine feature comes with it: the run folder and its lock, --if_exists, exact resume,
the memorisation and calibration columns, checkpoints, sweeps and SLURM (sweep.py). The
default protocol is the GLS release's from-scratch one (ResNet-34, 200 epochs, lr 0.1 /
0.01 / 0.001 at 1/2 and 3/4, SGD momentum 0.9 Nesterov, weight decay 1e-4, batch 128, noisy
labels from the GLS release's generator), so that a method run here is paired by seed with
main_GLS_direct_train.py's runs of the same settings; every setting is a flag.
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from core.args import run_main  # noqa: E402

DEFAULTS = dict(n_epoch=200, lr=0.1, lr_milestones=[0.5, 0.75], momentum=0.9, nesterov=True,
                weight_decay=1e-4, batch_size=128, test_batch_size=64, noise_source="generate")


def preset(argv=None):
    """The preset of the method that argv's --method names (read first: its flags depend on it)."""
    from utils.cli import Preset, choose_method, method_protocol
    name = choose_method(argv, __doc__)
    return Preset("train", name, {**DEFAULTS, **method_protocol(name, argv, DEFAULTS)}, __doc__)


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


if __name__ == "__main__":
    run_main(main)
