"""A3 averaging: the mean of repeated releases beats one release of a noisy defence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facecraft.attacks import AveragingAttack, DecoderAttack, query_average


class _Pixels(nn.Module):
    """An invertible toy encoder: features are the images themselves (1x1 identity convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _noisy_defense(enc: nn.Module, sigma: float, seed: int):
    g = torch.Generator().manual_seed(seed)

    def protect(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = enc(x)
        return f + sigma * torch.randn(f.shape, generator=g)  # fresh noise on every query

    return protect


def test_averaging_reduces_error_against_noise() -> None:
    enc = _Pixels()
    base = DecoderAttack(enc, decoder=_Pixels(), epochs=0)  # perfect decoder: Dec(F) = F
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    defense = _noisy_defense(enc, sigma=0.3, seed=1)
    single = base(defense(images))
    atk = AveragingAttack(base, defense, n_queries=8)
    averaged = atk.reconstruct_images(images)
    err1 = (single - images).pow(2).mean()
    err8 = (averaged - images).pow(2).mean()
    assert err8 < 0.3 * err1
    assert averaged.shape == images.shape and averaged.min() >= 0 and averaged.max() <= 1


def test_reconstruct_from_queries_is_base_on_mean() -> None:
    enc = _Pixels()
    base = DecoderAttack(enc, decoder=_Pixels(), epochs=0)
    qs = [torch.rand(2, 3, 8, 8) for _ in range(3)]
    atk = AveragingAttack(base, n_queries=3)
    assert torch.allclose(atk.reconstruct_from_queries(qs), base(torch.stack(qs).mean(0)))
    assert torch.allclose(atk(qs[0]), base(qs[0]))
    with pytest.raises(RuntimeError):
        atk.reconstruct_images(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError):
        atk.reconstruct_from_queries([])


def test_query_average() -> None:
    enc = _Pixels()
    images = torch.rand(4, 3, 8, 8)
    mean = query_average(_noisy_defense(enc, 0.5, 0), images, 64)
    assert (mean - images).abs().mean() < 0.1
    assert torch.allclose(query_average(enc, images, 3), images, atol=1e-6)
    with pytest.raises(ValueError):
        query_average(enc, images, 0)
