"""The residual feature crafter ``C`` of the amortized and distilled Crafter (issues 5 and 16).

Both learn a network that releases ``F' = Enc(X) + C(Enc(X))`` in one forward
pass: the amortized Crafter trains ``C`` with Crafter's objective
(:mod:`facecraft.defenses.amortized_crafter`), the distilled one regresses it
on a Crafter's releases (:mod:`facecraft.defenses.distilled`). ``C`` starts at
zero, so ``F' = F`` before training.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureCrafter"]


class FeatureCrafter(nn.Module):
    """``C``: features ``(N, C, h, w)`` -> a residual of the same shape.

    Two 3x3 convolutions of ``width`` channels (ReLU) and a 1x1 convolution
    back to ``C`` channels, initialised at zero so ``F + C(F) = F`` before
    training.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)
