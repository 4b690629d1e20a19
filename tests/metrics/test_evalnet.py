"""Tests of facecraft.metrics.evalnet (the trained Eval-network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facecraft._io import CheckpointError, checkpoint_exists
from facecraft.metrics import EvalNet, train_evalnet

K = 4


def _toy(gen: torch.Generator, n_per: int = 12) -> tuple:
    """K separable identities: each a distinct colour with noise, 32x32 uint8."""
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.8, 0.8, 0.2]])
    labels = torch.arange(K).repeat_interleave(n_per)
    x = colours[labels].view(-1, 3, 1, 1) + 0.15 * torch.randn(
        len(labels), 3, 32, 32, generator=gen
    )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


SETTINGS = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "width": 0.125, "seed": 0}


def test_trains_above_chance(gen: torch.Generator) -> None:
    images, labels = _toy(gen)
    net = train_evalnet(images, labels, **SETTINGS)
    held_out, held_labels = _toy(gen, n_per=5)
    acc = net.identify(held_out.float() / 255, held_labels)
    assert float(acc) > 0.8  # chance is 0.25
    x = images.float() / 255
    assert net.scores(x).shape == (len(labels), K)
    emb = net.embed(x)
    assert emb.dim() == 2 and emb.shape[0] == len(labels)
    fsim = net.feature_similarity(x, x)
    assert float(fsim) == pytest.approx(1.0, abs=1e-5)
    assert not net.training


def test_resume_matches_uninterrupted(gen: torch.Generator, tmp_path: Path) -> None:
    images, labels = _toy(gen, n_per=6)
    full = train_evalnet(images, labels, **SETTINGS)

    stem = tmp_path / "evalnet"
    calls = []

    class Stop(Exception):
        pass

    def interrupt(done: int, total: int, desc: str) -> None:
        calls.append(done)
        if "epoch 2/" in desc:
            raise Stop

    with pytest.raises(Stop):
        train_evalnet(images, labels, checkpoint_stem=stem, progress=interrupt, **SETTINGS)
    partial = stem.with_name(stem.name + "-partial")
    assert checkpoint_exists(partial) and not checkpoint_exists(stem)

    seen = []
    resumed = train_evalnet(
        images, labels, checkpoint_stem=stem, progress=lambda d, t, s: seen.append(s), **SETTINGS
    )
    assert seen and all("epoch 1/" not in s for s in seen)  # epoch 1 was not redone
    assert checkpoint_exists(stem) and not checkpoint_exists(partial)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name

    # a finished checkpoint is loaded, not retrained
    again = train_evalnet(
        images,
        labels,
        checkpoint_stem=stem,
        progress=lambda *a: pytest.fail("retrained"),
        **SETTINGS,
    )
    assert torch.equal(again.net.head[-1].weight, resumed.net.head[-1].weight)
    loaded = EvalNet.load(stem)
    assert torch.equal(loaded.net.head[-1].weight, resumed.net.head[-1].weight)

    with pytest.raises(CheckpointError, match="another configuration"):
        train_evalnet(images, labels, checkpoint_stem=stem, **{**SETTINGS, "width": 0.25})


def test_float_images_and_validation(gen: torch.Generator) -> None:
    images, labels = _toy(gen, n_per=2)
    x = images.float() / 255
    net = train_evalnet(x, labels, **{**SETTINGS, "epochs": 1})
    assert isinstance(net, EvalNet)
    with pytest.raises(ValueError, match="divisible by 32"):
        train_evalnet(x[..., :24, :24], labels, **SETTINGS)
    with pytest.raises(TypeError, match="integer labels"):
        train_evalnet(x, labels.float(), **SETTINGS)
    with pytest.raises(ValueError, match="labels of shape"):
        train_evalnet(x, labels[:-1], **SETTINGS)
    with pytest.raises(ValueError, match=r"values in \[0.0, 1.0\]"):
        train_evalnet(x * 2, labels, **SETTINGS)
