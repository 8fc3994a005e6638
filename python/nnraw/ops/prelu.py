"""PReLU with per-channel slopes, fused, as in the reference system's network.

    y = x              where x > 0
    y = weight[c] * x  elsewhere                  x: [N, C, *spatial], weight: [C]

The compiled kernels (``torch.ops.nnraw.prelu`` and ``torch.ops.nnraw.prelu_backward``, CPU and
CUDA) compute the backward in two passes, as the reference system did: the first writes ``grad_x``
and per-(sample, channel) partial sums of ``x * grad`` over ``x <= 0``; the second reduces them over
the samples into ``grad_weight``. Their autograd is registered in C++ (csrc/cpu/prelu.cpp) for every
device: a Python autograd kernel (torch.library.register_autograd) costs about 0.1 ms of CPU time per
forward+backward, more than the CUDA kernels take for a training batch.

Memory format: an ``x`` that is channels_last (4-D) or channels_last_3d (5-D) gives outputs in the
same format; any other ``x`` (contiguous, transposed, sliced) gives contiguous outputs. The fake
kernels below return exactly these strides, so ``torch.compile`` and ``torch.library.opcheck`` see
the same tensors as the real kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from nnraw.ops._library import HAVE_COMPILED, use_compiled, warn_fallback

_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_prelu_args(op: str, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Validate ``x`` [N, C, *spatial] and ``weight`` [C] with the compiled kernels' messages.

    ``op`` names the op in the message: ``"nnraw::prelu"`` or ``"nnraw::prelu_backward"``.
    Raises ValueError for shapes and devices, TypeError for dtypes.
    """
    if x.dim() < 2:
        raise ValueError(f"{op}: x must have shape [N, C, *spatial] (at least 2 dimensions), got {list(x.shape)}")
    channels = x.shape[1]
    if weight.dim() != 1 or weight.shape[0] != channels:
        raise ValueError(f"{op}: weight must have shape [C] = [{channels}], got {list(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"{op}: weight must be on x's device {x.device}, got {weight.device}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight must have x's dtype {_dtype_name(x.dtype)}, got {_dtype_name(weight.dtype)}")
    supported = _DTYPES.get(x.device.type)
    if supported is not None and x.dtype not in supported:
        names = ", ".join(_dtype_name(d) for d in supported)
        raise TypeError(f"{op}: x dtype must be one of {names} on {x.device.type}, got {_dtype_name(x.dtype)}")


def check_prelu_backward_args(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Validate the backward's arguments: those of the forward plus ``grad`` shaped like ``x``."""
    op = "nnraw::prelu_backward"
    check_prelu_args(op, x, weight)
    if grad.shape != x.shape:
        raise ValueError(f"{op}: grad must have x's shape {list(x.shape)}, got {list(grad.shape)}")
    if grad.device != x.device:
        raise ValueError(f"{op}: grad must be on x's device {x.device}, got {grad.device}")
    if grad.dtype != x.dtype:
        raise TypeError(f"{op}: grad must have x's dtype {_dtype_name(x.dtype)}, got {_dtype_name(grad.dtype)}")


def prelu_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout of the kernels' outputs: channels-last when ``x`` is (and is not also contiguous)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def prelu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch PReLU with per-channel slopes (the test oracle and the fallback).

    Args:
        x: Tensor[N, C, *spatial], floating point.
        weight: Tensor[C], same dtype and device as ``x``.

    Returns:
        Tensor shaped like ``x``: ``x`` where ``x > 0``, ``weight[c] * x`` elsewhere.
    """
    check_prelu_args("nnraw::prelu", x, weight)
    slope = weight.reshape(1, -1, *([1] * (x.dim() - 2)))
    return torch.where(x > 0, x, slope * x)


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU with one learned slope per channel (see the module docstring), differentiable.

    Args:
        x: Tensor[N, C, *spatial]; float32 or float64 on CPU, also float16/bfloat16 on CUDA.
        weight: Tensor[C], the negative-side slopes, same dtype and device as ``x``.

    Returns:
        Tensor shaped like ``x``, channels_last when ``x`` is, contiguous otherwise.
    """
    check_prelu_args("nnraw::prelu", x, weight)
    if use_compiled(x, weight):
        return torch.ops.nnraw.prelu(x, weight)
    warn_fallback("prelu")
    return prelu_reference(x, weight)


class PReLU(nn.Module):
    """PReLU layer with learned per-channel slopes, running the fused nnraw kernels.

    Args:
        num_parameters: number of slopes: the input's channel count C, or 1 for one shared slope.
        init: initial slope (the reference system used 0.1).

    Shape:
        input Tensor[N, C, *spatial] -> output of the same shape.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.1, device=None, dtype=None) -> None:
        super().__init__()
        if num_parameters < 1:
            raise ValueError(f"nnraw PReLU: num_parameters must be >= 1, got {num_parameters}")
        self.num_parameters = num_parameters
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.num_parameters == 1 and x.dim() >= 2 and x.shape[1] != 1:
            weight = weight.expand(x.shape[1])  # one shared slope; its gradient sums over channels
        return prelu(x, weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


if HAVE_COMPILED:

    @torch.library.register_fake("nnraw::prelu")
    def _prelu_fake(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        check_prelu_args("nnraw::prelu", x, weight)
        return torch.empty_like(x, memory_format=prelu_memory_format(x))

    @torch.library.register_fake("nnraw::prelu_backward")
    def _prelu_backward_fake(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor):
        check_prelu_backward_args(grad, x, weight)
        return torch.empty_like(x, memory_format=prelu_memory_format(x)), torch.empty_like(weight,
                                                                   memory_format=torch.contiguous_format)
