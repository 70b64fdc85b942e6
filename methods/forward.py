"""Forward loss correction (Patrini et al., "Making Deep Neural Networks Robust to Label
Noise: a Loss Correction Approach", CVPR 2017), with the estimator of its official release
(giorgiop/loss-correction, loss.py and models.py).

The network's softmax p is pushed through the noise before the loss meets the noisy label:

    L = -log (T^T p)_y = -log sum_i p_i T[i, y],      T[i, j] = P(noisy j | true i)

computed as logsumexp_i(log p_i + log T[i, y]), exact where T has zeros. The release clips
p to [1e-7, 1 - 1e-7] before the product instead (loss.py, robust('forward')).

T is the run's own noise matrix (--transition true) or the release's anchor estimate from
another run's checkpoint of lowest noisy-validation loss (--transition estimate
--estimate_from RUN); methods/transition.py says how each is made and checked. T is the
method's state: a resumed run keeps the matrix it started with (last.pt's
method.transition).
"""
import torch
import torch.nn.functional as F

from methods.transition import TransitionMethod, empirical_transition, estimate_transition  # noqa: F401


def forward_loss(logits, labels, log_transition):
    """Batch mean of -log sum_i p_i T[i, y], given log T (K, K; -inf where T is 0), in fp32."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -torch.logsumexp(log_p + log_transition[:, labels].T, dim=1).mean()


class Forward(TransitionMethod):
    name = "forward"
    title = "Forward correction"
    summary = "forward loss correction: -log (T^T softmax)_y, T the true or an estimated noise matrix"
    selection = "val_loss"
    release_rule = "loss-correction models.py:94-98, ModelCheckpoint monitor='val_loss'"
    title = "Forward"

    def __init__(self, transition="true", estimate_from=None, anchor_percentile=None):
        super().__init__(transition, estimate_from, anchor_percentile)
        self.log_matrix = None

    def set_matrix(self, matrix):
        self.matrix = matrix
        self.log_matrix = torch.log(matrix)  # -inf where T is 0: logsumexp skips those terms

    def loss(self, logits, labels, indices):
        return forward_loss(logits, labels, self.log_matrix)
