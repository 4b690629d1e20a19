"""White-box GAN-latent inversion (CRAFTER.md section 2).

The attacker knows ``Enc`` and holds a face prior ``G`` (WGAN-GP on public
faces). It solves ``z* = argmin_z ||F - Enc(G(z))||^2 (- w * D(G(z)))`` by
momentum gradient descent from a random or amortized start and outputs
``G(z*)``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft.attacks.base import ProgressFn

__all__ = ["inversion_loss", "invert_latent"]


def inversion_loss(encoder: nn.Module, generator: nn.Module, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample ``L_inv(F, z) = ||F - Enc(G(z))||^2 / dim(F)``, shape ``(N,)`` (CRAFTER.md section 3).

    Dividing by ``dim(F)`` keeps step sizes independent of the feature size.
    """
    diff = encoder(generator(z)) - features
    return diff.flatten(1).pow(2).mean(dim=1)


def invert_latent(
    encoder: nn.Module,
    generator: nn.Module,
    features: torch.Tensor,
    z0: torch.Tensor,
    *,
    steps: int = 600,
    lr: float = 5e-3,
    momentum: float = 0.9,
    critic: Optional[nn.Module] = None,
    prior_weight: float = 0.0,
    progress: Optional[ProgressFn] = None,
) -> torch.Tensor:
    """Momentum descent on ``z`` for ``sum_n L_inv(F_n, z_n) - w * D(G(z_n))``.

    Each sample's latent is optimised independently (the loss is summed over
    the batch). Gradients are taken w.r.t. ``z`` only; model ``.grad`` fields
    are untouched.

    Args:
        encoder: ``Enc`` (frozen during the call).
        generator: ``G`` (frozen during the call).
        features: targets ``F``, shape ``(N, *F)``.
        z0: start latents ``(N, zd)`` (random, or ``Amor(F)``).
        steps: iterations (600 cold, ~100 amortized in the paper).
        lr: step size (5e-3 in the paper).
        momentum: heavy-ball momentum (0.9).
        critic: optional prior critic ``D`` for the realism term.
        prior_weight: weight ``w`` of ``-D(G(z))`` (0 disables it).
        progress: optional ``progress(done, total, desc)`` callback.

    Returns:
        ``z*`` of shape ``(N, zd)``, detached.
    """
    features = features.detach()
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr, momentum=momentum)
    with frozen(encoder, generator, critic):
        for i in range(steps):
            x = generator(z)
            loss = (encoder(x) - features).flatten(1).pow(2).mean(dim=1).sum()
            if critic is not None and prior_weight > 0:
                loss = loss - prior_weight * critic(x).sum()
            (g,) = torch.autograd.grad(loss, z)
            opt.zero_grad(set_to_none=True)
            z.grad = g
            opt.step()
            if progress is not None:
                progress(i + 1, steps, "white-box inversion")
    return z.detach()
