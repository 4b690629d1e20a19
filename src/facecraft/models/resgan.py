"""A second face-prior generator for the A2 attack: upsampling + residual convolutions.

The A2 adaptive attack (CRAFTER.md section 2) inverts through a prior whose
architecture and latent size differ from the one the defence was crafted
against. :class:`ResGenerator` differs from :class:`facecraft.models.Generator`
in every stage: it starts at 4x4 instead of 8x8, upsamples by nearest-neighbour
interpolation followed by 3x3 convolutions instead of 5x5 transposed
convolutions, and each stage is a pre-activation residual block (BN, ReLU,
conv, BN, ReLU, conv, plus a 1x1 shortcut when the width changes), in the
style of the SNGAN/WGAN-GP ResNet generators. Train it with the same WGAN-GP
loop and :class:`facecraft.models.Critic` as the main prior.

References:
    Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017,
    https://arxiv.org/abs/1704.00028 (the ResNet generator of their appendix).
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as nnf
from torch import nn

__all__ = ["ResGenerator"]


class _UpBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest upsampling)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nnf.interpolate(torch.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(torch.relu(self.bn2(self.conv1(h))))
        return h + self.skip(nnf.interpolate(x, scale_factor=2, mode="nearest"))


class ResGenerator(nn.Module):
    """``G2(z)``: latent ``(N, zd)`` -> images ``(N, 3, S, S)`` in [0, 1].

    Args:
        latent_dim: ``zd``; A2 uses a size different from the main prior's.
        image_size: ``S``, 4 times a power of two (>= 8).
        width: channels of the last stage; stages have ``8w, 4w, 2w, w, w, ...``
            channels from 4x4 upwards (Default: 64).

    Example:
        >>> g = ResGenerator(24, 32, width=8)
        >>> g(torch.randn(2, 24)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        n = math.log2(image_size / 4)
        if n < 1 or n != int(n):
            raise ValueError(f"image size must be 4 times a power of two (>= 8), got {image_size}")
        self.latent_dim = latent_dim
        self.image_size = image_size
        n = int(n)
        chans = [width * max(1, 8 >> i) for i in range(n + 1)]
        self.c0 = chans[0]
        self.fc = nn.Linear(latent_dim, self.c0 * 4 * 4)
        blocks: List[nn.Module] = [_UpBlock(chans[i], chans[i + 1]) for i in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(
            nn.BatchNorm2d(chans[-1]), nn.ReLU(True), nn.Conv2d(chans[-1], 3, 3, 1, 1), nn.Sigmoid()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.fc(z).view(z.shape[0], self.c0, 4, 4)))
