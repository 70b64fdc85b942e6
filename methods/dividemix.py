"""DivideMix (Li et al., "DivideMix: Learning with Noisy Labels as Semi-supervised Learning",
ICLR 2020), as its official release trains on CIFAR (LiJunnan1992/DivideMix, Train_cifar.py).

Two networks. During the warm-up each is trained on every sample with cross-entropy (plus
a negative-entropy penalty on asymmetric noise), one whole epoch after the other. After
it, every epoch starts with a pass of each network over the training set without
augmentation: its per-sample losses, normalised to [0, 1], are fitted by a two-component
Gaussian mixture, and the posterior of the low-mean component is each sample's clean
probability w. The samples with w > p_threshold are labelled, the others unlabelled, and
each network trains on the division its PEER made (co-divide): the main network first,
then the peer. A step of MixMatch on a labelled batch (two augmentations each) and an
unlabelled one (two augmentations each):
- labelled targets: w * y + (1 - w) * mean of the trained network's two predictions,
  sharpened with T (label co-refinement);
- unlabelled targets: the mean of both networks' predictions on both augmentations,
  sharpened (label co-guessing);
- all inputs and targets mixed with a random permutation of themselves at
  lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha);
- loss Lx + lambda_u * ramp * Lu + the uniform-prior penalty, the ramp rising linearly
  over 16 epochs after the warm-up.
The evaluated model is the mean of the two networks' logits (the release's test()): the
unsuffixed test columns; each network has its own (_main, _peer).

The epoch's steps. The run's loader is replaced by one that yields this method's batches:
on a warm-up epoch, the main network's batches of 2 * batch_size over a permutation of
every sample, then the peer's over another (the release's warm-up loader); after it, the
main network's labelled batches (batch_size) over a permutation of its labelled set, each
with the next batch of a stream of unlabelled batches that starts a new permutation of the
unlabelled set when it runs out (the release iterates the labelled loader and cycles the
unlabelled one), then the peer's. An epoch has as many steps as the release's. Images are
augmented on the device, in batches, from the run's loader (its crop and flip), by
generators seeded from (seed, epoch): a resumed epoch draws what the interrupted one drew.
"""
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from data import dataset_spec
from data.loader import batch_bounds
from errors import UserError
from methods import Method

from ._mixmatch import (guess_labels, linear_rampup, mix, negative_entropy, refine_labels, semi_losses,
                        uniform_prior_penalty)
from ._plan import PlanLoader, augment, cycle, epoch_generator, require_in_memory

NETWORKS = ("", "peer")   # the main network (the release's net1) and its peer (net2)
GMM = dict(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)  # Train_cifar.py:186
RAMPUP = 16               # epochs of the lambda_u ramp-up, Train_cifar.py:192
RELEASE_PROTOCOL = dict(n_epoch=301, lr=0.02, lr_milestones=[0.5], lr_gamma=0.1, momentum=0.9, nesterov=False,
                        weight_decay=5e-4, batch_size=64, model="preact_resnet18")


def warm_up_default(dataset):
    """The release's warm-up epochs: 30 on CIFAR-100 (100 classes), 10 on CIFAR-10 and every
    other data set (Train_cifar.py:218-221)."""
    return 30 if dataset_spec(dataset).num_classes == 100 else 10


def normalised_losses(logits, labels):
    """Per-sample cross-entropy scaled to [0, 1] by its min and max (Train_cifar.py:172-175);
    all zeros when every loss is equal."""
    loss = F.cross_entropy(logits.float(), labels, reduction="none")
    span = loss.max() - loss.min()
    return torch.where(span > 0, (loss - loss.min()) / span.clamp_min(1e-30), torch.zeros_like(loss))


