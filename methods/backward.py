"""Backward loss correction (Patrini et al., "Making Deep Neural Networks Robust to Label
Noise: a Loss Correction Approach", CVPR 2017), as its release computes it
(giorgiop/loss-correction, loss.py, robust('backward')):

    L = -sum_j (T^-1)[y, j] log p_j,      p = clip(softmax(z), 1e-7, 1 - 1e-7)

the cross-entropy of every class weighted by row y of the inverse noise matrix: unbiased
for the clean loss in expectation over the noise. T^-1 has negative entries, so without
the clip (Keras' epsilon, kept here) the loss would be unbounded below.

T comes as forward's does (methods/transition.py): the run's own noise matrix
(--transition true) or the release's anchor estimate from another run's checkpoint of
lowest noisy-validation loss (--transition estimate --estimate_from RUN). It must be
invertible. T is the method's state (last.pt's method.transition); its inverse is
recomputed from it.
"""
import numpy as np
import torch
import torch.nn.functional as F

from errors import UserError
from methods.transition import ESTIMATE_HELP, TransitionMethod

CLIP = 1e-7  # Keras' K.epsilon(), loss.py:19-20
MAX_CONDITION = 1e8  # a matrix this ill-conditioned has no useful inverse in fp32


def backward_loss(logits, labels, inverse):
    """Batch mean of -sum_j inverse[y, j] log clip(p_j), in fp32."""
    p = F.softmax(logits.float(), dim=1).clamp(CLIP, 1.0 - CLIP)
    return -(inverse[labels] * torch.log(p)).sum(dim=1).mean()


class Backward(TransitionMethod):
    name = "backward"
    summary = "backward loss correction: -sum_j (T^-1)[y, j] log p_j, T the true or an estimated noise matrix"
    selection = "val_loss"
    release_rule = "loss-correction models.py:94-98, ModelCheckpoint monitor='val_loss'"
    title = "Backward"

    def __init__(self, transition="true", estimate_from=None, anchor_percentile=None):
        super().__init__(transition, estimate_from, anchor_percentile)
        self.inverse = None

    def set_matrix(self, matrix):
        self.matrix = matrix
        if not torch.isfinite(matrix).all():  # a resumed run's placeholder, until last.pt's T
            self.inverse = matrix
            return
        condition = np.linalg.cond(matrix.double().cpu().numpy())
        if not np.isfinite(condition) or condition > MAX_CONDITION:
            raise UserError(f"the {'estimated' if self.transition == 'estimate' else 'counted'} noise matrix "
                            f"has no usable inverse (condition number {condition:.3g}): backward correction "
                            "needs an invertible T; use --method forward, or estimate T from another run "
                            f"({ESTIMATE_HELP})")
        self.inverse = torch.linalg.inv(matrix.double()).float()

    def loss(self, logits, labels, indices):
        return backward_loss(logits, labels, self.inverse)
