"""MS-SSIM losses: the central-pixel mixed loss of the reference system and full-image MS-SSIM.

Two compiled torch ops (CPU and CUDA kernels, each with an analytic backward op) and their pure-PyTorch
references:

``center_ms_ssim_l1(pred, target, alpha)`` — the "central pixel" mixed MS-SSIM + L1 loss of Zhao, Gallo,
Frosio, Kautz, "Loss Functions for Image Restoration with Neural Networks" (IEEE TCI 2017), as in NVIDIA's
PL4NN layers. On each odd square patch ``[P, P]`` five Gaussian windows ``G_s`` (sigma 0.5, 1, 2, 4, 8),
centred on the central pixel and normalised to sum 1 over the patch, give per scale ``mu_x, mu_y, var_x,
var_y, cov_xy`` (C1 = 0.01², C2 = 0.03²)::

    l    = (2 mu_x mu_y + C1) / (mu_x² + mu_y² + C1)            (sigma 8 only)
    cs_s = (2 cov_xy + C2) / (var_x + var_y + C2)
    MS   = l · prod_s cs_s,      L1 = sum_p G_8(p) |x_p - y_p|
    loss = alpha (1 - MS) + (1 - alpha) L1                       per (sample, channel)

Values are taken as given: the reference system added +0.5 to its (zero-centred) values before this
loss; add it yourself if your data are zero-centred (the luminance term depends on the offset).

``ms_ssim(x, y, data_range)`` — standard full-image MS-SSIM (Wang, Simoncelli, Bovik 2003), identical to
``pytorch_msssim.ms_ssim(x, y, data_range, size_average=False)``: 11-tap Gaussian window (sigma 1.5),
separable "valid" filtering, 5 scales with 2x2 average pooling between them (odd sides padded by one zero
on both sides, the zero counted in the average), relu on the per-channel cs / ssim means, weights
0.0448, 0.2856, 0.3001, 0.2363, 0.1333, mean over channels. Height and width must be > 160.

Gradients flow to ``pred`` / ``x`` only; ``target`` / ``y`` get ``None`` (they are the reference image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nnraw.ops._library import HAVE_COMPILED, use_compiled, warn_fallback

CENTER_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW_SIZE = 11
MS_SSIM_WINDOW_SIGMA = 1.5
MS_SSIM_MIN_SIDE = 161          # pytorch_msssim: min side > (11 - 1) * 2**4
CENTER_MIN_PATCH = 3
# Sigma of the Gaussian weighting the L1 term of ms_ssim_l1_loss: the window of the coarsest of the
# 5 scales, seen at full resolution (1.5 px after 4 halvings = 24 px), truncated at 3 sigma.
L1_SIGMA = MS_SSIM_WINDOW_SIGMA * 2 ** 4
L1_RADIUS = 3 * int(L1_SIGMA)
_C1 = 0.01 ** 2
_C2 = 0.03 ** 2

_CENTER = "nnraw.center_ms_ssim_l1"
_CENTER_BWD = "nnraw.center_ms_ssim_l1_backward"
_MS = "nnraw.ms_ssim"
_MS_BWD = "nnraw.ms_ssim_backward"


# --------------------------------------------------------------------------------------------------
# Argument checks: the same order and texts as the C++ checks in csrc/cpu/ms_ssim.cpp.
# --------------------------------------------------------------------------------------------------

def _dtype_ok(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float32, torch.float64) or (
        t.device.type == "cuda" and t.dtype in (torch.float16, torch.bfloat16))


def _check_pair(op: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.dim() != 4:
        raise ValueError(f"{op}: {a_name} must have shape [N, C, H, W], got {list(a.shape)}")
    if b.device != a.device:
        raise ValueError(f"{op}: {b_name} must be on {a_name}'s device {a.device}, got {b.device}")
    if b.dtype != a.dtype:
        raise TypeError(f"{op}: {b_name} must have {a_name}'s dtype {a.dtype}, got {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{op}: {a_name} and {b_name} must have the same shape, got {list(a.shape)} "
                         f"and {list(b.shape)}")
    if not _dtype_ok(a):
        raise TypeError(f"{op}: {a_name} must be float32 or float64 (float16/bfloat16 only on CUDA), "
                        f"got {a.dtype} on {a.device.type}")


def _check_grad(op: str, grad: torch.Tensor, like: torch.Tensor, expected: list[int]) -> None:
    if grad.device != like.device:
        raise ValueError(f"{op}: grad must be on the input's device {like.device}, got {grad.device}")
    if grad.dtype != like.dtype:
        raise TypeError(f"{op}: grad must have the input's dtype {like.dtype}, got {grad.dtype}")
    if list(grad.shape) != expected:
        raise ValueError(f"{op}: grad must have shape {expected}, got {list(grad.shape)}")


def check_center_ms_ssim_l1_args(pred: torch.Tensor, target: torch.Tensor, alpha: float,
                                 op: str = _CENTER) -> None:
    """Validate center_ms_ssim_l1 arguments (odd square patches P >= 3, alpha in [0, 1])."""
    _check_pair(op, "pred", pred, "target", target)
    h, w = pred.shape[-2:]
    if not (h == w and h % 2 == 1 and h >= CENTER_MIN_PATCH):
        raise ValueError(f"{op}: patches must be square with an odd side P >= 3, got {h}x{w}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{op}: alpha must be in [0, 1], got {alpha:g}")


def check_ms_ssim_args(x: torch.Tensor, y: torch.Tensor, data_range: float, op: str = _MS) -> None:
    """Validate ms_ssim arguments (height and width > 160, data_range > 0)."""
    _check_pair(op, "x", x, "y", y)
    h, w = x.shape[-2:]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"{op}: height and width must be > 160 for 5 scales (11x11 window after 4 halvings), "
                         f"got {h}x{w}")
    if not data_range > 0.0:
        raise ValueError(f"{op}: data_range must be > 0, got {data_range:g}")


# --------------------------------------------------------------------------------------------------
# Pure-PyTorch references (test oracles and the fallback without the compiled library).
# --------------------------------------------------------------------------------------------------

def center_windows(patch: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Tensor[5, P, P]: the Gaussian windows G_s (sigma 0.5 ... 8) centred on the central pixel, each
    normalised to sum 1 over the patch (computed in float64, then cast)."""
    t = torch.arange(patch, dtype=torch.float64) - patch // 2
    sig = torch.tensor(CENTER_SIGMAS, dtype=torch.float64)[:, None]
    g = torch.exp(-t ** 2 / (2 * sig ** 2))
    g = g / g.sum(1, keepdim=True)
    return (g[:, :, None] * g[:, None, :]).to(device=device, dtype=dtype)


