"""Generalized label smoothing, positive and negative (Wei et al., ICML 2022).

Loss wa * CE + wb * GLS(r) on the noisy labels (loss.gls_loss): r > 0 positive smoothing
(PLS), r < 0 negative smoothing (NLS), r = 0 cross-entropy. The three GLS scripts are
this method with the release's protocols; the CE warm-up is wa = 1, wb = 0.
"""
from core.args import finite_float
from errors import UserError
from loss import gls_loss
from methods import Method


class GLS(Method):
    name = "gls"
    title = "GLS (label smoothing)"
    summary = "generalized label smoothing: wa * CE + wb * GLS(smooth_rate), r < 0 is NLS"
    knobs = {"smooth_rate": 0.0}

    def __init__(self, smooth_rate, wa=0.0, wb=1.0):
        self.smooth_rate, self.wa, self.wb = smooth_rate, wa, wb
        if wb == 0:
            self.tag = "ce"
        elif wa == 0:
            self.tag = f"r{smooth_rate:g}"
        else:
            self.tag = f"wa{wa:g}-wb{wb:g}-r{smooth_rate:g}"

    @classmethod
    def add_flags(cls, g, d):
        g.add_argument("--wa", type=finite_float, default=d.get("wa", 0.0), help="weight of plain CE")
        g.add_argument("--wb", type=finite_float, default=d.get("wb", 1.0), help="weight of GLS")
        g.add_argument("--smooth_rate", type=finite_float, default=d.get("smooth_rate", 0.1),
                       help="r: > 0 PLS, < 0 NLS, 0 CE")

    @classmethod
    def check_flags(cls, cfg):
        if cfg.smooth_rate > 1.0:
            raise UserError(f"--smooth_rate {cfg.smooth_rate} is above 1: the target's true-class weight "
                            "1 - r would be negative; use r <= 1 (negative r is NLS)")
        if cfg.wa < 0 or cfg.wb < 0:
            raise UserError(f"--wa {cfg.wa} and --wb {cfg.wb} weigh losses: both must be >= 0")
        if cfg.wa + cfg.wb == 0:
            raise UserError("--wa and --wb are both 0: the loss would be 0; set one of them")

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.smooth_rate, cfg.wa, cfg.wb)

    @property
    def label(self):
        r = f"r={self.smooth_rate:g}"
        if self.wb == 0:
            return "CE" if self.wa == 1 else f"CE x{self.wa:g}"
        if self.wa > 0:
            return f"{self.wa:g} CE + {self.wb:g} GLS {r}"
        kind = "PLS" if self.smooth_rate > 0 else "NLS" if self.smooth_rate < 0 else "GLS"
        return f"{kind} {r}" + (f" x{self.wb:g}" if self.wb != 1 else "")

    def knob_values(self):
        return {"smooth_rate": self.smooth_rate} if self.wb > 0 else {}

    def is_ce(self):
        return (self.wb == 0 and self.wa == 1) or (self.smooth_rate == 0 and self.wa + self.wb == 1)

    def loss(self, logits, labels, indices):
        return gls_loss(logits, labels, self.smooth_rate, self.wa, self.wb)

    def divergence_hint(self, script):
        if self.smooth_rate >= 0 or self.wb == 0:
            return ""
        if script == "main_GLS_load":
            return ("Negative smoothing is unbounded below: even from the CE warm-up it can diverge or "
                    "collapse; use a milder smooth rate (closer to 0) or a lower --lr.")
        return ("Negative smoothing is unbounded below: from scratch it can diverge or collapse "
                "(the paper starts it from the CE warm-up: main_warmup.py, then main_GLS_load.py); "
                "use a milder smooth rate or a lower --lr.")
