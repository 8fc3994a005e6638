"""nnraw.ops.prelu: the fused per-channel PReLU against torch.nn.functional.prelu and prelu_reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnraw.ops._library import HAVE_COMPILED
from nnraw.ops.prelu import PReLU, prelu, prelu_reference

from conftest import TRAIN_DIR, need_shared

pytestmark = pytest.mark.skipif(not HAVE_COMPILED, reason="the compiled nnraw op library is not built")

# The dtypes each device's kernels take, and the tolerances of a comparison in them.
DTYPES = {"cpu": [torch.float32, torch.float64], "cuda": [torch.float32, torch.float16, torch.bfloat16]}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# Includes runs longer than one partial-sum chunk: planes of 40000 (CPU cuts planes at 32768, CUDA at
# 8192) and 5000 pixels of a 2-D input (channels-last style runs are cut at 4096 pixels on CPU).
SHAPES = [(4, 6, 9, 11), (3, 5), (2, 7, 13), (2, 3, 4, 5, 6), (1, 64, 31, 31), (2, 3, 40, 50), (1, 2, 200, 200),
          (5000, 3)]


def _inputs(shape, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight = torch.rand(shape[1], generator=gen, dtype=torch.float64) * 0.5 - 0.1  # some slopes < 0
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    return (t.to(device=device, dtype=dtype) for t in (x, weight, grad))


def _assert_close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype] * scale
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def _forward_backward(fn, x, weight, grad):
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    y = fn(x, weight)
    grad_x, grad_weight = torch.autograd.grad(y, (x, weight), grad)
    return y.detach(), grad_x, grad_weight


def _grad_weight_scale(x):
    # grad_weight sums N * spatial products: its rounding grows with the number of terms.
    return max(1.0, x[0, 0].numel() * x.shape[0] / 64) ** 0.5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_functional_prelu_and_reference(device, shape):
    for dtype in DTYPES[device]:
        x, weight, grad = _inputs(shape, device, dtype)
        y, grad_x, grad_weight = _forward_backward(prelu, x, weight, grad)
        # F.prelu in float32 or float64 (the half-precision oracle computes in float32, like the kernel).
        wide = torch.float64 if dtype == torch.float64 else torch.float32
        y_ref, grad_x_ref, grad_weight_ref = _forward_backward(F.prelu, x.to(wide), weight.to(wide), grad.to(wide))
        _assert_close(y, y_ref.to(dtype), dtype)
        _assert_close(grad_x, grad_x_ref.to(dtype), dtype)
        _assert_close(grad_weight, grad_weight_ref.to(dtype), dtype, _grad_weight_scale(x))
        # prelu_reference is the same function written out: exact agreement on the forward.
        assert torch.equal(y, prelu_reference(x, weight))
        assert y.dtype == dtype and y.device == x.device and y.shape == x.shape


def test_negative_side_and_zero_are_scaled(device):
    # x: [N=2, C=2, L=2]; channel 0 has slope 0.25, channel 1 has slope -0.5.
    x = torch.tensor([[[-2.0, -0.0], [0.0, 3.0]], [[-1.0, 0.5], [-4.0, 0.0]]], device=device)
    weight = torch.tensor([0.25, -0.5], device=device)
    expected = torch.tensor([[[-0.5, 0.0], [0.0, 3.0]], [[-0.25, 0.5], [2.0, 0.0]]], device=device)
    torch.testing.assert_close(prelu(x, weight), expected, rtol=0, atol=0)
    # grad_weight sums x * grad over x <= 0 only: channel 0 has -2, -0, -1; channel 1 has 0, -4, 0.
    grad_x, grad_weight = torch.ops.nnraw.prelu_backward(torch.ones_like(x), x, weight)
    torch.testing.assert_close(grad_weight, torch.tensor([-3.0, -4.0], device=device), rtol=0, atol=0)
    torch.testing.assert_close(grad_x, torch.where(x > 0, 1.0, weight.reshape(1, 2, 1)), rtol=0, atol=0)


def test_real_image_through_a_conv(device):
    """Agreement on the activations a real photograph produces after a convolution."""
    path = TRAIN_DIR / "skimage" / "astronaut.png"
    need_shared(path, f"real image {path.name}")
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[100:164, 180:260] / 255.0 - 0.5
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)       # [1, 3, 64, 80]
    gen = torch.Generator().manual_seed(1)
    kernel = (torch.randn(16, 3, 5, 5, generator=gen) * 0.2).to(device)
    features = F.conv2d(image, kernel)                                   # [1, 16, 60, 76]
    assert (features > 0).any() and (features < 0).any()
    weight = torch.linspace(-0.2, 0.4, 16, device=device)
    grad = torch.randn(features.shape, generator=gen).to(device)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = features.contiguous(memory_format=fmt)
        y, grad_x, grad_weight = _forward_backward(prelu, x, weight, grad)
        y_ref, grad_x_ref, grad_weight_ref = _forward_backward(F.prelu, x, weight, grad)
        _assert_close(y, y_ref, torch.float32)
        _assert_close(grad_x, grad_x_ref, torch.float32)
        _assert_close(grad_weight, grad_weight_ref, torch.float32, 4.0)
        assert torch.equal(y, prelu_reference(x, weight))


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_gradcheck_float64(device, channels_last):
    x, weight, _ = _inputs((2, 3, 4, 5), device, torch.float64, seed=3)
    x = x + torch.sign(x) * 0.01  # keep every sample away from the kink at 0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight.requires_grad_()
    assert torch.autograd.gradcheck(prelu, (x, weight))


def test_double_backward_refused_clearly(device):
    x, weight, _ = _inputs((2, 3, 4), device, torch.float32)
    x.requires_grad_()
    weight.requires_grad_()
    (grad_x,) = torch.autograd.grad(prelu(x, weight).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"nnraw::prelu_backward: double backward .* not supported"):
        grad_x.sum().backward()


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_opcheck(device, channels_last):
    for dtype in DTYPES[device]:
        x, weight, grad = _inputs((2, 5, 6, 7), device, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            grad = grad.contiguous(memory_format=torch.channels_last)
        torch.library.opcheck(torch.ops.nnraw.prelu.default, (x, weight))
        torch.library.opcheck(torch.ops.nnraw.prelu.default, (x.requires_grad_(), weight.requires_grad_()))
        torch.library.opcheck(torch.ops.nnraw.prelu_backward.default,
                              (grad, x.detach(), weight.detach()))


def test_torch_compile_fullgraph_forward_backward(device):
    torch._dynamo.reset()
    layer = PReLU(8, init=0.1).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-0.3, 0.5, 8))

    def step(x):
        return (layer(x) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    for fmt in (torch.contiguous_format, torch.channels_last):
        x, _, _ = _inputs((2, 8, 6, 5), device, torch.float32, seed=5)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        loss = compiled(x)
        grad_x, grad_weight = torch.autograd.grad(loss, (x, layer.weight))
        x_eager = x.detach().requires_grad_()
        loss_eager = step(x_eager)
        grad_x_eager, grad_weight_eager = torch.autograd.grad(loss_eager, (x_eager, layer.weight))
        _assert_close(loss, loss_eager, torch.float32)
        _assert_close(grad_x, grad_x_eager, torch.float32)
        _assert_close(grad_weight, grad_weight_eager, torch.float32)


@pytest.mark.slow
def test_torch_compile_inductor_cpu():
    """The op also compiles with the default (inductor) backend: a C++ toolchain is needed on CPU."""
    torch._dynamo.reset()
    x, weight, _ = _inputs((2, 4, 5, 5), "cpu", torch.float32)
    compiled = torch.compile(lambda a, b: prelu(a * 2, b) + 1, fullgraph=True)
    torch.testing.assert_close(compiled(x, weight), F.prelu(x * 2, weight) + 1)


@pytest.mark.parametrize("view", ["transposed", "sliced", "channel_slice", "permuted"])
def test_non_contiguous_inputs(device, view):
    x_full, _, _ = _inputs((3, 8, 10, 12), device, torch.float32)
    x = {
        "transposed": lambda t: t.transpose(2, 3),
        "sliced": lambda t: t[:, :, 1::2, ::3],
        "channel_slice": lambda t: t[:, 2:7],
        "permuted": lambda t: t.permute(1, 0, 2, 3),
    }[view](x_full)
    assert not x.is_contiguous()
    weight = torch.linspace(-0.2, 0.3, x.shape[1], device=device)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(device).transpose(0, 1).contiguous().transpose(0, 1)
    y, grad_x, grad_weight = _forward_backward(prelu, x, weight, grad)
    y_ref, grad_x_ref, grad_weight_ref = _forward_backward(F.prelu, x, weight, grad)
    _assert_close(y, y_ref, torch.float32)
    _assert_close(grad_x, grad_x_ref, torch.float32)
    _assert_close(grad_weight, grad_weight_ref, torch.float32)
    assert y.is_contiguous() and grad_x.is_contiguous()


@pytest.mark.parametrize("shape", [(2, 6, 7, 9), (2, 5, 70, 70), (2, 6, 3, 4, 5)], ids=lambda s: "x".join(map(str, s)))
def test_channels_last_inputs_give_channels_last_outputs(device, shape):
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x, weight, grad = _inputs(shape, device, torch.float32)
    x = x.contiguous(memory_format=fmt)
    y, grad_x, grad_weight = _forward_backward(prelu, x, weight, grad)  # grad stays contiguous
    y_ref, grad_x_ref, grad_weight_ref = _forward_backward(F.prelu, x, weight, grad)
    assert y.is_contiguous(memory_format=fmt) and not y.is_contiguous()
    assert grad_x.is_contiguous(memory_format=fmt)
    assert y.stride() == x.stride()
    _assert_close(y, y_ref, torch.float32)
    _assert_close(grad_x, grad_x_ref, torch.float32)
    _assert_close(grad_weight, grad_weight_ref, torch.float32)


def test_empty_batch(device):
    x = torch.empty(0, 4, 3, 3, device=device)
    weight = torch.full((4,), 0.1, device=device)
    assert prelu(x, weight).shape == (0, 4, 3, 3)
    grad_x, grad_weight = torch.ops.nnraw.prelu_backward(x, x, weight)
    assert grad_x.shape == x.shape
    assert torch.equal(grad_weight, torch.zeros(4, device=device))


def test_module_matches_torch_prelu(device):
    for channels, x_channels in ((6, 6), (1, 6)):
        ours = PReLU(channels, init=0.1).to(device)
        theirs = torch.nn.PReLU(channels, init=0.1).to(device)
        x = torch.randn(2, x_channels, 5, 5, device=device)
        y, y_ref = ours(x), theirs(x)
        torch.testing.assert_close(y, y_ref)
        y.square().sum().backward()
        y_ref.square().sum().backward()
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-5, atol=1e-5)
        assert ours.weight.shape == (channels,)
    assert "num_parameters=64" in repr(PReLU(64))


def test_module_runs_in_the_input_dtype_with_float32_slopes(device):
    """Mixed precision: activations in a lower (or higher) precision, slopes kept in float32."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float64
    layer = PReLU(4, init=0.25).to(device)
    x = torch.randn(2, 4, 3, 3, device=device, dtype=dtype)
    y = layer(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, F.prelu(x, torch.full((4,), 0.25, device=device, dtype=dtype)))
    y.sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    expected = torch.where(x > 0, 0, x).sum(dim=(0, 2, 3)).float()
    torch.testing.assert_close(layer.weight.grad, expected, rtol=TOL[dtype] * 4, atol=TOL[dtype] * 4)


