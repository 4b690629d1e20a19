"""Additive Gaussian noise on the released features (a randomised baseline).

``F = Enc(X) + sigma_n * e``, ``e ~ N(0, I)``. With ``relative=True`` (the
default) ``sigma_n = sigma * std(Enc(X)_n)``, the standard deviation of
sample ``n``'s feature entries, so one ``sigma`` means the same signal-to-
noise ratio for any encoder; with ``relative=False`` ``sigma`` is absolute.
Being randomised, it is the target of the A3 query-averaging attack
(CRAFTER.md section 2).

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 6, adaptive attack A3 against randomised defences).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from facecraft._torchutils import derive_seed, frozen, make_generator
from facecraft._validation import check_number
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.registry import register_defense

__all__ = ["GaussianNoise", "add_relative_noise"]


def add_relative_noise(
    f: torch.Tensor, ref: torch.Tensor, sigma: float, gen: torch.Generator
) -> torch.Tensor:
    """``f + sigma * std(ref_n) * e``, ``e ~ N(0, I)`` drawn from ``gen`` on the CPU: each sample's
    noise scaled by the standard deviation of its reference feature's entries (module docstring)."""
    e = torch.randn(f.shape, generator=gen, dtype=f.dtype).to(f.device)
    scale = ref.flatten(1).std(dim=1).view((-1,) + (1,) * (f.dim() - 1))
    return f + sigma * scale * e


class GaussianNoise(FeatureDefense):
    """Gaussian feature noise.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (Default: None).
        sigma: noise level, >= 0 (Default: 0.5). ``0`` releases ``Enc(X)`` exactly.
        relative: scale ``sigma`` by each sample's feature standard deviation
            (Default: True); if False, ``sigma`` is an absolute standard deviation.
        seed: seed of the defence's noise stream. The stream advances across
            calls (so repeated queries of one image get fresh noise); two
            defences built with the same seed give the same sequence of
            outputs, and :meth:`reseed` restarts it from ``(seed, key)``
            (Default: 0).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)``.

    Note:
        Noise is drawn on the CPU and moved to the model's device, so a seed
        gives the same noise on every device.
    """

    relative_cost = 1

    randomized = True

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module] = None,
        *,
        sigma: float = 0.5,
        relative: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        check_number("sigma", sigma, low=0.0)
        self.sigma = sigma
        self.relative = relative
        self.seed = seed
        self._gen = make_generator(seed, "cpu")

    @classmethod
    def name(cls) -> str:
        return "noise"

    def reseed(self, key: str) -> None:
        """Restart the noise stream at ``derive_seed(seed, key)``.

        See :meth:`FeatureDefense.reseed`.
        """
        self._gen = make_generator(derive_seed(self.seed, key), "cpu")

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        with frozen(self.encoder), torch.no_grad():
            f = self.encoder(images)
            if self.sigma == 0:
                return f
            if self.relative:
                return add_relative_noise(f, f, self.sigma, self._gen)
            e = torch.randn(f.shape, generator=self._gen, dtype=f.dtype).to(f.device)
            return f + self.sigma * e


register_defense("noise", GaussianNoise)
