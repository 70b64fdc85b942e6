"""Stochastic label noise on CIFAR: SLN, SLN-MO, SLN-MO-LC (Chen et al., ICLR 2021).

Each step trains on the target onehot(y) + sigma * N(0, 1) (loss.sln_targets); a
momentum model, the average of the weights and BN statistics with decay 0.999, is
evaluated every epoch next to the model (column test_acc_ema); after --correction
epochs, sigma becomes 0 and the labels are corrected every epoch from the momentum
model's predictions on augmented training images, as released (methods/sln.py;
--correction_aug off predicts on the images themselves).

Released protocol (docs/REPRODUCTION.md): WRN-28-2 as released, 300 epochs, constant lr
0.001, SGD momentum 0.9, weight decay 5e-4, batch 128, sigma 0.5, label correction after
250 epochs, noise dependent 0.4. The noisy labels of sym, asym and dependent are the
release's files, <datapath>/label_noisy/<mode><rate>.csv (downloaded when the release
shipped them: rate 0.4 on CIFAR-10 and CIFAR-100); other settings are drawn, seeded by
--noise_seed (--noise_source generate draws them always).
The paper's sigmas: CIFAR-10 sym 1.0, asym/dependent/openset 0.5; CIFAR-100 sym/asym 0.2,
dependent 0.1.

    python noise_cifar_train.py --sigma 0.2 --noise_mode asym --correction 250 --dataset cifar100 --num_class 100 --datapath ./data/CIFAR100

Variants: SLN-MO-LC (the default), SLN-MO (--correction -1), SLN (--correction -1
--ema_decay 0), CE (--sigma 0 --correction -1 --ema_decay 0).
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from core.args import run_main  # noqa: E402

DEFAULTS = dict(dataset="cifar10", data_root="./data/CIFAR10", model="wrn28_2",
                n_epoch=300, lr=0.001, lr_milestones=[], momentum=0.9, nesterov=False,
                weight_decay=5e-4, batch_size=128, test_batch_size=128, noise_type="dependent",
                noise_rate=0.4, sigma=0.5, correction=250, ema_decay=0.999, noise_source="release")


def preset(argv=None):
    from utils.cli import Preset
    return Preset("noise_cifar_train", "sln", DEFAULTS, __doc__, family="sln")


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


if __name__ == "__main__":
    run_main(main)
