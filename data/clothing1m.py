"""Clothing1M (Xiao et al., CVPR 2015): 14 clothing classes, ~1M web images with noisy labels.

Under --datapath (--data_root in the GLS scripts): the images as images/<d>/<dd>/<name>.jpg,
and the annotations, in the folder itself or in annotations/, in either format:
  - released: noisy_label_kv.txt and clean_label_kv.txt (`images/... <label>` per line) with
    the key lists noisy_train_key_list.txt, clean_val_key_list.txt, clean_test_key_list.txt;
  - merged `path label` lists: noisy_train.txt, clean_val.txt, clean_test.txt.
The noisy train set has no clean labels; val and test are clean (14,313 and 10,526).

As released, each epoch trains on a fresh class-balanced random subset of the noisy
train set (--num_per_class per noisy class); train transform resize 256, random crop
224, flip; test resize 256, centre crop 224; Clothing1M's mean/std. --image_size s
scales both (resize round(s * 256 / 224), crop s) for small CPU runs.

JPEG decoding is the cost, so images are decoded in DataLoader worker processes and
travel as uint8; normalisation runs on the training device. Every random choice of an
epoch (subset, order, each image's crop and flip) is a pure function of (seed, epoch),
independent of the worker count, so a resumed run sees exactly the same batches.
"""
import os
import random
import signal

import numpy as np
import torch

from core.args import integer
from errors import UserError

from .base import DataFile, DatasetSpec, NoiseType
from .loader import batch_bounds

CLASSES = ("T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
           "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
MEAN = (0.6959, 0.6537, 0.6371)
STD = (0.3113, 0.3192, 0.3214)
IMAGE_SIZE = 224
RESIZE_RATIO = 256 / 224
NUM_PER_CLASS = 18976  # the smallest noisy class: 14 * 18,976 = 265,664 images an epoch

RELEASED = dict(train=("noisy_train_key_list.txt", "noisy_label_kv.txt"),
                val=("clean_val_key_list.txt", "clean_label_kv.txt"),
                test=("clean_test_key_list.txt", "clean_label_kv.txt"))
MERGED = dict(train="noisy_train.txt", val="clean_val.txt", test="clean_test.txt")


# ---------------------------------------------------------------- annotation files

def _lines(path):
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is no part of a path
            return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}): it must be a readable annotation "
                        "file; extract the annotations again") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (it holds binary data): the annotation files "
                        "are `images/... <label>` lines; extract them again") from None


def read_image_list(path):
    """Read `relative/path.jpg label` lines -> [(relative_path, label)], labels in 0..13."""
    entries = []
    for n, line in _lines(path):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{n}: {line!r} is not `image_path label`; fix that line or "
                            "extract the annotations again")
        label = int(parts[1])
        if not 0 <= label < len(CLASSES):
            raise UserError(f"{path}:{n}: label {label} is outside 0..{len(CLASSES) - 1}; fix that line "
                            "or extract the annotations again")
        entries.append((parts[0], label))
    return entries


def read_key_list(path):
    """One image key (relative path) per line."""
    return [line.split()[0] for _, line in _lines(path)]


def labels_of_keys(keys, kv_path, kv):
    """[(key, label)] for keys of a released key list, their labels looked up in a kv file."""
    missing = [k for k in keys if k not in kv]
    if missing:
        raise UserError(f"{len(missing)} keys have no label in {kv_path} (first: "
                        f"{', '.join(missing[:3])}); the annotation files do not belong together: "
                        "extract them again from one release")
    return [(k, kv[k]) for k in keys]


def find_annotations(root):
    """The folder holding the annotation files: root or root/annotations, and its format."""
    for folder in (root, os.path.join(root, "annotations")):
        if all(os.path.exists(os.path.join(folder, name)) for name in MERGED.values()):
            return folder, "merged"
        released = {f for pair in RELEASED.values() for f in pair}
        if all(os.path.exists(os.path.join(folder, name)) for name in released):
            return folder, "released"
    raise UserError(
        f"no Clothing1M annotations under {root} (nor {os.path.join(root, 'annotations')}): expected "
        f"either the released files {', '.join(sorted({f for p in RELEASED.values() for f in p}))} "
        f"or the lists {', '.join(MERGED.values())}, beside images/. Request Clothing1M from its "
        "authors (https://github.com/Cysu/noisy_label) and point --datapath/--data_root at it")


