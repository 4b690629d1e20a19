"""Tests for the defender's critic trained once on public faces (``fit_defender_critic``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facecraft.defenses._critic import new_critic
from facecraft.defenses.critic_pretraining import fit_defender_critic


class ColourPrior(nn.Module):
    """A prior whose images are flat colours ``sigmoid(z)``: far latents give saturated colours."""

    latent_dim = 3

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z)[:, :, None, None].expand(-1, 3, 32, 32).contiguous()


class FarAmortizer(nn.Module):
    """An 'attacker' whose inversions land at latents 4x too large (far from the prior's typical
    set)."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return 4 * torch.randn(f.shape[0], 3, generator=torch.Generator().manual_seed(5))


def _gap(critic: nn.Module, gen: nn.Module, fake: torch.Tensor) -> float:
    """``E[D'(G(z_r))] - E[D'(fake)]`` on fresh prior samples: the critic's EMD estimate."""
    with torch.no_grad():
        real = gen(torch.randn(256, gen.latent_dim, generator=torch.Generator().manual_seed(11)))
        return float(critic(real).mean() - critic(fake).mean())


def test_defender_critic_tells_reconstructions_from_the_prior(tiny_target):
    enc, gen, amor = tiny_target.encoder, ColourPrior(), FarAmortizer()
    public = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=200, inner_steps=0, width=8, lr=2e-3, batch_size=16, seed=1)
    critic = fit_defender_critic(enc, gen, amor, public, **kw)
    assert not critic.training and not any(p.requires_grad for p in critic.parameters())
    with torch.no_grad():
        fake = gen(amor(enc(public)))
    untrained, _ = new_critic(32, 8, 2e-3, like=fake, seed_gen=torch.Generator().manual_seed(1))
    assert _gap(critic, gen, fake) > 0.1
    assert _gap(critic, gen, fake) > _gap(untrained, gen, fake) + 0.1
    # seeded: the same call gives the same critic
    again = fit_defender_critic(enc, gen, amor, public, **kw)
    assert all(
        torch.equal(a, b) for a, b in zip(critic.state_dict().values(), again.state_dict().values())
    )


def test_defender_critic_rejects_bad_arguments(tiny_target, tiny_gan, private_images):
    gen, enc = tiny_gan[0], tiny_target.encoder
    with pytest.raises(ValueError, match="steps"):
        fit_defender_critic(enc, gen, None, private_images, steps=0)
    with pytest.raises(ValueError, match="images"):
        fit_defender_critic(enc, gen, None, private_images[:1], steps=1)
