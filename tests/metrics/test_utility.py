"""Tests of facecraft.metrics.utility (mean AUC, attribute accuracy)."""

from __future__ import annotations

import pytest
import torch

from facecraft.metrics import attribute_accuracy, attribute_auc, mean_auc


def test_mean_auc_perfect_and_inverted() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    logits = targets * 4 - 2
    auc = mean_auc(logits, targets)
    assert torch.is_tensor(auc) and auc.shape == ()
    assert float(auc) == pytest.approx(1.0)
    assert float(mean_auc(-logits, targets)) == pytest.approx(0.0)


def test_mean_auc_hand_case() -> None:
    # positives scored 0.8, 0.4; negatives 0.6, 0.2: 3 of 4 pairs ordered -> 0.75
    logits = torch.tensor([[0.8], [0.4], [0.6], [0.2]])
    targets = torch.tensor([[1], [1], [0], [0]])
    assert float(mean_auc(logits, targets)) == pytest.approx(0.75)
    # constant scores -> ties everywhere -> 0.5
    assert float(mean_auc(torch.zeros(4, 1), targets)) == pytest.approx(0.5)


def test_mean_auc_random_near_half(gen: torch.Generator) -> None:
    targets = (torch.rand(4000, 3, generator=gen) < 0.4).float()
    logits = torch.randn(4000, 3, generator=gen)
    assert float(mean_auc(logits, targets)) == pytest.approx(0.5, abs=0.03)


def test_mean_auc_skips_single_class_with_warning() -> None:
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    logits = torch.tensor([[1.0, 0.3], [-1.0, 0.1], [2.0, 0.2]])
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        auc = mean_auc(logits, targets)
    assert float(auc) == pytest.approx(1.0)
    per = attribute_auc(logits, targets)
    assert per.shape == (2,) and bool(torch.isnan(per[1]))
    with pytest.raises(ValueError, match="no attribute has both classes"):
        mean_auc(logits[:, 1:], targets[:, 1:])


@pytest.mark.parametrize(
    "logits, targets, exc, match",
    [
        (torch.zeros(3, 2), torch.zeros(3, 3), ValueError, "expected shape"),
        (torch.zeros(3), torch.zeros(3), ValueError, "dimensions"),
        (torch.zeros(2, 2), torch.tensor([[0.0, 2.0], [1.0, 0.0]]), ValueError, r"\{0, 1\}"),
        (torch.zeros(0, 2), torch.zeros(0, 2), ValueError, "at least one row"),
    ],
)
def test_bad_inputs(logits, targets, exc, match) -> None:
    with pytest.raises(exc, match=match):
        mean_auc(logits, targets)


def test_attribute_accuracy_hand_case() -> None:
    logits = torch.tensor([[2.0, 1.0, -1.0], [-1.0, 1.0, -3.0]])
    targets = torch.tensor([[1, 0, 0], [0, 0, 1]])
    per = attribute_accuracy(logits, targets, reduction="none")
    assert per.tolist() == [1.0, 0.0, 0.5]
    assert float(attribute_accuracy(logits, targets)) == pytest.approx(0.5)
    assert float(attribute_accuracy(logits, targets, reduction="sum")) == pytest.approx(1.5)
    assert attribute_accuracy(logits, targets, threshold=1.5, reduction="none").tolist() == [
        1.0,
        1.0,
        0.5,
    ]
    assert attribute_accuracy(logits.double(), targets).dtype == torch.float64
    with pytest.raises(ValueError, match="reduction"):
        attribute_accuracy(logits, targets, reduction="all")
