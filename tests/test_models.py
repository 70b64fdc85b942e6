"""models/: output shapes and parameter counts of PROTOCOL §4."""
import pytest
import torch

from errors import UserError
from models import build_model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [
    ("resnet34", 21_282_122),   # PROTOCOL §4
    ("resnet", 21_282_122),     # the released default name is ResNet-34
    ("resnet18", 11_173_962),
    # He et al.'s final BN-ReLU before pooling: 1,024 parameters more than variants without it.
    ("preact_resnet18", 11_171_146 + 2 * 512),
])
def test_resnet_parameter_counts(name, expected):
    assert n_params(build_model(name, 10)) == expected


def test_wrn28_2_parameter_count():
    count = n_params(build_model("wrn28_2", 10))
    assert count == 1_467_610
    assert round(count / 1e6, 2) == 1.47


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
