"""Noise transition matrices, shared by the loss-correction methods (forward, backward,
trevision): where T comes from, and the checks on the run it is estimated from.

T[i, j] = P(noisy j | true i). It comes from one of two places (--transition):
- true: the run's own noise, counted on its training rows: T[i, j] = #(true i, noisy j) /
  #(true i), the empirical matrix of the labels actually drawn (not the noise model's
  declared one), so that it holds for any synthetic noise type (instance-dependent ones
  included, averaged per class). Images of no class (open-set) are left out; a class with
  no image keeps its own label. Real or human noise has no such matrix to be given.
- estimate: the anchor estimator of the loss-correction release (giorgiop/loss-correction,
  models.py, NoiseEstimator; T-Revision's tools.fit is the same rule) on the softmax of
  another run's checkpoint over this run's training images (without augmentation, or with
  it where the release augments them: trevision's --estimate_augment): for
  each class i the anchor is the training image with the largest p(i|x) below the
  --anchor_percentile percentile of p(i|.) ('higher' interpolation; the images at or
  above it are taken for outliers), and row i of T is its softmax, row-normalised. The
  releases filter at 97 on every data set but CIFAR-100, where they take the plain argmax:
  here 100 means that argmax. The releases zero the filtered entries in the probability
  matrix itself, so that a later row may read a zeroed entry; here every row reads the
  softmax as predicted.

The checkpoint estimated from is the one each release selects, on a noisy validation
split of the run estimated from (it needs --val_fraction): forward and backward take the
model of lowest noisy-validation loss (best_val_loss.pt; loss-correction models.py,
ModelCheckpoint monitor='val_loss'), trevision the model of best noisy-validation
accuracy (best.pt of a run with a validation split; T-Revision main.py). That run must
be trained on the same noisy labels, data set, model and split.

T is the method's state: a resumed run takes the matrix it started with from its own
last.pt and reads nothing outside its folder. The checkpoint estimated from is an input
of the run (inputs()): its sha1 is part of the run's made_by, so a run whose input has
changed since is stale, and one whose input has moved away is kept as it is.
"""
import copy
import os

import numpy as np
import torch

from core.args import finite_float
from core.files import load_checkpoint
from data import noise_type
from errors import UserError
from methods import Method

ESTIMATE_HELP = "train.py --method gls --smooth_rate 0 --val_fraction 0.1 (cross-entropy) on the same labels"
# The checkpoint of --estimate_from each selection rule reads, and what the engine records
# in it as `selected_by`.
SELECTED_FILE = {"val_loss": "best_val_loss.pt", "val_acc": "best.pt"}


def empirical_transition(true_labels, noisy_labels, num_classes):
    """T[i, j] = #(true i, noisy j) / #(true i) over the samples of a class (true >= 0); the
    row of a class without samples is the identity's."""
    true, noisy = np.asarray(true_labels), np.asarray(noisy_labels)
    known = true >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true[known], noisy[known]), 1)
    empty = counts.sum(axis=1) == 0
    counts[empty] = np.eye(num_classes)[empty]
    return counts / counts.sum(axis=1, keepdims=True)


def estimate_transition(probs, percentile=97.0):
    """The releases' anchor estimate of T from softmax rows `probs` (N, K); see the module's
    docstring. percentile 100: the plain argmax of each column."""
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    T = np.empty((k, k))
    for i in range(k):
        column = probs[:, i]
        if percentile < 100:
            threshold = np.percentile(column, percentile, method="higher")
            column = np.where(column >= threshold, 0.0, column)
        T[i] = probs[np.argmax(column)]
    return T / T.sum(axis=1, keepdims=True)


