"""Strong augmentation on the training device, in batches: the AutoAugment CIFAR-10 policy
as the SOP release applies it (shengliu66/SOP, data_loader/augmentations.py and
augmentation_archive.py), then random crop, flip, normalisation and Cutout.

Per image, as the release's `Augmentation`: one of the policy's 25 sub-policies drawn
uniformly; each of its two operations applied with its probability, at the magnitude the
release's `autoaug2arsaug` maps its level to, the geometric ones mirrored (negated) with
probability 1/2. The operations reproduce PIL's on uint8 images (nearest-neighbour affine
maps with black fill, the enhancers' blends truncated to integers, PIL's equalisation);
they run on float tensors holding integer values 0..255, every image with its own
parameters, so that a batch is a handful of tensor operations and no host sync. After the
policy: a random crop with `pad` zero padding, a horizontal flip, normalisation, and
Cutout (the release's CutoutDefault: a length x length square, clipped at the borders,
set to zero after normalisation).

Every random draw comes from the generator passed in, so a seeded epoch repeats exactly.
"""
import math

import torch

from data.loader import DeviceLoader

# augmentation_archive.py:42-69, autoaug_paper_cifar10: (name, probability, level).
CIFAR10_POLICY = [
    [("Invert", 0.1, 7), ("Contrast", 0.2, 6)],
    [("Rotate", 0.7, 2), ("TranslateXAbs", 0.3, 9)],
    [("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)],
    [("ShearY", 0.5, 8), ("TranslateYAbs", 0.7, 9)],
    [("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)],
    [("ShearY", 0.2, 7), ("Posterize2", 0.3, 7)],
    [("Color", 0.4, 3), ("Brightness", 0.6, 7)],
    [("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)],
    [("Equalize", 0.6, 5), ("Equalize", 0.5, 1)],
    [("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)],
    [("Color", 0.7, 7), ("TranslateXAbs", 0.5, 8)],
    [("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)],
    [("TranslateYAbs", 0.4, 3), ("Sharpness", 0.2, 6)],
    [("Brightness", 0.9, 6), ("Color", 0.2, 6)],
    [("Solarize", 0.5, 2), ("Invert", 0.0, 3)],
    [("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)],
    [("Equalize", 0.2, 8), ("Equalize", 0.6, 4)],
    [("Color", 0.9, 9), ("Equalize", 0.6, 6)],
    [("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)],
    [("Brightness", 0.1, 3), ("Color", 0.7, 0)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)],
    [("TranslateYAbs", 0.9, 9), ("TranslateYAbs", 0.7, 9)],
    [("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)],
    [("Equalize", 0.8, 8), ("Invert", 0.1, 3)],
    [("TranslateYAbs", 0.7, 9), ("AutoContrast", 0.9, 1)],
]

# augmentations.py:163-189: each operation's (low, high) range.
RANGES = {"ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "Rotate": (-30, 30), "AutoContrast": (0, 1),
          "Invert": (0, 1), "Equalize": (0, 1), "Solarize": (0, 256), "Contrast": (0.1, 1.9),
          "Color": (0.1, 1.9), "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9),
          "Posterize2": (0, 4), "TranslateXAbs": (0, 10), "TranslateYAbs": (0, 10)}
OPS = sorted(RANGES)
GEOMETRIC = {"ShearX", "ShearY", "Rotate", "TranslateXAbs", "TranslateYAbs"}  # mirrored at random
PARAMETER_MAX = 10  # augmentation_archive.py:270


def release_magnitude(name, level):
    """The value the release's operation receives for a policy level: autoaug2arsaug's
    mapper (augmentation_archive.py:10-38, float_parameter and int_parameter :273-278)
    normalised by the operation's range, then apply_augment's `level * (high - low) + low`
    (augmentations.py:199-201), in the same floating-point steps."""
    def float_parameter(lv, maxval):
        return float(lv) * maxval / PARAMETER_MAX

    def int_parameter(lv, maxval):
        return int(float_parameter(lv, maxval))

    mapper = {"ShearX": lambda x: float_parameter(x, 0.3), "ShearY": lambda x: float_parameter(x, 0.3),
              "Rotate": lambda x: int_parameter(x, 30), "Solarize": lambda x: 256 - int_parameter(x, 256),
              "Posterize2": lambda x: 4 - int_parameter(x, 4),
              "Contrast": lambda x: float_parameter(x, 1.8) + .1, "Color": lambda x: float_parameter(x, 1.8) + .1,
              "Brightness": lambda x: float_parameter(x, 1.8) + .1,
              "Sharpness": lambda x: float_parameter(x, 1.8) + .1}
    low, high = RANGES[name]
    normalised = float(mapper.get(name, lambda x: x)(level) - low) / (high - low)
    return normalised * (high - low) + low


# ---------------------------------------------------------------- the operations, per image

def _gray(x):
    """PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, as (B, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _blend(degenerate, x, factor):
    """PIL's Image.blend(degenerate, x, factor) on uint8: truncated, clipped to 0..255."""
    return torch.trunc(degenerate + factor * (x - degenerate)).clamp_(0, 255)


def brightness(x, factor):
    return _blend(torch.zeros_like(x), x, factor)


def color(x, factor):
    return _blend(_gray(x).expand_as(x), x, factor)


def contrast(x, factor):
    """ImageEnhance.Contrast: blend with the solid grey of the rounded mean of the L image."""
    mean = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, factor)


def sharpness(x, factor):
    """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH (3x3 [1 1 1; 1 5 1; 1 1 1] / 13,
    rounded; the border pixels kept)."""
    c = x.shape[1]
    kernel = torch.ones(c, 1, 3, 3, dtype=x.dtype, device=x.device)
    kernel[:, :, 1, 1] = 5
    smooth = torch.floor(torch.nn.functional.conv2d(x, kernel, groups=c) / 13 + 0.5)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def solarize(x, threshold):
    return torch.where(x >= threshold, 255 - x, x)


def posterize(x, bits):
    """ImageOps.posterize: keep the top `bits` bits (0 bits: black)."""
    step = torch.pow(2.0, 8 - torch.floor(bits))
    return torch.floor(x / step) * step


def invert(x, _):
    return 255 - x


def autocontrast(x, _):
    """ImageOps.autocontrast (no cutoff): each channel stretched from its min..max to 0..255,
    int(i * scale + offset); a constant channel is left as it is."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    stretched = torch.floor(x * scale - lo * scale).clamp_(0, 255)
    return torch.where(hi > lo, stretched, x)


def equalize(x, _):
    """ImageOps.equalize, per image and channel (torchvision's transcription of PIL's)."""
    # imported here: torchvision's import costs seconds, and every run start that lists
    # the methods imports this module
    from torchvision.transforms.v2 import functional as TF

    return TF.equalize(x.to(torch.uint8)).to(x.dtype)


COLOR_OPS = {"Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness,
             "Solarize": solarize, "Posterize2": posterize, "Invert": invert,
             "AutoContrast": autocontrast, "Equalize": equalize}


def affine_matrices(op, value, height, width):
    """(B, 2, 3) maps from an output pixel's centre (x + 0.5, y + 0.5) to the input point
    that PIL's Image.transform(AFFINE) or rotate reads; identity where op is not geometric.
    op: (B,) operation indices into OPS; value: (B,) signed magnitudes."""
    b = len(op)
    value = value.double()
    m = torch.zeros(b, 2, 3, dtype=torch.float64, device=value.device)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    is_ = {name: op == OPS.index(name) for name in GEOMETRIC}
    m[:, 0, 1] = torch.where(is_["ShearX"], value, m[:, 0, 1])          # (1, v, 0, 0, 1, 0)
    m[:, 1, 0] = torch.where(is_["ShearY"], value, m[:, 1, 0])          # (1, 0, 0, v, 1, 0)
    m[:, 0, 2] = torch.where(is_["TranslateXAbs"], value, m[:, 0, 2])   # (1, 0, v, 0, 1, 0)
    m[:, 1, 2] = torch.where(is_["TranslateYAbs"], value, m[:, 1, 2])   # (1, 0, 0, 0, 1, v)
    # Image.rotate(v): the inverse rotation about the centre, angle = -radians(v).
    a = -value * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = width / 2.0, height / 2.0
    rot = torch.stack([torch.stack([cos, sin, cx - cos * cx - sin * cy], 1),
                       torch.stack([-sin, cos, cy + sin * cx - cos * cy], 1)], 1)
    return torch.where(is_["Rotate"][:, None, None], rot, m)


def warp(x, matrices):
    """Nearest-neighbour affine warp with black fill, as PIL's NEAREST transform: the input
    pixel floor(M (x + 0.5, y + 0.5, 1)) for each output pixel (coordinates in float64, as
    PIL computes them, and without matrix products that TF32 could round)."""
    b, c, h, w = x.shape
    m = matrices.double()[:, :, :, None, None]                            # (B, 2, 3, 1, 1)
    ys = (torch.arange(h, dtype=torch.float64, device=x.device) + 0.5).view(h, 1)
    xs = (torch.arange(w, dtype=torch.float64, device=x.device) + 0.5).view(1, w)
    sx = torch.floor(m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]).long()   # (B, H, W)
    sy = torch.floor(m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]).long()
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(x.reshape(b, c, h * w), 2, flat).view(b, c, h, w)
    return out * inside[:, None]


def apply_ops(x, op, value, applied):
    """One operation per image (op (B,) indices into OPS, value (B,), applied (B,) bool) on
    x (B, C, H, W) float 0..255."""
    value = torch.where(applied, value, torch.zeros_like(value))
    geometric = torch.zeros_like(applied)
    for name in GEOMETRIC:
        geometric |= op == OPS.index(name)
    moved = warp(x, affine_matrices(torch.where(applied, op, torch.full_like(op, -1)), value, *x.shape[2:]))
    x = torch.where((applied & geometric)[:, None, None, None], moved, x)
    for name, fn in COLOR_OPS.items():
        chosen = (applied & (op == OPS.index(name)))[:, None, None, None]
        x = torch.where(chosen, fn(x, value[:, None, None, None]), x)
    return x


class StrongAugment:
    """The SOP+ strong view of uint8 images (B, C, H, W) on the device: the policy, crop,
    flip, normalisation (mean, std: per channel, 0..1 scale) and Cutout of `cutout` pixels."""

    def __init__(self, mean, std, device, pad=4, cutout=16, policy=CIFAR10_POLICY):
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.pad, self.cutout = pad, cutout
        # (sub-policies, 2) tables: operation index, probability, magnitude.
        self.op = torch.tensor([[OPS.index(n) for n, _, _ in p] for p in policy], device=self.device)
        self.prob = torch.tensor([[pr for _, pr, _ in p] for p in policy], device=self.device)
        self.value = torch.tensor([[release_magnitude(n, lv) for n, _, lv in p] for p in policy],
                                  dtype=torch.float32, device=self.device)
        self.mirrored = torch.tensor([[n in GEOMETRIC for n, _, _ in p] for p in policy], device=self.device)

    def policy(self, x, generator):
        """The policy on x (B, C, H, W) float 0..255: each image its sub-policy, each
        operation applied when a uniform draw is below its probability (random() > pr skips
        it, augmentations.py:238), mirrored where a second draw is above 1/2."""
        b = len(x)
        choice = torch.randint(len(self.op), (b,), generator=generator, device=self.device)
        draws = torch.rand(b, 2, 2, generator=generator, device=self.device)
        for slot in range(2):
            op, prob = self.op[choice, slot], self.prob[choice, slot]
            sign = torch.where(self.mirrored[choice, slot] & (draws[:, slot, 1] > 0.5), -1.0, 1.0)
            x = apply_ops(x, op, self.value[choice, slot] * sign, draws[:, slot, 0] <= prob)
        return x

    def __call__(self, images, generator, channels_last=False):
        """Strong views of uint8 images (B, C, H, W): float, normalised."""
        x = self.policy(images.float(), generator)
        b, c, h, w = x.shape
        offsets = torch.randint(0, 2 * self.pad + 1, (b, 2), generator=generator, device=self.device)
        flips = torch.rand(b, generator=generator, device=self.device) < 0.5
        centre = torch.stack([torch.randint(0, h, (b,), generator=generator, device=self.device),
                              torch.randint(0, w, (b,), generator=generator, device=self.device)], 1)
        x = DeviceLoader.crop(torch.nn.functional.pad(x, (self.pad,) * 4), offsets[:, 0], offsets[:, 1], h, w)
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
        x = (x - self.mean) / self.std
        x = x * cutout_mask(centre, self.cutout, h, w)[:, None]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def cutout_mask(centre, length, height, width):
    """(B, H, W) masks, zero on [y - L//2, y + L//2) x [x - L//2, x + L//2) clipped to the
    image (augmentations.py:211-228, CutoutDefault)."""
    if length <= 0:
        return torch.ones(len(centre), height, width, device=centre.device)
    half = length // 2
    ys = torch.arange(height, device=centre.device)[None, :, None]
    xs = torch.arange(width, device=centre.device)[None, None, :]
    y, x = centre[:, 0, None, None], centre[:, 1, None, None]
    inside = (ys >= y - half) & (ys < y + half) & (xs >= x - half) & (xs < x + half)
    return (~inside).float()
