"""Identity metrics of an oracle face classifier: Eval Acc and FSIM (CRAFTER.md section 5).

*Eval Acc* is the top-1 (or top-k) identity accuracy of an oracle trained on
``eval_train`` when it is shown reconstructions of ``eval_test`` images; lower
is better for the defender, chance is ``1 / #identities``. *FSIM*, in the
paper's sense, is the cosine similarity between the oracle's embeddings of a
reconstruction and of its original image (not the FSIM image-quality index of
Zhang et al., 2011).

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    The original release shifts predictions by +1 in one helper and labels by
    -1 in another; here labels are 0-based throughout and results are tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facecraft._validation import validate_tensors
from facecraft.metrics._common import check_reduction, reduce

__all__ = ["feature_cosine", "identity_accuracy", "topk_accuracy", "topk_hits"]


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, *, k: int = 1) -> torch.Tensor:
    r"""Fraction of rows whose true label is among the ``k`` highest scores.

    The mean of :func:`topk_hits`.

    Args:
        scores: ``(N, K)`` scores (logits, similarities; higher = more likely).
        labels: ``(N,)`` integer identities, 0-based, in ``[0, K)``.
        k: how many top guesses count (1 for Eval Acc, 5 for top-5).

    Returns:
        A scalar tensor in [0, 1] (float32, or the scores' dtype if it is
        float64), on the scores' device. Ties are broken by ``torch.topk``.

    Raises:
        TypeError: non-tensor input or non-integer labels.
        ValueError: shape mismatch, labels out of range, or ``k`` not in ``[1, K]``.

    Example:
        >>> s = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
        >>> float(topk_accuracy(s, torch.tensor([1, 1])))
        0.5
    """
    hit = topk_hits(scores, labels, k=k)
    out_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    return hit.to(out_dtype).mean()


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, *, k: int = 1) -> torch.Tensor:
    r"""Per row, whether the true label is among the ``k`` highest scores: a bool tensor ``(N,)``.

    The per-face outcome behind Eval Acc, kept for intervals and paired tests
    (:mod:`facecraft.metrics.stats`). Arguments and errors as :func:`topk_accuracy`.

    Example:
        >>> topk_hits(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])).tolist()
        [True, False]
    """
    validate_tensors([scores, labels], dim_range=(1, 2), same_shape=False)
    if scores.dim() != 2:
        raise ValueError(f"expected scores of shape (N, K), got shape {tuple(scores.shape)}")
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"expected labels of shape ({scores.shape[0]},) to match scores {tuple(scores.shape)}, "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"expected integer labels, got dtype {labels.dtype}")
    n, num_classes = scores.shape
    if n == 0:
        raise ValueError("expected at least one row of scores, got none")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
        raise ValueError(f"expected k in [1, {num_classes}], got {k!r}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"expected labels in [0, {num_classes - 1}] (0-based), got range [{lo}, {hi}]"
        )
    top = scores.topk(k, dim=1).indices
    return (top == labels.unsqueeze(1)).any(dim=1)


#: The name STYLE.md uses for Eval Acc; the same function as :func:`topk_accuracy`.
identity_accuracy = topk_accuracy


def feature_cosine(a: torch.Tensor, b: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    r"""Cosine similarity of paired embeddings (the paper's FSIM).

    Args:
        a: ``(N, D)`` embeddings (e.g. of reconstructions); ``(N, *)`` is flattened.
        b: embeddings of the same shape (e.g. of the originals).
        reduction: ``'none'`` (``(N,)``), ``'mean'`` or ``'sum'``.

    Returns:
        Cosine similarities in [-1, 1], in the inputs' dtype (a zero vector has
        similarity 0 with anything).

    Raises:
        TypeError: non-tensor or non-floating-point input.
        ValueError: shape or device mismatch, or unknown ``reduction``.

    Example:
        >>> a = torch.tensor([[1.0, 0.0]]); b = torch.tensor([[1.0, 1.0]])
        >>> round(float(feature_cosine(a, b)), 4)
        0.7071
    """
    check_reduction(reduction)
    validate_tensors([a, b], dim_range=(2, 8))
    for name, t in (("a", a), ("b", b)):
        if not t.is_floating_point():
            raise TypeError(f"expected floating-point {name}, got dtype {t.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"expected a and b of the same dtype, got {a.dtype} and {b.dtype}")
    if a.shape[0] == 0:
        raise ValueError("expected at least one pair of embeddings, got none")
    values = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)
    return reduce(values, reduction)