class TransitionMethod(Method):
    """A method trained through a noise transition matrix T (self.matrix, on the device,
    after setup). Subclasses set `selection` (which checkpoint of --estimate_from the
    release estimates from: "val_loss" or "val_acc") and `release_rule` (its citation)."""

    selection = "val_loss"
    release_rule = ""
    title = ""  # the label's name: "Forward (true T)", "Forward (estimated T)"
    estimate_augmented = False  # predict the training images for the estimate with augmentation

    def __init__(self, transition="true", estimate_from=None, anchor_percentile=None):
        self.transition, self.estimate_from, self.anchor_percentile = transition, estimate_from, anchor_percentile
        self.tag = f"{self.name}-{self.transition_tag()}"
        self.matrix = None

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.transition, cfg.estimate_from, cfg.anchor_percentile)

    @property
    def label(self):
        return f"{self.title} ({'true' if self.transition == 'true' else 'estimated'} T)"

    def transition_tag(self):
        return "true" if self.transition == "true" else f"est-p{self.anchor_percentile:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--transition", choices=["true", "estimate"], default=defaults.get("transition", "true"),
                           help="true: the run's own noise matrix (synthetic noise); estimate: the "
                                "release's anchor estimate from another run (--estimate_from)")
        group.add_argument("--estimate_from", default=defaults.get("estimate_from"), metavar="RUN",
                           help=f"with --transition estimate: the run folder whose {SELECTED_FILE[cls.selection]} "
                                f"predicts the training images ({ESTIMATE_HELP})")
        group.add_argument("--anchor_percentile", type=finite_float, default=defaults.get("anchor_percentile"),
                           help="with --transition estimate: the anchor of class i is the image with "
                                "the largest p(i|x) below this percentile (default: 97, as released; "
                                "100 on cifar100, where the release takes the argmax)")

    @classmethod
    def check_flags(cls, cfg):
        """The flags alone: whether --estimate_from's folder is there is checked when the run
        has to read it (a fresh start), so that a finished or interrupted run needs nothing
        but its own folder."""
        if cfg.transition == "true":
            noise = noise_type(cfg.noise_type)
            if "synthetic" not in noise.group:
                raise UserError(f"--transition true needs the matrix of synthetic noise, and noise type "
                                f"{noise.name} is {noise.group}: estimate it instead with --transition "
                                f"estimate --estimate_from RUN, RUN a run folder of {ESTIMATE_HELP}")
            for flag in ("estimate_from", "anchor_percentile"):
                if getattr(cfg, flag) is not None:
                    raise UserError(f"--{flag} applies to --transition estimate: drop it, or add "
                                    "--transition estimate")
            return
        if cfg.estimate_from is None:
            raise UserError(f"--transition estimate needs --estimate_from RUN: the run folder whose "
                            f"{SELECTED_FILE[cls.selection]} predicts the training images ({ESTIMATE_HELP})")
        if cfg.anchor_percentile is None:
            cfg.anchor_percentile = 100.0 if cfg.dataset == "cifar100" else 97.0
        if not 0.0 < cfg.anchor_percentile <= 100.0:
            raise UserError(f"--anchor_percentile {cfg.anchor_percentile} is outside (0, 100] "
                            "(97 as released; 100: the plain argmax)")

    # ------------------------------------------------------------ the outside input

    def estimator_path(self):
        return os.path.join(self.estimate_from, SELECTED_FILE[self.selection])

    def inputs(self):
        return {"--estimate_from": self.estimator_path()} if self.transition == "estimate" else {}

    def load_estimator(self, run):
        """A copy of the run's model with --estimate_from's selected checkpoint loaded, after
        checking that the checkpoint is there, was selected by the release's rule, and was
        trained on the same labels, data set, model and split."""
        fix = f"pass another --estimate_from ({ESTIMATE_HELP})"
        path = self.estimator_path()
        if not os.path.isdir(self.estimate_from):
            raise UserError(f"--estimate_from {self.estimate_from} is no folder: {fix}")
        if not os.path.isfile(path):
            if not os.path.isfile(os.path.join(self.estimate_from, "best.pt")):
                raise UserError(f"--estimate_from {self.estimate_from} holds no best.pt: pass the folder "
                                f"of a run that has trained at least one epoch ({ESTIMATE_HELP})")
            raise UserError(self.selection_message(path, "no validation split"))
        ckpt = load_checkpoint(path, fix=fix)
        if ckpt.get("selected_by") != self.selection:
            raise UserError(self.selection_message(path, f"its checkpoint selected by {ckpt.get('selected_by')}"))
        theirs = ckpt.get("identity") if isinstance(ckpt.get("identity"), dict) else {}
        differ = [f"{k} {theirs.get(k)!r} there, {v!r} here" for k, v in run.identity.items()
                  if k in ("dataset", "model", "width", "val_fraction", "labels_sha1") and theirs.get(k) != v]
        if differ:
            raise UserError(f"{path} was trained on other labels, data or model than this run "
                            f"({'; '.join(differ)}): {fix}")
        model = copy.deepcopy(run.model)
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise UserError(f"{path} does not fit this model ({str(exc).splitlines()[0]}): {fix}") from None
        return model

    def selection_message(self, path, what):
        rule = {"val_loss": "lowest", "val_acc": "best"}[self.selection]
        metric = {"val_loss": "loss", "val_acc": "accuracy"}[self.selection]
        return (f"{path}: the release estimates T from the model of {rule} noisy-validation {metric} "
                f"({self.release_rule}), and --estimate_from {self.estimate_from} has {what}: train it "
                "with --val_fraction 0.1 (10% of the noisy training labels held out, as released), "
                "and this run with the same --val_fraction")

    # ------------------------------------------------------------ training

    def setup(self, run):
        """T of a fresh start; a resumed run gets the one it started with from last.pt
        (load_state_dict) and reads nothing outside its folder."""
        k = run.num_classes
        if run.resuming:
            self.set_matrix(torch.full((k, k), float("nan"), device=run.device))
            return
        if self.transition == "true":
            matrix = empirical_transition(run.true_labels.cpu().numpy(), run.noisy_labels.cpu().numpy(), k)
        else:
            estimator = self.load_estimator(run)
            logits, _ = run.predict(estimator, augment=self.estimate_augmented)
            probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
            matrix = estimate_transition(probs, self.anchor_percentile)
            self.estimated(run, estimator)
        self.set_matrix(torch.as_tensor(matrix, dtype=torch.float32, device=run.device))

    def estimated(self, run, estimator):
        """Called on a fresh start with the model T was estimated from."""

    def set_matrix(self, matrix):
        self.matrix = matrix

    def state_dict(self):
        return {"transition": self.matrix}

    def load_state_dict(self, state):
        self.set_matrix(state["transition"].to(self.matrix.device))
