"""ResNet-18/34 for 32x32 inputs (He et al. 2016, CIFAR variant).

3x3 stem conv with stride 1 and no max-pool; BasicBlock stages [2,2,2,2] or
[3,4,6,3] with widths w, 2w, 4w, 8w (w = 64 in the papers) and strides 1/2/2/2;
1x1 conv + BN shortcut when the shape changes; global average pool; linear head.
ResNet-34 with 10 classes has 21,282,122 parameters.
"""
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def make_stages(block, in_planes, width, num_blocks):
    """Stage i: num_blocks[i] blocks of width * 2^i channels, the first with stride 2
    (stride 1 in stage 0). Returns the stages and their output channel count."""
    stages = []
    for i, n in enumerate(num_blocks):
        planes, stride = width * 2 ** i, 1 if i == 0 else 2
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(block(in_planes, planes, s))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_planes


class ResNet(nn.Module):
    def __init__(self, num_blocks, num_classes=10, in_channels=3, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layers, in_planes = make_stages(BasicBlock, width, width, num_blocks)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes=10, in_channels=3, width=64):
    return ResNet([2, 2, 2, 2], num_classes, in_channels, width)


def resnet34(num_classes=10, in_channels=3, width=64):
    return ResNet([3, 4, 6, 3], num_classes, in_channels, width)
