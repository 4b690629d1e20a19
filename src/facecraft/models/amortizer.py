"""The amortizer ``Amor: F -> z`` that warm-starts latent inversion (CRAFTER.md sections 2 and 4).

Trained on ``(Enc(G(z)), z)`` pairs from random ``z``. Architecture: 4x4
stride-2 convolutions to ``2w``, ``8w`` and ``16w`` channels (then further
``16w`` stages for larger features) down to 2x2, a 2x2 convolution to ``8w``
and a 1x1 convolution to ``zd`` (``w = 64`` is the published width).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["Amortizer"]


class Amortizer(nn.Module):
    """``Amor(F)``: features ``(N, C, h, w)`` -> latents ``(N, zd)``.

    Args:
        feature_shape: ``(C, h, w)`` with ``h == w`` a power of two >= 4.
        latent_dim: ``zd``.
        width: base width ``w``.
    """

    def __init__(self, feature_shape: Sequence[int], latent_dim: int, width: int = 64) -> None:
        super().__init__()
        c_in, h, w = feature_shape
        n = math.log2(h / 2)
        if h != w or n != int(n) or n < 1:
            raise ValueError(
                "amortizer needs a square power-of-two feature of side >= 4, "
                f"got {tuple(feature_shape)}"
            )
        chans = [2 * width, 8 * width, 16 * width] + [16 * width] * max(0, int(n) - 3)
        mods: List[nn.Module] = []
        c = c_in
        for cn in chans[: int(n)]:
            mods += [nn.Conv2d(c, cn, 4, 2, 1), nn.BatchNorm2d(cn), nn.LeakyReLU(0.2, True)]
            c = cn
        mods += [
            nn.Conv2d(c, 8 * width, 2),
            nn.BatchNorm2d(8 * width),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(8 * width, latent_dim, 1),
            nn.Flatten(),
        ]
        self.net = nn.Sequential(*mods)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)