def read_annotations(root):
    """{'train': [(path, noisy label)], 'val': [(path, clean label)], 'test': [...]}."""
    folder, layout = find_annotations(root)
    if layout == "merged":
        return {split: read_image_list(os.path.join(folder, name)) for split, name in MERGED.items()}
    kv_cache = {}
    splits = {}
    for split, (key_file, kv_file) in RELEASED.items():
        kv_path = os.path.join(folder, kv_file)
        if kv_path not in kv_cache:
            kv_cache[kv_path] = dict(read_image_list(kv_path))
        splits[split] = labels_of_keys(read_key_list(os.path.join(folder, key_file)), kv_path,
                                       kv_cache[kv_path])
    return splits


def check_images_exist(root, paths, split):
    """Every listed image must be a file that can be opened: one directory listing per
    folder, and a stat only for the entries that are symbolic links (the listing says what
    the others are), so a link to nothing or a folder in an image's place is found here,
    not when the image is first drawn."""
    listings = {}
    missing, broken = [], []
    for rel in paths:
        folder, name = os.path.split(os.path.join(root, rel))
        if folder not in listings:
            try:
                with os.scandir(folder) as entries:
                    listings[folder] = {e.name: e for e in entries}
            except OSError:  # no such folder, or not one
                listings[folder] = {}
        entry = listings[folder].get(name)
        if entry is None:
            missing.append(rel)
        elif not entry.is_file():  # follows a link: False for a link to nothing, or a folder
            broken.append(rel)
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the {len(paths)} {split} images listed are missing under "
                        f"{root} (first: {', '.join(missing[:5])})")
    if broken:
        problems.append(f"{len(broken)} of the {len(paths)} {split} images listed under {root} cannot be "
                        f"opened: a symbolic link to nothing or a folder in its place (first: "
                        f"{', '.join(broken[:5])})")
    if problems:
        raise UserError("; ".join(problems) + "; complete the images/ folder or fix the annotation files")


# ---------------------------------------------------------------- images and sampling

class JpegFiles(torch.utils.data.Dataset):
    """Decodes one image per item in a worker: item (index, seed) -> (uint8 CHW, index).

    seed None: resize + centre crop (test transform); else resize + random crop + flip,
    drawn from random.Random(seed), so an image's augmentation does not depend on which
    worker decodes it.
    """

    def __init__(self, root, paths, size):
        self.root, self.paths, self.size = root, paths, size
        self.resize = round(size * RESIZE_RATIO)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        import torchvision.transforms.functional as TF
        from PIL import Image

        index, seed = item
        path = os.path.join(self.root, self.paths[index])
        try:
            with Image.open(path) as img:
                img = TF.resize(img.convert("RGB"), self.resize)
        except OSError as exc:
            raise UserError(f"{path} cannot be read as an image ({exc}); replace or delist it") from None
        if seed is None:
            img = TF.center_crop(img, self.size)
        else:
            rng = random.Random(seed)
            top = rng.randint(0, img.height - self.size)
            left = rng.randint(0, img.width - self.size)
            img = TF.crop(img, top, left, self.size, self.size)
            if rng.random() < 0.5:
                img = TF.hflip(img)
        return TF.pil_to_tensor(img), index


class BalancedSubset:
    """A fresh class-balanced random subset of the noisy train set each epoch:
    num_per_class samples of every noisy class (all of a smaller class), drawn from
    (seed, epoch) alone. `epoch` is set by the train loader and read by the loader
    label correction predicts with, so both see the same subset."""

    def __init__(self, labels, num_per_class, seed):
        self.members = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
        if num_per_class < 0:  # -1: every image, as the release's -1
            num_per_class = max(len(m) for m in self.members)
        self.num_per_class, self.seed, self.epoch = num_per_class, seed, 0

    def __len__(self):
        return sum(min(len(m), self.num_per_class) for m in self.members)

    def indices(self, epoch):
        """The epoch's subset, sorted (indices into the full noisy train list)."""
        rng = np.random.default_rng([self.seed, epoch])
        chosen = [rng.choice(m, min(len(m), self.num_per_class), replace=False) for m in self.members]
        return np.sort(np.concatenate(chosen))

    def shuffled(self, epoch):
        """(order, seeds): the epoch's subset in training order and each sample's augmentation seed."""
        subset = self.indices(epoch)
        rng = np.random.default_rng([self.seed, epoch, 1])
        return rng.permutation(subset), rng.integers(0, 2 ** 63, len(subset))

    def augmented_in_order(self, epoch):
        """(subset, seeds): the epoch's subset in order, each with an augmentation seed of
        its own stream: what label correction predicts on (the release's train transform)."""
        subset = self.indices(epoch)
        return subset, np.random.default_rng([self.seed, epoch, 2]).integers(0, 2 ** 63, len(subset))


