"""The default network: noise-conditioned residual CNN working at half resolution.

The pre-demosaiced camera RGB and its per-pixel noise std are packed 2x2 -> channels
(``pixel_unshuffle``), so each half-resolution position sees one whole CFA cell (12 colour values
and 12 noise levels). A stack of valid 3x3 convolutions with PReLU (fused op) predicts a 12-channel
correction, ``pixel_shuffle`` unpacks it, and it is added to the (cropped) pre-demosaic:

    out = crop(rgb) + pixel_shuffle(body(cat(unshuffle(rgb - 0.5), unshuffle(sigma * s))))

Each valid 3x3 convolution at half resolution with dilation d removes d half-resolution pixels per
side, so the halo is 2 * sum(dilations) full-resolution pixels (always even: tiles keep their CFA
phase). Dilations (1, 1, 2, 4, 4, 2, 1, 1) double the receptive field of a plain stack of eight at
the same cost (66 instead of 34 full-resolution pixels), which high noise levels need. Working on 2x2
cells makes every convolution 4x cheaper per output pixel than at full resolution. Noise
conditioning (as Gharbi et al. 2016, Brooks et al. 2019) lets one model cover every camera and ISO.
The last convolution starts at zero, so an untrained model returns its input (the pre-demosaic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnraw.models.layers import center_crop, check_forward_input, make_prelu


class HalfResResidualDenoiser(nn.Module):
    """forward(rgb Tensor[N, 3, H+2h, W+2h], sigma Tensor[N, 3, H+2h, W+2h]) -> Tensor[N, 3, H, W].

    Args:
        channels: feature channels of the hidden layers.
        depth: number of 3x3 convolutions (>= 2).
        sigma_scale: sigma is multiplied by this before entering the network (sigma ~ 0.01-0.1).
        dilations: one per convolution (default all 1); halo = 2 * sum(dilations).
    """

    noise_conditioned = True

    def __init__(self, channels: int = 64, depth: int = 6, sigma_scale: float = 10.0, prelu_init: float = 0.1,
                 dilations: list[int] | None = None):
        super().__init__()
        if depth < 2:
            raise ValueError(f"HalfResResidualDenoiser: depth must be >= 2, got {depth}")
        dil = [1] * depth if dilations is None else [int(d) for d in dilations]
        if len(dil) != depth or min(dil) < 1:
            raise ValueError(f"HalfResResidualDenoiser: dilations must be {depth} integers >= 1, got {dilations}")
        self.halo = 2 * sum(dil)
        self.sigma_scale = float(sigma_scale)
        layers: list[nn.Module] = [nn.Conv2d(24, channels, 3, dilation=dil[0]), make_prelu(channels, prelu_init)]
        for d in dil[1:-1]:
            layers += [nn.Conv2d(channels, channels, 3, dilation=d), make_prelu(channels, prelu_init)]
        last = nn.Conv2d(channels, 12, 3, dilation=dil[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        check_forward_input("HalfResResidualDenoiser", rgb, sigma, self.halo, needs_sigma=True, even=True)
        packed = torch.cat([F.pixel_unshuffle(rgb - 0.5, 2), F.pixel_unshuffle(sigma * self.sigma_scale, 2)], 1)
        correction = F.pixel_shuffle(self.body(packed), 2)
        return center_crop(rgb, self.halo) + correction
