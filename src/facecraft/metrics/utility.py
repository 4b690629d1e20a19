"""Utility of released features: attribute AUC and accuracy (CRAFTER.md section 5).

Utility in the paper is the mean ROC AUC over binary attributes predicted by
the cloud head ``f`` from (protected) features: all 40 on CelebA, 10 of 73 on
LFW. Attribute accuracy at a logit threshold is given alongside.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.
    Liu, Luo, Wang, Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015
    (the CelebA attributes), https://doi.org/10.1109/ICCV.2015.425.

Note:
    AUC is computed per attribute by scikit-learn's ``roc_auc_score``. An
    attribute whose targets hold a single class has no AUC; it is skipped with
    a warning (the original release would crash or report NaN).
"""

from __future__ import annotations

import warnings

import torch
from sklearn.metrics import roc_auc_score

from facecraft._validation import validate_tensors
from facecraft.metrics._common import check_reduction, reduce

__all__ = ["attribute_accuracy", "attribute_auc", "mean_auc"]


def attribute_auc(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""ROC AUC of each attribute column; NaN where the column has a single class.

    Args:
        logits: ``(N, A)`` scores (any monotone score works: logits or probabilities).
        targets: ``(N, A)`` binary targets in {0, 1} (float, int or bool).

    Returns:
        ``(A,)`` float64 tensor on the logits' device.

    Raises:
        TypeError: non-tensor input.
        ValueError: shape or device mismatch, non-binary targets, or no rows.
    """
    _check(logits, targets)
    s = logits.detach().to("cpu", torch.float64).numpy()
    t = targets.detach().to("cpu", torch.float64).numpy()
    out = torch.full((logits.shape[1],), float("nan"), dtype=torch.float64)
    for j in range(logits.shape[1]):
        col = t[:, j]
        if col.min() != col.max():
            out[j] = float(roc_auc_score(col, s[:, j]))
    return out.to(logits.device)


def mean_auc(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean ROC AUC over attributes (the paper's utility measure).

    Args:
        logits: ``(N, A)`` scores.
        targets: ``(N, A)`` binary targets in {0, 1}.

    Returns:
        A scalar float64 tensor in [0, 1] (1 = perfect ranking, 0.5 = chance).

    Raises:
        TypeError: non-tensor input.
        ValueError: shape or device mismatch, non-binary targets, or no
            attribute with both classes present.

    Warns:
        UserWarning: when some attributes are skipped for having one class.

    Example:
        >>> logits = torch.tensor([[2.0], [-1.0], [0.5]])
        >>> float(mean_auc(logits, torch.tensor([[1.0], [0.0], [1.0]])))
        1.0
    """
    per = attribute_auc(logits, targets)
    valid = ~torch.isnan(per)
    if not bool(valid.any()):
        raise ValueError(
            f"no attribute has both classes among the {targets.shape[0]} targets; AUC is undefined"
        )
    skipped = (~valid).nonzero().flatten().tolist()
    if skipped:
        warnings.warn(
            f"mean_auc: skipped {len(skipped)} of {per.shape[0]} attributes with a single class "
            f"(columns {skipped[:10]}{'...' if len(skipped) > 10 else ''})",
            UserWarning,
            stacklevel=2,
        )
    return per[valid].mean()


def attribute_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, *, threshold: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    r"""Accuracy of ``logits > threshold`` against binary targets, per attribute.

    Args:
        logits: ``(N, A)`` logits (threshold 0 = probability 0.5).
        targets: ``(N, A)`` binary targets in {0, 1}.
        threshold: decision threshold on ``logits``.
        reduction: over attributes: ``'none'`` (``(A,)``), ``'mean'`` or ``'sum'``.

    Returns:
        Accuracies in [0, 1], float32 (float64 for float64 logits).

    Raises:
        TypeError: non-tensor input.
        ValueError: shape or device mismatch, non-binary targets, no rows, or
            unknown ``reduction``.

    Example:
        >>> logits = torch.tensor([[2.0, 1.0], [-1.0, 1.0]])
        >>> attribute_accuracy(logits, torch.tensor([[1, 0], [0, 0]]), reduction="none").tolist()
        [1.0, 0.0]
    """
    check_reduction(reduction)
    _check(logits, targets)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    per = ((logits > threshold) == targets.bool()).to(out_dtype).mean(dim=0)
    return reduce(per, reduction)


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    validate_tensors([logits, targets], dim_range=(2, 2))
    if logits.shape[0] == 0:
        raise ValueError("expected at least one row, got none")
    if logits.is_complex() or logits.dtype == torch.bool:
        raise TypeError(f"expected real-valued logits, got dtype {logits.dtype}")
    bad = (targets != 0) & (targets != 1)
    if bool(bad.any()):
        vals = torch.unique(targets[bad])[:5].tolist()
        raise ValueError(f"expected targets in {{0, 1}}, got other values such as {vals}")
