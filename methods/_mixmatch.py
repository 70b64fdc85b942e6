"""MixMatch machinery shared by the semi-supervised methods (DivideMix, PES-semi): sharpening,
label refinement and guessing, the mixing of inputs and targets, the semi-supervised loss
and its ramp-up, and the penalties. Pure functions of tensors; no host sync.

The formulas are those of DivideMix's release (LiJunnan1992/DivideMix, Train_cifar.py),
cited line by line in docs/REPRODUCTION.md. This file defines no method (its name starts
with "_").
"""
import torch
import torch.nn.functional as F


def sharpen(p, temperature):
    """p ** (1 / T), renormalised over the classes (Train_cifar.py:70-72, :81-83)."""
    pt = p ** (1.0 / temperature)
    return pt / pt.sum(dim=1, keepdim=True)


def refine_labels(onehot, w, p1, p2, temperature):
    """Label (co-)refinement of labelled samples: w * y + (1 - w) * (p1 + p2) / 2, sharpened;
    p1, p2 are the trained network's softmax on two augmentations, w (B,) the clean
    probability of each sample (Train_cifar.py:79-83)."""
    w = w.view(-1, 1)
    return sharpen(w * onehot + (1.0 - w) * (p1 + p2) / 2.0, temperature)


def guess_labels(probs, temperature):
    """Label (co-)guessing of unlabelled samples: the mean of the given softmaxes (both
    networks on two augmentations each), sharpened (Train_cifar.py:69-72)."""
    return sharpen(sum(probs) / len(probs), temperature)


def mix(inputs, targets, lam, perm):
    """MixMatch's mixing with lambda' = max(lambda, 1 - lambda), so that each mixed sample
    stays closer to its own input: (lambda' x + (1 - lambda') x[perm], same for the
    targets) (Train_cifar.py:87-99). `lam` is a Python float."""
    lam = max(lam, 1.0 - lam)
    return lam * inputs + (1.0 - lam) * inputs[perm], lam * targets + (1.0 - lam) * targets[perm]


def semi_losses(logits_x, targets_x, logits_u, targets_u):
    """(Lx, Lu): soft cross-entropy on the mixed labelled part, mean squared error between
    softmax and target on the mixed unlabelled part (Train_cifar.py:198-201)."""
    lx = -(F.log_softmax(logits_x.float(), dim=1) * targets_x).sum(dim=1).mean()
    if logits_u is None or len(logits_u) == 0:
        return lx, torch.zeros_like(lx)
    lu = ((torch.softmax(logits_u.float(), dim=1) - targets_u) ** 2).mean()
    return lx, lu


def linear_rampup(current, warm_up, lambda_u, length=16):
    """lambda_u * clip((current - warm_up) / length, 0, 1), current = epoch + batch / steps
    (Train_cifar.py:192-194, :105). Host floats."""
    return lambda_u * min(max((current - warm_up) / length, 0.0), 1.0)


def uniform_prior_penalty(logits):
    """sum_k pi_k log(pi_k / mean_b p_bk) with pi uniform: keeps the mean prediction of the
    batch near uniform (Train_cifar.py:107-111)."""
    k = logits.shape[1]
    mean = torch.softmax(logits.float(), dim=1).mean(dim=0)
    return (torch.log(torch.full_like(mean, 1.0 / k) / mean)).sum() / k


def negative_entropy(logits):
    """mean_b sum_k p_bk log p_bk: the confidence penalty of the warm-up on asymmetric noise
    (Train_cifar.py:205-208, :132-134)."""
    p = torch.softmax(logits.float(), dim=1)
    return (p.log() * p).sum(dim=1).mean()
