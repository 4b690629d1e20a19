"""Tests for facecraft.defenses.disco (DISCO channel pruning)."""

from __future__ import annotations

import pytest
import torch

from facecraft.defenses import DISCO, ChannelPruner

KW = dict(image_size=32, epochs=1, batch_size=8, decoder_width=8, pruner_width=8)


@pytest.fixture()
def public():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 2, (16, 4), generator=g).float()


def _zero_channels(f: torch.Tensor) -> torch.Tensor:
    return (f.flatten(2).abs().sum(dim=2) == 0).sum(dim=1)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_prunes_ratio_of_channels_per_input(tiny_target, public, ratio):
    d = DISCO(tiny_target.encoder, tiny_target.head, ratio=ratio, **KW)
    out = d(public[0])
    assert out.shape == tiny_target.encoder(public[0]).shape
    assert (_zero_channels(out) >= int(16 * ratio)).all()


def test_fit_trains_pruner_and_copies(tiny_target, public):
    d = DISCO(tiny_target.encoder, tiny_target.head, **KW)
    pruner_before = [p.detach().clone() for p in d.pruner.parameters()]
    d.fit(*public)
    assert d.encoder is not tiny_target.encoder
    assert any(
        not torch.equal(a, b) for a, b in zip(pruner_before, d.pruner.parameters(), strict=True)
    )
    assert all(p.grad is None for p in tiny_target.parameters())
    out = d(public[0][:4])
    assert out.shape == tiny_target.encoder(public[0][:4]).shape
    assert (_zero_channels(out) >= 8).all()


def test_pruner_straight_through_mask():
    p = ChannelPruner(6, ratio=0.5, temperature=1 / 30, width=4)
    f = torch.randn(3, 6, 4, 4)
    p.eval()
    hard = p(f)
    assert set(hard.unique().tolist()) <= {0.0, 1.0} and (hard.sum(dim=1) == 3).all()
    p.train()
    soft = p(f)
    assert torch.allclose(soft, p(f).detach())
    assert soft.requires_grad


def test_resume_and_extra_state(tiny_target, public, tmp_path):
    full = DISCO(tiny_target.encoder, tiny_target.head, **{**KW, "epochs": 2}).fit(*public)
    stem = tmp_path / "disco"
    DISCO(tiny_target.encoder, tiny_target.head, **KW).fit(*public, checkpoint_stem=stem)
    resumed = DISCO(tiny_target.encoder, tiny_target.head, **{**KW, "epochs": 2}).fit(
        *public, checkpoint_stem=stem
    )
    assert torch.equal(full(public[0]), resumed(public[0]))
    fresh = DISCO(resumed.encoder, resumed.head, **KW)
    fresh.load_extra_state(resumed.extra_state())
    assert torch.equal(fresh(public[0]), resumed(public[0]))
    with pytest.raises(ValueError, match="unexpected"):
        fresh.load_extra_state({"decoder.w": torch.zeros(1)})


def test_validation(tiny_target, public):
    with pytest.raises(ValueError, match="ratio"):
        DISCO(tiny_target.encoder, tiny_target.head, ratio=1.0, image_size=32)
    d = DISCO(tiny_target.encoder, tiny_target.head, **{**KW, "image_size": 64})
    with pytest.raises(ValueError, match="64x64"):
        d.fit(*public)
