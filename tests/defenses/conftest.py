"""Fixtures for the defence tests: a toy privacy setting on the tiny models."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from facecraft.attacks.whitebox import invert_latent


class MeanCritic(nn.Module):
    """A fixed 'critic': closeness to the prior's mean image, ``-||x - m||^2 / dim``."""

    def __init__(self, mean_image: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("m", mean_image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.m).flatten(1).pow(2).mean(dim=1)


@pytest.fixture()
def mean_critic(tiny_gan) -> MeanCritic:
    G, _ = tiny_gan
    with torch.no_grad():
        m = G(torch.randn(256, G.latent_dim, generator=torch.Generator().manual_seed(3))).mean(0)
    return MeanCritic(m)


@pytest.fixture()
def private_images(tiny_gan) -> torch.Tensor:
    """8 'faces' the prior can render but far from its typical set (latents 2.5x too large)."""
    G, _ = tiny_gan
    with torch.no_grad():
        return G(2.5 * torch.randn(8, G.latent_dim, generator=torch.Generator().manual_seed(1)))


@pytest.fixture()
def attacker_gap(tiny_target, tiny_gan, mean_critic) -> Callable[[torch.Tensor], float]:
    """A white-box attacker's reconstructions' mean squared distance to the prior mean image."""
    G, _ = tiny_gan

    def gap(features: torch.Tensor) -> float:
        z0 = torch.randn(
            features.shape[0], G.latent_dim, generator=torch.Generator().manual_seed(5)
        )
        z = invert_latent(tiny_target.encoder, G, features, z0, steps=100)
        with torch.no_grad():
            return float(-mean_critic(G(z)).mean())

    return gap
