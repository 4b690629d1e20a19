r"""The attacker's best response ``z*(F)`` inside Crafter's outer loop (CRAFTER.md section 3).

Crafter differentiates through the attacker's inversion
``z*(F) = argmin_z ||F - Enc(G(z))||^2``, solved approximately at every outer
step by the attacker's own :func:`~facecraft.attacks.whitebox.invert_latent`.
:class:`InnerInversion` holds how that inner solve runs (its iterations, step
and start), and :class:`BestResponse` tracks it across one batch's outer steps:
the first solve starts from the attacker's amortizer ``Amor(F)`` (or ``N(0, I)``
without one), later ones from ``Amor(F)``, from the previous ``z*`` (warm
start) or from ``Amor(F)`` plus the previous solve's correction (warm offset).

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the inner problem, solved from the amortizer's estimate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from facecraft._validation import check_number
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses._critic import latent_dim_of, prior_latents

__all__ = ["COLD_START_STEPS", "BestResponse", "InnerInversion"]

#: iterations of a cold attacker's first solve from ``N(0, I)`` when ``init_steps`` is None
COLD_START_STEPS = 600


@dataclass(frozen=True)
class InnerInversion:
    """How the attacker's inner solve ``z*(F)`` runs at each outer step; validated on construction.

    Built from the defences' flat ``inner_*``, ``init_steps``, ``warm_start`` and
    ``warm_offset`` arguments (named in the messages).

    Attributes:
        steps: inversion iterations per outer step, >= 0 (``inner_steps``; Default: 80,
            the paper's).
        lr: inversion step size, > 0 (``inner_lr``; Default: 5e-3, the paper's).
        momentum: inversion momentum, >= 0 (``inner_momentum``; Default: 0.9, the paper's).
        init_steps: iterations of the first solve of a batch; None means ``steps``
            with an amortizer and :data:`COLD_START_STEPS` without (Default: None).
        warm_start: start each solve from the previous outer step's ``z*`` instead
            of ``Amor(F)`` (Default: False).
        warm_offset: with ``warm_start`` and an amortizer, start from
            ``Amor(F) + (z*_prev - Amor(F_prev))`` instead: the amortizer follows the
            change of ``F`` and the offset carries the previous solve's correction
            of it (Default: False).
    """

    steps: int = 80
    lr: float = 5e-3
    momentum: float = 0.9
    init_steps: Optional[int] = None
    warm_start: bool = False
    warm_offset: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.steps}")
        check_number("inner_lr", self.lr, low=0.0, low_open=True)
        check_number("inner_momentum", self.momentum, low=0.0)

    def solve(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        features: torch.Tensor,
        z0: torch.Tensor,
        steps: Optional[int] = None,
    ) -> torch.Tensor:
        """``z*(features)`` by :func:`~facecraft.attacks.whitebox.invert_latent` from ``z0``.

        Runs ``steps`` iterations (Default: None: :attr:`steps`) with this
        config's step size and momentum.
        """
        return invert_latent(
            encoder,
            generator,
            features,
            z0,
            steps=self.steps if steps is None else steps,
            lr=self.lr,
            momentum=self.momentum,
        )


class BestResponse:
    """The attacker's best response ``z*(F)`` at each outer step of one batch (Crafter's step 1).

    Each call solves from the start :class:`InnerInversion` prescribes and
    remembers what the next start needs (the last ``z*`` and, with
    ``warm_offset``, its correction of ``Amor(F)``). Without an amortizer the
    first solve starts from ``N(0, I)`` (drawn from ``seed_gen``; ``init_steps``,
    :data:`COLD_START_STEPS` by default) and later ones always warm-start from
    the previous ``z*`` (a random restart with ``steps`` iterations would not
    track ``z*``).

    Args:
        config: the inner solve's settings.
        encoder: ``Enc``.
        generator: the attacker's prior ``G`` (with a ``latent_dim`` attribute).
        amortizer: the attacker's ``Amor: F -> z``, or None (random first start).
        seed_gen: the CPU generator of the protect call.
    """

    def __init__(
        self,
        config: InnerInversion,
        encoder: nn.Module,
        generator: nn.Module,
        amortizer: Optional[nn.Module],
        *,
        seed_gen: torch.Generator,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.generator = generator
        self.amortizer = amortizer
        self.seed_gen = seed_gen
        self.z_prev: Optional[torch.Tensor] = None
        #: ``z*_prev - Amor(F_prev)``, for ``warm_offset`` (set after the first solve)
        self.offset: Optional[torch.Tensor] = None

    def __call__(self, features: torch.Tensor, step: int) -> torch.Tensor:
        """``z*(F)`` ``(N, zd)`` for the detached features ``F`` of outer step ``step``."""
        cfg = self.config
        z0, steps, z_amor = self._start(features, step)
        z_star = cfg.solve(self.encoder, self.generator, features, z0, steps)
        self.z_prev = z_star
        if cfg.warm_start and cfg.warm_offset and self.amortizer is not None:
            assert z_amor is not None  # the first start and every offset start compute Amor(F)
            with torch.no_grad():
                self.offset = z_star - z_amor
        return z_star

    def _start(
        self, features: torch.Tensor, step: int
    ) -> Tuple[torch.Tensor, int, Optional[torch.Tensor]]:
        """``(z0, iterations, Amor(F) or None)`` of this step's solve."""
        cfg, amor = self.config, self.amortizer
        if self.offset is not None and amor is not None:  # only warm_offset sets an offset
            with torch.no_grad():
                z_amor = amor(features)
            return z_amor + self.offset, cfg.steps, z_amor
        if self.z_prev is not None and (cfg.warm_start or amor is None):
            return self.z_prev, cfg.steps, None
        if amor is not None:
            with torch.no_grad():
                z_amor = amor(features)
            steps = cfg.init_steps if step == 0 and cfg.init_steps is not None else cfg.steps
            return z_amor, steps, z_amor
        z0 = prior_latents(
            features.shape[0], latent_dim_of(self.generator), like=features, seed_gen=self.seed_gen
        )
        return z0, COLD_START_STEPS if cfg.init_steps is None else cfg.init_steps, None
