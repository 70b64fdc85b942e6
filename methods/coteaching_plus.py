"""Co-teaching+ (Yu et al., "How does Disagreement Help Generalization against Label
Corruption?", ICML 2019), as its official release trains it (xingruiyu/coteaching_plus,
main.py and loss.py).

Two networks, as in Co-teaching (methods/coteaching.py, whose flags, forget-rate schedule
and small-loss selection this method shares). From epoch --init_epoch on, each batch is
first cut down to the samples on which the two networks' predicted classes DISAGREE; among
those each network keeps the fraction R(t) with its smallest cross-entropy, and its peer
trains on that selection. Before --init_epoch the step is plain Co-teaching on the whole
batch. The disagreement keeps the two networks from converging to one another, which would
make Co-teaching the self-training of a single network.

The release's rules, kept by default (coteaching_plus_losses):
- among n disagreement samples int((1 - forget_rate) * n) are kept, all n where that is 0;
  each network's loss is the mean over the samples its peer kept;
- the cross-entropy of the disagreement step, selection included, is taken of the softmax
  probabilities, not of the logits (the release passes softmax outputs to a cross-entropy
  that applies its own softmax): --no-ce_on_softmax takes it of the logits;
- a batch without any disagreement trains each network on the mean cross-entropy of the
  whole batch while the release's step counter `epoch * i` (its epoch index times the batch
  index) is below 5000, and on a zero loss afterwards.
The release's epoch index t is this engine's epoch e + 1 (as in Co-teaching): the step is
plain Co-teaching while e + 1 < init_epoch.

Columns: those of Co-teaching (kept_fraction: the samples each network selected for its
peer / the samples seen, one number as both keep as many; kept_clean_fraction and _peer:
the truly clean share of each network's selection), and
disagree_fraction: the share of samples on which the two networks disagreed.
"""
import argparse

import torch
import torch.nn.functional as F

from core.args import integer
from errors import UserError
from methods.coteaching import CoTeaching, coteaching_losses, small_loss_mask

# The release's init_epoch by data set (main.py:73, :94); others take CIFAR-10's.
INIT_EPOCH = {"cifar10": 20, "cifar100": 5}
EARLY_STEPS = 5000  # loss.py:60: a batch without disagreement still trains while epoch * i < 5000


def keep_counts(forget_rate, batch):
    """(batch + 1,) int64: how many of n disagreement samples are kept, n = 0 .. batch: the
    release's int((1 - forget_rate) * n), or all n where that is 0 (loss.py:19-27)."""
    return torch.tensor([int((1.0 - forget_rate) * n) or n for n in range(batch + 1)])


def coteaching_plus_losses(logits, peer_logits, labels, counts, ce_on_softmax=True, early=True):
    """(loss of the main network, loss of the peer, the main network's selection, the peer's,
    the disagreement mask): the release's loss_coteaching_plus. Each network trains on the
    other's selection; a batch without disagreement selects all or nothing (`early`).
    counts: keep_counts of the epoch's forget rate (on the device); early: the release's
    epoch * i < 5000. Masks and counts stay on the device (no host sync)."""
    disagree = logits.argmax(dim=1) != peer_logits.argmax(dim=1)
    inputs = [F.softmax(z.float(), dim=1) if ce_on_softmax else z.float() for z in (logits, peer_logits)]
    ce, peer_ce = (F.cross_entropy(z, labels, reduction="none") for z in inputs)
    n = disagree.sum()
    num_keep = torch.take(counts, n)  # a device index: no host sync
    keep, peer_keep = small_loss_mask(ce, num_keep, disagree), small_loss_mask(peer_ce, num_keep, disagree)
    divisor = num_keep.clamp(min=1)
    plus_loss = torch.where(peer_keep, ce, 0.0).sum() / divisor
    plus_peer_loss = torch.where(keep, peer_ce, 0.0).sum() / divisor
    weight = 1.0 if early else 0.0  # loss.py:60, :77-78: the whole batch, or nothing
    any_disagree = n > 0
    loss = torch.where(any_disagree, plus_loss, ce.mean() * weight)
    peer_loss = torch.where(any_disagree, plus_peer_loss, peer_ce.mean() * weight)
    everything = torch.full_like(disagree, bool(early))
    keep, peer_keep = (torch.where(any_disagree, k, everything) for k in (keep, peer_keep))
    return loss, peer_loss, keep, peer_keep, disagree


