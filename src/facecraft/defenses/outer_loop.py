r"""Crafter's outer problem: the utility loss ``L_u`` and the Adam step on ``F`` (CRAFTER.md s. 3).

Crafter's outer loop minimises ``L_p(z*(F)) + beta * L_u(F)`` over the
released feature ``F`` with Adam. The privacy side ``dL_p/dF`` comes from the
critic and the implicit hypergradient (:mod:`facecraft.defenses._critic`,
:mod:`facecraft.defenses.hypergrad`); :class:`OuterLoop` holds the outer
settings and does the rest of a step: the utility loss, its gradient, and the
Adam step on ``loss_scale * (dL_p/dF + beta * dL_u/dF)``.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the min-max objective, ``L_u``, Adam on ``F`` with lr 1e-2 for
    450 steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._validation import check_number

__all__ = ["UTILITIES", "OuterLoop"]

#: the utility losses ``L_u`` Crafter supports: the paper's two, and ``"logits"`` (ours).
UTILITIES = ("feature", "task", "logits")


@dataclass(frozen=True)
class OuterLoop:
    """Crafter's outer problem: Adam on ``F`` against ``loss_scale * (L_p + beta * L_u)``.

    Built from Crafter's ``outer_steps``, ``lr``, ``beta``, ``utility`` and
    ``loss_scale`` (named in the messages) and validated on construction.

    Attributes:
        steps: Adam steps on ``F``, >= 0 (``outer_steps``; Default: 450, the paper's).
        lr: Adam learning rate, > 0 (Default: 1e-2, the paper's).
        beta: utility weight, >= 0 (Default: 1.0).
        utility: ``"feature"``: ``L_u = ||F - F0||^2 / dim(F)``; ``"task"``: BCE of
            ``head(F)`` against binary targets; ``"logits"`` (an extension of ours):
            ``||head(F) - head(F0)||^2 / K``, which keeps the cloud head's scores, hence the
            ranking a mean AUC reads, and leaves ``F`` free where the head does not look
            (Default: ``"feature"``).
        loss_scale: multiplies the loss before the Adam step, > 0, as the authors'
            code does (x100). Adam is scale-invariant except for its ``eps`` (1e-8),
            which would otherwise swamp hypergradients of order 1e-8 (Default: 100.0).
    """

    steps: int = 450
    lr: float = 1e-2
    beta: float = 1.0
    utility: str = "feature"
    loss_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.utility not in UTILITIES:
            raise ValueError(f"unknown utility {self.utility!r}; choose one of {UTILITIES}")
        if self.steps < 0:
            raise ValueError(f"outer_steps must be >= 0, got {self.steps}")
        check_number("beta", self.beta, low=0.0)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("loss_scale", self.loss_scale, low=0.0, low_open=True)

    def utility_targets(
        self, f0: torch.Tensor, head: Optional[nn.Module], attributes: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """The targets ``(N, K)`` of the head-based utilities (None for ``"feature"``).

        ``"logits"``: ``head(F0)``. ``"task"``: ``attributes`` when given (one row per feature of
        ``f0``), else the pseudo-labels ``head(F0) > 0``.
        """
        if self.utility == "feature":
            return None
        if self.utility == "task" and attributes is not None:
            if attributes.shape[0] != f0.shape[0]:
                raise ValueError(
                    f"attributes: expected {f0.shape[0]} rows (one per image), "
                    f"got {attributes.shape[0]}"
                )
            return attributes.to(device=f0.device, dtype=f0.dtype)
        assert head is not None  # a head-based utility needs the head (checked by Crafter)
        with torch.no_grad():
            scores = head(f0)
        return scores if self.utility == "logits" else (scores > 0).to(f0.dtype)

    def utility_loss(
        self,
        feat: torch.Tensor,
        f0: torch.Tensor,
        targets: Optional[torch.Tensor],
        head: Optional[nn.Module],
    ) -> torch.Tensor:
        """``L_u`` of ``F`` (``feat``) given ``F0``: a batch mean."""
        if self.utility == "feature":
            return (feat - f0).flatten(1).pow(2).mean(dim=1).mean()
        assert head is not None and targets is not None
        if self.utility == "logits":
            return (head(feat) - targets).pow(2).mean()
        return nnf.binary_cross_entropy_with_logits(head(feat), targets)

    def step(
        self,
        feat: torch.Tensor,
        f0: torch.Tensor,
        targets: Optional[torch.Tensor],
        head: Optional[nn.Module],
        grad_p: torch.Tensor,
        opt: torch.optim.Optimizer,
    ) -> torch.Tensor:
        """One Adam step of ``opt`` on ``F`` along ``loss_scale * (dL_p/dF + beta * dL_u/dF)``.

        Args:
            feat: ``F`` ``(N, *F)``, a leaf with ``requires_grad`` that ``opt`` updates.
            f0: ``F0 = Enc(X)``.
            targets: :meth:`utility_targets`.
            head: the cloud head (``utility="task"``).
            grad_p: the privacy hypergradient ``dL_p/dF``.
            opt: the Adam optimiser of ``feat``.

        Returns:
            ``L_u`` at ``F`` before the step.
        """
        l_u = self.utility_loss(feat, f0, targets, head)
        (grad_u,) = torch.autograd.grad(l_u, feat)
        feat.grad = self.loss_scale * (grad_p + self.beta * grad_u)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return l_u
