"""Synthetic label noise: clean labels -> noisy labels, the formulas and their declarations.

Each noise type is one NoiseType declaration (data/base.py) at the bottom of this file;
data/cifarn.py declares the human (CIFAR-N) types and data/clothing1m.py `real`. Noisy
labels depend only on (data set, noise type, rate, noise seed or label file), never on the
training seed; the engine saves them with the run, and noise.json records where they came
from (provenance).

Sources, by noise type:
- class-conditional (symmetric, pairflip, asym, clean): drawn with the GLS release's
  draw (noisify: one multinomial per sample from numpy.random.RandomState(noise_seed)),
  or, with --noise_source release (the SLN scripts' default), read from the SLN
  release's label file where it shipped one (label_noisy/<mode><rate>.csv).
- dependent (IDN): always a file, the SLN release's or one made by python3 -m data.idn.
- instance, openset, CIFAR-N twins: seeded generators below.
- CIFAR-N human labels (data/cifarn.py) and Clothing1M's own labels (real): read.

Label files (the CSV format, the SLN release's files) are data/noise_files.py's, whose
names this module re-exports.
"""
import os

import numpy as np

from core.files import warn
from errors import UserError

from .base import DataFile, NoiseType
from .cifar import SPECS as CIFAR_SPECS, cifar_file, find_cifar_folder, load_cifar
from .noise_files import (SLN_FILES, SLN_MODE, SLN_RELEASE_URL, check_label_range, file_provenance,  # noqa: F401
                          load_noise_file, noisy_labels_from_file, save_noise_file, sln_release_file,
                          sln_release_path, sln_release_url)

# pairflip (GLS "asymmetric"): each class swaps with its partner, both directions.
PAIRFLIP_PARTNER = {9: 1, 1: 9, 2: 0, 0: 2, 4: 7, 7: 4, 3: 5, 5: 3, 6: 8, 8: 6}
# asym on CIFAR-10 (SLN): truck->automobile, bird->airplane, deer->horse, cat<->dog.
ASYM_CIFAR10 = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


# ---------------------------------------------------------------- class-conditional noise

def class_conditional_matrix(noise_type, noise_rate, num_classes):
    """The transition matrix P[i, j] = P(noisy = j | clean = i), built as the GLS release
    builds it (data/utils.py of UCSC-REAL/negative-label-smoothing), so its float values,
    and hence the draws, are the release's:

    symmetric  r / (K - 1) off the diagonal, 1 - r on it
    pairflip   1 - r on the diagonal, r to the partner (PAIRFLIP_PARTNER; 10 classes)
    asym       CIFAR-10: 1 - r and r to the target for 9->1, 2->0, 4->7, 3<->5, other
               classes keep their label; CIFAR-100: c -> (c + 1) mod 100 with prob r
    clean      the identity
    """
    r, k = noise_rate, num_classes
    if noise_type == "symmetric":
        P = (r / (k - 1)) * np.ones((k, k))
        np.fill_diagonal(P, 1.0 - r)
        return P
    P = np.eye(k)
    flips = {"pairflip": PAIRFLIP_PARTNER, "clean": {},
             "asym": ASYM_CIFAR10 if k == 10 else {c: (c + 1) % k for c in range(k)}}[noise_type]
    for c, d in flips.items():
        P[c, c], P[c, d] = 1.0 - r, r
    return P


