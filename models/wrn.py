"""Wide ResNet 28-2 as the SLN release has it (networks/wideresnet.py of chenpf1025/SLN).

Zagoruyko & Komodakis's pre-activation wide network, with the release's details kept:
every convolution has a bias; inside a block the stride sits on the second 3x3 conv;
the shortcut takes the block's raw input x (through a biased 1x1 conv when the shape
changes); the final BatchNorm has momentum=0.9 (PyTorch's convention: the running
statistics move 90% of the way to each batch's, a quirk of the release we keep); no
dropout (the release's default rate 0). Stem 3x3 conv 3->16, stages of 4 blocks with
widths w, 2w, 4w (w = 32 = 16 * widen factor 2) and strides 1/2/2, then BN, ReLU,
global average pool, linear. 1,469,642 parameters for 10 classes.
"""
import torch.nn as nn
import torch.nn.functional as F

from .resnet import make_stages


class WideBasic(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=True)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, in_channels=3, width=32):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=True)
        self.layers, in_planes = make_stages(WideBasic, 16, width, [n] * 3)
        self.bn = nn.BatchNorm2d(in_planes, momentum=0.9)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        # The release pools with avg_pool2d(out, 8): the whole 8x8 map of a 32x32 input.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def wrn28_2(num_classes=10, in_channels=3, width=32):
    return WideResNet(28, num_classes, in_channels, width)
