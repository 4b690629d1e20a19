"""The common interface of every feature defence (STYLE.md section 2, rule 2).

A defence runs on the edge: it maps private images ``(N, 3, S, S)`` in [0, 1]
to the features ``(N, *F)`` that are released to the cloud. It exposes the
encoder an attacker would see (``encoder``; adversarial learning and DISCO
change it) and the cloud head that consumes the release (``head``), so that
white-box attacks and utility are measured against the right networks.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from facecraft._torchutils import eval_mode
from facecraft._validation import validate_images

__all__ = ["FeatureDefense"]


class FeatureDefense(abc.ABC):
    """Base class: images -> released features.

    Args:
        encoder: the edge encoder ``Enc`` (images in [0, 1] -> features).
        head: the cloud head ``f`` (features -> logits), for task-oriented
            utility and for measuring mean AUC.
    """

    #: whether :meth:`protect` is randomised (A3 query averaging applies).
    randomized: bool = False

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module] = None) -> None:
        self.encoder = encoder
        self.head = head
        self.history: List[Dict[str, Any]] = []

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """The name this defence is registered under."""

    def fit(self, public_images: torch.Tensor, public_attributes: Optional[torch.Tensor] = None, *,
            progress=None) -> "FeatureDefense":
        """Train whatever the defence learns on public data; default: nothing."""
        return self

    @abc.abstractmethod
    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """Released features ``(N, *F)`` for images ``(N, 3, S, S)`` in [0, 1]."""

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        validate_images(images)
        with eval_mode(self.encoder, self.head):
            out = self.protect(images.detach().to(self.device))
        return out.detach()

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
