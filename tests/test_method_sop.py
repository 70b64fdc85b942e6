"""Method sop: the release's loss and the updates of u, v and the network over two steps
against a numpy transcription (gradients by central differences in float64); the SOP+
terms; the strong augmentation against PIL, the library the release augments with; the
flags, the release's training defaults and the cosine plan; a run and exact resume."""
import math

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import PIL.ImageOps
import pytest
import torch
import torch.nn.functional as F

from conftest import parse_flags, read_csv, read_json
from errors import UserError
from methods.sop import SOP, sop_loss
from test_methods_runs import SMALL, assert_sigterm_resume_is_exact, train
from utils import augment
from utils.state import RunState

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = 1e-4


# ---------------------------------------------------------------- numpy transcription

def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_loss(z, y, u, v, v_in_ce=None, rb=0.0, zs=None, rc=0.0, p_target=None):
    """model/loss.py:55-120 in numpy. v_in_ce: the V of the cross-entropy term (the release
    detaches it there); p_target: the consistency target softmax(z) (detached)."""
    b, k = z.shape
    U = np.clip(u ** 2 * y, 0, 1)
    V = np.clip(v ** 2 * (1 - y), 0, 1)
    V_ce = V if v_in_ce is None else np.clip(v_in_ce ** 2 * (1 - y), 0, 1)
    q = np.maximum(np_softmax(z) + U - V_ce, EPS)
    q = np.clip(q / np.maximum(q.sum(axis=1, keepdims=True), EPS), EPS, 1.0)
    h = np.eye(k)[z.argmax(axis=1)]
    loss = np.mean(-np.sum(y * np.log(q), axis=1)) + np.sum((h + U - V - y) ** 2) / b
    if rb > 0:
        loss += rb * -np.sum(np.log(np.clip(q.mean(axis=0), EPS, 1.0)) / k)
    if zs is not None and rc > 0:
        p = np_softmax(z) if p_target is None else p_target
        ls = zs - zs.max(axis=1, keepdims=True)
        ls = ls - np.log(np.exp(ls).sum(axis=1, keepdims=True))
        loss += rc * np.mean(np.sum(p * (np.log(p) - ls), axis=1))
    return loss


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        a, b = x.copy(), x.copy()
        a[i] += h
        b[i] -= h
        g[i] = (f(a) - f(b)) / (2 * h)
    return g


# ---------------------------------------------------------------- the loss and its updates

def test_two_steps_update_u_v_and_the_network_as_the_release_computes():
    rng = np.random.RandomState(0)
    n, k, d = 6, 3, 4
    labels = np.array([0, 1, 2, 1, 0, 2])
    x = rng.randn(n, d)
    w = rng.randn(k, d) * 0.5
    u = rng.uniform(0.2, 0.6, (n, 1))
    v = rng.uniform(0.1, 0.5, (n, k))
    lr, momentum, wd, lr_u, lr_v = 0.1, 0.9, 1e-3, 0.5, 2.0

    model = torch.nn.Linear(d, k, bias=False)  # fp32, as the step computes the loss
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w, dtype=torch.float32))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    run = RunState.for_model(model, opt, torch.device("cpu"), num_classes=k,
                             noisy_labels=torch.tensor(labels))
    method = SOP(lr_u, lr_v)
    method.setup(run)
    assert method.u.shape == (n, 1) and method.v.shape == (n, k)
    assert float(method.u.detach().abs().max()) < 1e-6  # normal(0, 1e-8) at the start
    method.load_state_dict({"u": torch.tensor(u), "v": torch.tensor(v), "optimizer": method.optimizer.state_dict()})
    u0, v0 = u.copy(), v.copy()

    buf = None
    for idx in ([0, 2, 4], [1, 2, 3]):  # sample 2 in both: its updated u, v are read again
        xb, yb = x[idx], np.eye(k)[labels[idx]]
        f_w = lambda w_: np_loss(xb @ w_.T, yb, u[idx], v[idx])
        loss_ref = f_w(w)
        g_w = numeric_grad(f_w, w)
        g_u = numeric_grad(lambda u_: np_loss(xb @ w.T, yb, u_, v[idx]), u[idx])
        g_v = numeric_grad(lambda v_: np_loss(xb @ w.T, yb, u[idx], v_, v_in_ce=v[idx]), v[idx])
        loss, logits = method.train_step(run, torch.tensor(xb, dtype=torch.float32), torch.tensor(labels[idx]),
                                         torch.tensor(idx))
        assert float(loss) == pytest.approx(loss_ref, rel=1e-6)
        np.testing.assert_allclose(logits.numpy(), xb @ w.T, atol=1e-5)
        # the network: torch's SGD with momentum and weight decay; u, v: plain SGD steps
        step = g_w + wd * w
        buf = step if buf is None else momentum * buf + step
        w = w - lr * buf
        u, v = u.copy(), v.copy()
        u[idx] -= lr_u * g_u
        v[idx] -= lr_v * g_v
        np.testing.assert_allclose(model.weight.detach().numpy(), w, atol=2e-6)
        np.testing.assert_allclose(method.u.detach().numpy(), u, atol=2e-6)
        np.testing.assert_allclose(method.v.detach().numpy(), v, atol=2e-6)
    off_label = np.eye(k)[labels][:5] == 0
    assert np.abs(u - u0)[:5].min() > 1e-4 and np.abs(v - v0)[:5][off_label].min() > 1e-4  # they moved
    assert (v[:5][~off_label] == v0[:5][~off_label]).all()  # v of the labelled class: no gradient
    assert u[5] == u0[5] and (v[5] == v0[5]).all()  # a sample of neither batch keeps its values


