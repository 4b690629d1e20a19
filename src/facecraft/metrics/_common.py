"""Helpers shared by the metric modules: reductions and the progress callback type."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["REDUCTIONS", "ProgressFn", "check_reduction", "reduce"]

#: ``progress(done, total, description)``: called by long loops; the CLI draws a bar.
ProgressFn = Callable[[int, int, str], None]

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``'none' | 'mean' | 'sum'``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"expected reduction in {REDUCTIONS}, got {reduction!r}")


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` over the first dimension (piq's ``_reduce``)."""
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean(dim=0)
    if reduction == "sum":
        return values.sum(dim=0)
    return values
