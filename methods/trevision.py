"""T-Revision (Xia et al., "Are Anchor Points Really Indispensable in Label-Noise
Learning?", NeurIPS 2019), as its release runs it (xiaoboxia/T-Revision, main.py, loss.py).

The release has three stages; a run of this method is the second and third, one after
the other, and the first is another run (--estimate_from), as for forward correction:
1. estimate T: cross-entropy, then the anchor estimate (methods/transition.py) from the
   epoch of best noisy-validation accuracy, whose weights the next stage starts from;
2. the first n_epoch - revision_epochs epochs: importance reweighting through the fixed T,
       L = mean_i beta_i CE(z_i, y_i),   beta_i = p_y / (T^T p)_y   (beta detached)
   with the run's optimiser and lr plan; the model of best noisy-validation accuracy of
   the T-corrected prediction argmax(T^T p) is kept;
3. the last revision_epochs epochs: from that model, with a revision dT (a K x K
   parameter, starting at 0) learnt together with the network by Adam (--lr_revision, the
   run's --weight_decay), on
       L = mean_i beta_i CE(z_i, y_i),   beta_i = p_y / ((T + dT)^T p)_y   (with its gradient)
   The release's loss adds dT once more for every sample of the batch (sample i sees
   T + (i + 1) dT: loss.py reweighting_revision_loss reassigns T inside its loop); that is
   the default (--revision_loss release); --revision_loss paper gives every sample T + dT.

T, dT, the Adam state and the kept model are the method's state (last.pt): resume is exact.
"""
import argparse

import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from errors import UserError
from methods.transition import TransitionMethod, empirical_transition


def noisy_class_probability(probs, labels, transition, delta=None, times=None):
    """((T + times_i dT)^T p_i)_{y_i} = sum_k p_ik (T[k, y_i] + times_i dT[k, y_i]) per sample."""
    column = transition[:, labels].T
    if delta is not None:
        column = column + times[:, None] * delta[:, labels].T
    return (probs * column).sum(dim=1)


def reweight_loss(logits, labels, transition):
    """The importance-reweighted cross-entropy (loss.py reweight_loss): beta = p_y / (T^T p)_y,
    detached (the release wraps it in a new Variable)."""
    logits = logits.float()
    probs = F.softmax(logits, dim=1)
    beta = probs.gather(1, labels[:, None]).squeeze(1) / noisy_class_probability(probs, labels, transition)
    return (beta.detach() * F.cross_entropy(logits, labels, reduction="none")).mean()


def revision_loss(logits, labels, transition, delta, accumulate=True):
    """The revision stage's loss (loss.py reweighting_revision_loss): beta = p_y /
    ((T + dT)^T p)_y with its gradient, which is dT's only path to the loss; `accumulate`:
    sample i of the batch sees T + (i + 1) dT, as the release's loop computes it."""
    logits = logits.float()
    probs = F.softmax(logits, dim=1)
    n = len(labels)
    times = (torch.arange(1, n + 1, device=logits.device, dtype=logits.dtype) if accumulate
             else torch.ones(n, device=logits.device, dtype=logits.dtype))
    beta = probs.gather(1, labels[:, None]).squeeze(1) / noisy_class_probability(probs, labels, transition,
                                                                                delta, times)
    return (beta * F.cross_entropy(logits, labels, reduction="none")).mean()


