"""The black-box attacker's decoder ``Dec: F -> X`` (CRAFTER.md sections 2 and 4).

Note:
    The paper describes the decoder as a generator fed the flattened feature.
    For a 64x16x16 feature that first linear layer alone would hold 268M
    weights, so ours keeps the feature's spatial layout instead: a 3x3
    convolution and two residual blocks at the feature's resolution, then the
    generator's 5x5 stride-2 transposed convolutions (BN + ReLU) up to the
    image size and a sigmoid. It is a stronger attacker than the flattened
    one, which only makes our privacy measurements more conservative.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["Decoder"]


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Decoder(nn.Module):
    """``Dec(F)``: features ``(N, C, h, w)`` -> images ``(N, 3, S, S)`` in [0, 1].

    Args:
        feature_shape: ``(C, h, w)``, with ``h == w`` and ``S / h`` a power of two.
        image_size: ``S``.
        width: channels at the feature resolution.
    """

    def __init__(self, feature_shape: Sequence[int], image_size: int, width: int = 128) -> None:
        super().__init__()
        c_in, h, w = feature_shape
        up = math.log2(image_size / h)
        if h != w or up != int(up) or up < 0:
            raise ValueError(
                f"feature {tuple(feature_shape)} cannot be decoded to "
                f"{image_size}x{image_size} images"
            )
        mods: List[nn.Module] = [
            nn.Conv2d(c_in, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            _Res(width),
            _Res(width),
        ]
        c = width
        for _ in range(int(up)):
            cn = max(32, c // 2)
            mods += [
                nn.ConvTranspose2d(c, cn, 5, 2, 2, output_padding=1, bias=False),
                nn.BatchNorm2d(cn),
                nn.ReLU(True),
            ]
            c = cn
        mods += [nn.Conv2d(c, 3, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*mods)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)
