"""VolMinNet (Li et al., "Provably End-to-end Label-noise Learning without Anchor Points",
ICML 2021), as its official release computes it
(xuefeng-li1/Provably-end-to-end-label-noise-learning-without-anchor-points, main.py and
models.py).

The noise matrix T is learned with the network, end to end. T is parameterised by a
K x K matrix W (models.py, sig_t):

    T = rownorm(I + sigmoid(W) * (1 - I)),       W starts at -init everywhere

so its diagonal entries are 1 before the rows are normalised to sum to 1, and the
off-diagonal ones sigmoid(W_ij) > 0: T starts diagonally dominant, hence invertible (init 2
with ten classes: 0.48 on the diagonal, 0.058 elsewhere; init 4.5 with a hundred: 0.48 and
0.0053). The loss (main.py) is

    L = -mean log (T^T p)_y + lambda * log |det T|,       p = softmax(network)

the forward-corrected cross-entropy plus the log-volume of T, which favours the smallest
simplex that explains the noisy labels (the paper's identifiability argument, which needs
no anchor points). W has its own optimiser and learning-rate plan, stepped after
the same backward pass as the network's: SGD momentum 0.9 on CIFAR-10, Adam on CIFAR-100,
both lr 0.01 divided by 10 at 30 and 60 of 80 epochs (here at those fractions of the
run). The network is evaluated alone (its own softmax, without T), as the release tests it.

lambda = 0 drops the volume term (the knob's baseline): T is then still learned, so no
setting of this method is plain cross-entropy (T never equals the identity).
W and its optimiser's state are the method's state, checkpointed with the run.
Column transition_error: sum |T - T_true| / sum |T_true| (the release's tools.error), T_true
counted from the run's clean and noisy training labels; empty where they are unknown.
"""
import torch

from core.args import finite_float
from errors import UserError
from methods import Method
from methods.forward import empirical_transition, forward_loss
from utils.engine import lr_at

# (optimiser of W, init) of the release per data set; every other one takes CIFAR-10's.
RELEASED = {"cifar10": ("sgd", 2.0), "cifar100": ("adam", 4.5)}
T_LR = 0.01
T_MILESTONES = [30 / 80, 60 / 80]
T_GAMMA = 0.1
T_MOMENTUM = 0.9


def released_defaults(dataset):
    """(optimiser of W, init) of the release for this data set."""
    return RELEASED.get(dataset, RELEASED["cifar10"])


def transition_from_weights(weights):
    """T = rownorm(I + sigmoid(W) * (1 - I)) (models.py, sig_t.forward)."""
    eye = torch.eye(weights.shape[0], dtype=weights.dtype, device=weights.device)
    unnormalised = eye + torch.sigmoid(weights) * (1.0 - eye)
    return unnormalised / unnormalised.sum(dim=1, keepdim=True)


def volmin_loss(logits, labels, transition, lam):
    """-mean log (T^T softmax)_y + lam * log |det T|, in fp32."""
    loss = forward_loss(logits, labels, torch.log(transition.float()))
    if lam == 0:
        return loss
    return loss + lam * torch.linalg.slogdet(transition.float()).logabsdet


def step_with(run, loss, extra_optimizer):
    """One backward of `loss`, then a step of the main network's optimiser and of
    `extra_optimizer` (whose gradients the caller zeroed), through the fp16 scaler if any."""
    net = run.networks[""]
    if net.scaler is None:
        run.minimize(loss)
        extra_optimizer.step()
        return
    net.optimizer.zero_grad(set_to_none=True)
    net.scaler.scale(loss).backward()
    net.scaler.step(net.optimizer)
    net.scaler.step(extra_optimizer)
    net.scaler.update()


