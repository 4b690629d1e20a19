"""No protection: release ``Enc(X)`` as is (the baseline every defence is compared with).

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 6, "no protection").
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.registry import register_defense

__all__ = ["NoDefense"]


class NoDefense(FeatureDefense):
    """The identity defence: ``F = Enc(X)``.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (Default: None).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)``.
    """

    raw_release = True
    relative_cost = 0

    exportable = True

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module] = None) -> None:
        super().__init__(encoder, head)

    def edge_module(self) -> nn.Module:
        """The encoder itself (what a device runs without protection; exported for comparison)."""
        return self.encoder.eval()

    @classmethod
    def name(cls) -> str:
        return "none"

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        with frozen(self.encoder), torch.no_grad():
            return self.encoder(images)


register_defense("none", NoDefense)
