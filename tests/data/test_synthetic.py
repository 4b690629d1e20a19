"""Synthetic faces: shapes, determinism, learnable attributes and identities, speed, caching."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from facecraft.data import (
    SYNTHETIC_ATTRIBUTES,
    load_prepared,
    make_synthetic,
    prepare_data,
    render_synthetic_pool,
)
from facecraft.experiments.profiles import profile_config


def test_shapes_and_split() -> None:
    data = make_synthetic(6, 8, 20, 3, 32, seed=0, eval_test_fraction=0.25)
    assert data.synthetic and data.manifest["synthetic"] is True
    assert data.attribute_names == list(SYNTHETIC_ATTRIBUTES)
    assert (
        tuple(data.public.images.shape) == (60, 3, 32, 32)
        and data.public.images.dtype == torch.uint8
    )
    assert (len(data.eval_train), len(data.eval_test)) == (36, 12)
    assert data.eval_train.identity_names == data.eval_test.identity_names
    assert len(data.eval_train.identity_names) == 6 and data.public.num_identities == 20
    assert set(data.public.identity_names).isdisjoint(data.eval_train.identity_names)
    for fs in (data.public, data.eval_train, data.eval_test):
        assert fs.attributes.shape == (len(fs), 5)
        assert set(fs.attributes.unique().tolist()) <= {0.0, 1.0}


def test_deterministic_for_a_seed() -> None:
    a = make_synthetic(4, 6, 10, 2, 24, seed=5)
    b = make_synthetic(4, 6, 10, 2, 24, seed=5)
    c = make_synthetic(4, 6, 10, 2, 24, seed=6)
    assert torch.equal(a.eval_test.images, b.eval_test.images) and torch.equal(
        a.public.images, b.public.images
    )
    assert a.manifest == b.manifest
    assert not torch.equal(a.public.images, c.public.images)


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="public_images_per_identity"):
        make_synthetic(4, 6, 10, 6, 24, seed=0)
    with pytest.raises(ValueError, match="images_per_identity"):
        make_synthetic(4, 1, 10, 1, 24, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        render_synthetic_pool([2, 2], 4, 0)


def test_fast_enough() -> None:
    render_synthetic_pool([1], 32, 0)  # warm-up
    start = time.perf_counter()
    images, labels, _ = render_synthetic_pool([10] * 60, 32, 0)
    assert images.shape[0] == len(labels) == 600
    assert time.perf_counter() - start < 5.0  # ~0.5 s on one idle core


def _ridge_accuracy(x_tr, y_tr, x_te, y_te, lam: float = 1.0) -> float:
    """Ridge regression on 2x-pooled pixels (plus bias), thresholded at 0.5."""

    def feats(x):
        f = torch.nn.functional.avg_pool2d(x.double() / 255.0, 2).flatten(1)
        return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)

    a, b = feats(x_tr), feats(x_te)
    eye = torch.eye(a.shape[1], dtype=a.dtype)
    w = torch.linalg.solve(a.T @ a + lam * eye, a.T @ y_tr.double())
    return float(((b @ w > 0.5).double() == y_te.double()).float().mean())


def test_attributes_are_learnable_from_pixels() -> None:
    images, _, attrs = render_synthetic_pool([6] * 150, 32, 1)
    n = 700
    for k, name in enumerate(SYNTHETIC_ATTRIBUTES):
        acc = _ridge_accuracy(images[:n], attrs[:n, k], images[n:], attrs[n:, k])
        base = max(float(attrs[n:, k].mean()), 1 - float(attrs[n:, k].mean()))
        assert acc > max(0.75, base + 0.1), f"{name}: accuracy {acc:.2f}, majority {base:.2f}"


def test_images_of_one_identity_are_closer_than_others() -> None:
    images, labels, _ = render_synthetic_pool([5] * 20, 32, 2)
    x = images[:, :, 8:24, 8:24].float().flatten(1) / 255.0  # the face, not the random background
    d = torch.cdist(x, x)
    same = torch.tensor([[a == b for b in labels] for a in labels])
    off_diag = ~torch.eye(len(labels), dtype=torch.bool)
    # the nearest other face shares the identity far more often than chance (4 of 99)
    d_masked = d.masked_fill(~off_diag, float("inf"))
    nn = d_masked.argmin(1)
    hit = same[torch.arange(len(labels)), nn].float().mean()
    assert hit > 0.4 and d[same & off_diag].mean() < 0.8 * d[~same].mean()


def test_prepare_data_tiny_profile(tmp_path: Path) -> None:
    cfg = profile_config("tiny").data
    data = prepare_data(cfg, tmp_path / "cache")
    assert data.synthetic and data.image_size == 32
    assert data.manifest["synthetic"] is True and data.manifest["root"] is None
    assert data.eval_train.num_identities == 12 and len(data.public) == 360
    assert all(len(set(fs.identities.tolist())) == 12 for fs in (data.eval_train, data.eval_test))
    again = load_prepared(tmp_path / "cache")
    assert again.synthetic and torch.equal(again.eval_test.images, data.eval_test.images)
    assert prepare_data(cfg, tmp_path / "cache").manifest == data.manifest
