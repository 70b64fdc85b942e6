"""Wide ResNet 28-2 (Zagoruyko & Komodakis 2016), the network of the SLN paper.

3x3 stem conv 3->16; three stages of 4 pre-activation blocks with widths
w, 2w, 4w (w = 32, i.e. 16 * widen factor 2) and strides 1/2/2; a 1x1 shortcut conv
when the shape changes; final BN, ReLU, global average pool, linear. No dropout.
Its block is the pre-activation basic block of models/preact_resnet.py.
About 1.47M parameters for 10 classes.
"""
import torch.nn as nn
import torch.nn.functional as F

from .preact_resnet import PreActBlock
from .resnet import make_stages


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, in_channels=3, width=32):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.layers, in_planes = make_stages(PreActBlock, 16, width, [n] * 3)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def wrn28_2(num_classes=10, in_channels=3, width=32):
    return WideResNet(28, num_classes, in_channels, width)