def clean_probability(losses, random_state):
    """The posterior of the lower-mean component of a two-component GMM fitted to the (N,)
    losses, as released (Train_cifar.py:185-189); float64 numpy."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float32).reshape(-1, 1)
    with warnings.catch_warnings():  # ten iterations often end before tol: as released
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm = GaussianMixture(random_state=random_state, **GMM).fit(x)
    return gmm.predict_proba(x)[:, gmm.means_.argmin()]


@dataclass
class Step:
    """One optimiser step of the epoch's plan: the network it trains (and its peer), the
    labelled batch's two augmentations and clean probabilities, the unlabelled batch's two
    augmentations (None on a warm-up step or when no sample is unlabelled), the mixing
    lambda and permutation, and lambda_u after the ramp-up."""
    net: str
    x1: torch.Tensor
    peer: Optional[str] = None
    x2: Optional[torch.Tensor] = None
    w: Optional[torch.Tensor] = None
    u1: Optional[torch.Tensor] = None
    u2: Optional[torch.Tensor] = None
    lam: float = 1.0
    perm: Optional[torch.Tensor] = None
    lambda_u: float = 0.0
    u_idx: Optional[torch.Tensor] = None  # the unlabelled batch's rows


class DivideMix(Method):
    name = "dividemix"
    summary = "DivideMix: two networks, GMM co-divide of the per-sample losses, MixMatch on the division"
    title = "DivideMix"

    @classmethod
    def protocol(cls, dataset):
        """The release's CIFAR protocol (Train_cifar.py:17-18, :24, :211, :232-233, :242-245),
        the same on CIFAR-10 and CIFAR-100: it trains epochs 0..300 (301 epochs), the lr /10
        from epoch 150 on. Other data sets: train.py's."""
        return dict(RELEASE_PROTOCOL) if dataset in ("cifar10", "cifar100") else {}

    def __init__(self, warm_up=10, lambda_u=25.0, p_threshold=0.5, T=0.5, alpha=4.0,
                 gmm_history=1, conf_penalty=False, seed=0):
        self.warm_up, self.lambda_u, self.p_threshold = warm_up, lambda_u, p_threshold
        self.T, self.alpha, self.gmm_history, self.conf_penalty = T, alpha, gmm_history, conf_penalty
        self.seed = seed
        self.tag = (f"dividemix-w{warm_up}-u{lambda_u:g}-p{p_threshold:g}-T{T:g}-a{alpha:g}"
                    + (f"-h{gmm_history}" if gmm_history != 1 else "") + ("-ne" if conf_penalty else ""))
        self.epoch = 0
        self.plan = None
        self.history = None   # (<= gmm_history, 2, N) the normalised losses of the last epochs
        self.prob = None      # (2, N) each network's clean probabilities of the epoch
        self.columns = {}

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--warm_up", type=integer, default=defaults.get("warm_up"),
                           help="epochs of plain cross-entropy before the first division (default: "
                                "the release's, 30 on CIFAR-100, 10 on CIFAR-10 and every other data set)")
        group.add_argument("--lambda_u", type=finite_float, default=defaults.get("lambda_u", 25.0),
                           help="weight of the unlabelled loss after its ramp-up (the release's default "
                                "25; the paper picks 0, 25, 50 or 150 per noise setting)")
        group.add_argument("--p_threshold", type=finite_float, default=defaults.get("p_threshold", 0.5),
                           help="clean probability above which a sample is labelled")
        group.add_argument("--T", type=finite_float, default=defaults.get("T", 0.5),
                           help="sharpening temperature of the refined and guessed labels")
        group.add_argument("--alpha", type=finite_float, default=defaults.get("alpha", 4.0),
                           help="the mixing lambda's Beta(alpha, alpha)")
        group.add_argument("--gmm_history", type=integer, default=defaults.get("gmm_history"),
                           help="the GMM fits the mean normalised loss of this many last epochs "
                                "(default: the release's, 5 at --noise_rate 0.9, else 1)")
        group.add_argument("--conf_penalty", choices=["on", "off"], default=defaults.get("conf_penalty"),
                           help="negative-entropy penalty in the warm-up (default: the release's, on "
                                "for asym noise, off otherwise)")

    @classmethod
    def check_flags(cls, cfg):
        require_in_memory(cfg, "dividemix", "divides the whole training set every epoch")
        cfg.warm_up = warm_up_default(cfg.dataset) if cfg.warm_up is None else cfg.warm_up
        if cfg.gmm_history is None:
            cfg.gmm_history = 5 if cfg.noise_rate == 0.9 else 1
        if cfg.conf_penalty is None:
            cfg.conf_penalty = "on" if cfg.noise_type == "asym" else "off"
        checks = [(cfg.warm_up >= 0, f"--warm_up {cfg.warm_up} must be >= 0 (epochs)"),
                  (cfg.lambda_u >= 0, f"--lambda_u {cfg.lambda_u} must be >= 0 (a loss weight)"),
                  (0.0 <= cfg.p_threshold < 1.0,
                   f"--p_threshold {cfg.p_threshold} is outside [0, 1): it is a clean probability"),
                  (cfg.T > 0, f"--T {cfg.T} must be > 0 (a sharpening temperature)"),
                  (cfg.alpha > 0, f"--alpha {cfg.alpha} must be > 0 (the parameter of a Beta distribution)"),
                  (cfg.gmm_history >= 1, f"--gmm_history {cfg.gmm_history} must be >= 1 (epochs)")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        cfg.lambda_u, cfg.p_threshold = abs(cfg.lambda_u), abs(cfg.p_threshold)  # -0 is 0

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.warm_up, cfg.lambda_u, cfg.p_threshold, cfg.T, cfg.alpha, cfg.gmm_history,
                   cfg.conf_penalty == "on", cfg.seed)

    @property
    def label(self):
        return f"DivideMix lambda_u={self.lambda_u:g}"

    # ------------------------------------------------------------ set-up and the epoch's plan

    def setup(self, run):
        run.add_network("peer")
        self.batch_size = run.cfg.batch_size
        self.labels = run.noisy_labels
        self.num_classes = run.num_classes
        self.clean = None if run.true_labels is None else (run.noisy_labels == run.true_labels).cpu().numpy()
        self.ensemble = MeanOfNetworks([run.networks[k].model for k in NETWORKS])
        run.train_loader = PlanLoader(run.train_loader, self)

    def evaluated_model(self, run):
        return self.ensemble

    def start_epoch(self, epoch, run):
        """Divide the training set (after the warm-up) and make the epoch's plan."""
        self.epoch = epoch
        n = len(self.labels)
        if epoch < self.warm_up:
            self.prob = None
            self.columns = {}
            self.plan = {"warm_up": True, "steps": 2 * len(batch_bounds(n, 2 * self.batch_size))}
            return
        self.prob = self.divide(run, epoch)
        labelled = [np.flatnonzero(self.prob[k] > self.p_threshold) for k in range(2)]
        # co-divide: the main network trains on the peer's division, the peer on the main's
        sets = [(NETWORKS[0], NETWORKS[1], labelled[1], self.prob[1]),
                (NETWORKS[1], NETWORKS[0], labelled[0], self.prob[0])]
        self.plan = {"warm_up": False, "sets": sets,
                     "steps": sum(len(batch_bounds(len(lab), self.batch_size)) for _, _, lab, _ in sets if len(lab))}
        self.columns = {}
        for k, suffix in enumerate(("", "_peer")):  # the division each network TRAINS on
            lab = labelled[1 - k]
            self.columns[f"labelled_fraction{suffix}"] = len(lab) / n
            self.columns[f"labelled_clean_fraction{suffix}"] = (
                None if self.clean is None or not len(lab) else float(self.clean[lab].mean()))

    @torch.no_grad()
    def divide(self, run, epoch):
        """(2, N) clean probabilities: each network's normalised losses on the training set
        without augmentation, averaged over the last gmm_history epochs, fitted by the GMM."""
        losses = torch.stack([normalised_losses(run.predict(run.networks[k].model)[0], self.labels).cpu()
                              for k in NETWORKS])
        self.history = losses[None] if self.history is None else torch.cat([self.history, losses[None]])
        self.history = self.history[-self.gmm_history:]
        mean = self.history.mean(dim=0).numpy()
        states = np.random.default_rng([self.seed, epoch, 3]).integers(0, 2 ** 31, size=2)
        return np.stack([clean_probability(mean[k], int(states[k])) for k in range(2)])

    def steps(self, loader, plan):
        """The epoch's steps, drawn on the device: (Step, labels, sample indices) each."""
        device = self.labels.device
        g = epoch_generator(device, self.seed, self.epoch, 2)
        n = len(self.labels)
        if plan["warm_up"]:
            for net in NETWORKS:
                order = torch.randperm(n, generator=g, device=device)
                for start, stop in batch_bounds(n, 2 * self.batch_size):
                    idx = order[start:stop]
                    yield Step(net, augment(loader, idx, g)), self.labels[idx], idx
            return
        rng = np.random.default_rng([self.seed, self.epoch, 2])  # the mixing lambdas
        for net, peer, lab, prob in plan["sets"]:
            if not len(lab):
                continue
            lab_t = torch.as_tensor(lab, device=device)
            unl_t = torch.as_tensor(np.setdiff1d(np.arange(n), lab), device=device)
            w_all = torch.as_tensor(prob, dtype=torch.float32, device=device)
            order = lab_t[torch.randperm(len(lab_t), generator=g, device=device)]
            unlabelled = cycle(unl_t, self.batch_size, g)
            num_iter = len(lab) // self.batch_size + 1  # Train_cifar.py:46
            for batch, (start, stop) in enumerate(batch_bounds(len(lab), self.batch_size)):
                idx = order[start:stop]
                u = next(unlabelled)
                lam = float(rng.beta(self.alpha, self.alpha))
                size = 2 * len(idx) + (0 if u is None else 2 * len(u))
                yield Step(net, augment(loader, idx, g), peer=peer, x2=augment(loader, idx, g), w=w_all[idx],
                           u1=None if u is None else augment(loader, u, g),
                           u2=None if u is None else augment(loader, u, g), lam=lam,
                           perm=torch.randperm(size, generator=g, device=device),
                           lambda_u=linear_rampup(self.epoch + batch / num_iter, self.warm_up, self.lambda_u,
                                                  RAMPUP), u_idx=u), self.labels[idx], idx

    # ------------------------------------------------------------ the step

    def train_step(self, run, x, y, idx):
        step = x
        net = run.networks[step.net]
        if step.peer is None:  # warm-up: cross-entropy, Train_cifar.py:124-138
            with run.autocast():
                logits = net.forward(step.x1)
            loss = F.cross_entropy(logits.float(), y)
            if self.conf_penalty:
                loss = loss + negative_entropy(logits)
            run.minimize(loss, network=step.net)
            return loss.detach().float(), logits.detach()
        peer = run.networks[step.peer]
        net.model.train()
        peer.model.eval()  # Train_cifar.py:42-43
        with torch.no_grad(), run.autocast():
            if step.u1 is not None:
                guessed = guess_labels([torch.softmax(m.forward(u).float(), dim=1)
                                        for m in (net, peer) for u in (step.u1, step.u2)], self.T)
            logits_x = net.forward(step.x1).float()
            onehot = F.one_hot(y, self.num_classes).float()
            refined = refine_labels(onehot, step.w, torch.softmax(logits_x, dim=1),
                                    torch.softmax(net.forward(step.x2).float(), dim=1), self.T)
        parts, targets = [step.x1, step.x2], [refined, refined]
        if step.u1 is not None:
            parts += [step.u1, step.u2]
            targets += [guessed, guessed]
        inputs, mixed_targets = mix(torch.cat(parts), torch.cat(targets), step.lam, step.perm)
        with run.autocast():
            logits = net.forward(inputs)
        b = 2 * len(y)
        lx, lu = semi_losses(logits[:b], mixed_targets[:b], logits[b:], mixed_targets[b:])
        loss = lx + step.lambda_u * lu + uniform_prior_penalty(logits)
        run.minimize(loss, network=step.net)
        peer.model.train()
        return loss.detach().float(), logits_x.detach()

    # ------------------------------------------------------------ columns and state

    def epoch_columns(self):
        return {"labelled_fraction": None, "labelled_clean_fraction": None, "labelled_fraction_peer": None,
                "labelled_clean_fraction_peer": None, **self.columns}

    def state_dict(self):
        """The GMM's inputs (the scaled losses of the last epochs), its outputs (the clean
        probabilities of the last division), the labelled sets they made (row k: the set the
        network other than k trains on) and the epoch's columns."""
        prob = None if self.prob is None else torch.as_tensor(self.prob)
        return {"history": self.history, "prob": prob,
                "labelled": None if prob is None else prob > self.p_threshold, "columns": self.columns}

    def load_state_dict(self, state):
        self.history, self.columns = state["history"], state["columns"]
        self.prob = None if state["prob"] is None else state["prob"].numpy()


class MeanOfNetworks(torch.nn.Module):
    """The mean of the networks' logits (the release's test() sums them: the same argmax).
    The networks are held outside the module's parameters: it owns no state."""

    def __init__(self, models):
        super().__init__()
        self._models = models

    def train(self, mode=True):
        super().train(mode)
        for m in self._models:
            m.train(mode)
        return self

    def forward(self, x):
        return sum(m(x).float() for m in self._models) / len(self._models)