class VolMinNet(Method):
    name = "volminnet"
    title = "VolMinNet"
    summary = "VolMinNet: forward correction through a learned T, plus lambda * log det T"
    knobs = {"vol_lambda": 0.0}

    def __init__(self, lam=1e-4, init=2.0, optimizer="sgd", lr=T_LR, milestones=T_MILESTONES, n_epoch=1):
        self.vol_lambda, self.vol_init, self.vol_optimizer = lam, init, optimizer
        self.vol_lr, self.vol_lr_milestones, self.n_epoch = lr, list(milestones), n_epoch
        self.tag = f"volminnet-l{lam:g}-i{init:g}-{optimizer}{lr:g}"
        self.weights = self.optimizer = self.true_transition = None

    @classmethod
    def add_flags(cls, group, defaults):
        group.add_argument("--vol_lambda", type=finite_float, default=defaults.get("vol_lambda", 1e-4),
                           help="lambda, the weight of log det T (0: no volume term, T still learned)")
        group.add_argument("--vol_init", type=finite_float, default=defaults.get("vol_init"),
                           help="T's parameters start at -init, T's off-diagonal at sigmoid(-init) "
                                "before the rows are normalised (default: the release's, 2 on "
                                "CIFAR-10 and every other data set, 4.5 on CIFAR-100)")
        group.add_argument("--vol_optimizer", choices=["sgd", "adam"], default=defaults.get("vol_optimizer"),
                           help="T's optimiser: SGD with momentum 0.9, or Adam; no weight decay "
                                "(default: the release's, sgd on CIFAR-10 and every other data set, "
                                "adam on CIFAR-100)")
        group.add_argument("--vol_lr", type=finite_float, default=defaults.get("vol_lr", T_LR),
                           help="T's learning rate (0: T stays at its start)")
        group.add_argument("--vol_lr_milestones", type=finite_float, nargs="*",
                           default=defaults.get("vol_lr_milestones", T_MILESTONES),
                           help="fractions of the run at which T's learning rate is divided by 10 "
                                "(the release's 30 and 60 of 80 epochs)")

    @classmethod
    def check_flags(cls, cfg):
        optimizer, init = released_defaults(cfg.dataset)
        # Resolved here, so that the default and the same value typed share a run folder.
        cfg.vol_optimizer = optimizer if cfg.vol_optimizer is None else cfg.vol_optimizer
        cfg.vol_init = init if cfg.vol_init is None else cfg.vol_init
        if cfg.vol_lambda < 0:
            raise UserError(f"--vol_lambda {cfg.vol_lambda} must be >= 0 (it weighs log det T, which "
                            "is minimised; 0 drops the term)")
        if cfg.vol_lr < 0:
            raise UserError(f"--vol_lr {cfg.vol_lr} must be >= 0 (0 keeps T at its start)")
        if not all(0.0 < m < 1.0 for m in cfg.vol_lr_milestones):
            raise UserError(f"--vol_lr_milestones {cfg.vol_lr_milestones} must be fractions of the run "
                            "in (0, 1), e.g. 0.375 0.75")
        cfg.vol_lambda, cfg.vol_lr = abs(cfg.vol_lambda), abs(cfg.vol_lr)  # -0 is 0: one folder

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.vol_lambda, cfg.vol_init, cfg.vol_optimizer, cfg.vol_lr, cfg.vol_lr_milestones,
                   cfg.n_epoch)

    @property
    def label(self):
        return f"VolMinNet lambda={self.vol_lambda:g}"

    def setup(self, run):
        k = run.num_classes
        self.weights = torch.nn.Parameter(torch.full((k, k), -self.vol_init, device=run.device))
        if self.vol_optimizer == "sgd":
            self.optimizer = torch.optim.SGD([self.weights], lr=self.vol_lr, momentum=T_MOMENTUM, weight_decay=0)
        else:
            self.optimizer = torch.optim.Adam([self.weights], lr=self.vol_lr, weight_decay=0)
        if run.true_labels is not None:
            matrix = empirical_transition(run.true_labels.cpu().numpy(), run.noisy_labels.cpu().numpy(), k)
            self.true_transition = torch.as_tensor(matrix, dtype=torch.float32, device=run.device)

    def transition(self):
        return transition_from_weights(self.weights)

    def start_epoch(self, epoch, run):
        lr = lr_at(epoch, self.vol_lr, self.vol_lr_milestones, T_GAMMA, self.n_epoch)  # the engine's plan
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, run, x, y, idx):
        with run.autocast():
            logits = run.forward(x)
        loss = volmin_loss(logits, y, self.transition(), self.vol_lambda)
        self.optimizer.zero_grad(set_to_none=True)
        step_with(run, loss, self.optimizer)
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        if self.true_transition is None:
            return {"transition_error": None}
        with torch.no_grad():
            error = (self.transition() - self.true_transition).abs().sum() / self.true_transition.abs().sum()
        return {"transition_error": error.item()}

    def state_dict(self):
        return {"weights": self.weights.detach(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
