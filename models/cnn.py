"""The nine-layer CNN of co-teaching, as the GLS release has it (`--model cnn`;
models/nine_layer_cnn.py of UCSC-REAL/negative-label-smoothing).

Three blocks of 3x3 convolutions with BatchNorm and leaky ReLU (slope 0.01): 128, 128,
128 channels, max-pool 2, dropout; 256, 256, 256, max-pool 2, dropout; then 512, 256,
128 without padding, global average pool, linear. A quirk of the release, kept: its
dropout (F.dropout2d, p 0.25) is not told the mode, so it drops channels in evaluation
too. For 32x32 images (CIFAR); `width` scales every layer (128 by default).
"""
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(in_channels, out_channels, padding):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, padding),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.01))


class CNN(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=128, dropout_rate=0.25):
        super().__init__()
        w = width
        self.dropout_rate = dropout_rate
        self.block1 = nn.Sequential(conv_bn(in_channels, w, 1), conv_bn(w, w, 1), conv_bn(w, w, 1))
        self.block2 = nn.Sequential(conv_bn(w, 2 * w, 1), conv_bn(2 * w, 2 * w, 1), conv_bn(2 * w, 2 * w, 1))
        self.block3 = nn.Sequential(conv_bn(2 * w, 4 * w, 0), conv_bn(4 * w, 2 * w, 0), conv_bn(2 * w, w, 0))
        self.linear = nn.Linear(w, num_classes)

    def forward(self, x):
        h = F.dropout2d(F.max_pool2d(self.block1(x), 2), p=self.dropout_rate)  # training=True always
        h = F.dropout2d(F.max_pool2d(self.block2(h), 2), p=self.dropout_rate)
        h = F.adaptive_avg_pool2d(self.block3(h), 1).flatten(1)
        return self.linear(h)


def cnn(num_classes=10, in_channels=3, width=128):
    return CNN(num_classes, in_channels, width)