def test_sop_plus_terms_on_fixed_logits():
    rng = np.random.RandomState(1)
    b, k = 5, 4
    z, zs = rng.randn(b, k) * 2, rng.randn(b, k) * 2
    y = np.eye(k)[[0, 3, 1, 1, 2]]
    u, v = rng.uniform(0.2, 0.6, (b, 1)), rng.uniform(0.1, 0.5, (b, k))
    rb, rc = 0.1, 0.9
    tz, tzs = torch.tensor(z, requires_grad=True), torch.tensor(zs, requires_grad=True)
    loss = sop_loss(tz, torch.tensor(y), torch.tensor(u), torch.tensor(v), rb, tzs, rc)
    assert float(loss.detach()) == pytest.approx(np_loss(z, y, u, v, rb=rb, zs=zs, rc=rc), rel=1e-10)
    # each term counts: without it the value differs
    assert float(sop_loss(tz, torch.tensor(y), torch.tensor(u), torch.tensor(v), 0.0, tzs, rc).detach()) != \
        pytest.approx(float(loss.detach()))
    assert float(sop_loss(tz, torch.tensor(y), torch.tensor(u), torch.tensor(v), rb, None, rc).detach()) != \
        pytest.approx(float(loss.detach()))
    loss.backward()
    # consistency: KL(sg(softmax z) || softmax z'), so d/dz' = rc (softmax z' - softmax z) / B
    np.testing.assert_allclose(tzs.grad.numpy(), rc * (np_softmax(zs) - np_softmax(z)) / b, atol=1e-10)
    # the weak view's logits get no gradient through the consistency target
    g_z = numeric_grad(lambda z_: np_loss(z_, y, u, v, rb=rb, zs=zs, rc=rc, p_target=np_softmax(z)), z)
    np.testing.assert_allclose(tz.grad.numpy(), g_z, atol=1e-7)


# ---------------------------------------------------------------- the strong augmentation

def pil_op(img, name, v):
    """augmentations.py's operations, as the release calls PIL (without the random mirror)."""
    enhance = {"Brightness": PIL.ImageEnhance.Brightness, "Color": PIL.ImageEnhance.Color,
               "Contrast": PIL.ImageEnhance.Contrast, "Sharpness": PIL.ImageEnhance.Sharpness}
    affine = {"ShearX": (1, v, 0, 0, 1, 0), "ShearY": (1, 0, 0, v, 1, 0),
              "TranslateXAbs": (1, 0, v, 0, 1, 0), "TranslateYAbs": (1, 0, 0, 0, 1, v)}
    if name in enhance:
        return enhance[name](img).enhance(v)
    if name in affine:
        return img.transform(img.size, PIL.Image.AFFINE, affine[name])
    return {"Solarize": lambda: PIL.ImageOps.solarize(img, v),
            "Posterize2": lambda: PIL.ImageOps.posterize(img, int(v)),
            "Invert": lambda: PIL.ImageOps.invert(img), "AutoContrast": lambda: PIL.ImageOps.autocontrast(img),
            "Equalize": lambda: PIL.ImageOps.equalize(img), "Rotate": lambda: img.rotate(v)}[name]()


@pytest.mark.parametrize("name,value", [
    ("Brightness", 0.46), ("Brightness", 1.72), ("Color", 0.64), ("Contrast", 1.36), ("Contrast", 0.28),
    ("Sharpness", 0.28), ("Sharpness", 1.72), ("Solarize", 205), ("Posterize2", 2), ("Invert", 0),
    ("AutoContrast", 0), ("Equalize", 0), ("ShearY", 0.24), ("ShearX", -0.21), ("TranslateXAbs", 9),
    ("TranslateYAbs", -3), ("Rotate", 6), ("Rotate", -27)])
def test_each_operation_equals_pil(name, value):
    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    images[1] = images[1] // 3 + 60  # a narrow range, for the contrast stretch
    expected = np.stack([np.asarray(pil_op(PIL.Image.fromarray(im), name, value)) for im in images])
    x = torch.tensor(images).permute(0, 3, 1, 2).float()
    chosen = torch.tensor([True, True, False])  # the last image does not draw the operation
    out = augment.apply_ops(x, torch.full((3,), augment.OPS.index(name)), torch.full((3,), float(value)), chosen)
    np.testing.assert_array_equal(out[:2].permute(0, 2, 3, 1).numpy(), expected[:2])
    assert torch.equal(out[2], x[2])


