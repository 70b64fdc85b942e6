"""Sparse over-parameterisation (Liu et al., "Robust Training under Label Noise by
Over-parameterization", ICML 2022), as its official release computes it (shengliu66/SOP,
model/loss.py, train.py, trainer/trainer.py, config_cifar100.json).

Every training sample i has its own parameters u_i (one number) and v_i (one per class),
initialised from N(mean, std^2) with a tiny std, trained by their own SGD (no momentum, no
weight decay, the learning rates lr_u and lr_v, no schedule) beside the network. With y
the one-hot noisy label, the estimated label noise of sample i is

    s_i = clamp(u_i^2 y_i, 0, 1) - clamp(v_i^2 (1 - y_i), 0, 1)

and the loss of a batch, with p = softmax(z) and h = onehot(argmax z) (detached),

    q_i = clamp(normalize_1(clamp(p_i + U_i - sg(V_i), 1e-4)), 1e-4, 1)
    L   = mean_i CE(q_i, y_i) + (1/B) sum_i ||h_i + U_i - V_i - y_i||^2

(U, V the two clamped terms; sg: no gradient, so V learns only from the second term, and
the network only from the first). SOP+ (--sop_plus) adds, as released, a class-balance term
ratio_balance * (-sum_k (1/K) log mean_i q_ik) and a consistency term ratio_consistency *
mean_i KL(sg(softmax(z_i)) || softmax(z'_i)), where z' are the logits of a strongly
augmented view of the same images (utils/augment.py: the AutoAugment CIFAR-10 policy,
crop, flip and Cutout on the device) in the same forward pass as the weak view.

u, v and their optimiser's state are the method's state, checkpointed: resume is exact.
"""
import torch
import torch.nn.functional as F

from core.args import finite_float, integer
from data import dataset_spec
from errors import UserError
from methods import Method
from utils.augment import StrongAugment

EPS = 1e-4  # model/loss.py:68
# (lr_u, lr_v): config_cifar100.json:71-72, and the README's CIFAR-100 40% asym command
# (README.md:17-19); the release has no other configuration.
LR_UV = {"default": (1.0, 10.0), "cifar100-asym": (0.1, 100.0)}
PLUS = {"ratio_consistency": 0.9, "ratio_balance": 0.1}  # config_cifar100.json:82-83
# The network's optimiser, schedule and epochs of config_cifar100.json (:17, :43, :53-60,
# :98-104, :108); the release has this configuration only, for CIFAR-10 too.
RELEASE_PROTOCOL = dict(model="preact_resnet18", n_epoch=300, lr=0.02, momentum=0.9, nesterov=False,
                        weight_decay=1e-3, batch_size=128, lr_milestones=[], cosine_lr_min=0.0002)


def released_lr_uv(dataset, noise_type):
    return LR_UV["cifar100-asym" if (dataset, noise_type) == ("cifar100", "asym") else "default"]


def noise_estimate(target, u, v):
    """(U, V): clamp(u^2 y, 0, 1) and clamp(v^2 (1 - y), 0, 1) (model/loss.py:70-74)."""
    return (u ** 2 * target).clamp(0, 1), (v ** 2 * (1 - target)).clamp(0, 1)


def sop_loss(logits, target, u, v, ratio_balance=0.0, logits_strong=None, ratio_consistency=0.0):
    """The release's overparametrization_loss.forward (model/loss.py:55-120) on the batch's
    fp32 logits (B, K), one-hot labels (B, K) and the batch's rows u (B, 1), v (B, K) of the
    per-sample parameters (indexed from them, so that their gradients reach them)."""
    U, V = noise_estimate(target, u, v)
    prediction = torch.clamp(F.softmax(logits, dim=1) + U - V.detach(), min=EPS)
    prediction = F.normalize(prediction, p=1, eps=EPS).clamp(EPS, 1.0)
    hard = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).to(logits.dtype)
    mse = F.mse_loss(hard + U - V, target, reduction="sum") / len(target)
    loss = torch.mean(-torch.sum(target * torch.log(prediction), dim=-1)) + mse
    if ratio_balance > 0:
        mean = prediction.mean(dim=0).clamp(EPS, 1.0)
        loss = loss + ratio_balance * -(torch.log(mean) / logits.shape[1]).sum()
    if logits_strong is not None and ratio_consistency > 0:
        kl = F.kl_div(F.log_softmax(logits_strong, dim=1), F.softmax(logits, dim=1).detach(), reduction="none")
        loss = loss + ratio_consistency * kl.sum(dim=1).mean()
    return loss


