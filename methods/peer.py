"""Peer loss (Liu & Guo, "Peer Loss Functions: Learning from Noisy Labels without Knowing
Noise Rates", ICML 2020), after its official release (gohsyi/PeerLoss, models/nn.py).

    L = CE(f(x_i), y_i) - alpha * CE(f(x_j1), y_j2)

averaged over the batch, where for every sample i the peer image x_j1 and the peer label
y_j2 are drawn from the training set independently of the batch and of each other
(models/nn.py, PeerBinaryClassifier.fit: two np.random.choice(m, batchsize_, replace=False)
per step, one for the images and one for the labels). The second term rewards the network
for NOT fitting a label that has nothing to do with the image, so that predicting what a
random label would be (the label prior) earns nothing. alpha 0 is cross-entropy (the knob's
baseline), computed as plain cross-entropy, with no peer draw and no second forward pass.

The release is binary (UCI data sets, BCE-with-logits on a one-output network, Adam); here
the loss is cross-entropy over the classes, the same expression multi-class. The peer batch
has the size of the training batch (the release's --batchsize-peer, its README's example
equal to --batchsize); its images get the training augmentation and go through the network
in a forward pass of their own (PeerBinaryClassifier.train: self.model(X_)). alpha is
constant through training, as released (the release picks it by a grid search on
validation accuracy over run_nn.py's ALPHAS, -5 and 0.4 to 5; its README's example uses
alpha 1, the default here). The peer term is unbounded below: with a large alpha and lr the
loss can run away (divergence_hint).
"""
import torch.nn.functional as F

from core.args import finite_float
from methods import Method
from methods._peer import check_in_memory, log_softmax_at, peer_step


def peer_loss(logits, labels, peer_logits, peer_labels, alpha):
    """Batch mean of CE(logits, labels) - alpha * CE(peer_logits, peer_labels), in fp32."""
    return -log_softmax_at(logits, labels).mean() + alpha * log_softmax_at(peer_logits, peer_labels).mean()


class Peer(Method):
    name = "peer"
    title = "Peer loss"
    summary = "peer loss: CE on the batch minus alpha times CE on random image / random label pairs"
    knobs = {"alpha": 0.0}

    def __init__(self, alpha):
        self.alpha = alpha
        self.tag = "ce" if alpha == 0 else f"peer-a{alpha:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--alpha", type=finite_float, default=defaults.get("alpha", 1.0),
                           help="weight of the peer term (0: plain cross-entropy; the release's "
                                "grid also tries -5)")

    @classmethod
    def check_flags(cls, cfg):
        cfg.alpha += 0.0  # -0 is 0: one folder for one run (negative values are the release's too)
        if cfg.alpha > 0:
            check_in_memory(cfg, cls.name)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.alpha)

    @property
    def label(self):
        return "CE" if self.alpha == 0 else f"Peer alpha={self.alpha:g}"

    def is_ce(self):
        return self.alpha == 0

    def divergence_hint(self, script):
        if self.alpha > 0:
            return ("The peer term -alpha * CE is unbounded below: the network can drive down the "
                    "probability of random labels without end. Use a smaller --alpha (the release "
                    "picks it from -5, 0.4 .. 5 by validation accuracy) or a lower --lr.")
        return ""

    def loss(self, logits, labels, indices):
        return F.cross_entropy(logits.float(), labels)

    def train_step(self, run, x, y, idx):
        if self.alpha == 0:
            return super().train_step(run, x, y, idx)
        return peer_step(run, x, y, lambda z, t, pz, pt: peer_loss(z, t, pz, pt, self.alpha), disjoint=False)
