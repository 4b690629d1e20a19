"""Tests for facecraft.defenses.noise and facecraft.defenses.none."""

from __future__ import annotations

import pytest
import torch

from facecraft.defenses import GaussianNoise, NoDefense


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_none_is_the_encoder(tiny_target, images):
    out = NoDefense(tiny_target.encoder, tiny_target.head)(images)
    assert torch.equal(out, tiny_target.encoder(images).detach())
    assert not NoDefense.randomized


def test_zero_sigma_equals_none(tiny_target, images):
    ref = NoDefense(tiny_target.encoder)(images)
    for relative in (True, False):
        assert torch.equal(
            GaussianNoise(tiny_target.encoder, sigma=0.0, relative=relative)(images), ref
        )


def test_noise_is_randomised_but_seeded(tiny_target, images):
    d = GaussianNoise(tiny_target.encoder, sigma=0.5, seed=1)
    assert d.randomized
    a, b = d(images), d(images)
    assert not torch.equal(a, b)  # fresh noise per query (what the A3 averaging attack exploits)
    e = GaussianNoise(tiny_target.encoder, sigma=0.5, seed=1)
    assert torch.equal(e(images), a) and torch.equal(e(images), b)


@pytest.mark.parametrize("relative", [True, False])
def test_noise_level(tiny_target, relative):
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    f = NoDefense(tiny_target.encoder)(x)
    out = GaussianNoise(tiny_target.encoder, sigma=0.3, relative=relative)(x)
    ratio = (out - f).flatten(1).std(dim=1)
    if relative:
        ratio = ratio / f.flatten(1).std(dim=1)
    assert torch.allclose(ratio.mean(), torch.tensor(0.3), rtol=0.05)


def test_negative_sigma_raises(tiny_target):
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(tiny_target.encoder, sigma=-0.1)


def test_reseed_makes_a_release_independent_of_earlier_calls(tiny_target, images):
    """Issue 20: a stored release must not depend on what the process queried before it."""
    fresh = GaussianNoise(tiny_target.encoder, sigma=0.5, seed=3)
    fresh.reseed("public-features")
    want = fresh(images)
    used = GaussianNoise(tiny_target.encoder, sigma=0.5, seed=3)
    for _ in range(3):
        used(images)  # other releases computed earlier in the same process
    used.reseed("public-features")
    assert torch.equal(used(images), want)
    used.reseed("features")
    assert not torch.equal(used(images), want)  # another key, another stream
    other_seed = GaussianNoise(tiny_target.encoder, sigma=0.5, seed=4)
    other_seed.reseed("public-features")
    assert not torch.equal(other_seed(images), want)
    NoDefense(tiny_target.encoder).reseed(
        "features"
    )  # a deterministic defence accepts and ignores it