class JpegLoader:
    """Yields (images float NCHW normalised, labels int64, sample indices int64) on the device.

    `select()` gives the epoch's (indices, augmentation seeds or None) in iteration
    order; indices address the full file list, so labels[idx] is the sample's label.
    """

    def __init__(self, files, labels, batch_size, device, num_workers, select, length,
                 channels_last=False, subset=None, train=False):
        self.device = torch.device(device)
        self.files, self.batch_size, self.num_workers = files, batch_size, num_workers
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.select, self.length, self.subset, self.train = select, length, subset, train
        self.channels_last = channels_last
        self.mean = torch.tensor(MEAN, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(STD, device=self.device).view(1, -1, 1, 1) * 255

    def __len__(self):
        return len(batch_bounds(self.length, self.batch_size, self.train))

    def set_epoch(self, epoch):
        if self.subset is not None:
            self.subset.epoch = epoch

    def in_order(self, batch_size, augment):
        """The training loader's current subset in order, the label correction's input
        (the release predicts over the epoch's subset): without augmentation, or with it
        (augment=True), each image's crop and flip from a seed stream of their own."""
        subset = self.subset
        if augment:
            select = lambda: subset.augmented_in_order(subset.epoch)  # noqa: E731
        else:
            select = lambda: (subset.indices(subset.epoch), None)  # noqa: E731
        return JpegLoader(self.files, self.labels, batch_size, self.device, self.num_workers, select,
                          len(subset), self.channels_last)

    def __iter__(self):
        indices, seeds = self.select()
        items = list(zip(indices.tolist(), [None] * len(indices) if seeds is None else seeds.tolist()))
        # Training batches as the device loader makes them (a last single sample joins the
        # batch before); workers ignore SIGINT/SIGTERM, which reach the whole process group
        # (Ctrl-C, scancel): the main process stops the run cleanly and then ends them.
        batches = [items[a:b] for a, b in batch_bounds(len(items), self.batch_size, self.train)]
        loader = torch.utils.data.DataLoader(
            self.files, batch_sampler=batches, num_workers=self.num_workers,
            worker_init_fn=ignore_stop_signals if self.num_workers else None,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.num_workers else None)
        batches = iter(loader)
        try:
            for x, idx in batches:
                x = x.to(self.device, non_blocking=True)
                idx = idx.to(self.device, non_blocking=True)
                x = (x.float() - self.mean) / self.std
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, self.labels[idx], idx
        except UserError as exc:
            # A worker's error arrives with the worker's traceback as its message: keep the last line.
            raise UserError(str(exc).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
        finally:
            # Workers ignore SIGTERM, so they must be told to end whenever iteration stops
            # early (a signal, an error, the compile check's single batch): a traceback can
            # keep the iterator alive, and multiprocessing's exit would wait for them.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def ignore_stop_signals(worker_id):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------- the data set

class Clothing1M:
    """The engine's view of Clothing1M (same interface as data.DataSet).

    train_labels is None: the noisy train set has no clean labels, so the engine reports
    no actual noise rate. The clean val split is the engine's `val`, so summary.json gets
    best_val_acc and test_acc_at_best_val (the release reports test at the best val epoch).
    """
    name = "clothing1m"
    num_classes = len(CLASSES)
    in_channels = 3
    train_labels = None
    has_val = True

    def __init__(self, root, image_size=IMAGE_SIZE, num_per_class=NUM_PER_CLASS, num_workers=4):
        if not os.path.isdir(root):
            raise UserError(f"Clothing1M folder {root} does not exist; point --datapath/--data_root "
                            "at the folder holding images/ and the annotation files")
        splits = read_annotations(root)
        for split, entries in splits.items():
            if not entries:
                raise UserError(f"the Clothing1M {split} list under {root} is empty; extract the "
                                "annotations again")
            check_images_exist(root, [p for p, _ in entries], split)
        self.root, self.image_size = root, image_size
        self.num_per_class, self.num_workers = num_per_class, num_workers
        self.files = {s: JpegFiles(root, [p for p, _ in e], image_size) for s, e in splits.items()}
        self.labels = {s: np.array([y for _, y in e], dtype=np.int64) for s, e in splits.items()}
        self.noisy_train_labels = self.labels["train"]
        self.subset = None
        self.noise_arrays = {}  # the engine saves these with the run; Clothing1M has none

    @property
    def num_train(self):
        return len(self.noisy_train_labels)

    def train_loader(self, labels, batch_size, device, seed, channels_last=False):
        """Augmented batches of each epoch's class-balanced subset (by the noisy labels)."""
        self.subset = BalancedSubset(torch.as_tensor(labels).cpu().numpy(), self.num_per_class, seed)
        subset = self.subset
        return JpegLoader(self.files["train"], labels, batch_size, device, self.num_workers,
                          lambda: subset.shuffled(subset.epoch), len(subset), channels_last, subset,
                          train=True)

    def eval_loader(self, split, batch_size, device, channels_last=False, labels=None):
        """Batches of 'val' or 'test' in order, without augmentation (the training subset's:
        the train loader's in_order)."""
        labels = self.labels[split] if labels is None else labels
        files = self.files[split]
        every = np.arange(len(files))
        return JpegLoader(files, labels, batch_size, device, self.num_workers,
                          lambda: (every, None), len(files), channels_last)


# ---------------------------------------------------------------- declarations

def flags(g, d):
    g.add_argument("--num_per_class", type=integer, default=d.get("num_per_class", NUM_PER_CLASS),
                   help="Clothing1M: noisy train images per class in each epoch's balanced subset "
                        "(-1: every image, as the release's -1)")
    g.add_argument("--image_size", type=integer, default=IMAGE_SIZE,
                   help="Clothing1M: crop size (resize to size * 256/224 first); small for CPU tests")
    g.add_argument("--num_workers", type=integer, default=d.get("num_workers", 4),
                   help="DataLoader workers decoding JPEGs (Clothing1M); in-memory data sets need none")


def check_flags(cfg):
    if not (cfg.num_per_class >= 1 or cfg.num_per_class == -1):
        raise UserError(f"--num_per_class {cfg.num_per_class} must be at least 1, or -1 for every image")
    if cfg.image_size < 8:
        raise UserError(f"--image_size {cfg.image_size} must be at least 8")
    if cfg.num_workers < 0:
        raise UserError(f"--num_workers {cfg.num_workers} must be >= 0")


def load(root, cfg):
    if cfg is None:
        return Clothing1M(root)
    return Clothing1M(root, cfg.image_size, cfg.num_per_class, cfg.num_workers)


def files(cfg):
    """The images folder and the annotation files (those found, else the released ones)."""
    root = cfg.data_root
    get = ("request Clothing1M from its authors (https://github.com/Cysu/noisy_label) and extract it "
           f"under {os.path.abspath(root)}")
    fake = lambda cfg: write_stand_in(cfg.data_root)  # noqa: E731
    images = DataFile(os.path.join(root, "images"), "the Clothing1M images (images/<d>/<dd>/*.jpg)", get, fake)
    try:
        folder, layout = find_annotations(root)
    except UserError:
        names = sorted({f for pair in RELEASED.values() for f in pair})
        return [images] + [DataFile(os.path.join(root, "annotations", n), "a Clothing1M annotation file "
                                    f"(or, instead of all five, the lists {', '.join(MERGED.values())})", get, fake)
                           for n in names]
    names = MERGED.values() if layout == "merged" else {f for pair in RELEASED.values() for f in pair}
    return [images] + [DataFile(os.path.join(folder, n), "a Clothing1M annotation file", get, fake)
                       for n in sorted(names)]


def write_stand_in(root, per_class=(3, 1, 1), size=16):
    """A small Clothing1M folder (smoke runs): per_class random JPEGs of each class in train,
    val and test, with the merged lists noisy_train.txt, clean_val.txt, clean_test.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for (split, name), count in zip(MERGED.items(), per_class):
        lines = []
        for c in range(len(CLASSES)):
            for i in range(count):
                rel = f"images/{c}/{i:02d}/{split}_{c}_{i}.jpg"
                os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(root, rel))
                lines.append(f"{rel} {c}\n")
        with open(os.path.join(root, name), "w") as f:
            f.writelines(lines)


CLOTHING1M = DatasetSpec(
    "clothing1m", len(CLASSES), 3, IMAGE_SIZE, load,
    "Clothing1M: ~1M web images with real noisy labels, 14 classes; clean val and test splits",
    has_val=True, in_memory=False, clean_train_labels=False, default_noise="real", flags=flags,
    check_flags=check_flags, files=files, smoke=(("image_size", 32), ("num_workers", 0)))

REAL = NoiseType(
    "real", "the data set's own noisy labels (Clothing1M)",
    make=lambda data, cfg: (data.noisy_train_labels, {"source": "data set", "dataset": data.name}),
    group="real", uses_rate=False, needs_clean_labels=False, accepts_noise_file=False)
