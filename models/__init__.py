"""Model registry: build_model(name, num_classes, in_channels, width=None).

`width` is the first stage's channel count (64 for the ResNets, 32 for WRN-28-2, 128 for
the CNN);
None keeps the papers' width. Smaller widths are for CPU tests and the demo.
Models in PRETRAINED start from ImageNet weights unless pretrained=False
(pretrained_path: a local weights file instead of the download); the others
always start from random weights.
"""
from errors import UserError

from .cnn import cnn
from .preact_resnet import preact_resnet18
from .resnet import resnet18, resnet34
from .resnet50 import resnet50
from .wrn import wrn28_2

MODELS = {
    "resnet": resnet34,  # the GLS release's default `--model resnet` is ResNet-34
    "resnet18": resnet18,
    "resnet34": resnet34,
    "preact_resnet18": preact_resnet18,
    "wrn28_2": wrn28_2,
    "resnet50": resnet50,  # torchvision's, ImageNet-pretrained: Clothing1M
    "cnn": cnn,  # the GLS release's --model cnn (co-teaching's nine-layer CNN)
}
PRETRAINED = ("resnet50",)
# What a model needs of its input: (channels, image size), None where anything goes.
INPUT = {"resnet50": (3, None), "cnn": (3, 32)}
# One network, two names: the canonical one is the GLS release's (run folders keep it).
ALIASES = {"resnet34": "resnet"}


def canonical_model(name):
    return ALIASES.get(name, name) if isinstance(name, str) else name


def check_model_fits(name, spec):
    """Refuse a model that cannot take the data set's images, naming the models that can."""
    channels, size = INPUT.get(name, (None, None))
    if (channels is None or channels == spec.in_channels) and (size is None or size == spec.image_size):
        return
    fits = [m for m in MODELS if m not in ALIASES and INPUT.get(m, (None, None))[0] in (None, spec.in_channels)
            and INPUT.get(m, (None, None))[1] in (None, spec.image_size)]
    want = f"{channels}-channel" + (f" {size}x{size}" if size else "")
    raise UserError(f"--model {name} takes {want} images; {spec.name} has {spec.in_channels}-channel "
                    f"{spec.image_size}x{spec.image_size} images: use {', '.join(fits)}")


def build_model(name, num_classes, in_channels=3, width=None, pretrained=False, pretrained_path=None):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    kwargs = {} if width is None else {"width": width}
    if name in PRETRAINED:
        kwargs.update(pretrained=pretrained, pretrained_path=pretrained_path)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
