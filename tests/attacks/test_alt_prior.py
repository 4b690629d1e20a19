"""A2: the residual generator and inversion through it."""

from __future__ import annotations

import pytest
import torch

from facecraft.attacks import AltPriorAttack
from facecraft.models import Generator
from facecraft.models.resgan import ResGenerator

from ._attack_helpers import SIZE, calibrate, grads_are_none


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_resgenerator_shapes_and_range(size: int) -> None:
    g = ResGenerator(12, size, width=4).eval()
    x = g(torch.randn(3, 12))
    assert x.shape == (3, 3, size, size) and x.min() >= 0 and x.max() <= 1
    assert g.latent_dim == 12


def test_resgenerator_differs_from_main_prior() -> None:
    kinds = {type(m) for m in ResGenerator(12, 32, width=4).modules()}
    assert torch.nn.ConvTranspose2d not in kinds  # nearest upsampling + convolutions instead
    assert torch.nn.ConvTranspose2d in {type(m) for m in Generator(12, 32, width=4).modules()}
    with pytest.raises(ValueError):
        ResGenerator(12, 24)


def test_alt_prior_inversion_lowers_loss(enc_gen) -> None:
    enc, _ = enc_gen
    torch.manual_seed(1)
    g2 = ResGenerator(24, SIZE, width=4)
    calibrate(g2, torch.randn(128, 24))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        x_true = g2(torch.randn(4, 24, generator=g))
        f = enc(x_true)
    atk = AltPriorAttack(enc, g2, steps=30)
    with torch.no_grad():
        x0 = g2(atk.initial_latents(f))
    out = atk(f)
    with torch.no_grad():
        before = (enc(x0) - f).pow(2).mean()
        after = (enc(out) - f).pow(2).mean()
    assert after < 0.5 * before
    assert out.shape == (4, 3, SIZE, SIZE)
    assert grads_are_none(enc, g2)
    assert AltPriorAttack.name() == "alt-prior"