def center_ms_ssim_l1_reference(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.84) -> torch.Tensor:
    """Pure-PyTorch central-pixel MS-SSIM + L1 loss (see module docstring).

    Args:
        pred, target: Tensor[N, C, P, P], P odd >= 3.
        alpha: weight of the MS-SSIM term, in [0, 1].

    Returns:
        Tensor[N, C] loss per sample and channel.
    """
    check_center_ms_ssim_l1_args(pred, target, alpha)
    G = center_windows(pred.shape[-1], pred.device, pred.dtype)          # [5, P, P]
    x = pred[:, :, None]
    y = target[:, :, None]
    mux = (G * x).sum((-2, -1))                                           # [N, C, 5]
    muy = (G * y).sum((-2, -1))
    dx = x - mux[..., None, None]
    dy = y - muy[..., None, None]
    vx = (G * dx * dx).sum((-2, -1))
    vy = (G * dy * dy).sum((-2, -1))
    cov = (G * dx * dy).sum((-2, -1))
    cs = (2 * cov + _C2) / (vx + vy + _C2)
    mx, my = mux[..., -1], muy[..., -1]
    lum = (2 * mx * my + _C1) / (mx * mx + my * my + _C1)
    ms = lum * cs.prod(-1)
    l1 = (G[-1] * (pred - target).abs()).sum((-2, -1))
    return alpha * (1 - ms) + (1 - alpha) * l1


def ms_ssim_window(device=None, dtype=torch.float32) -> torch.Tensor:
    """Tensor[11]: pytorch_msssim's Gaussian window (sigma 1.5), computed in float32 then cast."""
    coords = torch.arange(MS_SSIM_WINDOW_SIZE, dtype=torch.float32) - MS_SSIM_WINDOW_SIZE // 2
    g = torch.exp(-(coords ** 2) / (2 * MS_SSIM_WINDOW_SIGMA ** 2))
    g = g / g.sum()
    return g.to(device=device, dtype=dtype)