# ---- errors: the op's name, what was expected and what came ------------------------------------

def _both_entry_points():
    """The public function (ValueError/TypeError) and the compiled op (RuntimeError from TORCH_CHECK)."""
    return [(prelu, (ValueError, TypeError)), (torch.ops.nnraw.prelu, RuntimeError)]


@pytest.mark.parametrize("entry", [0, 1], ids=["prelu", "torch.ops.nnraw.prelu"])
def test_wrong_weight_shape(device, entry):
    fn, error = _both_entry_points()[entry]
    x = torch.randn(2, 64, 4, 4, device=device)
    with pytest.raises(error, match=r"nnraw::prelu: weight must have shape \[C\] = \[64\], got \[3\]"):
        fn(x, torch.ones(3, device=device))
    with pytest.raises(error, match=r"nnraw::prelu: weight must have shape \[C\] = \[64\], got \[1, 64\]"):
        fn(x, torch.ones(1, 64, device=device))


@pytest.mark.parametrize("entry", [0, 1], ids=["prelu", "torch.ops.nnraw.prelu"])
def test_too_few_dimensions(device, entry):
    fn, error = _both_entry_points()[entry]
    with pytest.raises(error, match=r"nnraw::prelu: x must have shape \[N, C, \*spatial\] .*got \[5\]"):
        fn(torch.randn(5, device=device), torch.ones(5, device=device))