class SOP(Method):
    name = "sop"
    summary = "sparse over-parameterisation: per-sample u, v model the label noise (SOP+ with --sop_plus)"

    def __init__(self, lr_u, lr_v, init_mean=0.0, init_std=1e-8, sop_plus=False, ratio_consistency=0.0,
                 ratio_balance=0.0, cutout=16, seed=0):
        self.lr_u, self.lr_v, self.init_mean, self.init_std = lr_u, lr_v, init_mean, init_std
        self.sop_plus, self.ratio_consistency, self.ratio_balance = sop_plus, ratio_consistency, ratio_balance
        self.cutout, self.seed = cutout, seed
        self.tag = f"sop-u{lr_u:g}-v{lr_v:g}-m{init_mean:g}-s{init_std:g}"
        if sop_plus:
            self.tag += f"-plus-c{ratio_consistency:g}-b{ratio_balance:g}-cut{cutout}"
        self.u = self.v = self.optimizer = self.strong = self.generator = None

    @classmethod
    def protocol(cls, dataset):
        return dict(RELEASE_PROTOCOL) if dataset in ("cifar10", "cifar100") else {}

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--lr_u", type=finite_float, default=defaults.get("lr_u"),
                           help="lr of the per-sample u (default: the release's, 1; 0.1 on CIFAR-100 asym)")
        group.add_argument("--lr_v", type=finite_float, default=defaults.get("lr_v"),
                           help="lr of the per-sample v (default: the release's, 10; 100 on CIFAR-100 asym)")
        group.add_argument("--sop_init_mean", type=finite_float, default=defaults.get("sop_init_mean", 0.0),
                           help="mean of the normal initialisation of u and v")
        group.add_argument("--sop_init_std", type=finite_float, default=defaults.get("sop_init_std", 1e-8),
                           help="standard deviation of the normal initialisation of u and v")
        group.add_argument("--sop_plus", action="store_true",
                           help="SOP+: the consistency term on a strongly augmented view and the "
                                "class-balance term")
        group.add_argument("--ratio_consistency", type=finite_float, default=defaults.get("ratio_consistency"),
                           help="SOP+: weight of the consistency term (default with --sop_plus: 0.9)")
        group.add_argument("--ratio_balance", type=finite_float, default=defaults.get("ratio_balance"),
                           help="SOP+: weight of the class-balance term (default with --sop_plus: 0.1)")
        group.add_argument("--cutout", type=integer, default=defaults.get("cutout"),
                           help="SOP+: side of the strong view's Cutout square (default: 16 on 32x32 "
                                "images, half the side on others)")

    @classmethod
    def check_flags(cls, cfg):
        # Resolved here, so that the default and the same value typed share a run folder.
        for flag, released in zip(("lr_u", "lr_v"), released_lr_uv(cfg.dataset, cfg.noise_type)):
            if getattr(cfg, flag) is None:
                setattr(cfg, flag, released)
        for flag in ("lr_u", "lr_v", "sop_init_std"):
            if getattr(cfg, flag) < 0:
                raise UserError(f"--{flag} {getattr(cfg, flag)} must be >= 0")
            setattr(cfg, flag, abs(getattr(cfg, flag)))  # -0 is 0: one folder
        plus_flags = [f for f in (*PLUS, "cutout") if getattr(cfg, f) is not None]
        if not cfg.sop_plus:
            if plus_flags:
                raise UserError(f"--{plus_flags[0]} is a setting of SOP+: add --sop_plus, or drop it")
            cfg.ratio_consistency = cfg.ratio_balance = None  # SOP: nothing of SOP+ in the folder name
            return
        spec = dataset_spec(cfg.dataset)
        if not spec.in_memory:
            raise UserError(f"--sop_plus augments the training images on the device; {cfg.dataset} "
                            "is not held in memory: drop --sop_plus")
        for flag, value in PLUS.items():
            setattr(cfg, flag, value if getattr(cfg, flag) is None else getattr(cfg, flag))
            if getattr(cfg, flag) < 0:
                raise UserError(f"--{flag} {getattr(cfg, flag)} must be >= 0 (0 turns the term off)")
        if cfg.cutout is None:  # config_cifar100.json:36 on CIFAR's 32x32 images
            cfg.cutout = 16 if spec.image_size == 32 else spec.image_size // 2
        if cfg.cutout < 0:
            raise UserError(f"--cutout {cfg.cutout} must be >= 0 (0: no Cutout)")
        cfg.ratio_consistency, cfg.ratio_balance = abs(cfg.ratio_consistency), abs(cfg.ratio_balance)

    @classmethod
    def from_config(cls, cfg):
        plus = dict(ratio_consistency=cfg.ratio_consistency, ratio_balance=cfg.ratio_balance,
                    cutout=cfg.cutout) if cfg.sop_plus else {}
        return cls(cfg.lr_u, cfg.lr_v, cfg.sop_init_mean, cfg.sop_init_std, cfg.sop_plus, seed=cfg.seed, **plus)

    @property
    def label(self):
        name = "SOP+" if self.sop_plus else "SOP"
        return f"{name} lr_u={self.lr_u:g} lr_v={self.lr_v:g}"

    def setup(self, run):
        n, k = len(run.noisy_labels), run.num_classes
        g = torch.Generator().manual_seed(self.seed)  # the same start on every device
        # model/loss.py:45-52: u (N, 1), v (N, K), normal(mean, std) each.
        u = torch.empty(n, 1).normal_(self.init_mean, self.init_std, generator=g)
        v = torch.empty(n, k).normal_(self.init_mean, self.init_std, generator=g)
        self.u = torch.nn.Parameter(u.to(run.device))
        self.v = torch.nn.Parameter(v.to(run.device))
        # train.py:83-89 with config_cifar100.json:62-72: SGD, momentum 0, weight decay 0.
        self.optimizer = torch.optim.SGD([{"params": [self.u], "lr": self.lr_u},
                                          {"params": [self.v], "lr": self.lr_v}],
                                         lr=self.lr_u, momentum=0.0, weight_decay=0.0)
        if self.ratio_consistency > 0:
            loader = run.train_loader
            self.strong = StrongAugment(loader.mean.view(-1) / 255, loader.std.view(-1) / 255, run.device,
                                        pad=loader.pad, cutout=self.cutout)

    def start_epoch(self, epoch, run):
        if self.strong is not None:  # the strong views of epoch e depend only on (seed, e)
            self.generator = torch.Generator(device=run.device)
            self.generator.manual_seed(self.seed * 1_000_003 + epoch + (2 << 40))

    def train_step(self, run, x, y, idx):
        target = F.one_hot(y, run.num_classes).float()
        two_views = self.strong is not None
        if two_views:  # trainer.py:92-98: both views in one forward pass
            x = torch.cat([x, self.strong(run.train_loader.images[idx], self.generator, run.channels_last)])
        with run.autocast():
            out = run.forward(x)
        logits, logits_strong = out.float().chunk(2) if two_views else (out.float(), None)
        loss = sop_loss(logits, target, self.u[idx], self.v[idx], self.ratio_balance, logits_strong,
                        self.ratio_consistency)
        self.minimize(run, loss)
        return loss.detach(), logits.detach()

    def minimize(self, run, loss):
        """trainer.py:103-110: both optimisers' gradients zeroed, one backward, both stepped
        (through the fp16 gradient scaler when the run has one)."""
        net = run.networks[""]
        net.optimizer.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)
        if net.scaler is None:
            loss.backward()
            self.optimizer.step()
            net.optimizer.step()
        else:
            net.scaler.scale(loss).backward()
            net.scaler.step(self.optimizer)
            net.scaler.step(net.optimizer)
            net.scaler.update()

    def divergence_hint(self, script):
        return "Try a smaller --lr_u or --lr_v, or a lower --lr."

    def state_dict(self):
        return {"u": self.u.detach(), "v": self.v.detach(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.u.copy_(state["u"])
            self.v.copy_(state["v"])
        self.optimizer.load_state_dict(state["optimizer"])