def ms_ssim_reference(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Pure-PyTorch MS-SSIM, the computation of ``pytorch_msssim.ms_ssim(..., size_average=False)``.

    Args:
        x, y: Tensor[N, C, H, W], H and W > 160.
        data_range: value range of the images (1.0 for [0, 1] data).

    Returns:
        Tensor[N] MS-SSIM per sample (mean over channels).
    """
    check_ms_ssim_args(x, y, data_range)
    c = x.shape[1]
    g = ms_ssim_window(x.device, x.dtype)
    wv = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    wh = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wv, groups=c), wh, groups=c)

    values = []
    for level in range(len(MS_SSIM_WEIGHTS)):
        mu1, mu2 = blur(x), blur(y)
        s1 = blur(x * x) - mu1 * mu1
        s2 = blur(y * y) - mu2 * mu2
        s12 = blur(x * y) - mu1 * mu2
        cs_map = (2 * s12 + c2) / (s1 + s2 + c2)
        if level < len(MS_SSIM_WEIGHTS) - 1:
            values.append(torch.relu(cs_map.flatten(2).mean(-1)))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
        else:
            ssim_map = (2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
            values.append(torch.relu(ssim_map.flatten(2).mean(-1)))
    stacked = torch.stack(values, 0)                                      # [5, N, C]
    weights = stacked.new_tensor(MS_SSIM_WEIGHTS).view(-1, 1, 1)
    return torch.prod(stacked ** weights, 0).mean(1)


# --------------------------------------------------------------------------------------------------
# Fake kernels and autograd for the compiled ops.
# --------------------------------------------------------------------------------------------------

if HAVE_COMPILED:
    @torch.library.register_fake("nnraw::center_ms_ssim_l1")
    def _center_fake(pred, target, alpha):
        check_center_ms_ssim_l1_args(pred, target, alpha)
        return pred.new_empty(pred.shape[:2])

    @torch.library.register_fake("nnraw::center_ms_ssim_l1_backward")
    def _center_backward_fake(grad, pred, target, alpha):
        check_center_ms_ssim_l1_args(pred, target, alpha, op=_CENTER_BWD)
        _check_grad(_CENTER_BWD, grad, pred, list(pred.shape[:2]))
        return torch.empty_like(pred, memory_format=torch.contiguous_format)

    @torch.library.register_fake("nnraw::ms_ssim")
    def _ms_ssim_fake(x, y, data_range):
        check_ms_ssim_args(x, y, data_range)
        return x.new_empty(x.shape[:1])

    @torch.library.register_fake("nnraw::ms_ssim_backward")
    def _ms_ssim_backward_fake(grad, x, y, data_range):
        check_ms_ssim_args(x, y, data_range, op=_MS_BWD)
        _check_grad(_MS_BWD, grad, x, list(x.shape[:1]))
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _center_setup(ctx, inputs, output):
        pred, target, alpha = inputs
        ctx.save_for_backward(pred, target)
        ctx.alpha = alpha

    def _center_backward(ctx, grad):
        pred, target = ctx.saved_tensors
        grad_pred = None
        if ctx.needs_input_grad[0]:
            grad_pred = torch.ops.nnraw.center_ms_ssim_l1_backward(grad.contiguous(), pred, target, ctx.alpha)
        return grad_pred, None, None

    def _ms_ssim_setup(ctx, inputs, output):
        x, y, data_range = inputs
        ctx.save_for_backward(x, y)
        ctx.data_range = data_range

    def _ms_ssim_backward(ctx, grad):
        x, y = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.nnraw.ms_ssim_backward(grad.contiguous(), x, y, ctx.data_range)
        return grad_x, None, None

    torch.library.register_autograd("nnraw::center_ms_ssim_l1", _center_backward, setup_context=_center_setup)
    torch.library.register_autograd("nnraw::ms_ssim", _ms_ssim_backward, setup_context=_ms_ssim_setup)


# --------------------------------------------------------------------------------------------------
# Public functions.
# --------------------------------------------------------------------------------------------------

def center_ms_ssim_l1(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.84) -> torch.Tensor:
    """Central-pixel mixed MS-SSIM + L1 loss of the reference system (see module docstring).

    Args:
        pred: Tensor[N, C, P, P] network output patches, P odd >= 3 (31 in the reference system).
            float32/float64 (float16/bfloat16 too on CUDA, computed in float32).
        target: Tensor[N, C, P, P] ground truth, same dtype and device. Gets no gradient.
        alpha: weight of the MS-SSIM term (0.84 in the paper); 1 - alpha weighs the L1 term.

    Returns:
        Tensor[N, C] loss per sample and channel (``.mean()`` it for training). Values are used as given
        (the reference system added +0.5 to zero-centred data first).
    """
    check_center_ms_ssim_l1_args(pred, target, alpha)
    if use_compiled(pred, target):
        return torch.ops.nnraw.center_ms_ssim_l1(pred, target, float(alpha))
    warn_fallback("center_ms_ssim_l1")
    return center_ms_ssim_l1_reference(pred, target, alpha)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Full-image MS-SSIM, equal to ``pytorch_msssim.ms_ssim(x, y, data_range, size_average=False)``.

    Args:
        x: Tensor[N, C, H, W], H and W > 160; float32/float64 (float16/bfloat16 too on CUDA).
        y: Tensor[N, C, H, W] reference image, same dtype and device. Gets no gradient.
        data_range: value range of the images (1.0 for [0, 1] data).

    Returns:
        Tensor[N] MS-SSIM per sample (mean over channels), 1 for identical images.
    """
    check_ms_ssim_args(x, y, data_range)
    if use_compiled(x, y):
        return torch.ops.nnraw.ms_ssim(x, y, float(data_range))
    warn_fallback("ms_ssim")
    return ms_ssim_reference(x, y, data_range)


def l1_weights(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Tensor[size]: per-axis weights w such that sum_i w_i |d_i| is the mean, over the valid positions,
    of |d| filtered with the normalised 1-D Gaussian of sigma ``L1_SIGMA`` truncated at ``L1_RADIUS``.
    The 2-D weights are the outer product of the row and column weights (they sum to 1)."""
    t = torch.arange(-L1_RADIUS, L1_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-t ** 2 / (2 * L1_SIGMA ** 2))
    g = g / g.sum()
    valid = size - 2 * L1_RADIUS
    ones = torch.full((1, 1, valid), 1.0 / valid, dtype=torch.float64)
    w = F.conv_transpose1d(ones, g.view(1, 1, -1)).view(-1)              # adjoint of valid filtering
    return w.to(device=device, dtype=dtype)


def gaussian_weighted_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Tensor[N]: mean over channels and valid positions of |pred - target| filtered with the Gaussian of
    the coarsest MS-SSIM scale (sigma 24 px, 145x145, "valid" like the MS-SSIM filtering)."""
    wh = l1_weights(pred.shape[-2], pred.device, pred.dtype)
    ww = l1_weights(pred.shape[-1], pred.device, pred.dtype)
    return (wh[:, None] * ww[None, :] * (pred - target).abs()).sum((-2, -1)).mean(1)


def ms_ssim_l1_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.84,
                    data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Whole-crop mixed loss for training (Zhao et al. 2017, eq. 10, on full crops instead of centres)::

        loss = mean_n [ alpha (1 - MS-SSIM_n) + (1 - alpha) L1_G,n / data_range ]

    with MS-SSIM from :func:`ms_ssim` and L1_G from :func:`gaussian_weighted_l1`: the absolute error
    filtered, like the MS-SSIM maps, with a Gaussian, here that of the coarsest scale seen at full
    resolution (sigma 1.5 · 2⁴ = 24 px), averaged over the valid positions — so crop borders count less,
    as they do in the MS-SSIM term.

    Args:
        pred: Tensor[N, C, H, W] network output, H and W > 160.
        target: Tensor[N, C, H, W] ground truth. Gets no gradient.
        alpha: weight of the MS-SSIM term, in [0, 1].
        data_range: value range of the images.
        reduction: "mean" (a scalar) or "none" (Tensor[N], one loss per sample).

    Returns:
        Tensor[] scalar loss, or Tensor[N] with ``reduction="none"``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"nnraw.ms_ssim_l1_loss: alpha must be in [0, 1], got {alpha:g}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"nnraw.ms_ssim_l1_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    ms = ms_ssim(pred, target, data_range)
    l1 = gaussian_weighted_l1(pred, target.detach()) / data_range   # target gets no gradient, as in ms_ssim
    per_sample = alpha * (1 - ms) + (1 - alpha) * l1
    return per_sample.mean() if reduction == "mean" else per_sample


__all__ = [
    "CENTER_SIGMAS", "MS_SSIM_WEIGHTS", "center_ms_ssim_l1", "center_ms_ssim_l1_reference", "ms_ssim",
    "ms_ssim_reference", "ms_ssim_l1_loss", "gaussian_weighted_l1", "center_windows", "ms_ssim_window",
    "check_center_ms_ssim_l1_args", "check_ms_ssim_args",
]
