"""DeviceLoader: the whole data set on the training device, augmented in batches.

The airbench idea: keep uint8 images on the device, shuffle with a per-epoch
seeded permutation, and do random crop (zero padding), horizontal flip and
normalisation as batched tensor operations. No worker processes, no PIL, no
per-image Python, no host sync. The shuffle and augmentation of epoch e depend
only on (seed, e), so a resumed run sees exactly the batches it would have seen.
"""
import math

import torch


class DeviceLoader:
    """Yields (images float NCHW normalised, labels int64, sample indices int64).

    images: uint8 tensor/array (N, C, H, W); labels: (N,) ints. `train=True` shuffles
    and augments (random crop with `pad` zero padding, flip when `flip`); otherwise the
    order is fixed and images are only normalised.
    """

    def __init__(self, images, labels, batch_size, mean, std, device, train,
                 pad=4, flip=True, seed=0, channels_last=False):
        self.device = torch.device(device)
        self.images = torch.as_tensor(images, dtype=torch.uint8).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.train, self.pad, self.flip, self.seed = train, pad, flip, seed
        self.channels_last = channels_last
        self.epoch = 0

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _generator(self):
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return g

    def normalize(self, x_uint8):
        x = (x_uint8.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @staticmethod
    def crop(padded, top, left, size_h, size_w):
        """Window [top:top+h, left:left+w] of each padded image, as one gather."""
        b, c = padded.shape[:2]
        rows = (top[:, None] + torch.arange(size_h, device=padded.device))[:, None, :, None]
        cols = (left[:, None] + torch.arange(size_w, device=padded.device))[:, None, None, :]
        bi = torch.arange(b, device=padded.device)[:, None, None, None]
        ci = torch.arange(c, device=padded.device)[None, :, None, None]
        return padded[bi, ci, rows, cols]

    def __iter__(self):
        n = len(self.images)
        if not self.train:
            for start in range(0, n, self.batch_size):
                idx = torch.arange(start, min(start + self.batch_size, n), device=self.device)
                yield self.normalize(self.images[idx]), self.labels[idx], idx
            return
        g = self._generator()
        order = torch.randperm(n, generator=g, device=self.device)
        # All random draws of the epoch at once: crop offsets and flips per sample.
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g, device=self.device)
        flips = torch.rand(n, generator=g, device=self.device) < 0.5
        h, w = self.images.shape[2:]
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.pad > 0:
                x = torch.nn.functional.pad(x, (self.pad,) * 4)
                x = self.crop(x, offsets[idx, 0], offsets[idx, 1], h, w)
            if self.flip:
                x = torch.where(flips[idx, None, None, None], x.flip(3), x)
            yield self.normalize(x), self.labels[idx], idx
