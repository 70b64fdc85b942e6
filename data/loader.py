"""DeviceLoader: the whole data set on the training device, augmented in batches.

The airbench idea: keep uint8 images on the device, shuffle with a per-epoch
seeded permutation, and do random crop (zero padding), horizontal flip and
normalisation as batched tensor operations. No worker processes, no PIL, no
per-image Python, no host sync. The training set is zero-padded once, so a
batch's crops are one gather from a view of all crop windows: 3-4x the images/s
of padding and cropping each batch, on a 2-core CPU (docs/BENCHMARKS.md). The
shuffle and augmentation of epoch e depend only on (seed, e), so a resumed run
sees exactly the batches it would have seen.

A training epoch whose last batch would hold a single sample merges it into the batch
before (BatchNorm cannot train on one sample when the feature map is 1x1, as ResNets
reach it on 8x8 digits): every sample is trained on every epoch, in len(loader) steps.
"""
import copy

import torch


def batch_bounds(n, batch_size, merge_single=True):
    """[(start, stop)] of the batches of n samples; with merge_single, a last batch of one
    sample joins the batch before it."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if merge_single and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class DeviceLoader:
    """Yields (images float NCHW normalised, labels int64, sample indices int64).

    images: uint8 tensor/array (N, C, H, W); labels: (N,) ints. `train=True` shuffles
    and augments (random crop with `pad` zero padding, flip when `flip`); otherwise the
    order is fixed and images are only normalised. `shuffle=False` augments in order;
    `stream` picks an independent random stream for the same seed (0: training).
    """

    def __init__(self, images, labels, batch_size, mean, std, device, train,
                 pad=4, flip=True, seed=0, channels_last=False, shuffle=True, stream=0):
        self.device = torch.device(device)
        self.images = torch.as_tensor(images, dtype=torch.uint8).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255
        self.train, self.pad, self.flip, self.seed = train, pad, flip, seed
        self.shuffle, self.stream = shuffle, stream
        self.channels_last = channels_last
        self.epoch = 0
        # Padded once here rather than per batch (costs (H+2p)(W+2p)/HW of the images' memory).
        self.padded = torch.nn.functional.pad(self.images, (pad,) * 4) if train and pad else self.images

    def __len__(self):
        return len(batch_bounds(len(self.images), self.batch_size, self.train))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def in_order(self, batch_size, augment):
        """This training loader's samples in train order, sharing its device tensors:
        without augmentation, or (augment=True) with a fresh crop and flip each epoch from
        a random stream of its own, as the SLN release's label correction predicts."""
        loader = copy.copy(self)
        loader.batch_size, loader.train, loader.shuffle, loader.stream = batch_size, augment, False, 1
        return loader

    def _generator(self):
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.epoch + (self.stream << 40))
        return g

    def normalize(self, x_uint8):
        # One conversion pass straight into the model's memory format, then in-place maths.
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x_uint8.to(torch.float32, memory_format=layout)
        return x.sub_(self.mean).div_(self.std)

    @staticmethod
    def windows(padded, size_h, size_w):
        """Every (size_h, size_w) window of each image, as a view without copy:
        (N, C, top positions, left positions, size_h, size_w)."""
        return padded.unfold(2, size_h, 1).unfold(3, size_w, 1)

    @staticmethod
    def crop(padded, top, left, size_h, size_w):
        """Window [top:top+h, left:left+w] of each padded image, as one gather."""
        rows = torch.arange(len(padded), device=padded.device)
        return DeviceLoader.windows(padded, size_h, size_w)[rows, :, top, left]

    def __iter__(self):
        n = len(self.images)
        bounds = batch_bounds(n, self.batch_size, self.train)
        if not self.train:
            for start, stop in bounds:
                idx = torch.arange(start, stop, device=self.device)
                yield self.normalize(self.images[start:stop]), self.labels[start:stop], idx
            return
        g = self._generator()
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        # All random draws of the epoch at once: crop offsets and flips per sample.
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g, device=self.device)
        flips = torch.rand(n, generator=g, device=self.device) < 0.5
        windows = self.windows(self.padded, *self.images.shape[2:])
        for start, stop in bounds:
            idx = order[start:stop]
            # Picks the sample and its crop in one gather: (B, C, H, W).
            x = windows[idx, :, offsets[idx, 0], offsets[idx, 1]]
            if self.flip:
                x = torch.where(flips[idx, None, None, None], x.flip(3), x)
            yield self.normalize(x), self.labels[idx], idx
