"""The common interface of every inversion attack (STYLE.md section 2, rule 2).

An attack receives released features ``F`` of shape ``(N, *F)`` and returns
reconstructed images ``(N, 3, S, S)`` in [0, 1]. Attacks that learn (a decoder,
a generator update) do so in :meth:`InversionAttack.fit` on the attacker's own
public images. ``__call__`` validates the input, runs :meth:`reconstruct`
with every frozen model in eval mode (flags restored afterwards) and checks
the output, so subclasses never repeat that.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from facecraft._torchutils import eval_mode, modules_device
from facecraft._validation import validate_features, validate_images

__all__ = ["InversionAttack", "ProgressFn", "DefenseFn"]

#: ``progress(done, total, description)``: called by long loops; the CLI draws a bar.
ProgressFn = Callable[[int, int, str], None]

#: A defence used as a black box by adaptive attacks: images ``(N, 3, S, S)`` in [0, 1] ->
#: released features.
DefenseFn = Callable[[torch.Tensor], torch.Tensor]


class InversionAttack(abc.ABC):
    """Base class: features -> images.

    Subclasses set ``self.models`` (the networks they hold, put in eval mode
    during ``reconstruct``) and may record per-epoch metrics in
    ``self.history`` (used for the adaptive-attack curves).
    """

    def __init__(self) -> None:
        self.models: List[nn.Module] = []
        self.history: List[Dict[str, Any]] = []

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """The name this attack is registered under."""

    def fit(
        self, public_images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> "InversionAttack":
        """Learn from the attacker's public images ``(N, 3, S, S)`` in [0, 1].

        The default has nothing to learn.
        """
        return self

    @abc.abstractmethod
    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, 3, S, S)`` in [0, 1] from features ``(N, *F)``."""

    @property
    def device(self) -> torch.device:
        return modules_device(self.models)

    def __call__(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """Validate, run :meth:`reconstruct` in eval mode, check and detach the output.

        ``progress`` is passed on to ``reconstruct`` only when given (subclasses
        with long loops accept it as a keyword).
        """
        validate_features(features)
        kwargs: Dict[str, Any] = {} if progress is None else {"progress": progress}
        with eval_mode(*self.models):
            out = self.reconstruct(features.detach().to(self.device), **kwargs)
        validate_images(out)
        return out.detach()

    def __repr__(self) -> str:
        params = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, (int, float, str, bool)) and not k.startswith("_")
        }
        return (
            f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
        )