def test_policy_magnitudes_are_the_releases():
    m = augment.release_magnitude
    assert m("Rotate", 2) == pytest.approx(6) and m("TranslateXAbs", 9) == 9
    assert m("ShearY", 8) == pytest.approx(0.24) and m("Solarize", 2) == pytest.approx(205)
    assert m("Posterize2", 7) == pytest.approx(2) and m("Contrast", 6) == pytest.approx(1.18)
    assert len(augment.CIFAR10_POLICY) == 25


def test_strong_views_repeat_with_the_seed_and_carry_a_cutout_square():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    strong = augment.StrongAugment([0.5] * 3, [0.25] * 3, "cpu", cutout=16)
    a = strong(images, torch.Generator().manual_seed(5))
    b = strong(images, torch.Generator().manual_seed(5))
    c = strong(images, torch.Generator().manual_seed(6))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero_pixels = (a == 0).all(dim=1).sum(dim=(1, 2))
    assert bool(((zero_pixels >= 8 * 8) & (zero_pixels <= 16 * 16 + 200)).all())  # a clipped 16x16 square


# ---------------------------------------------------------------- flags and defaults

@pytest.mark.parametrize("extra,expected", [
    (["--method", "sop", "--ratio_balance", "0.1"], "--ratio_balance is a setting of SOP+: add --sop_plus"),
    (["--method", "sop", "--cutout", "8"], "--cutout is a setting of SOP+"),
    (["--method", "sop", "--lr_u", "-1"], "--lr_u -1.0 must be >= 0"),
    (["--method", "sop", "--sop_plus", "--ratio_consistency", "-0.5"], "--ratio_consistency -0.5 must be >= 0"),
    (["--method", "sop", "--cosine_lr_min", "0.001"], "--cosine_lr_min replaces the milestones"),
    (["--method", "sop", "--cosine_lr_min", "1", "--lr_milestones"], "--cosine_lr_min 1.0 is outside [0, --lr"),
])
def test_bad_flags_are_user_errors(extra, expected):
    with pytest.raises(UserError) as err:
        parse_flags("train", *extra, *SMALL)
    assert expected in str(err.value)


def test_release_defaults_per_data_set_and_typed_values_win():
    cfg = parse_flags("train", "--method", "sop", "--dataset", "cifar10")
    assert (cfg.model, cfg.n_epoch, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.batch_size,
            cfg.lr_milestones, cfg.cosine_lr_min) == ("preact_resnet18", 300, 0.02, 0.9, False, 1e-3, 128, [], 2e-4)
    assert (cfg.lr_u, cfg.lr_v, cfg.sop_init_std, cfg.ratio_balance) == (1.0, 10.0, 1e-8, None)
    asym = parse_flags("train", "--method", "sop", "--dataset", "cifar100", "--noise_type", "asym", "--sop_plus")
    assert (asym.lr_u, asym.lr_v, asym.ratio_consistency, asym.ratio_balance, asym.cutout) == (0.1, 100.0, 0.9, 0.1, 16)
    typed = parse_flags("train", "--method", "sop", "--dataset", "cifar10", "--lr", "0.05", "--n_epoch", "3")
    assert (typed.lr, typed.n_epoch, typed.weight_decay) == (0.05, 3, 1e-3)
    digits = parse_flags("train", "--method", "sop", *SMALL)
    assert digits.cosine_lr_min is None and digits.lr_milestones == [0.5, 0.75]  # train.py's own


# ---------------------------------------------------------------- runs

def test_a_run_trains_with_the_cosine_plan(tmp_path):
    code, (folder,) = train(["--method", "sop", *SMALL, "--n_epoch", "2", "--cosine_lr_min", "0.001",
                             "--lr_milestones", "--result_dir", str(tmp_path)])
    assert code == 0
    rows = read_csv(f"{folder}/metrics.csv")
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == pytest.approx([0.05, 0.001 + 0.049 * (1 + math.cos(math.pi / 2)) / 2])
    summary = read_json(f"{folder}/summary.json")
    assert summary["status"] == "finished" and summary["label"].startswith("SOP ") and not summary["is_ce"]


def test_sop_plus_resumes_exactly_after_sigterm(tmp_path):
    _, ckpt = assert_sigterm_resume_is_exact("sop", ["--sop_plus"], tmp_path, n_epoch=2, stop=1)
    assert set(ckpt["method"]) == {"u", "v", "optimizer"}
    start = torch.empty(len(ckpt["method"]["u"]), 1).normal_(0.0, 1e-8, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(ckpt["method"]["u"], start)  # trained (from the release's tiny start)
