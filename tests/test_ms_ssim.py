"""MS-SSIM ops: agreement with the references and pytorch_msssim, analytic gradients, opcheck,
torch.compile, memory formats and argument errors. Run on CPU and, where a GPU exists, on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TRAIN_DIR, need_shared
from nnraw.ops import _library
from nnraw.ops import ms_ssim as mss

import pytorch_msssim

pytestmark = pytest.mark.skipif(not _library.HAVE_COMPILED, reason="nnraw compiled library not built")


def compiled_on(device: str) -> bool:
    return _library.use_compiled(torch.empty(0, device=device))


@pytest.fixture
def dev(device):
    if not compiled_on(device):
        pytest.skip(f"nnraw was built without kernels for {device}")
    return device


def pair(shape, device, dtype, noise=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return x.to(device, dtype), y.to(device, dtype)


# ------------------------------------------------------------------------------------------------
# Central-pixel mixed loss
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("patch", [3, 11, 31])
def test_center_matches_reference(dev, dtype, atol, patch):
    x, y = pair((3, 2, patch, patch), dev, dtype)
    got = torch.ops.nnraw.center_ms_ssim_l1(x, y, 0.84)
    ref = mss.center_ms_ssim_l1_reference(x.double(), y.double(), 0.84).to(dtype)
    assert got.shape == (3, 2) and got.dtype == dtype
    torch.testing.assert_close(got, ref, atol=atol, rtol=0)


def test_center_identical_patches_give_zero_loss(dev):
    x, _ = pair((2, 3, 31, 31), dev, torch.float64)
    torch.testing.assert_close(mss.center_ms_ssim_l1(x, x), torch.zeros(2, 3, device=dev, dtype=torch.float64))


def test_center_alpha_endpoints_are_the_two_terms(dev):
    x, y = pair((2, 1, 15, 15), dev, torch.float64)
    G8 = mss.center_windows(15, dev, torch.float64)[-1]
    l1 = (G8 * (x - y).abs()).sum((-2, -1))
    torch.testing.assert_close(mss.center_ms_ssim_l1(x, y, alpha=0.0), l1)
    ms_term = mss.center_ms_ssim_l1(x, y, alpha=1.0)
    assert torch.all(ms_term > 0) and torch.all(ms_term < 2)


@pytest.mark.parametrize("patch", [3, 9, 31])
def test_center_backward_matches_autograd_of_reference(dev, patch):
    x, y = pair((2, 3, patch, patch), dev, torch.float64, seed=1)
    grad = torch.randn(2, 3, dtype=torch.float64).to(dev)
    xr = x.clone().requires_grad_()
    (mss.center_ms_ssim_l1_reference(xr, y, 0.7) * grad).sum().backward()
    got = torch.ops.nnraw.center_ms_ssim_l1_backward(grad, x, y, 0.7)
    torch.testing.assert_close(got, xr.grad, atol=1e-12, rtol=1e-9)


def test_center_gradcheck(dev):
    x, y = pair((2, 2, 7, 7), dev, torch.float64, seed=2)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: mss.center_ms_ssim_l1(a, y, 0.84), (x,))


def test_center_target_gets_no_gradient(dev):
    x, y = pair((1, 1, 5, 5), dev, torch.float64)
    x.requires_grad_()
    y.requires_grad_()
    mss.center_ms_ssim_l1(x, y).sum().backward()
    assert x.grad is not None and y.grad is None


# ------------------------------------------------------------------------------------------------
# Full-image MS-SSIM
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(2, 3, 161, 190), (1, 1, 200, 162)])
def test_ms_ssim_matches_pytorch_msssim(dev, dtype, atol, shape):
    x, y = pair(shape, dev, dtype)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    got = torch.ops.nnraw.ms_ssim(x, y, 1.0)
    assert got.shape == (shape[0],) and got.dtype == dtype
    torch.testing.assert_close(got, ref, atol=atol, rtol=0)
    torch.testing.assert_close(mss.ms_ssim_reference(x, y, 1.0), ref, atol=atol, rtol=0)


def test_ms_ssim_data_range(dev):
    x, y = pair((1, 3, 170, 170), dev, torch.float32)
    ref = pytorch_msssim.ms_ssim(255 * x, 255 * y, data_range=255, size_average=False)
    torch.testing.assert_close(mss.ms_ssim(255 * x, 255 * y, 255.0), ref, atol=1e-5, rtol=0)


def test_ms_ssim_real_image(dev):
    path = TRAIN_DIR / "skimage" / "astronaut.png"
    need_shared(path)
    import numpy as np
    from PIL import Image

    img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    img = img[:, :, :301, :333]            # odd sides exercise the pooling padding
    gen = torch.Generator().manual_seed(3)
    blurred = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    degraded = (blurred + 0.03 * torch.randn(img.shape, generator=gen)).clamp(0, 1)
    x, y = degraded.to(dev), img.to(dev)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    got = mss.ms_ssim(x, y)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert 0.5 < got.item() < 0.999
    torch.testing.assert_close(mss.ms_ssim(y, y), torch.ones(1, device=dev), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 2, 176, 176), (2, 1, 161, 171)])
def test_ms_ssim_backward_matches_autograd_of_reference(dev, shape):
    x, y = pair(shape, dev, torch.float64, seed=4)
    grad = torch.randn(shape[0], dtype=torch.float64).to(dev)
    xr = x.clone().requires_grad_()
    (pytorch_msssim.ms_ssim(xr, y, data_range=1.0, size_average=False) * grad).sum().backward()
    got = torch.ops.nnraw.ms_ssim_backward(grad, x, y, 1.0)
    scale = xr.grad.abs().max()
    torch.testing.assert_close(got / scale, xr.grad / scale, atol=1e-10, rtol=0)


def test_ms_ssim_backward_float32(dev):
    x, y = pair((1, 3, 170, 180), dev, torch.float32, seed=5)
    xr = x.double().requires_grad_()
    mss.ms_ssim_reference(xr, y.double()).sum().backward()
    got = torch.ops.nnraw.ms_ssim_backward(torch.ones(1, device=dev), x, y, 1.0)
    scale = xr.grad.abs().max()
    torch.testing.assert_close(got.double() / scale, xr.grad / scale, atol=2e-4, rtol=0)


def test_ms_ssim_gradcheck_fast_mode(dev):
    x, y = pair((1, 1, 161, 165), dev, torch.float64, seed=6)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: mss.ms_ssim(a, y), (x,), fast_mode=True)


def test_ms_ssim_clipped_level_gives_finite_gradient(dev):
    # y = -x makes every cs negative: relu clips them, MS-SSIM is 0 and the gradient must be 0, not NaN.
    x, _ = pair((1, 1, 161, 161), dev, torch.float64)
    x = x - 0.5
    x.requires_grad_()
    value = mss.ms_ssim(x, -x.detach())
    value.sum().backward()
    assert value.item() == 0.0
    assert torch.isfinite(x.grad).all() and x.grad.abs().max().item() == 0.0


def test_ms_ssim_l1_loss_definition(dev):
    x, y = pair((2, 2, 161, 170), dev, torch.float64, seed=7)
    # The L1 term, computed independently: valid 2-D filtering with the 145x145 Gaussian, then the mean.
    t = torch.arange(-mss.L1_RADIUS, mss.L1_RADIUS + 1, dtype=torch.float64, device=dev)
    g = torch.exp(-t ** 2 / (2 * mss.L1_SIGMA ** 2))
    g2 = (g[:, None] * g[None, :]) / g.sum() ** 2
    err = (x - y).abs().flatten(0, 1)[:, None]
    l1 = F.conv2d(err, g2[None, None]).flatten(1).mean(1).view(2, 2).mean(1)
    ms = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    expected = (0.84 * (1 - ms) + 0.16 * l1).mean()
    got = mss.ms_ssim_l1_loss(x, y)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert got.dim() == 0
    per_sample = mss.ms_ssim_l1_loss(x, y, reduction="none")
    torch.testing.assert_close(per_sample, 0.84 * (1 - ms) + 0.16 * l1, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        mss.ms_ssim_l1_loss(x, y, reduction="sum")
    assert mss.ms_ssim_l1_loss(x, x).abs().item() < 1e-12
    xr = x.clone().requires_grad_()
    mss.ms_ssim_l1_loss(xr, y, alpha=0.5).backward()
    assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# opcheck, torch.compile, memory formats
# ------------------------------------------------------------------------------------------------

def test_opcheck_center(dev):
    x, y = pair((2, 3, 9, 9), dev, torch.float32)
    torch.library.opcheck(torch.ops.nnraw.center_ms_ssim_l1.default, (x.requires_grad_(), y, 0.84))
    grad = torch.randn(2, 3).to(dev)
    torch.library.opcheck(torch.ops.nnraw.center_ms_ssim_l1_backward.default, (grad, x.detach(), y, 0.84))


def test_opcheck_ms_ssim(dev):
    x, y = pair((1, 2, 161, 163), dev, torch.float32)
    torch.library.opcheck(torch.ops.nnraw.ms_ssim.default, (x.requires_grad_(), y, 1.0))
    grad = torch.randn(1).to(dev)
    torch.library.opcheck(torch.ops.nnraw.ms_ssim_backward.default, (grad, x.detach(), y, 1.0))


def test_torch_compile_fullgraph(dev):
    torch._dynamo.reset()
    a, b = pair((2, 3, 11, 11), dev, torch.float32)
    x, y = pair((1, 3, 165, 170), dev, torch.float32)

    def loss(a, b, x, y):
        return mss.center_ms_ssim_l1(a, b).mean() + (1 - mss.ms_ssim(x, y)).mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    a1, x1 = a.clone().requires_grad_(), x.clone().requires_grad_()
    a2, x2 = a.clone().requires_grad_(), x.clone().requires_grad_()
    v1 = compiled(a1, b, x1, y)
    v2 = loss(a2, b, x2, y)
    v1.backward()
    v2.backward()
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(a1.grad, a2.grad)
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.slow
def test_torch_compile_inductor(dev):
    torch._dynamo.reset()
    x, y = pair((1, 3, 165, 170), dev, torch.float32)
    a, b = pair((4, 3, 31, 31), dev, torch.float32)
    fn = torch.compile(lambda a, b, x, y: mss.center_ms_ssim_l1(a, b).mean() + mss.ms_ssim_l1_loss(x, y),
                       fullgraph=True)
    x.requires_grad_()
    a.requires_grad_()
    fn(a, b, x, y).backward()
    xr, ar = x.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    (mss.center_ms_ssim_l1(ar, b).mean() + mss.ms_ssim_l1_loss(xr, y)).backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(a.grad, ar.grad)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_memory_formats(dev, layout):
    def arrange(t):
        if layout == "channels_last":
            return t.contiguous(memory_format=torch.channels_last)
        big = torch.zeros(t.shape[0], t.shape[1], t.shape[2] + 3, 2 * t.shape[3], device=t.device, dtype=t.dtype)
        big[:, :, 1:-2, ::2] = t
        view = big[:, :, 1:-2, ::2]
        assert not view.is_contiguous()
        return view

    for op, shape in ((mss.center_ms_ssim_l1, (2, 3, 9, 9)), (mss.ms_ssim, (1, 3, 161, 166))):
        x, y = pair(shape, dev, torch.float32)
        x0 = x.clone().requires_grad_()
        xa = arrange(x.clone()).detach().requires_grad_()
        v0, va = op(x0, y), op(xa, arrange(y))
        torch.testing.assert_close(va, v0, atol=0, rtol=0)
        v0.sum().backward()
        va.sum().backward()
        torch.testing.assert_close(xa.grad, x0.grad, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs_computed_in_float32(dtype):
    if not compiled_on("cuda"):
        pytest.skip("nnraw was built without CUDA kernels")
    x, y = pair((2, 3, 165, 170), "cuda", dtype)
    ref = pytorch_msssim.ms_ssim(x.float(), y.float(), data_range=1.0, size_average=False)
    torch.testing.assert_close(mss.ms_ssim(x, y).float(), ref, atol=1e-2, rtol=0)
    a, b = pair((2, 3, 11, 11), "cuda", dtype)
    ref = mss.center_ms_ssim_l1_reference(a.double(), b.double())
    torch.testing.assert_close(mss.center_ms_ssim_l1(a, b).double(), ref, atol=1e-2, rtol=0)


def test_fallback_warns_and_uses_reference(monkeypatch):
    monkeypatch.setattr(mss, "use_compiled", lambda *t: False)
    monkeypatch.setattr(_library, "_warned", False)
    x, y = pair((1, 1, 161, 161), "cpu", torch.float64)
    with pytest.warns(RuntimeWarning, match="pure-PyTorch references"):
        got = mss.ms_ssim(x, y)
    torch.testing.assert_close(got, mss.ms_ssim_reference(x, y))
    a, b = pair((1, 1, 5, 5), "cpu", torch.float64)
    torch.testing.assert_close(mss.center_ms_ssim_l1(a, b), mss.center_ms_ssim_l1_reference(a, b))


# ------------------------------------------------------------------------------------------------
# Argument errors: the public functions (Python checks) and the ops (C++ checks) say the same thing.
# ------------------------------------------------------------------------------------------------

def other_device() -> str:
    return "cuda" if torch.cuda.is_available() else "meta"


CENTER_ERRORS = [
    (lambda: (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), 0.84), r"patches must be square with an odd side P >= 3, got 8x8"),
    (lambda: (torch.rand(2, 3, 7, 9), torch.rand(2, 3, 7, 9), 0.84), r"patches must be square with an odd side P >= 3, got 7x9"),
    (lambda: (torch.rand(2, 3, 1, 1), torch.rand(2, 3, 1, 1), 0.84), r"patches must be square with an odd side P >= 3, got 1x1"),
    (lambda: (torch.rand(2, 3, 7, 7), torch.rand(2, 3, 9, 9), 0.84),
     r"pred and target must have the same shape, got \[2, 3, 7, 7\] and \[2, 3, 9, 9\]"),
    (lambda: (torch.rand(3, 7, 7), torch.rand(3, 7, 7), 0.84), r"pred must have shape \[N, C, H, W\], got \[3, 7, 7\]"),
    (lambda: (torch.rand(1, 1, 7, 7), torch.rand(1, 1, 7, 7), 1.5), r"alpha must be in \[0, 1\], got 1.5"),
    (lambda: (torch.rand(1, 1, 7, 7), torch.rand(1, 1, 7, 7, dtype=torch.float64), 0.84),
     r"target must have pred's dtype torch.float32, got torch.float64"),
    (lambda: (torch.rand(1, 1, 7, 7).half(), torch.rand(1, 1, 7, 7).half(), 0.84),
     r"pred must be float32 or float64 \(float16/bfloat16 only on CUDA\), got torch.float16 on cpu"),
    (lambda: (torch.ones(1, 1, 7, 7, dtype=torch.int32), torch.ones(1, 1, 7, 7, dtype=torch.int32), 0.84),
     r"pred must be float32 or float64 \(float16/bfloat16 only on CUDA\), got torch.int32 on cpu"),
    (lambda: (torch.rand(1, 1, 7, 7), torch.rand(1, 1, 7, 7, device=other_device()), 0.84),
     r"target must be on pred's device cpu, got"),
]

MS_ERRORS = [
    (lambda: (torch.rand(1, 1, 160, 200), torch.rand(1, 1, 160, 200), 1.0),
     r"height and width must be > 160 for 5 scales \(11x11 window after 4 halvings\), got 160x200"),
    (lambda: (torch.rand(1, 1, 161, 161), torch.rand(1, 1, 161, 162), 1.0),
     r"x and y must have the same shape, got \[1, 1, 161, 161\] and \[1, 1, 161, 162\]"),
    (lambda: (torch.rand(161, 161), torch.rand(161, 161), 1.0), r"x must have shape \[N, C, H, W\], got \[161, 161\]"),
    (lambda: (torch.rand(1, 1, 161, 161), torch.rand(1, 1, 161, 161), 0.0), r"data_range must be > 0, got 0"),
    (lambda: (torch.rand(1, 1, 161, 161, dtype=torch.float64), torch.rand(1, 1, 161, 161), 1.0),
     r"y must have x's dtype torch.float64, got torch.float32"),
    (lambda: (torch.rand(1, 1, 161, 161).bfloat16(), torch.rand(1, 1, 161, 161).bfloat16(), 1.0),
     r"x must be float32 or float64 \(float16/bfloat16 only on CUDA\), got torch.bfloat16 on cpu"),
    (lambda: (torch.rand(1, 1, 161, 161), torch.rand(1, 1, 161, 161, device=other_device()), 1.0),
     r"y must be on x's device cpu, got"),
]


@pytest.mark.parametrize("make,match", CENTER_ERRORS)
def test_center_errors(make, match):
    pred, target, alpha = make()
    with pytest.raises((ValueError, TypeError), match=r"nnraw.center_ms_ssim_l1: " + match):
        mss.center_ms_ssim_l1(pred, target, alpha)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=r"nnraw.center_ms_ssim_l1: " + match):
        torch.ops.nnraw.center_ms_ssim_l1(pred, target, alpha)
    grad = torch.zeros(pred.shape[:2]) if pred.dim() == 4 else torch.zeros(1)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=r"nnraw.center_ms_ssim_l1_backward: " + match):
        torch.ops.nnraw.center_ms_ssim_l1_backward(grad.to(pred.dtype), pred, target, alpha)


@pytest.mark.parametrize("make,match", MS_ERRORS)
def test_ms_ssim_errors(make, match):
    x, y, data_range = make()
    with pytest.raises((ValueError, TypeError), match=r"nnraw.ms_ssim: " + match):
        mss.ms_ssim(x, y, data_range)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=r"nnraw.ms_ssim: " + match):
        torch.ops.nnraw.ms_ssim(x, y, data_range)
    grad = torch.zeros(x.shape[:1]).to(x.dtype)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=r"nnraw.ms_ssim_backward: " + match):
        torch.ops.nnraw.ms_ssim_backward(grad, x, y, data_range)


def test_backward_grad_errors():
    x, y = pair((2, 3, 7, 7), "cpu", torch.float32)
    with pytest.raises(RuntimeError, match=r"nnraw.center_ms_ssim_l1_backward: grad must have shape \[2, 3\], got \[2\]"):
        torch.ops.nnraw.center_ms_ssim_l1_backward(torch.zeros(2), x, y, 0.84)
    with pytest.raises(RuntimeError, match=r"grad must have the input's dtype torch.float32, got torch.float64"):
        torch.ops.nnraw.center_ms_ssim_l1_backward(torch.zeros(2, 3, dtype=torch.float64), x, y, 0.84)
    x, y = pair((2, 1, 161, 161), "cpu", torch.float32)
    with pytest.raises(RuntimeError, match=r"nnraw.ms_ssim_backward: grad must have shape \[2\], got \[2, 1\]"):
        torch.ops.nnraw.ms_ssim_backward(torch.zeros(2, 1), x, y, 1.0)
    # the fake kernels say the same
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fx, fy = torch.empty(2, 1, 161, 161), torch.empty(2, 1, 161, 161)
        with pytest.raises(ValueError, match=r"nnraw.ms_ssim_backward: grad must have shape \[2\], got \[2, 1\]"):
            torch.ops.nnraw.ms_ssim_backward(torch.empty(2, 1), fx, fy, 1.0)