class TRevision(TransitionMethod):
    name = "trevision"
    summary = ("T-Revision: importance reweighting through T, then T + dT revised with the network "
               "(Adam) in the last --revision_epochs")
    selection = "val_acc"
    release_rule = "T-Revision main.py:205-212, the estimation epoch of best validation accuracy"

    def __init__(self, transition="true", estimate_from=None, anchor_percentile=None, revision_epochs=1,
                 lr_revision=5e-7, revision_loss="release", n_epoch=2, weight_decay=1e-4, estimate_augment=True):
        super().__init__(transition, estimate_from, anchor_percentile)
        self.estimate_augmented = estimate_augment
        self.revision_epochs, self.lr_revision, self.revision_loss = revision_epochs, lr_revision, revision_loss
        self.switch, self.weight_decay = n_epoch - revision_epochs, weight_decay
        self.delta = self.optimizer = self.best_weights = self.true_matrix = self.run = None
        self.best_val, self.epoch = -1.0, 0

    @classmethod
    def add_flags(cls, group, defaults):
        super().add_flags(group, defaults)
        group.add_argument("--revision_epochs", type=integer, default=defaults.get("revision_epochs"),
                           help="the last epochs, which revise T (default: half of --n_epoch, as "
                                "released: 200 of 200 + 200)")
        group.add_argument("--lr_revision", type=finite_float, default=defaults.get("lr_revision", 5e-7),
                           help="Adam's lr in the revision epochs (5e-7 as released)")
        group.add_argument("--estimate_augment", action=argparse.BooleanOptionalAction,
                           default=defaults.get("estimate_augment", True),
                           help="with --transition estimate: predict the training images with the "
                                "training augmentation (a random crop and flip), as the release does")
        group.add_argument("--revision_loss", choices=["release", "paper"],
                           default=defaults.get("revision_loss", "release"),
                           help="release: sample i of a batch sees T + (i + 1) dT, as the released "
                                "loss computes it; paper: every sample sees T + dT")

    @classmethod
    def check_flags(cls, cfg):
        super().check_flags(cfg)
        from data import dataset_spec

        if cfg.revision_epochs is None:
            cfg.revision_epochs = cfg.n_epoch // 2
        if not 0 <= cfg.revision_epochs < cfg.n_epoch:
            raise UserError(f"--revision_epochs {cfg.revision_epochs} must be in [0, --n_epoch {cfg.n_epoch}): "
                            "at least one epoch reweights before T is revised")
        if not cfg.lr_revision > 0:
            raise UserError(f"--lr_revision {cfg.lr_revision} must be positive (5e-7 as released)")
        if not (cfg.val_fraction > 0 or dataset_spec(cfg.dataset).has_val):
            raise UserError("trevision selects the model it revises by noisy-validation accuracy, as "
                            "released: add --val_fraction 0.1 (10% held out, as the release does)")
        if cfg.precision == "fp16":
            raise UserError("trevision's revision steps take no fp16 gradient scaler: use --precision "
                            "bf16 or fp32")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.transition, cfg.estimate_from, cfg.anchor_percentile, cfg.revision_epochs,
                   cfg.lr_revision, cfg.revision_loss, cfg.n_epoch, cfg.weight_decay, cfg.estimate_augment)

    @property
    def label(self):
        return "T-Revision (true T)" if self.transition == "true" else "T-Revision"

    def setup(self, run):
        super().setup(run)
        self.run = run
        k = run.num_classes
        if run.true_labels is not None:
            self.true_matrix = torch.as_tensor(
                empirical_transition(run.true_labels.cpu().numpy(), run.noisy_labels.cpu().numpy(), k),
                dtype=torch.float32, device=run.device)
        self.delta = torch.zeros(k, k, device=run.device, requires_grad=True)
        # main.py:85: one Adam over the network and the revision (the model holds dT)
        self.optimizer = torch.optim.Adam(list(run.model.parameters()) + [self.delta], lr=self.lr_revision,
                                          weight_decay=self.weight_decay)

    def estimated(self, run, estimator):
        run.model.load_state_dict(estimator.state_dict())  # main.py:224-226

    def revising(self):
        return self.epoch >= self.switch

    def start_epoch(self, epoch, run):
        self.epoch = epoch
        if epoch == self.switch and self.best_weights is not None:  # main.py:294-300
            run.model.load_state_dict(self.best_weights)
            self.best_weights = None

    def loss(self, logits, labels, indices):
        return reweight_loss(logits, labels, self.matrix)

    def train_step(self, run, x, y, idx):
        if not self.revising():
            return super().train_step(run, x, y, idx)
        with run.autocast():
            logits = run.forward(x)
        loss = revision_loss(logits, y, self.matrix, self.delta, self.revision_loss == "release")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().float(), logits.detach()

    def revised(self):
        return (self.matrix + self.delta).detach()

    @torch.no_grad()
    def corrected_val_accuracy(self, transition):
        """Accuracy (%) of argmax(T^T p) against the noisy validation labels (main.py:258-273)."""
        run, model = self.run, self.run.model
        was_training = model.training
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=run.device)
        n = 0
        for x, y, _ in run.eval_splits["val"]:
            with run.autocast():
                probs = F.softmax(model(x).float(), dim=1)
            correct += ((probs @ transition).argmax(dim=1) == y).sum()
            n += len(y)
        model.train(was_training)
        return 100.0 * correct.item() / max(n, 1)

    def epoch_columns(self):
        transition = self.revised() if self.revising() else self.matrix
        columns = {"corrected_val_acc": self.corrected_val_accuracy(transition),
                   "revision_abs_sum": self.delta.detach().abs().sum().item()}
        if self.true_matrix is not None:  # main.py:348: the estimation error against the true T
            columns["T_error"] = ((transition - self.true_matrix).abs().sum() / self.true_matrix.abs().sum()).item()
        if not self.revising() and columns["corrected_val_acc"] > self.best_val:
            self.best_val = columns["corrected_val_acc"]
            self.best_weights = {k: v.detach().clone() for k, v in self.run.model.state_dict().items()}
        return columns

    def state_dict(self):
        return {"transition": self.matrix, "delta": self.delta.detach(), "optimizer": self.optimizer.state_dict(),
                "best_val": self.best_val, "best_weights": self.best_weights}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.delta.copy_(state["delta"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_val = state["best_val"]
        self.best_weights = state["best_weights"]
