"""models/: output shapes and parameter counts of the papers' networks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError
from models import build_model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [
    ("resnet34", 21_282_122),   # the GLS paper's ResNet-34
    ("resnet", 21_282_122),     # the released default name is ResNet-34
    ("resnet18", 11_173_962),
    # He et al.'s final BN-ReLU before pooling: 1,024 parameters more than variants without it.
    ("preact_resnet18", 11_171_146 + 2 * 512),
])
def test_resnet_parameter_counts(name, expected):
    assert n_params(build_model(name, 10)) == expected


class ReleasedWideBasic(nn.Module):
    """The SLN release's block (chenpf1025/SLN networks/wideresnet.py:21-45, dropout 0),
    written again here: biased convolutions, the stride on conv2, the shortcut from x."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class ReleasedWideResNet(nn.Module):
    """The release's Wide_ResNet(depth 28, widen factor 2) (networks/wideresnet.py:47-88)."""

    def __init__(self, num_classes=10):
        super().__init__()
        stages, in_planes = [16, 32, 64, 128], 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=True)
        layers = []
        for planes, stride in zip(stages[1:], (1, 2, 2)):
            blocks = []
            for s in [stride] + [1] * 3:
                blocks.append(ReleasedWideBasic(in_planes, planes, s))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn1 = nn.BatchNorm2d(128, momentum=0.9)
        self.linear = nn.Linear(128, num_classes)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.view(out.size(0), -1))


def test_wrn28_2_is_the_released_network():
    """1,469,642 parameters for 10 classes (1,467,610 before the release's biases and
    shortcut were reproduced); every conv biased; final BN momentum 0.9; and the same
    outputs as the release's network given the same weights, in train and eval mode
    (train mode also moves the running statistics alike)."""
    ours = build_model("wrn28_2", 10)
    assert n_params(ours) == 1_469_642
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 24 + 3 and all(c.bias is not None for c in convs)
    assert ours.bn.momentum == 0.9
    assert [m.momentum for m in ours.modules() if isinstance(m, nn.BatchNorm2d)][:-1] == [0.1] * 24
    release = ReleasedWideResNet(10)
    assert n_params(release) == 1_469_642
    # Same tensors in the same order: copy by position, shapes checked by load_state_dict.
    mapped = dict(zip(release.state_dict().keys(), ours.state_dict().values()))
    release.load_state_dict(mapped)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours.train(), release.train()
    assert torch.allclose(ours(x), release(x), atol=1e-5)
    for a, b in zip(ours.state_dict().values(), release.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # running statistics moved alike
    ours.eval(), release.eval()
    assert torch.allclose(ours(x), release(x), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "preact_resnet18", "wrn28_2"])
@pytest.mark.parametrize("in_channels,size,k", [(3, 32, 10), (3, 32, 100), (1, 8, 10)])
def test_output_shapes(name, in_channels, size, k):
    model = build_model(name, k, in_channels, width=8).eval()
    assert model(torch.zeros(2, in_channels, size, size)).shape == (2, k)


def test_head_counts_scale_with_classes():
    assert n_params(build_model("resnet34", 100)) - n_params(build_model("resnet34", 10)) == 90 * 513


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="unknown model 'vgg'"):
        build_model("vgg", 10)


class ReleasedCNN(nn.Module):
    """The GLS release's --model cnn (models/nine_layer_cnn.py:11-68 of
    UCSC-REAL/negative-label-smoothing), written again here, top_bn off."""

    def __init__(self, n_outputs=10):
        super().__init__()
        widths = [(3, 128, 1), (128, 128, 1), (128, 128, 1), (128, 256, 1), (256, 256, 1),
                  (256, 256, 1), (256, 512, 0), (512, 256, 0), (256, 128, 0)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, 1, p) for i, o, p in widths)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _ in widths)
        self.l_c1 = nn.Linear(128, n_outputs)

    def forward(self, h):
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            h = F.leaky_relu(bn(conv(h)), negative_slope=0.01)
            if i in (2, 5):
                h = F.dropout2d(F.max_pool2d(h, kernel_size=2, stride=2), p=0.25)
        h = F.avg_pool2d(h, kernel_size=h.shape[2])
        return self.l_c1(h.view(h.size(0), h.size(1)))


def test_cnn_is_the_released_network_quirk_included():
    """4,434,570 parameters; the same outputs as the release's CNN given the same weights
    and dropout draws, in eval mode too: its functional dropout ignores the mode."""
    ours, release = build_model("cnn", 10), ReleasedCNN(10)
    assert n_params(ours) == n_params(release) == 4_434_570
    ours_state = ours.state_dict()
    order = [k for i in range(9) for k in ours_state if k.startswith(f"block{i // 3 + 1}.{i % 3}.")]
    release_keys = [k for i in range(9) for k in release.state_dict() if k.startswith((f"convs.{i}.", f"bns.{i}."))]
    mapped = {r: ours_state[o] for r, o in zip(release_keys, order)}
    mapped.update({"l_c1.weight": ours_state["linear.weight"], "l_c1.bias": ours_state["linear.bias"]})
    release.load_state_dict(mapped)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for mode in (True, False):
        ours.train(mode), release.train(mode)
        torch.manual_seed(5)
        a = ours(x)
        torch.manual_seed(5)
        assert torch.allclose(a, release(x), atol=1e-5)
    ours.eval()
    assert not torch.equal(ours(x), ours(x))  # dropout in evaluation, as released
