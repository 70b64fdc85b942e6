"""Forward loss correction (Patrini et al., "Making Deep Neural Networks Robust to Label
Noise: a Loss Correction Approach", CVPR 2017), with the estimator of its official release
(giorgiop/loss-correction, loss.py and models.py).

The network's softmax p is pushed through the noise before the loss meets the noisy label:

    L = -log (T^T p)_y = -log sum_i p_i T[i, y],      T[i, j] = P(noisy j | true i)

computed as logsumexp_i(log p_i + log T[i, y]), exact where T has zeros. The release clips
p to [1e-7, 1 - 1e-7] before the product instead (loss.py, robust('forward')).

T comes from one of two places (--transition):
- true: the run's own noise, counted on its training rows: T[i, j] = #(true i, noisy j) /
  #(true i), the empirical matrix of the labels actually drawn (not the noise model's
  declared one), so that it holds for any synthetic noise type (instance-dependent ones
  included, averaged per class). Images of no class (open-set) are left out; a class with
  no image keeps its own label. Real or human noise has no such matrix to be given.
- estimate: the release's estimator (models.py, NoiseEstimator) on the softmax of another
  run's best checkpoint (best.pt) over this run's training images, without augmentation:
  for each class i the anchor is the training image with the largest p(i|x) below the
  --anchor_percentile percentile of p(i|.) ('higher' interpolation; the images at or above
  it are taken for outliers), and row i of T is its softmax, row-normalised. The release
  filters at 97 on every data set but CIFAR-100, where it takes the plain argmax
  (experiment.py): here 100 means that argmax. The release zeroes the filtered entries in
  the probability matrix itself, so that a later row may read a zeroed entry; here every
  row reads the softmax as predicted. The run estimated from must be trained on the same
  noisy labels, data set and model (the release uses its cross-entropy run).
T is the method's state: a resumed run keeps the matrix it started with (last.pt's
method.transition).
"""
import copy
import os

import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float
from core.files import load_checkpoint
from data import noise_type
from errors import UserError
from methods import Method

ESTIMATE_HELP = "train.py --method gls --smooth_rate 0 (cross-entropy) on the same labels"


def forward_loss(logits, labels, log_transition):
    """Batch mean of -log sum_i p_i T[i, y], given log T (K, K; -inf where T is 0), in fp32."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -torch.logsumexp(log_p + log_transition[:, labels].T, dim=1).mean()


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
    """The release's anchor estimate of T from softmax rows `probs` (N, K); see the module's
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


class Forward(Method):
    name = "forward"
    title = "Forward correction"
    summary = "forward loss correction: -log (T^T softmax)_y, T the true or an estimated noise matrix"

    def __init__(self, transition="true", estimate_from=None, anchor_percentile=None):
        self.transition, self.estimate_from, self.anchor_percentile = transition, estimate_from, anchor_percentile
        self.tag = "forward-true" if transition == "true" else f"forward-est-p{anchor_percentile:g}"
        self.matrix = self.log_matrix = None

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--transition", choices=["true", "estimate"], default=defaults.get("transition", "true"),
                           help="true: the run's own noise matrix (synthetic noise); estimate: the "
                                "release's anchor estimate from another run (--estimate_from)")
        group.add_argument("--estimate_from", default=defaults.get("estimate_from"), metavar="RUN",
                           help="with --transition estimate: the run folder whose best.pt predicts the "
                                f"training images ({ESTIMATE_HELP})")
        group.add_argument("--anchor_percentile", type=finite_float, default=defaults.get("anchor_percentile"),
                           help="with --transition estimate: the anchor of class i is the image with "
                                "the largest p(i|x) below this percentile (default: 97, as released; "
                                "100 on cifar100, where the release takes the argmax)")

    @classmethod
    def check_flags(cls, cfg):
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
            raise UserError("--transition estimate needs --estimate_from RUN: the run folder whose best "
                            f"checkpoint predicts the training images ({ESTIMATE_HELP})")
        if not os.path.isfile(os.path.join(cfg.estimate_from, "best.pt")):
            what = "is no folder" if not os.path.isdir(cfg.estimate_from) else "holds no best.pt"
            raise UserError(f"--estimate_from {cfg.estimate_from} {what}: pass the folder of a run that "
                            f"has trained at least one epoch ({ESTIMATE_HELP})")
        if cfg.anchor_percentile is None:
            cfg.anchor_percentile = 100.0 if cfg.dataset == "cifar100" else 97.0
        if not 0.0 < cfg.anchor_percentile <= 100.0:
            raise UserError(f"--anchor_percentile {cfg.anchor_percentile} is outside (0, 100] "
                            "(97 as released; 100: the plain argmax)")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.transition, cfg.estimate_from, cfg.anchor_percentile)

    @property
    def label(self):
        return "Forward (true T)" if self.transition == "true" else "Forward (estimated T)"

    def setup(self, run):
        if self.transition == "true":
            matrix = empirical_transition(run.true_labels.cpu().numpy(), run.noisy_labels.cpu().numpy(),
                                          run.num_classes)
        else:
            matrix = estimate_transition(self.predict_with_estimator(run), self.anchor_percentile)
        self.set_matrix(torch.as_tensor(matrix, dtype=torch.float32, device=run.device))

    def predict_with_estimator(self, run):
        """Softmax (N, K) of --estimate_from's best.pt on this run's training images, after
        checking that it was trained on the same labels, data set and model."""
        path = os.path.join(self.estimate_from, "best.pt")
        fix = f"pass another --estimate_from ({ESTIMATE_HELP})"
        ckpt = load_checkpoint(path, fix=fix)
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
        logits, _ = run.predict(model)
        return torch.softmax(logits.double(), dim=1).cpu().numpy()

    def set_matrix(self, matrix):
        self.matrix = matrix
        self.log_matrix = torch.log(matrix)  # -inf where T is 0: logsumexp skips those terms

    def loss(self, logits, labels, indices):
        return forward_loss(logits, labels, self.log_matrix)

    def state_dict(self):
        return {"transition": self.matrix}

    def load_state_dict(self, state):
        self.set_matrix(state["transition"].to(self.matrix.device))
