"""JoCoR (Wei et al., "Combating Noisy Labels by Agreement: A Joint Training Method with
Co-Regularization", CVPR 2020), as its official release trains it (hongxin001/JoCoR,
algorithm/loss.py and algorithm/jocor.py).

Two networks see the same batch. Each sample gets one JOINT loss (loss_jocor):

    l = (1 - lambda) * (CE(z1, y) + CE(z2, y)) + lambda * (KL(p2 || p1) + KL(p1 || p2))

p1, p2 the two softmaxes; the symmetric KL (the co-regularisation) pulls the networks
towards agreement, and its gradient reaches both networks. The fraction R(t) of the batch
with the smallest joint loss is kept, one selection for both networks, and the mean of l
over it is minimised by ONE optimiser over the parameters of both (jocor.py:64-65).

Here the two networks keep the engine's two optimisers (the run's, one per network, as
Co-teaching has them), and one step (minimize_jointly) back-propagates the joint loss once
and steps both. SGD and Adam update every parameter from its own gradient and its own
state (momentum, moments, weight decay), with hyper-parameters that are equal here (one
lr plan for all networks), so stepping the two optimisers after one backward is, parameter
for parameter, one optimiser over both. With --precision fp16 one gradient scaler (the
main network's) scales the joint loss for both optimisers, as torch.amp does for several
optimisers of one loss; an overflow in only one network's gradients skips only that
network's step, where one optimiser would skip both (the scale then shrinks for both).

The forget-rate schedule and its defaults are Co-teaching's (methods/coteaching.py, shared):
the release schedules it the same way (jocor.py:41-42) and halves --noise_rate for its
CIFAR-10 asymmetric noise (jocor.py:20-24), which is what the expected-wrong-fraction
default gives. --co_lambda defaults to the values the release's README gives for CIFAR.

Columns: forget_rate, kept_fraction, and kept_clean_fraction (the truly clean share of the
one selection; the release reports it as both networks' "pure ratio").
"""
import torch
import torch.nn.functional as F

from core.args import finite_float
from errors import UserError
from methods.coteaching import CoTeaching, small_loss_selection

README_LAMBDA = {"cifar10": 0.9, "cifar100": 0.85}  # README.md:30-31; others take CIFAR-10's
README_LAMBDA_CIFAR10_80 = 0.65  # README.md:30, CIFAR-10 at 80% noise


def default_co_lambda(cfg):
    """The README's best lambda for the data set and noise (README.md:30-31)."""
    if cfg.dataset == "cifar10" and cfg.noise_type == "symmetric" and cfg.noise_rate == 0.8:
        return README_LAMBDA_CIFAR10_80
    return README_LAMBDA.get(cfg.dataset, README_LAMBDA["cifar10"])


def jocor_losses(logits, peer_logits, labels, forget_rate, co_lambda):
    """(the mean joint loss over the kept samples, the kept indices): the release's
    loss_jocor (algorithm/loss.py:20-40), in fp32. int((1 - forget_rate) * batch) samples
    are kept, at least one."""
    log_p, log_q = F.log_softmax(logits.float(), dim=1), F.log_softmax(peer_logits.float(), dim=1)
    ce = F.nll_loss(log_p, labels, reduction="none") + F.nll_loss(log_q, labels, reduction="none")
    symmetric_kl = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1)  # KL(p||q) + KL(q||p)
    joint = (1.0 - co_lambda) * ce + co_lambda * symmetric_kl
    keep = small_loss_selection(joint, max(1, int((1.0 - forget_rate) * len(labels))))
    return joint[keep].mean(), keep


def minimize_jointly(run, loss, names=("", "peer")):
    """One backward of `loss` and one step of each named network's optimiser: with equal
    hyper-parameters, the step of one optimiser over all their parameters."""
    nets = [run.networks[name] for name in names]
    for net in nets:
        net.optimizer.zero_grad(set_to_none=True)
    scaler = nets[0].scaler
    if scaler is None:
        loss.backward()
        for net in nets:
            net.optimizer.step()
    else:
        scaler.scale(loss).backward()
        for net in nets:
            scaler.step(net.optimizer)
        scaler.update()


class JoCoR(CoTeaching):
    name = "jocor"
    title = "JoCoR"
    summary = "JoCoR: two networks, one joint loss with co-regularisation, small-loss samples"
    knobs = {"co_lambda": 0.0}

    def __init__(self, forget_rate, num_gradual=10, exponent=1.0, n_epoch=1, co_lambda=0.9):
        super().__init__(forget_rate, num_gradual, exponent, n_epoch)
        self.co_lambda = co_lambda
        self.tag = f"jocor-l{co_lambda:g}-f{forget_rate:g}-t{num_gradual}-c{exponent:g}"

    @classmethod
    def add_flags(cls, group, defaults):
        super().add_flags(group, defaults)
        group.add_argument("--co_lambda", type=finite_float, default=defaults.get("co_lambda"),
                           help="lambda, the weight of the co-regularisation (default, from the release's "
                                "README: 0.9 on cifar10, 0.65 on cifar10 at 80%% symmetric noise, 0.85 "
                                "on cifar100, cifar10's elsewhere; its main.py's own default is 0.1)")

    @classmethod
    def check_flags(cls, cfg):
        super().check_flags(cfg)
        if cfg.co_lambda is None:
            cfg.co_lambda = default_co_lambda(cfg)
        if not 0.0 <= cfg.co_lambda <= 1.0:
            raise UserError(f"--co_lambda {cfg.co_lambda} is outside [0, 1]: the loss weighs "
                            "cross-entropy by 1 - lambda and the co-regularisation by lambda")
        cfg.co_lambda = abs(cfg.co_lambda)  # -0 is 0: one folder for one run

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.forget_rate, cfg.num_gradual, cfg.exponent, cfg.n_epoch, cfg.co_lambda)

    @property
    def label(self):
        return f"JoCoR lambda={self.co_lambda:g} tau={self.forget_rate:g}"

    def is_ce(self):
        """lambda 0 and nothing dropped: the main network's gradient is that of its own mean
        cross-entropy (the peer's term has none on it), so it trains as plain CE does."""
        return self.co_lambda == 0 and self.forget_rate == 0

    def train_step(self, run, x, y, idx):
        with run.autocast():
            logits, peer_logits = run.forward(x), self.peer.forward(x)
        loss, keep = jocor_losses(logits, peer_logits, y, self.rate, self.co_lambda)
        minimize_jointly(run, loss)
        self.kept += len(keep)
        self.seen += len(y)
        if self.clean is not None:
            self.kept_clean[0] += self.clean[idx[keep]].sum()
        return loss.detach().float(), logits.detach()

    def epoch_columns(self):
        clean = None if self.clean is None else self.kept_clean[0].item() / self.kept
        return {"forget_rate": self.rate, "kept_fraction": self.kept / self.seen,
                "kept_clean_fraction": clean}
