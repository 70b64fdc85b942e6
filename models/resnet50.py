"""ResNet-50 (torchvision) with ImageNet weights and a new head: the Clothing1M network.

torchvision's resnet50 (7x7 stride-2 stem, max-pool, Bottleneck stages [3,4,6,3],
2048 features), started from the IMAGENET1K_V1 weights (what `pretrained=True` gave
when the SLN and GLS code was released), its 1000-way fc replaced by a freshly
initialised 2048 -> num_classes linear layer. 23.5M parameters for 14 classes.

Weights come from `pretrained_path` (a local state dict, e.g. resnet50-0676ba61.pth)
or else torchvision's download into torch's cache; `pretrained=False` starts from
random weights (tests). The download is never attempted when a path is given.
"""
import torch
import torch.nn as nn

from errors import UserError

IMAGENET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
FEATURES = 2048


def imagenet_state_dict(pretrained_path=None):
    """The ImageNet state dict: from the file, or torchvision's cached download."""
    if pretrained_path is not None:
        try:
            state = torch.load(pretrained_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"--pretrained_path {pretrained_path}: no such file") from None
        except Exception as exc:
            raise UserError(f"--pretrained_path {pretrained_path} cannot be read as a state dict "
                            f"({exc.__class__.__name__}); download {IMAGENET_URL} again") from None
        return state.get("state_dict", state) if isinstance(state, dict) else state
    from torchvision.models import ResNet50_Weights

    try:
        return ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # offline, refused, or a damaged download
        raise UserError(f"the ImageNet weights of ResNet-50 could not be downloaded "
                        f"({exc.__class__.__name__}: {exc}). Download {IMAGENET_URL} and pass "
                        "--pretrained_path FILE (or put it in torch's cache, "
                        "$TORCH_HOME/hub/checkpoints), or train from random weights with "
                        "--no_pretrained") from None


def resnet50(num_classes=14, in_channels=3, width=None, pretrained=True, pretrained_path=None):
    from torchvision.models import resnet50 as tv_resnet50

    if width is not None:
        raise UserError("--width does not apply to resnet50 (torchvision's fixed widths); drop it")
    if (pretrained or pretrained_path) and in_channels != 3:
        raise UserError(f"ImageNet weights expect 3 input channels, the data have {in_channels}: "
                        "use --no_pretrained or another data set")
    model = tv_resnet50(weights=None)
    if pretrained or pretrained_path:
        state = imagenet_state_dict(pretrained_path)
        if not isinstance(state, dict):
            raise UserError(f"--pretrained_path {pretrained_path} holds a {type(state).__name__}, "
                            "not a state dict")
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(body, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise UserError(f"the ResNet-50 weights{f' in {pretrained_path}' if pretrained_path else ''} "
                            f"do not fit torchvision's resnet50 (missing: {missing[:3]}, unexpected: "
                            f"{unexpected[:3]}); use {IMAGENET_URL}")
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.fc = nn.Linear(FEATURES, num_classes)
    return model
