"""Tests of facecraft.metrics.identity (top-k accuracy, feature cosine)."""

from __future__ import annotations

import pytest
import torch

from facecraft.metrics import feature_cosine, identity_accuracy, topk_accuracy

SCORES = torch.tensor(
    [
        [0.9, 0.05, 0.03, 0.02],  # ranks 0, 1, 2, 3
        [0.1, 0.2, 0.6, 0.1],  # ranks 2, 1, ...
        [0.3, 0.4, 0.1, 0.2],  # ranks 1, 0, 3, 2
        [0.25, 0.1, 0.15, 0.5],  # ranks 3, 0, 2, 1
    ]
)
LABELS = torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("k, expected", [(1, 0.25), (2, 0.5), (3, 0.5), (4, 1.0)])
def test_topk_hand_made(k: int, expected: float) -> None:
    acc = topk_accuracy(SCORES, LABELS, k=k)
    assert acc.shape == ()
    assert torch.is_tensor(acc)
    assert float(acc) == pytest.approx(expected)


def test_topk_alias_and_perfect() -> None:
    labels = SCORES.argmax(1)
    assert float(identity_accuracy(SCORES, labels)) == 1.0


def test_topk_dtype_device(device: torch.device) -> None:
    acc = topk_accuracy(SCORES.double().to(device), LABELS.to(device))
    assert acc.dtype == torch.float64 and acc.device.type == device.type


@pytest.mark.parametrize(
    "scores, labels, k, exc, match",
    [
        (SCORES, LABELS[:3], 1, ValueError, "labels of shape"),
        (SCORES[0], LABELS, 1, ValueError, r"\(N, K\)"),
        (SCORES, LABELS.float(), 1, TypeError, "integer labels"),
        (SCORES, torch.tensor([0, 1, 4, 1]), 1, ValueError, "0-based"),
        (SCORES, torch.tensor([0, -1, 2, 1]), 1, ValueError, "0-based"),
        (SCORES, LABELS, 0, ValueError, "k in"),
        (SCORES, LABELS, 5, ValueError, "k in"),
        (SCORES.tolist(), LABELS, 1, TypeError, "torch.Tensor"),
    ],
)
def test_topk_bad_inputs(scores, labels, k, exc, match) -> None:
    with pytest.raises(exc, match=match):
        topk_accuracy(scores, labels, k=k)


def test_feature_cosine_bounds_symmetry(gen: torch.Generator) -> None:
    a, b = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    c = feature_cosine(a, b, reduction="none")
    assert c.shape == (8,)
    assert bool((c.abs() <= 1 + 1e-6).all())
    assert torch.allclose(c, feature_cosine(b, a, reduction="none"))
    assert torch.allclose(feature_cosine(a, a), torch.tensor(1.0), atol=1e-6)
    assert torch.allclose(feature_cosine(a, -a), torch.tensor(-1.0), atol=1e-6)
    assert torch.allclose(feature_cosine(a, 3 * a), torch.tensor(1.0), atol=1e-6)  # scale-invariant
    assert torch.allclose(feature_cosine(a, b, reduction="sum"), c.sum())


def test_feature_cosine_hand_value_and_dtype() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    c = feature_cosine(a, b, reduction="none")
    assert c.dtype == torch.float64
    assert torch.allclose(c, torch.tensor([2**-0.5, 0.0], dtype=torch.float64))


def test_feature_cosine_flattens_and_validates() -> None:
    a = torch.randn(4, 2, 3)
    assert feature_cosine(a, a, reduction="none").shape == (4,)
    with pytest.raises(ValueError, match="expected shape"):
        feature_cosine(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="reduction"):
        feature_cosine(a, a, reduction="median")
    with pytest.raises(TypeError, match="floating-point"):
        feature_cosine(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
