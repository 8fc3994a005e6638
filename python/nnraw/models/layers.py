"""Building blocks shared by the networks: the fused PReLU and valid-convolution helpers."""

from __future__ import annotations

import torch
from torch import nn


def make_prelu(num_parameters: int, init: float = 0.1) -> nn.Module:
    """Per-channel PReLU through nnraw's fused op (``nnraw.ops.PReLU``).

    The parameter is named ``weight`` with shape [C], as in ``torch.nn.PReLU``, so state dicts are
    interchangeable. Falls back to ``torch.nn.PReLU`` only while the op module is not in the tree.
    """
    try:
        from nnraw.ops import PReLU
    except (ImportError, AttributeError):  # op module not present in this checkout
        return nn.PReLU(num_parameters, init=init)
    return PReLU(num_parameters, init=init)


def center_crop(t: torch.Tensor, margin: int) -> torch.Tensor:
    """Tensor[..., H, W] -> Tensor[..., H - 2 margin, W - 2 margin]."""
    if margin == 0:
        return t
    return t[..., margin:-margin, margin:-margin]


def check_forward_input(name: str, rgb: torch.Tensor, sigma: torch.Tensor | None, halo: int,
                        needs_sigma: bool, even: bool) -> None:
    """Shape checks common to every model's forward; messages name the model and show the shapes."""
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"nnraw.models.{name}: rgb must have shape [N, 3, H, W], got {list(rgb.shape)}")
    h, w = rgb.shape[-2:]
    if h <= 2 * halo or w <= 2 * halo:
        raise ValueError(f"nnraw.models.{name}: input must be larger than 2*halo = {2 * halo} in H and W, "
                         f"got {h}x{w}")
    if even and (h % 2 or w % 2):
        raise ValueError(f"nnraw.models.{name}: input height and width must be even (CFA phase), got {h}x{w}")
    if needs_sigma:
        if sigma is None:
            raise ValueError(f"nnraw.models.{name}: this model is noise-conditioned; pass sigma [N, 3, H, W]")
        if sigma.shape != rgb.shape:
            raise ValueError(f"nnraw.models.{name}: sigma must have rgb's shape {list(rgb.shape)}, "
                             f"got {list(sigma.shape)}")