class CoTeachingPlus(CoTeaching):
    name = "coteaching_plus"
    title = "Co-teaching+"
    summary = "Co-teaching+: co-teaching on the samples where the two networks disagree"
    knobs = {"forget_rate": 0.0}

    def __init__(self, forget_rate, num_gradual=10, exponent=1.0, n_epoch=1, init_epoch=20,
                 ce_on_softmax=True):
        super().__init__(forget_rate, num_gradual, exponent, n_epoch)
        self.init_epoch, self.ce_on_softmax = init_epoch, ce_on_softmax
        self.tag = (f"coteachingplus-f{forget_rate:g}-t{num_gradual}-c{exponent:g}-i{init_epoch}"
                    + ("" if ce_on_softmax else "-logitce"))
        self.counts = {}

    @classmethod
    def add_flags(cls, group, defaults):
        super().add_flags(group, defaults)
        group.add_argument("--init_epoch", type=integer, default=defaults.get("init_epoch"),
                           help="the first epoch (1-based, as metrics.csv numbers them) of the "
                                "disagreement step; the epochs before it are plain co-teaching "
                                "(default: 20, 5 on cifar100, as released)")
        group.add_argument("--ce_on_softmax", action=argparse.BooleanOptionalAction,
                           default=defaults.get("ce_on_softmax", True),
                           help="the disagreement step's cross-entropy taken of the softmax "
                                "probabilities, as released (--no-ce_on_softmax: of the logits)")

    @classmethod
    def check_flags(cls, cfg):
        super().check_flags(cfg)
        if cfg.init_epoch is None:
            cfg.init_epoch = INIT_EPOCH.get(cfg.dataset, INIT_EPOCH["cifar10"])
        if cfg.init_epoch < 0:
            raise UserError(f"--init_epoch {cfg.init_epoch} must be >= 0 (0 or 1: the disagreement "
                            "step from the first epoch)")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.forget_rate, cfg.num_gradual, cfg.exponent, cfg.n_epoch, cfg.init_epoch,
                   cfg.ce_on_softmax)

    @property
    def label(self):
        return f"Co-teaching+ tau={self.forget_rate:g}"

    def start_epoch(self, epoch, run):
        self.rate = self.schedule[epoch]
        self.release_epoch, self.batch = epoch + 1, 0  # main.py:366, :232 (t and i)
        self.seen = 0
        # disagreeing, kept (main, peer), truly clean among the kept (main, peer)
        self.tally = torch.zeros(5, dtype=torch.int64, device=run.device)

    def keep_table(self, batch, device):
        key = (self.rate, batch)
        if key not in self.counts:
            self.counts[key] = keep_counts(self.rate, batch).to(device)
        return self.counts[key]

    def train_step(self, run, x, y, idx):
        with run.autocast():
            logits, peer_logits = run.forward(x), self.peer.forward(x)
        if self.release_epoch < self.init_epoch:  # main.py:251-252
            loss, peer_loss, keep, peer_keep = coteaching_losses(logits, peer_logits, y, self.rate)
            keep, peer_keep = (torch.zeros_like(y, dtype=torch.bool).index_fill_(0, k, True)
                               for k in (keep, peer_keep))
            disagree = logits.argmax(dim=1) != peer_logits.argmax(dim=1)
        else:
            early = self.release_epoch * self.batch < EARLY_STEPS
            loss, peer_loss, keep, peer_keep, disagree = coteaching_plus_losses(
                logits, peer_logits, y, self.keep_table(len(y), run.device), self.ce_on_softmax, early)
        run.minimize(loss)
        run.minimize(peer_loss, network="peer")
        self.batch += 1
        self.seen += len(y)
        counts = [disagree.sum(), keep.sum(), peer_keep.sum()]
        if self.clean is not None:
            clean = self.clean[idx]
            counts += [(clean & keep).sum(), (clean & peer_keep).sum()]
        self.tally[:len(counts)] += torch.stack(counts)
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        disagree, kept, peer_kept, clean, peer_clean = self.tally.tolist()
        known = self.clean is not None
        return {"forget_rate": self.rate, "disagree_fraction": disagree / self.seen,
                "kept_fraction": kept / self.seen,
                "kept_clean_fraction": clean / kept if known and kept else None,
                "kept_clean_fraction_peer": peer_clean / peer_kept if known and peer_kept else None}
