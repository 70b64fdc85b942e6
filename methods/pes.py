"""Progressive early stopping (Bai et al., "Understanding and Improving Early Stopping for
Learning with Noisy Labels", NeurIPS 2021), as its official release trains on CIFAR without
semi-supervised learning (tmllab/2021_NeurIPS_PES, PES_cs.py).

The network is trained in parts, the later ones for fewer epochs:
- epochs 0 .. T1 - 1: the whole network, cross-entropy on the noisy labels, SGD;
- epoch T1, the refinement: every weight frozen; the last stage and the head are
  re-initialised and trained alone T2 passes over the training set by Adam (lr PES_lr),
  then the head is re-initialised again and trained alone T3 passes;
- every later epoch: the network (averaged over two augmentations of each image, in eval
  mode) predicts the training set; the samples it predicts as their noisy label are the
  confident set, trained on by SGD with cross-entropy weighted per class by
  mean(count) / count of the confident set's labels.
As released, the SGD optimiser of the first epochs never trains the re-initialised layers:
from epoch T1 + 1 on the last stage and the head stay as the refinement left them
(frozen here), and SGD trains the layers before them.

Epoch T1 and the later epochs replace the run's loader by their own batches
(methods/_plan.py): T2 + T3 passes over a permutation of every sample, then the confident
set's batches; full batches only (the release's drop_last=True). Draws come from
generators seeded by (seed, epoch): a resumed epoch draws what the interrupted one drew.
Columns: confident_fraction and confident_clean_fraction (the share of truly clean labels
in the confident set).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from data import dataset_spec
from errors import UserError
from methods import Method

from ._mixmatch import guess_labels, linear_rampup, mix, semi_losses
from ._plan import PlanLoader, augment, cycle, drop_last_bounds, epoch_generator, require_in_memory

MODELS = ("resnet", "resnet18", "resnet34", "preact_resnet18")  # a `layers` of stages and a `linear` head
RELEASE_PROTOCOL = dict(n_epoch=200, lr=0.1, lr_milestones=[0.5, 0.75], lr_gamma=0.1, momentum=0.9, nesterov=False,
                        weight_decay=1e-4, batch_size=128, val_fraction=0.1)


def t1_default(dataset, semi):
    """The release's T1: 30 on CIFAR-100 (100 classes), 25 on CIFAR-10 and every other data
    set (PES_cs.py:128-130, :142-144); PES-semi 35 and 20 (PES_semi.py:219-221, :232-234)."""
    hundred = dataset_spec(dataset).num_classes == 100
    return (35 if hundred else 20) if semi else (30 if hundred else 25)


def last_parts(model, num_layer):
    """The modules the release's renew_layers(num_layer) makes anew: the head, and for
    num_layer >= 1 the last num_layer stages before it (networks/ResNet.py:168-185);
    the final BatchNorm of a pre-activation ResNet goes with the last stage."""
    parts = [model.linear]
    if num_layer >= 1:
        parts += list(model.layers[-num_layer:]) + ([model.bn] if hasattr(model, "bn") else [])
    return parts


def renew(modules, seed):
    """Re-initialise every module (weights and BatchNorm statistics), from a generator of
    `seed` (the global RNG state is kept)."""
    devices = sorted({p.device.index for m in modules for p in m.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in modules:
            for m in module.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()


def confident_selection(probs, noisy_labels, num_classes, clip=None):
    """(mask of the samples whose predicted class is their noisy label, the class weights
    mean(count) / count over the confident labels, 0 for a class without one, at most
    `clip`) (PES_cs.py:67-79, :91-97; PES-semi clips at 3, PES_semi.py:183-192)."""
    confident = probs.argmax(dim=1) == noisy_labels
    counts = torch.bincount(noisy_labels[confident], minlength=num_classes).double()
    present = counts > 0
    mean = counts[present].mean() if present.any() else counts.new_ones(())
    weights = torch.where(present, mean / counts.clamp_min(1), torch.zeros_like(counts))
    if clip is not None:
        weights = weights.clamp_max(clip)
    return confident, weights.float()


def weighted_mixed_cross_entropy(logits, targets, weights):
    """sum_k w_k mean_b (-log_softmax(z)_bk t_bk): PES-semi's class-weighted Lx on the mixed
    labelled part (PES_semi.py:127-128)."""
    return ((-F.log_softmax(logits.float(), dim=1) * targets).mean(dim=0) * weights).sum()


def semi_batch_sizes(n_confident, n_unconfident, batch_size):
    """(labelled, unlabelled) batch sizes of a PES-semi step (PES_semi.py:176-177)."""
    if n_unconfident > n_confident:
        uncon = int(batch_size / 2)
    else:
        uncon = int(n_unconfident / (n_confident + n_unconfident) * batch_size)
    return batch_size - uncon, uncon


@dataclass
class Step:
    """A step of the refinement: its images, and the parts to re-initialise first (the
    renew_layers argument; None: none)."""
    x: torch.Tensor
    renew: Optional[int] = None


@dataclass
class SemiStep:
    """A PES-semi step: two augmentations of the labelled (confident) batch and of the
    unlabelled one (None when the unlabelled batch size is 0), the mixing lambda and
    permutation, and lambda_u after its ramp-up."""
    x1: torch.Tensor
    x2: torch.Tensor
    u1: Optional[torch.Tensor]
    u2: Optional[torch.Tensor]
    lam: float
    perm: torch.Tensor
    lambda_u: float

class PES(Method):
    name = "pes"
    summary = "progressive early stopping: the later layers re-initialised and trained for fewer epochs"
    title = "PES"

    @classmethod
    def protocol(cls, dataset):
        """PES_cs.py's CIFAR protocol (:22-25, :30, :131-132, :145-146, :165-166): SGD lr 0.1,
        momentum 0.9, weight decay 1e-4, batch 128, 200 epochs, lr /10 at epochs 100 and 150,
        ResNet-18 (ResNet-34 on CIFAR-100), 10% of the noisy training set held out for model
        selection. Other data sets: train.py's."""
        if dataset not in ("cifar10", "cifar100"):
            return {}
        return {**RELEASE_PROTOCOL, "model": "resnet34" if dataset == "cifar100" else "resnet18"}

    def __init__(self, T1=25, T2=7, T3=5, PES_lr=1e-4, seed=0, semi=False, lambda_u=150.0, alpha=4.0, T=0.5,
                 n_epoch=200):
        self.T1, self.T2, self.T3, self.PES_lr, self.seed = T1, T2, T3, PES_lr, seed
        self.semi, self.lambda_u, self.alpha, self.T, self.n_epoch = semi, lambda_u, alpha, T, n_epoch
        self.tag = f"pes-t{T1}-{T2}-{T3}-lr{PES_lr:g}" + (f"-semi-u{lambda_u:g}-a{alpha:g}-T{T:g}" if semi else "")
        self.epoch = 0
        self.plan = None
        self.adam = None
        self.confident = self.weights = None
        self.columns = {}

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--semi", choices=["on", "off"], default=defaults.get("semi", "off"),
                           help="PES-semi: after the refinement, MixMatch on the confident (labelled) and "
                                "other (unlabelled) samples instead of cross-entropy on the confident ones")
        group.add_argument("--T1", type=integer, default=defaults.get("T1"),
                           help="epochs of the whole network before the refinement (default: the "
                                "release's, 30 on CIFAR-100, 25 on CIFAR-10 and every other data set; "
                                "PES-semi 35 and 20)")
        group.add_argument("--T2", type=integer, default=defaults.get("T2"),
                           help="passes training the re-initialised last stage and head; PES-semi: the "
                                "head alone (default: 7; PES-semi 5; 0: none)")
        group.add_argument("--T3", type=integer, default=defaults.get("T3"),
                           help="passes training the head re-initialised again (default: 5; PES-semi has "
                                "no such phase: 0)")
        group.add_argument("--PES_lr", type=finite_float, default=defaults.get("PES_lr", 1e-4),
                           help="Adam's lr in the refinement")
        group.add_argument("--lambda_u", type=finite_float, default=defaults.get("lambda_u", 150.0),
                           help="PES-semi: weight of the unlabelled loss after its ramp-up")
        group.add_argument("--alpha", type=finite_float, default=defaults.get("alpha", 4.0),
                           help="PES-semi: the mixing lambda's Beta(alpha, alpha) (0.75 from half the epochs on)")
        group.add_argument("--T", type=finite_float, default=defaults.get("T", 0.5),
                           help="PES-semi: sharpening temperature of the guessed labels")

    @classmethod
    def check_flags(cls, cfg):
        require_in_memory(cfg, "pes", "predicts the whole training set every epoch")
        if cfg.model not in MODELS:
            raise UserError(f"--method pes re-initialises the last stage and head of a ResNet; --model "
                            f"{cfg.model} has none it knows: use one of {', '.join(MODELS)}")
        semi = cfg.semi == "on"
        if semi and cfg.T3:
            raise UserError(f"--T3 {cfg.T3}: PES-semi refines the head alone, in --T2 passes; drop --T3")
        cfg.T1 = t1_default(cfg.dataset, semi) if cfg.T1 is None else cfg.T1
        cfg.T2 = (5 if semi else 7) if cfg.T2 is None else cfg.T2
        cfg.T3 = (0 if semi else 5) if cfg.T3 is None else cfg.T3
        for flag in ("T1", "T2", "T3"):
            if getattr(cfg, flag) < 0:
                raise UserError(f"--{flag} {getattr(cfg, flag)} must be >= 0 (epochs or passes)")
        if semi and not (cfg.lambda_u >= 0 and cfg.alpha > 0 and cfg.T > 0):
            raise UserError(f"--lambda_u {cfg.lambda_u} must be >= 0, --alpha {cfg.alpha} and --T {cfg.T} > 0")
        if not semi and cfg.T2 == 0 and cfg.T3 == 0:
            raise UserError("--T2 0 and --T3 0 leave epoch T1 without a step: give one of them passes "
                            "(the release's are 7 and 5)")
        if cfg.PES_lr <= 0:
            raise UserError(f"--PES_lr {cfg.PES_lr} must be > 0 (Adam's learning rate)")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.T1, cfg.T2, cfg.T3, cfg.PES_lr, cfg.seed, cfg.semi == "on", cfg.lambda_u, cfg.alpha,
                   cfg.T, cfg.n_epoch)

    @property
    def label(self):
        return ("PES-semi" if self.semi else "PES") + f" T1={self.T1}"

    # ------------------------------------------------------------ the epochs

    def setup(self, run):
        self.labels, self.num_classes = run.noisy_labels, run.num_classes
        self.batch_size = run.cfg.batch_size
        self.clean = None if run.true_labels is None else run.noisy_labels == run.true_labels
        self.run = run  # PES-semi divides within the epoch T1, after the refinement's steps
        run.train_loader = PlanLoader(run.train_loader, self)

    def frozen_after_refinement(self, model):
        """The parts the refinement re-initialised, which SGD never trains afterwards."""
        if self.semi:
            return last_parts(model, 0) if self.T2 > 0 else []
        return last_parts(model, 1) if self.T2 > 0 else last_parts(model, 0) if self.T3 > 0 else []

    def freeze_refined(self, model):
        for p in model.parameters():
            p.requires_grad_(True)
        for m in self.frozen_after_refinement(model):
            m.requires_grad_(False)

    def start_epoch(self, epoch, run):
        self.epoch, self.columns = epoch, {}
        self.confident = self.weights = None
        model = run.model
        for p in model.parameters():
            p.requires_grad_(True)
        if epoch < self.T1:
            self.plan = None
            return
        n = len(self.labels)
        semi_steps = n // self.batch_size if self.semi else 0  # PES_semi.py:81
        if epoch == self.T1:
            passes = [0] * self.T2 if self.semi else [1] * self.T2 + [0] * self.T3
            self.plan = {"refine": passes, "semi": self.semi,
                         "steps": len(passes) * len(drop_last_bounds(n, self.batch_size)) + semi_steps}
            return
        self.freeze_refined(model)
        if self.semi:
            self.plan = {"refine": [], "semi": True, "steps": semi_steps}
            return
        self.confident, self.weights = confident_selection(self.predict(run), self.labels, self.num_classes)
        rows = torch.nonzero(self.confident).flatten()
        if len(rows) < 2:
            raise UserError(f"epoch {epoch + 1}: the network predicts the noisy label of {len(rows)} training "
                            "sample(s), too few to train on; a shorter --T1 or a lower lr may help")
        self.plan = {"rows": rows, "steps": len(self.confident_bounds(len(rows)))}
        self.columns = {"confident_fraction": len(rows) / n,
                        "confident_clean_fraction": None if self.clean is None or not len(rows)
                        else self.clean[rows].double().mean().item()}

    @torch.no_grad()
    def predict(self, run):
        """The mean softmax over two augmentations of each training image, in eval mode
        (PES_cs.py:83-85, common/tools.py:177-191)."""
        model, loader = run.model, run.train_loader.base
        g = epoch_generator(run.device, self.seed, self.epoch, 3)
        was_training = model.training
        model.eval()
        n = len(self.labels)
        probs = torch.zeros(n, self.num_classes, device=run.device)
        for start in range(0, n, run.cfg.test_batch_size):
            idx = torch.arange(start, min(start + run.cfg.test_batch_size, n), device=run.device)
            with run.autocast():
                probs[idx] = sum(torch.softmax(model(augment(loader, idx, g)).float(), dim=1) for _ in range(2)) / 2
        model.train(was_training)
        return probs

    def confident_bounds(self, n):
        """Full batches of the confident set; all of it in one batch when it has fewer
        samples than a batch (where the release's loader would have none)."""
        return drop_last_bounds(n, self.batch_size) or [(0, n)]

    def steps(self, loader, plan):
        g = epoch_generator(self.labels.device, self.seed, self.epoch, 2)
        device = self.labels.device
        if "refine" in plan:
            n = len(self.labels)
            previous = None
            for num_layer in plan["refine"]:
                order = torch.randperm(n, generator=g, device=device)
                for i, (start, stop) in enumerate(drop_last_bounds(n, self.batch_size)):
                    idx = order[start:stop]
                    renew_now = num_layer if (i == 0 and num_layer != previous) else None
                    yield Step(augment(loader, idx, g), renew_now), self.labels[idx], idx
                previous = num_layer
            if not plan["semi"]:
                return
        if plan.get("semi"):
            if plan["refine"]:  # epoch T1: MixMatch follows the refinement, with SGD
                self.freeze_refined(self.run.model)
            yield from self.semi_steps(loader, g)
            return
        rows = plan["rows"]
        order = rows[torch.randperm(len(rows), generator=g, device=device)]
        for start, stop in self.confident_bounds(len(rows)):
            idx = order[start:stop]
            yield augment(loader, idx, g), self.labels[idx], idx

    def semi_steps(self, loader, g):
        """PES-semi's MixMatch steps (PES_semi.py:167-195, :70-136): the network divides the
        training set into confident (labelled) and other (unlabelled) samples, and the epoch
        has n // batch_size steps, each with the next full batch of both, cycled."""
        run, n, device = self.run, len(self.labels), self.labels.device
        self.confident, self.weights = confident_selection(self.predict(run), self.labels, self.num_classes, clip=3)
        lab = torch.nonzero(self.confident).flatten()
        unl = torch.nonzero(~self.confident).flatten()
        con_batch, uncon_batch = semi_batch_sizes(len(lab), len(unl), self.batch_size)
        if len(lab) < con_batch or len(unl) < uncon_batch or con_batch < 1:
            raise UserError(f"epoch {self.epoch + 1}: {len(lab)} confident and {len(unl)} other samples "
                            f"cannot fill batches of {con_batch} and {uncon_batch}")
        self.columns = {"confident_fraction": len(lab) / n,
                        "confident_clean_fraction": None if self.clean is None or not len(lab)
                        else self.clean[lab].double().mean().item()}
        labelled = cycle(lab, con_batch, g, drop_last=True)
        unlabelled = cycle(unl if uncon_batch else unl[:0], max(uncon_batch, 1), g, drop_last=True)
        alpha = 0.75 if self.epoch >= self.n_epoch / 2 else self.alpha  # PES_semi.py:72-73
        rng = np.random.default_rng([self.seed, self.epoch, 2])
        num_iter = n // self.batch_size
        for batch in range(num_iter):
            idx, u = next(labelled), next(unlabelled)
            lam = float(rng.beta(alpha, alpha))
            size = 2 * len(idx) + (0 if u is None else 2 * len(u))
            yield SemiStep(augment(loader, idx, g), augment(loader, idx, g),
                           None if u is None else augment(loader, u, g), None if u is None else augment(loader, u, g),
                           lam, torch.randperm(size, generator=g, device=device),
                           linear_rampup(self.epoch + batch / num_iter, self.T1, self.lambda_u)), self.labels[idx], idx

    def semi_step(self, run, step, y):
        """MixMatch as PES_semi.py:100-136: labelled targets the one-hot labels, unlabelled
        ones the sharpened mean of the network's two predictions, both mixed at
        lambda' = max(lambda, 1 - lambda); class-weighted Lx + lambda_u * ramp * Lu."""
        net = run.networks[""]
        parts, targets = [step.x1, step.x2], [F.one_hot(y, self.num_classes).float()] * 2
        if step.u1 is not None:
            with torch.no_grad(), run.autocast():
                guessed = guess_labels([torch.softmax(net.forward(u).float(), dim=1) for u in (step.u1, step.u2)],
                                       self.T)
            parts += [step.u1, step.u2]
            targets += [guessed, guessed]
        inputs, mixed = mix(torch.cat(parts), torch.cat(targets), step.lam, step.perm)
        with run.autocast():
            logits = net.forward(inputs)
        b = 2 * len(y)
        lx = weighted_mixed_cross_entropy(logits[:b], mixed[:b], self.weights)
        _, lu = semi_losses(logits[:b], mixed[:b], logits[b:], mixed[b:])
        loss = lx + step.lambda_u * lu
        run.minimize(loss)
        return loss.detach().float(), logits[:len(y)].detach().float()

    def train_step(self, run, x, y, idx):
        if isinstance(x, Step):
            return self.refine_step(run, x, y)
        if isinstance(x, SemiStep):
            return self.semi_step(run, x, y)
        with run.autocast():
            logits = run.forward(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.weights)  # PES_cs.py:99-101
        run.minimize(loss)
        return loss.detach().float(), logits.detach()

    def refine_step(self, run, step, y):
        """A step of the refinement (PES_cs.py:105-125): cross-entropy, Adam on the
        re-initialised parts alone; their re-initialisation first where a phase starts."""
        model = run.model
        if step.renew is not None:
            parts = last_parts(model, step.renew)
            for p in model.parameters():
                p.requires_grad_(False)
            renew(parts, self.seed * 1_000_003 + self.epoch * 10 + step.renew)
            params = [p for m in parts for p in m.parameters()]
            for p in params:
                p.requires_grad_(True)
            self.adam = torch.optim.Adam(params, lr=self.PES_lr)
        with run.autocast():
            logits = run.forward(step.x)
        loss = F.cross_entropy(logits.float(), y)
        self.adam.zero_grad(set_to_none=True)
        scaler = run.networks[""].scaler
        if scaler is None:
            loss.backward()
            self.adam.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(self.adam)
            scaler.update()
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        return {"confident_fraction": None, "confident_clean_fraction": None, **self.columns}

    def state_dict(self):
        """The confident set and class weights of the epoch, and its columns (each epoch
        recomputes them from the network when it starts)."""
        return {"confident": self.confident, "weights": self.weights, "columns": self.columns}

    def load_state_dict(self, state):
        self.confident, self.weights, self.columns = state["confident"], state["weights"], state["columns"]
