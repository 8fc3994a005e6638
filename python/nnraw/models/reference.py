"""The reference network of the seed system: one small CNN per ISO (Zhao et al. 2017 setup).

conv 9x9 (3 -> 64), PReLU, conv 5x5 (64 -> 64), PReLU, conv 5x5 (64 -> 3); PReLU slopes per
channel, initialised to 0.1; input shifted by -0.5 and output by +0.5; no skip connection;
123,011 parameters. All convolutions are valid (no padding), so the output is the input shrunk by
the 8 px halo on every side and tiled inference is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from nnraw.models.layers import check_forward_input, make_prelu


class ReferenceDenoiser(nn.Module):
    """forward(rgb Tensor[N, 3, H+16, W+16], sigma ignored) -> Tensor[N, 3, H, W]."""

    halo = 8
    noise_conditioned = False

    def __init__(self, channels: int = 64, prelu_init: float = 0.1, identity_init: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 9)
        self.act1 = make_prelu(channels, prelu_init)
        self.conv2 = nn.Conv2d(channels, channels, 5)
        self.act2 = make_prelu(channels, prelu_init)
        self.conv3 = nn.Conv2d(channels, 3, 5)
        if identity_init:
            self._init_near_identity(prelu_init)

    @torch.no_grad()
    def _init_near_identity(self, slope: float) -> None:
        """Start from (almost) the identity map, so short training begins at the pre-demosaic.

        With PReLU slope a, PReLU(x) - PReLU(-x) = (1 + a) x, so channel pairs (+x, -x) carry the
        input linearly through both PReLUs. Channels 0..5 of each hidden layer hold these pairs;
        the other channels keep PyTorch's default random initialisation, scaled down so they
        perturb the identity only slightly.
        """
        for conv in (self.conv1, self.conv2, self.conv3):
            conv.weight.mul_(0.1)
            conv.bias.zero_()
        w1, w2, w3 = self.conv1.weight, self.conv2.weight, self.conv3.weight
        w1[:6].zero_(); w2[:6].zero_(); w2[:, :6].zero_(); w3[:, :6].zero_()
        for c in range(3):
            w1[2 * c, c, 4, 4] = 1.0
            w1[2 * c + 1, c, 4, 4] = -1.0
            for sign, row in ((1.0, 2 * c), (-1.0, 2 * c + 1)):
                w2[row, 2 * c, 2, 2] = sign
                w2[row, 2 * c + 1, 2, 2] = -sign
            w3[c, 2 * c, 2, 2] = 1.0 / (1.0 + slope) ** 2
            w3[c, 2 * c + 1, 2, 2] = -1.0 / (1.0 + slope) ** 2

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        check_forward_input("ReferenceDenoiser", rgb, sigma, self.halo, needs_sigma=False, even=False)
        x = self.act1(self.conv1(rgb - 0.5))
        x = self.act2(self.conv2(x))
        return self.conv3(x) + 0.5
