"""torch.compile, checked against eager mode on the run's first batch before the first step.

torch's CPU compiler has been seen to miscompute convolution weight gradients (1x1 stride-2
convolutions with fewer than 8 input channels, docs/BENCHMARKS.md); a run must not train on
wrong gradients without a word.
"""
import math

import torch
import torch.nn.functional as F

from errors import UserError

COMPILE_TOLERANCE = {"fp32": 0.01, "fp32_strict": 0.01, "bf16": 0.1, "fp16": 0.05}


def check_compiled(model, forward, autocast, precision, x, y):
    """torch.compile must not change the gradients: on one batch, the compiled forward and
    backward (cross-entropy on y) against eager. A parameter fails when its gradient's
    relative error exceeds COMPILE_TOLERANCE[precision] and the error is at least 1% of the
    whole gradient's norm (so that near-zero gradients, rounded differently, do not count).
    The model is left as found: gradients cleared, BN statistics restored. One host sync.
    Raises UserError naming the worst parameters; returns the largest relative error."""
    buffers = [b.clone() for b in model.buffers()]
    grads = []
    for f in (model, forward):
        model.zero_grad(set_to_none=True)
        with autocast():
            logits = f(x)
        F.cross_entropy(logits.float(), y).backward()
        grads.append([p.grad.float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float)
                      for p in model.parameters()])
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
    model.zero_grad(set_to_none=True)
    eager, compiled = grads
    norms = torch.stack([g.norm() for g in eager])
    errors = torch.stack([(c - g).norm() for g, c in zip(eager, compiled)])
    relative = (errors / norms.clamp_min(1e-30)).tolist()
    floor = 0.01 * norms.norm().item()
    names = [n for n, _ in model.named_parameters()]
    tolerance = COMPILE_TOLERANCE[precision]
    bad = sorted(((r, n) for r, n, e in zip(relative, names, errors.tolist())
                  if not math.isfinite(r) or (r > tolerance and e >= floor)), reverse=True)
    if bad:
        worst = ", ".join(f"{n} ({r:.2g})" for r, n in bad[:3])
        raise UserError(
            f"torch.compile changed the gradients of {len(bad)} parameter(s) against eager mode on "
            f"the first batch (relative error, tolerance {tolerance:g} in {precision}): {worst}. "
            f"This is a bug of torch {torch.__version__}'s compiler for this model and device, not "
            "of the run: train without --compile.")
    return max(relative) if relative else 0.0