@pytest.mark.parametrize("entry", [0, 1], ids=["prelu", "torch.ops.nnraw.prelu"])
def test_wrong_dtypes(device, entry):
    fn, error = _both_entry_points()[entry]
    x = torch.randn(2, 3, 4, 4, device=device)
    with pytest.raises(error, match=r"nnraw::prelu: weight must have x's dtype float32, got float64"):
        fn(x, torch.ones(3, device=device, dtype=torch.float64))
    with pytest.raises(error, match=rf"nnraw::prelu: x dtype must be one of float32, float64.* on {device}, got int64"):
        fn(x.long(), torch.ones(3, device=device, dtype=torch.int64))
    if device == "cpu":
        with pytest.raises(error, match=r"nnraw::prelu: x dtype must be one of float32, float64 on cpu, got float16"):
            fn(x.half(), torch.ones(3, dtype=torch.float16))


def test_wrong_device():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"nnraw::prelu: weight must be on x's device cpu, got meta"):
        prelu(x, torch.ones(3, device="meta"))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"nnraw::prelu: weight must be on x's device cuda:0, got cpu"):
            prelu(x.cuda(), torch.ones(3))
        with pytest.raises(RuntimeError, match=r"nnraw::prelu: weight must be on x's device cuda:0, got cpu"):
            torch.ops.nnraw.prelu(x.cuda(), torch.ones(3))


def test_backward_op_checks_grad(device):
    x = torch.randn(2, 3, 4, 4, device=device)
    weight = torch.ones(3, device=device)
    with pytest.raises(RuntimeError, match=r"nnraw::prelu_backward: grad must have x's shape \[2, 3, 4, 4\], got \[2, 3, 4\]"):
        torch.ops.nnraw.prelu_backward(x[..., 0], x, weight)
    with pytest.raises(RuntimeError, match=r"nnraw::prelu_backward: grad must have x's dtype float32, got float64"):
        torch.ops.nnraw.prelu_backward(x.double(), x, weight)
    with pytest.raises(RuntimeError, match=r"nnraw::prelu_backward: weight must have shape \[C\] = \[3\], got \[4\]"):
        torch.ops.nnraw.prelu_backward(x, x, torch.ones(4, device=device))
