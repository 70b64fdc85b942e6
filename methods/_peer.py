"""Peer samples, shared by peer loss (methods/peer.py) and the f-divergence method
(methods/fdiv.py): for each sample of a batch, an image and a label drawn at random from
the training set, independently of the batch and of each other. A loss on such pairs
estimates an expectation under the product of the marginals of image and noisy label.

The draws come from the default random generator of the training device (the one the
engine checkpoints in last.pt's "rng"), so that a resumed run draws the same peers; they
stay on the device (no host sync). The peer images get the training augmentation (crop and
flip) of the run's loader, as the releases load them through a loader with the training
transforms.
"""
import torch
import torch.nn.functional as F

from data import dataset_spec
from errors import UserError


def check_in_memory(cfg, method):
    """Refuse a data set whose training images are not held in memory: peer images are
    drawn from anywhere in the training set, which only an in-memory loader can do per step."""
    spec = dataset_spec(cfg.dataset)
    if not spec.in_memory:
        raise UserError(f"--method {method} draws random peer images from the whole training set "
                        f"each step, which needs a data set held in memory, and {spec.name} is read "
                        "from disk: use cifar10, cifar100 or digits")


def draw_peer_indices(n, size, device, disjoint):
    """(image rows, label rows) of `size` peers among n training rows, each without
    repetition. disjoint=False: two independent draws (the peer loss release draws the images
    and the labels with two np.random.choice(m, size, replace=False)); disjoint=True: one
    random order whose first `size` rows give the images and next `size` rows the labels (the
    f-divergence release takes a fresh shuffled loader's first batch for the images and its
    second for the labels); past n rows the order wraps around."""
    if disjoint:
        order = torch.randperm(n, device=device)
        return order[:size], order[torch.arange(size, 2 * size, device=device) % n]
    return torch.randperm(n, device=device)[:size], torch.randperm(n, device=device)[:size]


def augmented_images(loader, rows):
    """The training images `rows` of a DeviceLoader with a fresh random crop and flip each,
    normalised as the loader's batches are (data/loader.py)."""
    offsets = torch.randint(0, 2 * loader.pad + 1, (len(rows), 2), device=loader.device)
    x = loader.windows(loader.padded, *loader.images.shape[2:])[rows, :, offsets[:, 0], offsets[:, 1]]
    if loader.flip:
        flips = torch.rand(len(rows), device=loader.device) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return loader.normalize(x)


def peer_batch(run, size, disjoint):
    """(peer images, peer labels) for a batch of `size`: the images augmented, the labels
    the noisy labels of independently drawn training rows."""
    loader = run.train_loader
    image_rows, label_rows = draw_peer_indices(len(loader.images), size, loader.device, disjoint)
    return augmented_images(loader, image_rows), loader.labels[label_rows]


def peer_step(run, x, y, loss_fn, disjoint):
    """One optimiser step on loss_fn(logits, y, peer_logits, peer_labels), the peer images
    through the network in a forward pass of their own (as both releases do, so that
    BatchNorm sees them as a batch of their own); returns what Method.train_step returns."""
    peer_x, peer_y = peer_batch(run, len(y), disjoint)
    with run.autocast():
        logits = run.forward(x)
        peer_logits = run.forward(peer_x)
    loss = loss_fn(logits, y, peer_logits, peer_y)
    run.minimize(loss)
    return loss.detach().float(), logits.detach()


def log_softmax_at(logits, labels):
    """log p(labels | x) in fp32, (B,)."""
    return F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
