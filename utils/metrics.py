"""Metrics of a run: the training columns counted from the step's logits (EpochStats), the
evaluation of a model (accuracy, loss, confidence, ECE), and summary.json's best and last
values. Everything accumulates on the device; one host sync per epoch or evaluation.
"""
import math

import torch
import torch.nn.functional as F

ECE_BINS = 15


class Diverged(Exception):
    def __init__(self, epoch, step, loss):
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


class EpochStats:
    """One epoch's training metrics, accumulated on the device from the logits the step
    already has: no extra pass over the data and no host sync until row().

    Each sample falls in one of 8 cells, code = clean + 2 * fits_noisy + 4 * fits_true
    (clean: its noisy label is the true one; fits_*: the prediction equals that label);
    the cells' counts give every column. `true_labels` None (Clothing1M) counts train_acc
    only; a true label of -1 (an open-set image: no class of the data set) is never hit.
    """

    def __init__(self, device, true_labels=None, loss_bound=math.inf):
        self.true, self.bound = true_labels, loss_bound
        self.loss_sum = torch.zeros((), device=device)
        self.counts = torch.zeros(8, dtype=torch.int64, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), device=device)

    @torch.no_grad()
    def add(self, step, loss, logits, labels, idx):
        first_bad = (self.bad_step < 0) & ~(torch.isfinite(loss) & (loss.abs() <= self.bound))
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss, self.bad_loss)
        self.loss_sum += loss * len(labels)
        pred = logits.argmax(1)
        code = 2 * (pred == labels)
        if self.true is not None:
            true = self.true[idx]
            code = code + (labels == true) + 4 * (pred == true)
        self.counts.scatter_add_(0, code, torch.ones_like(code))

    def check(self, epoch):
        """Raise Diverged if a step's loss was non-finite or beyond the bound (one sync)."""
        step = self.bad_step.item()
        if step >= 0:
            raise Diverged(epoch, step, self.bad_loss.item())

    def row(self):
        """train_loss, train_acc and, with true labels, train_acc_true, fit_clean,
        mem_noisy, fix_noisy (percent; None where no sample falls in the group)."""
        c = self.counts.tolist()
        n = sum(c)
        part = lambda test: sum(v for k, v in enumerate(c) if test(k))  # noqa: E731
        pct = lambda a, b: 100.0 * a / b if b else None  # noqa: E731
        row = {"train_loss": self.loss_sum.item() / n, "train_acc": pct(part(lambda k: k & 2), n)}
        if self.true is not None:
            n_clean = part(lambda k: k & 1)
            row.update(train_acc_true=pct(part(lambda k: k & 4), n),
                       fit_clean=pct(part(lambda k: k & 1 and k & 2), n_clean),
                       mem_noisy=pct(part(lambda k: not k & 1 and k & 2), n - n_clean),
                       fix_noisy=pct(part(lambda k: not k & 1 and k & 4), n - n_clean))
        return row


@torch.no_grad()
def evaluate(model, loader, autocast, n_bins=ECE_BINS):
    """acc (top-1), loss (mean cross-entropy), conf (mean max-softmax) and ece (expected
    calibration error over `n_bins` equal-width confidence bins, bin b holding the
    confidences in (b/n, (b+1)/n]: sum_b |correct_b - conf_b| / N), all but loss in
    percent. Accumulated on the device; one host sync at the end."""
    was_training = model.training
    model.eval()
    device = loader.device
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # correct, loss, confidence
    bins = torch.zeros(2, n_bins, device=device, dtype=torch.float64)  # correct, confidence
    n = 0
    for x, y, _ in loader:
        with autocast():
            logits = model(x).float()
        conf, pred = torch.softmax(logits, dim=1).max(dim=1)
        correct = (pred == y).double()
        totals += torch.stack([correct.sum(), F.cross_entropy(logits, y, reduction="sum").double(),
                               conf.double().sum()])
        b = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
        bins.index_add_(1, b, torch.stack([correct, conf.double()]))
        n += len(y)
    model.train(was_training)
    correct, loss, conf, ece = torch.cat([totals, (bins[0] - bins[1]).abs().sum()[None]]).tolist()
    n = max(n, 1)
    return {"acc": 100.0 * correct / n, "loss": loss / n, "conf": 100.0 * conf / n,
            "ece": 100.0 * ece / n}


# Columns reported at the last epoch and at the best epoch (of test_acc, or of
# test_acc_ema for the momentum model's columns) in summary.json.
EPOCH_COLUMNS = ("test_loss", "test_conf", "test_ece", "train_acc_true", "fit_clean", "mem_noisy",
                 "fix_noisy")


def summarize_rows(rows):
    """best/last of every *_acc column; for a val split, test accuracy at the best val epoch;
    last and best-epoch values of the calibration and memorisation columns."""
    if not rows:
        return {}
    out = {}
    for column in rows[0]:
        split, sep, suffix = column.partition("_acc")
        if not sep or split not in ("test", "val"):
            continue
        best = max(rows, key=lambda row: row[column])  # the first epoch that reaches the maximum
        out[f"best_{split}_acc{suffix}"] = best[column]
        out[f"last_{split}_acc{suffix}"] = rows[-1][column]
        if column == "test_acc":
            out["best_epoch"] = best["epoch"]
        if split == "val":
            out[f"best_val_epoch{suffix}"] = best["epoch"]
            out[f"test_acc_at_best_val{suffix}"] = best[f"test_acc{suffix}"]
    for column in rows[0]:
        base, suffix = (column[:-4], "_ema") if column.endswith("_ema") else (column, "")
        if base in EPOCH_COLUMNS:
            best = max(rows, key=lambda row: row[f"test_acc{suffix}"])
            out[f"last_{column}"] = rows[-1][column]
            out[f"best_epoch_{column}"] = best[column]
    return out


def format_row(row, n_epoch):
    accs = " ".join(f"{k} {v:.2f}" for k, v in row.items() if "_acc" in k and v is not None)
    return (f"epoch {row['epoch']}/{n_epoch} lr {row['lr']:.3g} loss {row['train_loss']:.4f} "
            f"{accs} ({row['epoch_time_s']:.1f}s)")
