"""``crafter-fast``: Crafter with the fast step of ``facecraft bench craft`` (beyond the paper).

The same algorithm as :class:`~facecraft.defenses.crafter.Crafter` with other defaults: a critic
pre-trained once on public faces, a short warm-started inner solve, Gauss-Newton CG. Why these,
measured: docs/BENCHMARKS.md (session 6, "bench craft: ratio 29.6 and 30.8 at equal white-box
epsilon-PII").
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from torch import nn

from facecraft.defenses.crafter import Crafter
from facecraft.defenses.registry import register_defense

__all__ = ["FAST_STEP", "FastCrafter"]


#: The fast step of ``facecraft bench craft`` (docs/BENCHMARKS.md, session 6) and the one definition
#: of ``crafter-fast``: a critic pre-trained on public faces and fine-tuned briefly, a short inner
#: solve from ``Amor(F)`` plus the last correction, Gauss-Newton CG and a larger utility weight.
FAST_STEP: Dict[str, Any] = {
    "critic_pretrain_steps": 200,
    "critic_pretrain_faces": 256,
    "critic_steps": 2,
    "critic_width": 16,
    "warm_start": True,
    "warm_offset": True,
    "inner_steps": 5,
    "init_steps": 40,
    "solver": "gn-cg",
    "cg_iters": 1,
    "lr": 0.1,
    "beta": 5.0,
    "outer_steps": 10,
}


class FastCrafter(Crafter):
    """Crafter with :data:`FAST_STEP` as defaults: issue 5's fast configuration, ``crafter-fast``.

    Same algorithm and arguments as :class:`Crafter` (any of them overrides the
    preset); :meth:`fit` must run on public faces first (it trains the critic).
    """

    relative_cost = 6

    def __init__(
        self, encoder: nn.Module, head: Optional[nn.Module], generator: nn.Module, **kwargs: Any
    ) -> None:
        super().__init__(encoder, head, generator, **{**FAST_STEP, **kwargs})

    @classmethod
    def name(cls) -> str:
        return "crafter-fast"


register_defense("crafter-fast", FastCrafter)
