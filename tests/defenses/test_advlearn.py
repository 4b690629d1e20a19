"""Tests for facecraft.defenses.advlearn (adversarial learning)."""

from __future__ import annotations

import pytest
import torch

from facecraft._io import CheckpointError
from facecraft.defenses import AdversarialLearning

KW = dict(epochs=1, batch_size=8, decoder_width=8, lr=1e-3)


@pytest.fixture()
def public():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 2, (16, 4), generator=g).float()


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_fit_trains_copies_and_keeps_shapes(tiny_target, public):
    x, y = public
    before = _params(tiny_target)
    d = AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(x, y)
    assert d.encoder is not tiny_target.encoder and d.head is not tiny_target.head
    assert all(
        torch.equal(a, b) for a, b in zip(before, _params(tiny_target), strict=True)
    )  # originals untouched
    assert all(p.grad is None for p in tiny_target.parameters())
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_params(tiny_target.encoder), _params(d.encoder), strict=True)
    )
    out = d(x[:4])
    assert out.shape == tiny_target.encoder(x[:4]).shape
    assert d.decoder is not None and len(d.history) == 1
    assert set(d.history[0]) == {"epoch", "task", "recon"}


def test_fit_without_attributes_uses_pseudo_labels(tiny_target, public):
    d = AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(public[0])
    assert d(public[0][:2]).shape[0] == 2


def test_same_seed_same_encoder(tiny_target, public):
    a = AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(*public)
    b = AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(*public)
    assert torch.equal(a(public[0]), b(public[0]))


def test_resume_from_checkpoint_matches_uninterrupted(tiny_target, public, tmp_path):
    full = AdversarialLearning(tiny_target.encoder, tiny_target.head, **{**KW, "epochs": 2}).fit(
        *public
    )
    stem = tmp_path / "adv"
    AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(
        *public, checkpoint_stem=stem
    )
    assert stem.with_suffix(".json").exists() and stem.with_suffix(".safetensors").exists()
    resumed = AdversarialLearning(tiny_target.encoder, tiny_target.head, **{**KW, "epochs": 2})
    resumed.fit(*public, checkpoint_stem=stem)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert torch.equal(full(public[0]), resumed(public[0]))
    assert resumed.fit_trained  # a partial checkpoint is resumed, not "cached"
    again = AdversarialLearning(tiny_target.encoder, tiny_target.head, **{**KW, "epochs": 2})
    assert not again.fit(*public, checkpoint_stem=stem).fit_trained  # a finished one is loaded


def test_resume_with_other_hyperparameters_raises(tiny_target, public, tmp_path):
    stem = tmp_path / "adv"
    AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW).fit(
        *public, checkpoint_stem=stem
    )
    other = AdversarialLearning(tiny_target.encoder, tiny_target.head, **{**KW, "lam": 0.5})
    with pytest.raises(CheckpointError, match="config"):
        other.fit(*public, checkpoint_stem=stem)


def test_bad_inputs_raise(tiny_target, public):
    d = AdversarialLearning(tiny_target.encoder, tiny_target.head, **KW)
    with pytest.raises(ValueError, match="public_attributes"):
        d.fit(public[0], public[1][:3])
    with pytest.raises(ValueError, match="head"):
        AdversarialLearning(tiny_target.encoder, None, **KW).fit(*public)
    with pytest.raises(ValueError):
        AdversarialLearning(tiny_target.encoder, tiny_target.head, lam=-1.0)