def noisify(labels, P, seed=0):
    """The GLS release's draw (co-teaching's multiclass_noisify): for each sample in train
    order, one multinomial(1, P[y_i]) from numpy.random.RandomState(seed); its one-hot
    is the noisy label. RandomState's stream is frozen by numpy, so seed 0 gives the
    release's labels label for label. A Python loop: about a second for 50,000 labels."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    return np.array([rng.multinomial(1, P[y]).argmax() for y in labels], dtype=np.int64)


def make_noisy_labels(clean_labels, noise_type, noise_rate, num_classes, seed=0):
    """Noisy labels (np.int64) of a class-conditional noise type, drawn by noisify from
    class_conditional_matrix. Rate 0 (where the release crashes) returns the labels."""
    clean = np.asarray(clean_labels, dtype=np.int64)
    if noise_type == "clean" or noise_rate == 0:
        return clean.copy()
    return noisify(clean, class_conditional_matrix(noise_type, noise_rate, num_classes), seed)


def actual_noise_rate(clean_labels, noisy_labels):
    """Fraction of samples whose noisy label differs from the clean one."""
    return float(np.mean(np.asarray(clean_labels) != np.asarray(noisy_labels)))


def transition_matrix(clean_labels, noisy_labels, num_classes):
    """Empirical T[i, j] = P(noisy = j | clean = i); rows of absent classes are zero."""
    clean, noisy = np.asarray(clean_labels), np.asarray(noisy_labels)
    for what, labels in (("clean", clean), ("noisy", noisy)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):  # never index from the end
            raise ValueError(f"{what} labels outside 0..{num_classes - 1}")
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, noisy), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def twin_labels(clean, human, num_classes, seed):
    """Synthetic twin of a human label set: labels drawn (noisify) from its empirical
    transition matrix, so the per-class flip rates match and the instance dependence is gone."""
    return noisify(clean, transition_matrix(clean, human, num_classes), seed)


# ---------------------------------------------------------------- instance-dependent noise

def idn_noisy_labels(probs, clean_labels, noise_rate):
    """Instance-dependent noise (IDN) from a clean-trained network's probabilities.

    probs (N, K): the network's softmax on the training set, averaged over its epochs.
    w_i = argmax_{k != y_i} p_ik is sample i's most probable wrong class and q_i = p_{i w_i};
    the round(r * N) samples with the largest q_i flip to w_i (equal q_i: lower index first).
    The noise rate is exactly round(r * N) / N.
    """
    clean = np.asarray(clean_labels, dtype=np.int64)
    rows = np.arange(len(clean))
    wrong = np.array(probs, dtype=np.float64)
    wrong[rows, clean] = -np.inf
    target = wrong.argmax(axis=1)
    confidence = wrong[rows, target]
    flipped = np.argsort(-confidence, kind="stable")[:int(round(noise_rate * len(clean)))]
    noisy = clean.copy()
    noisy[flipped] = target[flipped]
    return noisy


def instance_flip_probabilities(features, label, flip_rates, projection):
    """Part-dependent noise of Xia et al. (NeurIPS 2020) for the samples of one class y:

        a_i = x_i W_y                         (x_i the flattened normalised image, W_y (D, K))
        a_iy = -inf                           (the flip goes to another class)
        P_i = (1 - f_i) * onehot(y) + f_i * softmax(a_i)

    Returns P (n, K), each row the distribution of sample i's noisy label.
    """
    scores = (np.asarray(features) @ np.asarray(projection)).astype(np.float64)
    scores[:, label] = -np.inf
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = flip_rates[:, None] * scores / scores.sum(axis=1, keepdims=True)
    probs[:, label] += 1.0 - flip_rates
    return probs


def make_instance_noise(images, labels, noise_rate, num_classes, mean, std, seed=0, flip_std=0.1):
    """Part-dependent instance noise after Xia et al. (NeurIPS 2020), our version.

    Each sample's flip rate f_i is drawn from a normal around r with std 0.1 truncated to
    [0, 1]; each class c gets its own random Gaussian projection W_c (D x K) of the image
    normalised with the data set's mean/std; the noisy label is drawn from
    instance_flip_probabilities. The expected noise rate is about r.

    The GLS release has an instance generator too (noisify_instance in its data/utils.py),
    unused by its experiments and different from this one: one projection shared by all
    classes, applied to raw uint8 pixels, and flip rates from an untruncated normal with
    the draws outside (0, 1) skipped. Labels from the two differ.
    """
    clean = np.asarray(labels, dtype=np.int64)
    if noise_rate == 0:  # every flip rate is 0: no label may change
        return clean.copy()
    from scipy.stats import truncnorm  # imported here: scipy.stats costs a second at every run start

    rng = np.random.default_rng(seed)
    n = len(clean)
    low, high = (0.0 - noise_rate) / flip_std, (1.0 - noise_rate) / flip_std
    flip_rates = truncnorm(low, high, loc=noise_rate, scale=flip_std).rvs(n, random_state=rng)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    probs = np.zeros((n, num_classes))
    for c in range(num_classes):
        # W_c is drawn for every class, present or not, so it depends on the seed only.
        projection = rng.standard_normal((images[0].size, num_classes), dtype=np.float32)
        rows = np.flatnonzero(clean == c)
        features = ((images[rows] / np.float32(255) - mean) / std).reshape(len(rows), -1)
        probs[rows] = instance_flip_probabilities(features, c, flip_rates[rows], projection)
    # Inverse-CDF draw: the first class whose cumulative probability reaches u.
    u = rng.random(n)
    noisy = (probs.cumsum(axis=1) < u[:, None]).sum(axis=1)
    return np.minimum(noisy, num_classes - 1)


# ---------------------------------------------------------------- open-set noise

def replace_with_open_set(train_images, open_images, noise_rate, seed=0):
    """Open-set noise: round(r * N) training images, chosen at random, are replaced by
    distinct random images of another data set; their labels are kept.

    Returns (images, replaced, sources): the new image array, the replaced training
    indices (sorted) and the open-set index each one received.
    """
    n = len(train_images)
    count = int(round(noise_rate * n))
    if count > len(open_images):
        raise UserError(f"open-set noise {noise_rate} needs {count} images, the open set has "
                        f"{len(open_images)}; lower --noise_rate")
    if open_images.shape[1:] != train_images.shape[1:]:
        raise UserError(f"open-set images have shape {open_images.shape[1:]}, the training "
                        f"images {train_images.shape[1:]}")
    rng = np.random.default_rng(seed)
    replaced = np.sort(rng.choice(n, count, replace=False))
    sources = rng.choice(len(open_images), count, replace=False)
    images = train_images.copy()
    images[replaced] = open_images[sources]
    return images, replaced, sources


def open_set_roots(cfg):
    """(the folders where openset noise looks for CIFAR-100, those that hold it)."""
    root = os.path.normpath(cfg.data_root)
    parent = os.path.dirname(root) or "."
    candidates = [root, os.path.join(parent, "CIFAR100"), parent]
    archive = CIFAR_SPECS["cifar100"]["archive"]
    return candidates, [c for c in candidates
                        if find_cifar_folder("cifar100", c) or os.path.isfile(os.path.join(c, archive))]


def add_open_set(data, cfg):
    """Open-set noise on CIFAR-10: round(r * N) training images become CIFAR-100 training
    images, their CIFAR-10 labels kept (data.noise_arrays records which).

    CIFAR-100 is looked for next to CIFAR-10: in --data_root itself (./data holding both
    cifar-10-batches-py and cifar-100-python), or in the sibling folder CIFAR100 (the SLN
    layout ./data/CIFAR10 and ./data/CIFAR100).
    """
    candidates, found = open_set_roots(cfg)
    archive = CIFAR_SPECS["cifar100"]["archive"]
    if not found:
        raise UserError(f"openset noise takes its images from CIFAR-100, not found in "
                        f"{' or '.join(candidates)}: extract {archive} "
                        f"({CIFAR_SPECS['cifar100']['url']}) into one of them")
    open_images = load_cifar("cifar100", found[0], download=False)[0]
    data.train_images, replaced, sources = replace_with_open_set(
        data.train_images, open_images, cfg.noise_rate, cfg.noise_seed)
    data.noise_arrays.update(open_set_index=replaced, open_set_source=sources)


# ---------------------------------------------------------------- what a run reads

def sln_release_need(cfg, noise_type, get=None):
    """The DataFile of the SLN release's label file of this setting (get: how to make it
    where the release shipped none)."""
    path = sln_release_path(cfg.data_root, noise_type, cfg.noise_rate)
    md5 = SLN_FILES.get((cfg.dataset, noise_type, float(cfg.noise_rate)))
    if md5 is not None:
        get = (f"curl -L --create-dirs -o {os.path.abspath(path)} {sln_release_url(cfg.dataset, noise_type, cfg.noise_rate)}  "
               f"(md5 {md5})")
    return DataFile(path, f"the {noise_type} {cfg.noise_rate:g} label file of the SLN release's layout", get,
                    fake=lambda cfg: write_stand_in_labels(path, cfg))


def write_stand_in_labels(path, cfg):
    """A label,label_noisy CSV for the data set under cfg.data_root: symmetric noise at the
    run's rate, drawn from --noise_seed (smoke runs: sweep.py paper --smoke)."""
    from data import load_dataset

    data = load_dataset(cfg.dataset, cfg.data_root, cfg)
    noisy = make_noisy_labels(data.train_labels, "symmetric", cfg.noise_rate, data.num_classes, cfg.noise_seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_noise_file(path, data.train_labels, noisy)


def class_conditional_files(noise_type):
    """files() of a class-conditional type: the SLN release's label file where the run reads
    one that it would otherwise download (--noise_source release); drawn labels need none."""
    def files(cfg):
        shipped = (cfg.dataset, noise_type, float(cfg.noise_rate)) in SLN_FILES
        return [sln_release_need(cfg, noise_type)] if cfg.noise_source == "release" and shipped else []
    return files


def dependent_files(cfg):
    path = sln_release_path(cfg.data_root, "dependent", cfg.noise_rate)
    make = ("make it from a network trained on clean labels: python3 main_warmup.py --dataset "
            f"{cfg.dataset} --noise_type clean --record_train_probs --data_root {cfg.data_root}, then "
            f"python3 -m data.idn --run RUN_DIR --noise_rate {cfg.noise_rate} --data_root {cfg.data_root} "
            f"--out {path}")
    return [sln_release_need(cfg, "dependent", make)]


def open_set_files(cfg):
    """CIFAR-100, where openset noise finds it (else where it would: beside CIFAR10, or in the root)."""
    candidates, found = open_set_roots(cfg)
    if found:
        return [cifar_file("cifar100", found[0])]
    root = candidates[1] if os.path.basename(candidates[0]) == "CIFAR10" else candidates[0]
    need = cifar_file("cifar100", root)
    return [DataFile(need.path, f"{need.what} (the open-set images)", need.get, need.fake)]


# ---------------------------------------------------------------- the declarations

def model_matrix(noise_type):
    """matrix() of a class-conditional type: class_conditional_matrix at the given rate."""
    return lambda noise_rate, num_classes: class_conditional_matrix(noise_type, noise_rate, num_classes)


def generated(cfg, generator):
    return {"source": "generated", "noise_seed": cfg.noise_seed, "generator": generator}


def majority_wrong_classes(noise_type, noise_rate, num_classes):
    """The classes whose label, under the declared matrix, is more often one wrong class than
    the true one (pairflip and asym above r = 0.5, symmetric above (K - 1) / K): there the
    noisy labels no longer tell which class is right, and no method can recover it."""
    P = class_conditional_matrix(noise_type, noise_rate, num_classes)
    off_diagonal = P - np.diag(np.diag(P))
    # a margin: 1 - 0.9 and 0.9 / 9 differ in the last bit, and a tie is no majority
    return [int(c) for c in np.flatnonzero(off_diagonal.max(axis=1) > np.diag(P) + 1e-9)]


def class_conditional(noise_type):
    """make() of a class-conditional type: the SLN release's label file where the scripts
    read one (--noise_source release) and the release shipped it, else the GLS release's draw.
    A rate at which a wrong label outnumbers the true one is warned of and marked in
    noise.json (provenance's wrong_label_majority: those classes)."""
    def make(data, cfg):
        labels, provenance = draw(data, cfg)
        wrong = [] if noise_type == "clean" else majority_wrong_classes(noise_type, cfg.noise_rate,
                                                                         data.num_classes)
        if wrong:
            warn(f"--noise_type {noise_type} --noise_rate {cfg.noise_rate:g}: in {len(wrong)} of "
                 f"{data.num_classes} classes a wrong label is now more likely than the true one, so "
                 "the labels no longer say which class is right (noise.json marks it as "
                 "wrong_label_majority)")
            provenance = {**provenance, "wrong_label_majority": wrong}
        return labels, provenance

    def draw(data, cfg):
        if cfg.noise_source == "release" and noise_type != "clean":
            path = sln_release_file(data.name, noise_type, cfg.noise_rate, cfg.data_root,
                                    "--noise_source generate")
            if path is not None:
                labels = noisy_labels_from_file(path, data.train_labels, data.num_classes)
                return labels, file_provenance(path, SLN_FILES.get((data.name, noise_type, float(cfg.noise_rate))))
        labels = make_noisy_labels(data.train_labels, noise_type, cfg.noise_rate, data.num_classes, cfg.noise_seed)
        return labels, generated(cfg, "noisify (the GLS release's multinomial draw)")
    return make


def classes_in(*counts):
    """check(): the type is defined for data sets with these class counts only."""
    def check(spec, cfg):
        if spec.num_classes not in counts:
            raise UserError(f"{cfg.noise_type} noise is defined for {' or '.join(map(str, counts))} "
                            f"classes, and {spec.name} has {spec.num_classes}: use symmetric noise")
    return check


def dependent_labels(data, cfg):
    """IDN labels from a file: the SLN release's layout <data_root>/label_noisy/dependent<rate>.csv
    (downloaded when the release shipped it), or one made by python3 -m data.idn."""
    path = sln_release_file(data.name, "dependent", cfg.noise_rate, cfg.data_root,
                            "python3 -m data.idn (see its --help)")
    if path is None:
        path = sln_release_path(cfg.data_root, "dependent", cfg.noise_rate)
        raise UserError(
            f"dependent (IDN) noise reads its labels from a file and {path} does not exist. "
            "Pass --noise_file PATH, or make the file from a network trained on clean labels:\n"
            f"  python3 main_warmup.py --dataset {cfg.dataset} --noise_type clean --record_train_probs "
            f"--data_root {cfg.data_root}\n"
            f"  python3 -m data.idn --run RUN_DIR --noise_rate {cfg.noise_rate} "
            f"--data_root {cfg.data_root} --out {path}")
    labels = noisy_labels_from_file(path, data.train_labels, data.num_classes)
    return labels, file_provenance(path, SLN_FILES.get((data.name, "dependent", float(cfg.noise_rate))))


def instance_labels(data, cfg):
    labels = make_instance_noise(data.train_images, data.train_labels, cfg.noise_rate,
                                 data.num_classes, data.mean, data.std, cfg.noise_seed)
    return labels, generated(cfg, "part-dependent instance noise")


def open_set_labels(data, cfg):
    add_open_set(data, cfg)
    return data.train_labels.copy(), generated(cfg, "open-set image replacement")


def open_set_true_labels(data):
    """-1 (no CIFAR-10 class) for the images that open-set noise replaced."""
    true = np.array(data.train_labels, dtype=np.int64)
    true[data.noise_arrays.get("open_set_index", [])] = -1
    return true


def cifar10_only(spec, cfg):
    if spec.name != "cifar10":
        raise UserError(f"openset noise is defined for cifar10 (CIFAR-100 images under CIFAR-10 "
                        f"labels), not {spec.name}; choose another noise type")


NOISE_TYPES = [
    NoiseType("clean", "no noise: the data set's labels", class_conditional("clean"), uses_rate=False,
              matrix=model_matrix("clean")),
    NoiseType("symmetric", "each label moves with prob r to one of the other classes, uniformly",
              class_conditional("symmetric"), aliases=("sym",), matrix=model_matrix("symmetric"),
              files=class_conditional_files("symmetric")),
    NoiseType("pairflip", "each class flips with prob r to its partner (9<->1, 2<->0, 4<->7, 3<->5, 6<->8)",
              class_conditional("pairflip"), check=classes_in(10), matrix=model_matrix("pairflip"),
              files=class_conditional_files("pairflip")),
    NoiseType("asym", "CIFAR-10: truck->automobile, bird->airplane, deer->horse, cat<->dog with prob r; "
              "CIFAR-100: c -> c+1", class_conditional("asym"), check=classes_in(10, 100),
              matrix=model_matrix("asym"), files=class_conditional_files("asym")),
    NoiseType("dependent", "instance-dependent (IDN) labels from a file: the SLN release's, or "
              "python3 -m data.idn's", dependent_labels, files=dependent_files),
    NoiseType("instance", "part-dependent instance noise (Xia et al. 2020), seeded by --noise_seed",
              instance_labels),
    NoiseType("openset", "CIFAR-10: r of the images become CIFAR-100 images, labels kept",
              open_set_labels, accepts_noise_file=False, check=cifar10_only,
              true_labels=open_set_true_labels, files=open_set_files),
]
