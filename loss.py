"""The losses of the two papers, one formula per function.

Notation: z the logits of one sample, p = softmax(z), y its (noisy) label, K the
number of classes. Every loss is averaged over the batch and computed in fp32
whatever the autocast precision of the model.
"""
import torch
import torch.nn.functional as F


def soft_cross_entropy(logits, targets):
    """Cross-entropy against arbitrary targets: -mean_i sum_k t_ik * log p_ik.

    The targets need not lie on the simplex (negative smoothing, SLN noise), so
    this is not F.cross_entropy with probabilities, whose semantics assume they do.
    """
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def gls_targets(labels, num_classes, smooth_rate):
    """Generalized label smoothing target: t = (1 - r) * onehot(y) + r / K.

    r > 0 is positive smoothing, r < 0 negative smoothing (t leaves the simplex),
    r = 0 is the one-hot target.
    """
    onehot = F.one_hot(labels, num_classes).float()
    return (1.0 - smooth_rate) * onehot + smooth_rate / num_classes


def gls_loss(logits, labels, smooth_rate, wa=0.0, wb=1.0):
    """wa * CE + wb * GLS, the loss of Wei et al. (ICML 2022).

    CE  = -log p_y
    GLS = (1 - r) * (-log p_y) + r * mean_k(-log p_k)      (mean over all K classes)
        = cross-entropy against gls_targets(y, K, r).
    For r < 0 the loss is unbounded below. Do not replace this with
    F.cross_entropy(label_smoothing=r): it equals GLS for 0 <= r <= 1 only.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    nll = -log_p.gather(1, labels[:, None]).squeeze(1)
    uniform = -log_p.mean(dim=1)
    gls = (1.0 - smooth_rate) * nll + smooth_rate * uniform
    return (wa * nll + wb * gls).mean()


def sln_targets(labels, num_classes, sigma, generator=None):
    """Stochastic label noise target (Chen et al., ICLR 2021): t = onehot(y) + sigma * eps,
    eps ~ N(0, 1) drawn afresh per sample, per class and per call.

    Not clipped or renormalised: t leaves the simplex, and its cross-entropy
    (soft_cross_entropy) is CE(y) + sigma * noise whose gradient perturbs the logits.
    sigma = 0 is the exact one-hot target (plain CE).
    """
    onehot = F.one_hot(labels, num_classes).float()
    if sigma == 0:
        return onehot
    noise = torch.randn(onehot.shape, generator=generator, device=onehot.device)
    return onehot + sigma * noise


def corrected_targets(logits, labels, current_targets, soft=False):
    """SLN label correction over the training set (Chen et al., ICLR 2021):

        t_i = l_i * onehot(y_i) + (1 - l_i) * p_i
        l_i = (L_i - min_j L_j) / (max_j L_j - min_j L_j),   L_i = -sum_k c_ik log softmax(z_i)_k

    z the (momentum) model's logits of every training sample, y the noisy labels, c the
    training set's current targets: the noisy one-hot at the first correction, the
    previous correction's targets after it (as in the release, which measures the loss
    against the targets the training set holds). p_i = onehot(argmax z_i) (hard, CIFAR)
    or softmax(z_i) (soft, Clothing1M). A sample the model finds hard to fit keeps its
    label; an easy one takes the prediction. If all losses are equal, l = 0.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    loss = -(current_targets.float() * log_p).sum(dim=1)
    l = ((loss - loss.min()) / (loss.max() - loss.min()).clamp_min(1e-12))[:, None]
    num_classes = logits.shape[1]
    p = log_p.exp() if soft else F.one_hot(log_p.argmax(1), num_classes).float()
    return l * F.one_hot(labels, num_classes).float() + (1.0 - l) * p
