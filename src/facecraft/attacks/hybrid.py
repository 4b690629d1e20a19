"""Hybrid white-box attack: decoder start, then image-space feature matching (CRAFTER.md section 2).

Starts from a black-box reconstruction ``X0 = Dec(F)`` and optimises the image
itself to minimise ``||Enc(X) - F||^2`` (plus an optional total-variation term).

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    The paper gives the step count (~150) and lr (5e-3) but not the optimiser
    or how the image is kept in range. We optimise logits ``u`` with
    ``X = sigmoid(u)`` (so ``X`` stays in (0, 1) without clamping) with Adam,
    whose steps do not depend on the loss scale, and keep the per-sample
    iterate with the lowest objective, so the result never matches ``F``
    worse than the decoder's output.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft.attacks.base import InversionAttack, ProgressFn
from facecraft.attacks.registry import register_attack

__all__ = ["HybridAttack", "total_variation"]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference of neighbouring pixels, shape ``(N,)``."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


class HybridAttack(InversionAttack):
    r"""Refine a decoder's reconstruction so that its features match ``F``.

    Minimises ``||Enc(X) - F||^2 / dim(F) + tv_weight * TV(X)`` per sample over
    ``X = sigmoid(u)``, starting from ``u = logit(Dec(F))``.

    Args:
        encoder: the encoder ``Enc`` the attacker knows.
        decoder_attack: the start point, usually a fitted
            :class:`~facecraft.attacks.decoder.DecoderAttack` (any
            :class:`InversionAttack` works).
        steps: Adam iterations (Default: 150).
        lr: Adam learning rate on the logits (Default: 5e-3).
        tv_weight: weight of the total-variation term (Default: 0.0).

    Shape:
        - features: ``(N, *F)``, the encoder's feature shape.
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder_attack: InversionAttack,
        *,
        steps: int = 150,
        lr: float = 5e-3,
        tv_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if steps < 0 or lr <= 0 or tv_weight < 0:
            raise ValueError(
                f"need steps >= 0, lr > 0, tv_weight >= 0; got {steps}, {lr}, {tv_weight}"
            )
        self.encoder = encoder
        self.decoder_attack = decoder_attack
        self.steps = steps
        self.lr = lr
        self.tv_weight = tv_weight
        self.models = [encoder, *[m for m in decoder_attack.models if m is not encoder]]

    @classmethod
    def name(cls) -> str:
        return "hybrid"

    def objective(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Per-sample ``||Enc(X) - F||^2 / dim(F) + tv_weight * TV(X)``, shape ``(N,)``."""
        obj = (self.encoder(images) - features).flatten(1).pow(2).mean(1)
        if self.tv_weight > 0:
            obj = obj + self.tv_weight * total_variation(images)
        return obj

    def fit(
        self, public_images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> "HybridAttack":
        """Fit the start attack (e.g. train the decoder)."""
        self.decoder_attack.fit(public_images, progress=progress)
        return self

    def reconstruct(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        x0 = self.decoder_attack(features).to(features.device)
        eps = 1e-3
        u = torch.logit(x0.clamp(eps, 1 - eps)).detach().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=self.lr)
        best_x = x0.detach().clone()
        best = torch.full((x0.shape[0],), float("inf"), device=x0.device, dtype=x0.dtype)
        with frozen(self.encoder):
            for i in range(self.steps + 1):
                x = torch.sigmoid(u) if i > 0 else x0
                obj = self.objective(x, features)
                with torch.no_grad():
                    better = obj.detach() < best
                    best = torch.where(better, obj.detach(), best)
                    best_x[better] = x.detach()[better]
                if i == self.steps:
                    break
                if i == 0:  # the start is scored on x0 itself; descend from its logits
                    obj = self.objective(torch.sigmoid(u), features)
                (g,) = torch.autograd.grad(obj.sum(), u)
                opt.zero_grad(set_to_none=True)
                u.grad = g
                opt.step()
                if progress is not None:
                    progress(i + 1, self.steps, "hybrid refinement")
        return best_x.clamp(0, 1)


register_attack("hybrid", HybridAttack)
