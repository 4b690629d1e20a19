"""Adaptive feature-to-embedding attack A1: train the embedding regressor on the defence's outputs.

The attacker runs the defence on its public faces and trains (from a copy of a
regressor fitted on raw features, if it has one) on the pairs
``(defense(X), embedding(X))``; everything else is
:class:`~facecraft.attacks.embedding.EmbeddingAttack`.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (threat model, adaptive attacks).

Note:
    The paper has no such attack (see :mod:`facecraft.attacks.embedding`).
    Starting from the raw-feature regressor, when there is one, makes the
    adaptive attacker at least as informed as the plain one.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from facecraft.attacks._common import trainable_copy
from facecraft.attacks.embedding import EmbeddingAttack
from facecraft.attacks.feature2id import FeatureClassifier
from facecraft.attacks.registry import register_attack

__all__ = ["AdaptiveEmbeddingAttack"]


class AdaptiveEmbeddingAttack(EmbeddingAttack):
    r"""A1 adaptive feature-to-embedding attack: train on the defence's releases.

    The attacker runs the defence on its own public faces and trains on the
    pairs ``(defense(X), embedding(X))`` (the caller passes the released
    features). When ``base`` is fitted, every :meth:`fit` starts from a deep
    copy of its regressor (the base is never modified, and its width wins
    over ``width``); otherwise from a fresh seeded network, exactly as
    :class:`EmbeddingAttack`.

    Args:
        base: an :class:`EmbeddingAttack` fitted on raw features, or ``None``
            (Default: None).
        epochs, batch_size, lr, width, weight_decay, val_fraction, patience,
            seed, device: as for :class:`EmbeddingAttack` (same defaults).

    Shape:
        - features: ``(N, C, h, w)`` or ``(N, D)``, released by the defence;
          the base's feature shape when ``base`` is fitted.
        - embeddings: ``(N, E)``, the base's ``E`` when ``base`` is fitted.
        - output: ``(N, E)``.

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (adaptive attacks).

    Example:
        >>> import torch
        >>> f, e = torch.randn(16, 8), torch.randn(16, 4)
        >>> base = EmbeddingAttack(epochs=1, width=4).fit(f, e)
        >>> ada = AdaptiveEmbeddingAttack(base, epochs=0).fit(f + 0.1, e)
        >>> torch.equal(ada(f), base(f))
        True
    """

    def __init__(self, base: Optional[EmbeddingAttack] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if base is not None and not isinstance(base, EmbeddingAttack):
            raise TypeError(f"base must be an EmbeddingAttack or None, got {type(base).__name__}")
        self.base = base

    @classmethod
    def name(cls) -> str:
        return "adaptive-embedding"

    def _start(self, feature_shape: Tuple[int, ...], dim: int) -> FeatureClassifier:
        """A deep copy of the fitted base's regressor, else a fresh seeded network."""
        base = self.base
        if base is None or base.regressor is None:
            return self._build(feature_shape, dim)
        if base._fshape != feature_shape or base.embedding_dim != dim:
            raise ValueError(
                f"the base maps {base._fshape} -> {base.embedding_dim}, "
                f"the data is {feature_shape} -> {dim}"
            )
        reg = trainable_copy(base.regressor)
        self.width = base.width
        self._set_regressor(reg, feature_shape, dim)
        return reg


register_attack("adaptive-embedding", AdaptiveEmbeddingAttack)  # type: ignore[arg-type]
