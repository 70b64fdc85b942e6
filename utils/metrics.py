"""Metrics of a run: the training columns counted from the step's logits (EpochStats), the
evaluation of a model (accuracy, loss, confidence, ECE, confusion matrix), summary.json's
best and last values and per-class results, and the TensorBoard copy of metrics.csv.
Everything accumulates on the device; one host sync per epoch or evaluation.
"""
import contextlib
import functools
import math
import os

import torch
import torch.nn.functional as F

from core.args import format_duration
from core.files import file_error
from errors import UserError

from .schema import per_class_entry

ECE_BINS = 15


class Diverged(Exception):
    def __init__(self, epoch, step, loss):
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


class EpochStats:
    """One epoch's training metrics, accumulated on the device from the logits the step
    already has: no extra pass over the data and no host sync until it is read.

    Each sample falls in one of 8 cells, code = clean + 2 * fits_noisy + 4 * fits_true
    (clean: its noisy label is the true one; fits_*: the prediction equals that label),
    counted per true class: counts[c, code], c = 0..K-1 (K the logits' columns), and row
    K for the images of no class (true label -1, open-set) or for every image when the
    true labels are unknown (`true_labels` None, Clothing1M: train_acc only). The cells'
    counts give every column, globally (row()) and per true class (per_class()).
    """

    def __init__(self, device, true_labels=None, loss_bound=math.inf):
        self.device, self.true, self.bound = device, true_labels, loss_bound
        self.loss_sum = torch.zeros((), device=device)
        self.counts = None  # (K + 1, 8), made at the first step, when K is known
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self._host = None

    @torch.no_grad()
    def add(self, step, loss, logits, labels, idx):
        first_bad = (self.bad_step < 0) & ~(torch.isfinite(loss) & (loss.abs() <= self.bound))
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss, self.bad_loss)
        self.loss_sum += loss * len(labels)
        k = logits.shape[1]
        if self.counts is None:
            self.counts = torch.zeros(k + 1, 8, dtype=torch.int64, device=self.device)
        pred = logits.argmax(1)
        code = 2 * (pred == labels)
        if self.true is None:
            code = code + 8 * k
        else:
            true = self.true[idx]
            # true % (K + 1) is the class, and K for -1 (an image of no class)
            code = code + (labels == true) + 4 * (pred == true) + 8 * (true % (k + 1))
        self.counts.view(-1).scatter_add_(0, code, torch.ones_like(code))

    def check(self, epoch):
        """Raise Diverged if a step's loss was non-finite or beyond the bound (one sync)."""
        step = self.bad_step.item()
        if step >= 0:
            raise Diverged(epoch, step, self.bad_loss.item())

    def read(self):
        """The counts on the host, (K + 1) lists of 8: copied once, when the epoch is over."""
        if self._host is None:
            self._host = [[0] * 8] if self.counts is None else self.counts.tolist()
        return self._host

    def row(self):
        """train_loss, train_acc and, with true labels, train_acc_true, fit_clean,
        mem_noisy, fix_noisy (percent; None where no sample falls in the group)."""
        c = [sum(cells) for cells in zip(*self.read())]
        n = sum(c)
        row = {"train_loss": self.loss_sum.item() / n, "train_acc": percent(cell_sum(c, FITS_NOISY), n)}
        if self.true is not None:
            n_clean = cell_sum(c, CLEAN)
            row.update(train_acc_true=percent(cell_sum(c, FITS_TRUE), n),
                       fit_clean=percent(cell_sum(c, CLEAN_FIT), n_clean),
                       mem_noisy=percent(cell_sum(c, NOISY_FIT), n - n_clean),
                       fix_noisy=percent(cell_sum(c, NOISY_FIXED), n - n_clean))
        return row

    def per_class(self):
        """Per true class c (lists of K): train_fit_clean[c], the percent of the samples of
        class c with a correct label predicted as that label, among train_n_clean[c];
        train_mem_noisy[c], the percent of those with a wrong label predicted as the wrong
        label, among train_n_noisy[c]; None where the count is 0. {} without true labels.
        Open-set images belong to no class: they count in row() alone.
        With n the counts: fit_clean = sum_c fit_clean[c] * n_clean[c] / sum_c n_clean[c]."""
        if self.true is None:
            return {}
        classes = self.read()[:-1]
        n_clean = [cell_sum(c, CLEAN) for c in classes]
        n_noisy = [sum(c) - n for c, n in zip(classes, n_clean)]
        return {"train_fit_clean": [percent(cell_sum(c, CLEAN_FIT), n) for c, n in zip(classes, n_clean)],
                "train_n_clean": n_clean,
                "train_mem_noisy": [percent(cell_sum(c, NOISY_FIT), n) for c, n in zip(classes, n_noisy)],
                "train_n_noisy": n_noisy}


# Groups of EpochStats' cells, by the bits of code = clean + 2 * fits_noisy + 4 * fits_true.
FITS_NOISY = [k for k in range(8) if k & 2]
FITS_TRUE = [k for k in range(8) if k & 4]
CLEAN = [k for k in range(8) if k & 1]
CLEAN_FIT = [k for k in CLEAN if k & 2]
NOISY_FIT = [k for k in FITS_NOISY if not k & 1]
NOISY_FIXED = [k for k in FITS_TRUE if not k & 1]


def cell_sum(cells, group):
    return sum(cells[k] for k in group)


