"""A3 adaptive attack: average repeated queries of a randomised defence (CRAFTER.md section 2).

A defence that adds fresh noise to every release (e.g. Gaussian noise on the
features) leaks the clean feature to anyone who can obtain several releases of
the same image: their mean converges to it. The attack averages ``n_queries``
releases and hands the mean to a base attack.

This attack needs the *images* (or several releases of each), not one
feature tensor, so it has two extra entry points for the pipeline:

- :meth:`AveragingAttack.reconstruct_images` ``(images)``: queries the defence
  ``n_queries`` times on the same private images and reconstructs from the
  mean; this is the entry point an evaluation of A3 should call;
- :meth:`AveragingAttack.reconstruct_from_queries` ``([F_1, ..., F_n])``:
  reconstructs from releases collected elsewhere.

``reconstruct(features)`` (the plain interface) sees a single release, so it
is simply the base attack on it.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    Averaging only helps if the defence draws fresh randomness on every call.
    A defence reseeded identically per call returns the same release every
    time; the mean then equals one release and A3 reduces to the base attack.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from facecraft._validation import validate_images, validate_tensors
from facecraft.attacks.base import DefenseFn, InversionAttack, ProgressFn
from facecraft.attacks.registry import register_attack

__all__ = ["AveragingAttack", "query_average"]


def query_average(defense: DefenseFn, images: torch.Tensor, n: int) -> torch.Tensor:
    """The mean of ``n`` releases of the same images: ``(1/n) sum_i defense(images)``.

    Args:
        defense: images ``(N, 3, S, S)`` in [0, 1] -> released features.
        images: the images to query, ``(N, 3, S, S)`` in [0, 1].
        n: number of queries (>= 1).

    Returns:
        The averaged features ``(N, *F)``, detached.
    """
    if n < 1:
        raise ValueError(f"need at least one query, got n={n}")
    validate_images(images)
    with torch.no_grad():
        total = defense(images).detach().clone()
        for _ in range(n - 1):
            total += defense(images).detach()
    return total / n


class AveragingAttack(InversionAttack):
    r"""A3: reconstruct from the mean of ``n_queries`` releases of the same image.

    Args:
        base_attack: the attack run on the averaged features (any
            :class:`InversionAttack`, e.g. white-box or black-box).
        defense: the randomised defence as a black box (needed by
            :meth:`reconstruct_images`; Default: None).
        n_queries: releases averaged per image (Default: 8).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1] (:meth:`reconstruct_images`).
        - queries: ``n`` tensors ``(N, *F)`` (:meth:`reconstruct_from_queries`).
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (adaptive attacks, A3).

    Note:
        The paper does not state the number of queries; 8 cuts the noise
        standard deviation of an additive-noise defence by ``sqrt(8)``.
    """

    def __init__(
        self,
        base_attack: InversionAttack,
        defense: Optional[DefenseFn] = None,
        *,
        n_queries: int = 8,
    ) -> None:
        super().__init__()
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        self.base_attack = base_attack
        self.defense = defense
        self.n_queries = n_queries
        self.models = list(base_attack.models)

    @classmethod
    def name(cls) -> str:
        return "average"

    def fit(
        self, public_images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> "AveragingAttack":
        """Fit the base attack."""
        self.base_attack.fit(public_images, progress=progress)
        return self

    def reconstruct(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """A single release: the base attack on it (nothing to average)."""
        return self.base_attack(features, progress=progress)

    def reconstruct_from_queries(
        self, queries: Sequence[torch.Tensor], *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """The base attack on the mean of several releases ``[F_1, ..., F_n]`` of the same
        images."""
        if len(queries) == 0:
            raise ValueError("need at least one release to average")
        validate_tensors(list(queries), dim_range=(2, 5))
        mean = torch.stack([q.detach() for q in queries]).mean(0)
        return self(mean, progress=progress)

    def reconstruct_images(
        self, images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """Reconstruct from the mean of ``n_queries`` releases of ``images`` by the defence."""
        if self.defense is None:
            raise RuntimeError(
                "AveragingAttack.reconstruct_images needs the defence: "
                "pass defense= at construction"
            )
        return self(query_average(self.defense, images, self.n_queries), progress=progress)


register_attack("average", AveragingAttack)
