"""Pieces shared by the loss methods (sce, nce_rce, bootstrap, mixup): cross-entropy as every
CE baseline of this repository computes it, the reverse cross-entropy term of the SCE and
active-passive releases, the per-data-set defaults, and the check of two loss weights."""
import math

import torch
import torch.nn.functional as F

from errors import UserError

LABEL_CLIP = 1e-4   # the one-hot label's clip of the RCE term in both releases: log 0 -> ln 1e-4


def cross_entropy(logits, labels, log_p=None):
    """Batch mean of -log p_y in fp32, the sum order of the gls and gce baselines (a run at a
    method's CE baseline trains bit for bit as theirs); log_p: the log-softmax if computed."""
    if log_p is None:
        log_p = F.log_softmax(logits.float(), dim=1)
    return -log_p.gather(1, labels[:, None]).squeeze(1).mean()


def released_or_given(cfg, released, *flags):
    """Set each of `flags` that is None on cfg to the release's value for cfg.dataset, from
    `released` {dataset: values}, CIFAR-10's for a data set it has none for. Resolved when
    the flags are checked, so that the default and the same value typed share a run folder."""
    values = released.get(cfg.dataset, released["cifar10"])
    for flag, value in zip(flags, values):
        if getattr(cfg, flag) is None:
            setattr(cfg, flag, value)


def check_weights(cfg, alpha_flag, beta_flag, what):
    """Both weights >= 0 and not both 0; -0 becomes 0 (one folder for one run)."""
    alpha, beta = getattr(cfg, alpha_flag), getattr(cfg, beta_flag)
    for flag, value in ((alpha_flag, alpha), (beta_flag, beta)):
        if value < 0:
            raise UserError(f"--{flag} {value} must be >= 0: it weighs a term of the loss ({what})")
    if alpha == 0 and beta == 0:
        raise UserError(f"--{alpha_flag} 0 and --{beta_flag} 0 leave no loss to train on: give "
                        "one of them a positive weight")
    setattr(cfg, alpha_flag, abs(alpha))
    setattr(cfg, beta_flag, abs(beta))


def reverse_cross_entropy(probs, labels, prob_min=0.0):
    """Per-sample RCE -sum_k q_k log t_k, with q = clamp(probs, prob_min, 1) (prob_min 0: the
    probabilities as they are) and t the one-hot label clipped at LABEL_CLIP."""
    q = probs.clamp(prob_min, 1.0) if prob_min > 0 else probs
    log_t = torch.full_like(q, math.log(LABEL_CLIP)).scatter_(1, labels[:, None], 0.0)
    return -(q * log_t).sum(dim=1)
