"""Tests for facecraft.defenses.crafter_z (Crafter-z)."""

from __future__ import annotations

import math

import pytest
import torch

from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses import CrafterZ

SMALL = dict(steps=2, init_steps=5, critic_steps=2, critic_width=8)
PRIVACY = dict(steps=5, init_steps=60, critic_steps=0, lr=0.05)


def _cz(tiny_target, tiny_gan, **kw) -> CrafterZ:
    return CrafterZ(tiny_target.encoder, tiny_target.head, tiny_gan[0], **kw)


def test_output_shape_history_and_determinism(tiny_target, tiny_gan, private_images):
    c = _cz(tiny_target, tiny_gan, **SMALL)
    out = c(private_images)
    assert out.shape == tiny_target.encoder(private_images).shape
    assert len(c.history) == 2 and all(math.isfinite(h["epsilon"]) for h in c.history)
    assert c.last_epsilon == c.history[-1]["epsilon"]
    assert torch.equal(out, _cz(tiny_target, tiny_gan, **SMALL)(private_images))
    assert not torch.equal(out, _cz(tiny_target, tiny_gan, seed=1, **SMALL)(private_images))


def test_zero_steps_releases_encoding_of_the_attackers_inversion(
    tiny_target, tiny_gan, private_images
):
    # With no crafting steps, F* = Enc(G(z*(Enc(X)))) for the seeded N(0, I) start.
    G, _ = tiny_gan
    out = _cz(tiny_target, tiny_gan, steps=0, init_steps=5, seed=2)(private_images)
    f0 = tiny_target.encoder(private_images).detach()
    z0 = torch.randn(8, G.latent_dim, generator=torch.Generator().manual_seed(2))
    z = invert_latent(tiny_target.encoder, G, f0, z0, steps=5)
    assert torch.allclose(out, tiny_target.encoder(G(z)).detach(), atol=1e-6)
    assert not torch.allclose(out, f0, atol=1e-3)


def test_model_grads_untouched(tiny_target, tiny_gan, private_images):
    G, _ = tiny_gan
    _cz(tiny_target, tiny_gan, **SMALL)(private_images)
    assert all(p.grad is None for p in list(tiny_target.parameters()) + list(G.parameters()))


def test_pulls_inversion_towards_prior(
    tiny_target, tiny_gan, private_images, mean_critic, attacker_gap
):
    f0 = tiny_target.encoder(private_images).detach()
    out = _cz(tiny_target, tiny_gan, critic=mean_critic, beta=0.0, **PRIVACY)(private_images)
    assert attacker_gap(out) < 0.7 * attacker_gap(f0)


def test_large_beta_keeps_utility(tiny_target, tiny_gan, private_images, mean_critic):
    free = _cz(tiny_target, tiny_gan, critic=mean_critic, beta=0.0, **PRIVACY)
    tied = _cz(tiny_target, tiny_gan, critic=mean_critic, beta=1e4, **PRIVACY)
    free(private_images)
    tied(private_images)
    assert tied.history[-1]["utility"] < free.history[-1]["utility"]
    assert tied.history[-1]["utility"] <= 1.1 * tied.history[0]["utility"]


def test_validation(tiny_target, tiny_gan):
    with pytest.raises(ValueError, match="beta"):
        _cz(tiny_target, tiny_gan, beta=-1.0)
    with pytest.raises(ValueError, match="latent_dim"):
        CrafterZ(tiny_target.encoder, tiny_target.head, torch.nn.Linear(2, 2))
