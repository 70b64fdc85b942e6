"""Stochastic label noise on Clothing1M: SLN-MO-LC (Chen et al., ICLR 2021).

The SLN method of noise_cifar_train.py (methods/sln.py) on the real noisy labels of
Clothing1M: an ImageNet-pretrained ResNet-50 with a new 14-way head; each epoch
trains on a fresh class-balanced subset of the ~1M noisy images (--num_per_class per
class); label correction from epoch --correction on mixes in the momentum model's
softmax (soft predictions), not its argmax, on the epoch's subset with augmentation,
its loss measured against the noisy labels (the release builds a fresh subset each
epoch). The momentum model is evaluated on the clean val and test splits every epoch;
summary.json's test_acc_at_best_val_ema is the number to report (test accuracy at the
best validation epoch, as released).

Released protocol (docs/REPRODUCTION.md): ResNet-50 pretrained, 10 epochs, lr 1e-3 then 1e-4
after 5 epochs, SGD momentum 0.9, weight decay 1e-3, batch 32, sigma 0.2, correction 1,
18,976 images per class an epoch. Data layout: data/clothing1m.py and the README.

    python noise_clothing1m_train.py --sigma 0.2 --correction 1 --datapath ./data/Clothing1M
"""
if __name__ == "__main__":  # Ctrl-C while Python starts: end at once, quietly
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from core.args import run_main  # noqa: E402

DEFAULTS = dict(dataset="clothing1m", data_root="./data/Clothing1M", model="resnet50",
                n_epoch=10, lr=1e-3, lr_milestones=[0.5], momentum=0.9, nesterov=False,
                weight_decay=1e-3, batch_size=32, test_batch_size=128, noise_type="real",
                noise_rate=0.0, sigma=0.2, correction=1, ema_decay=0.999, num_per_class=18976,
                noise_source="release")


def preset(argv=None):
    from utils.cli import Preset
    return Preset("noise_clothing1m_train", "sln", DEFAULTS, __doc__, family="sln",
                  method_options=dict(soft=True, carry_targets=False))


def main(argv=None):
    from utils.cli import run_preset
    return run_preset(preset(argv), argv)


if __name__ == "__main__":
    run_main(main)