def percent(a, b):
    return 100.0 * a / b if b else None


@torch.no_grad()
def evaluate(model, loader, autocast, n_bins=ECE_BINS, confusion=None):
    """acc (top-1), loss (mean cross-entropy), conf (mean max-softmax) and ece (expected
    calibration error over `n_bins` equal-width confidence bins, bin b holding the
    confidences in (b/n, (b+1)/n]: sum_b |correct_b - conf_b| / N), all but loss in
    percent. Accumulated on the device; one host sync at the end. `confusion`, a (K, K)
    int64 tensor on the device, gets the count of each (true class, predicted class)
    added when given; the caller reads it."""
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
        if confusion is not None:
            confusion.view(-1).scatter_add_(0, y * confusion.shape[1] + pred, torch.ones_like(pred))
        n += len(y)
    model.train(was_training)
    correct, loss, conf, ece = torch.cat([totals, (bins[0] - bins[1]).abs().sum()[None]]).tolist()
    n = max(n, 1)
    return {"acc": 100.0 * correct / n, "loss": loss / n, "conf": 100.0 * conf / n,
            "ece": 100.0 * ece / n}


def per_class_record(epoch, confusion, train):
    """summary.json's per_class entry of one epoch: the test confusion matrix (row = true
    class, column = predicted; counts), test_acc[c] = 100 * confusion[c, c] / sum_j
    confusion[c, j] (None for a class without test images) and `train`, the training
    columns per true class (EpochStats.per_class). Reads the matrix: one host sync."""
    matrix = confusion.tolist()
    return per_class_entry(epoch, matrix, [percent(row[c], sum(row)) for c, row in enumerate(matrix)], train)


def format_row(rows, n_epoch):
    """The log line of the last epoch of `rows`, with the time the rest of the run should
    take: the mean time of the last (up to) five epochs times the epochs left."""
    row = rows[-1]
    accs = " ".join(f"{k} {v:.2f}" for k, v in row.items() if "_acc" in k and v is not None)
    left = n_epoch - row["epoch"]
    recent = [r["epoch_time_s"] for r in rows[-5:]]
    eta = f"; {format_duration(left * sum(recent) / len(recent))} left" if left > 0 else ""
    return (f"epoch {row['epoch']}/{n_epoch} lr {row['lr']:.3g} loss {row['train_loss']:.4f} "
            f"{accs} ({row['epoch_time_s']:.1f}s{eta})")


# ---------------------------------------------------------------- TensorBoard

def check_tensorboard():
    """--tensorboard needs the tensorboard package: refuse the run before it writes anything."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(it is in requirements.txt), or train without --tensorboard") from None


class TensorBoardLog:
    """--tensorboard: each metrics.csv row as scalars named as its columns, at step = epoch,
    in event files of `path` (<run folder>/tensorboard). A context manager: the writer is
    closed when the run ends, however it ends.

    `resumed_after`: the epoch of the checkpoint a resumed run continues from. Epochs after
    it may already have events, written before an interruption that came ahead of their
    checkpoint; the run writes them again, and a purge mark at the first of them
    (SummaryWriter's purge_step) makes TensorBoard's reader drop the older ones, so each
    step has one value. A resumed run that wrote no events before (--tensorboard turned on
    at the resume) first writes the rows it carries.

    A folder that cannot be written (read-only, a link to nothing, a file in its place) is a
    UserError naming it, whenever it shows: SummaryWriter writes from a thread of its own,
    whose error is raised at the next add or flush; the thread's own report (a traceback
    on stderr) is left out.
    """

    def __init__(self, path, resumed_after=0, rows=()):
        self.path, self.resumed_after, self.rows, self.writer = path, resumed_after, rows, None

    def __enter__(self):
        from torch.utils.tensorboard import SummaryWriter

        quiet_writer_threads()
        with self.naming_errors():
            earlier = os.path.isdir(self.path) and any(n.startswith("events.") for n in os.listdir(self.path))
            purge = self.resumed_after + 1 if self.resumed_after and earlier else None
            self.writer = SummaryWriter(self.path, purge_step=purge)
        try:
            for row in () if earlier else self.rows:
                self.add(row)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def add(self, row):
        with self.naming_errors():
            for name, value in row.items():
                if name != "epoch" and value is not None:
                    self.writer.add_scalar(name, value, global_step=row["epoch"])
            self.writer.flush()  # on disk with the epoch's metrics.csv row, whatever ends the run

    def __exit__(self, kind, exc, tb):
        if self.writer is None:
            return False
        try:
            with self.naming_errors():
                self.writer.close()
        except UserError:
            if exc is None:  # else the run's own error is the one to report
                raise
        return False

    @contextlib.contextmanager
    def naming_errors(self):
        try:
            yield
        except OSError as exc:
            if not exc.filename:
                exc.filename = self.path
            folder = os.path.dirname(os.path.abspath(self.path))
            raise UserError(f"--tensorboard: its event files cannot be written: {file_error(exc, folder)}; "
                            "then rerun the same command with --if_exists auto (or without --tensorboard)") from None


@functools.lru_cache(maxsize=None)
def quiet_writer_threads():
    """Leave out the report of a TensorBoard writer thread that died: the writer raises its
    error again in the thread that uses it (TensorBoardLog names it there)."""
    import threading

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args):
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)
    threading.excepthook = hook
