"""The settings of ``facecraft bench craft`` (:func:`~facecraft.experiments.bench.bench_craft`).

:class:`CraftBenchConfig` gathers the batch, the step budgets, the acceptance tolerances and how
releases are measured into one frozen dataclass that checks itself on construction, so the CLI
builds it once and bad settings fail before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from facecraft.experiments.bench._shared import (
    check_fast_critic_steps,
    check_threads,
    resolve_kwargs,
)

__all__ = ["CraftBenchConfig"]


@dataclass(frozen=True)
class CraftBenchConfig:
    """The settings of one :func:`bench_craft` run (issue 5), checked on construction.

    Attributes:
        batch: faces in the batch, the first of ``study.eval_indices()`` (at least 2, for the
            held-out epsilon-PII) (Default: 32).
        reference_steps: outer steps of the reference run (Default: None, the profile's preset).
        max_fast_steps: the most outer steps the fast configuration may take (Default: None,
            the profile's preset).
        reference_kwargs: :class:`~facecraft.defenses.crafter.Crafter` keyword arguments that
            update the profile's preset ``BENCH_DEFAULTS[...]["reference"]`` (Default: None).
        fast_kwargs: the same for the fast configuration (Default: None).
        tolerance: relative slack on epsilon-PII (Default: 0.10, issue 5's 10%).
        utility_tolerance: relative slack on the utility loss (Default: 0.0, "no worse").
        fast_start_steps: outer steps of the first fast chunk (Default: None:
            ``max(1, reference_steps // 4)``, capped at ``max_fast_steps``).
        growth: factor between successive chunk totals, > 1 (Default: 1.5).
        eval_dlib: judge Eval Acc with the dlib oracle (``study.dlib_oracle()``); otherwise
            with the Eval-network (``study.evalnet()``) (Default: True).
        eval_undefended: also measure the undefended release ``Enc(X)`` (extra keys
            ``epsilon_undefended``, ``eval_acc_whitebox_undefended``, a yardstick for both)
            (Default: True).
        pii_repeats: seeded epsilon-PII estimates averaged per release (Default: 1).
        warmup: before timing, run each configuration once at the batch's shape with one
            iteration of every part, so neither timed run pays first-call costs (kernel
            selection, thread pools) (Default: True).
        num_threads: torch intra-op threads for the call, restored afterwards (Default: None,
            leave them). On a CPU shared with other jobs, intra-op threads that outnumber the
            free cores can slow every operator down many times over (a 10-step critic loop
            took 0.7 s with 1 thread and 28 s with 2 on a loaded 2-core machine); the value
            used is reported as ``torch_threads``.
        fast_critic_steps: updates of the fast configuration's critic, trained once on the
            study's public faces before the runs (:func:`~facecraft.defenses.fit_defender_critic`,
            timed apart as ``fast_setup_s``; ``ratio_with_setup`` charges it to this one batch)
            (Default: None: the profile's ``fast_critic``; 0: a fresh critic per batch).
        confirm_repeats: after the search, re-estimate epsilon-PII of the reference and of the
            accepted fast release with this many fresh seeds (``cfg.seed + 1001 + r``), since
            the search stops at the first chunk whose estimate passes: keys
            ``epsilon_reference_confirm``, ``epsilon_fast_confirm``, their single estimates and
            ``confirmed`` (Default: 0, none).

    Raises:
        ValueError: bad step counts, batch, tolerances, growth or thread count, ``outer_steps``
            or a name Crafter does not take in the kwargs.
    """

    batch: int = 32
    reference_steps: Optional[int] = None
    max_fast_steps: Optional[int] = None
    reference_kwargs: Optional[Dict[str, Any]] = None
    fast_kwargs: Optional[Dict[str, Any]] = None
    tolerance: float = 0.10
    utility_tolerance: float = 0.0
    fast_start_steps: Optional[int] = None
    growth: float = 1.5
    eval_dlib: bool = True
    eval_undefended: bool = True
    pii_repeats: int = 1
    warmup: bool = True
    num_threads: Optional[int] = None
    fast_critic_steps: Optional[int] = None
    confirm_repeats: int = 0

    def __post_init__(self) -> None:
        for name in ("reference_steps", "max_fast_steps", "pii_repeats"):
            v = getattr(self, name)
            if v is None and name != "pii_repeats":
                continue  # the profile's preset
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        c = self.confirm_repeats
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"confirm_repeats must be an integer >= 0, got {c!r}")
        b = self.batch
        if isinstance(b, bool) or not isinstance(b, int) or b < 2:
            raise ValueError(
                f"batch must be an integer >= 2 (epsilon-PII splits it in halves), got {b!r}"
            )
        if not self.tolerance >= 0 or not self.utility_tolerance >= 0:
            raise ValueError(
                f"tolerances must be >= 0, got {self.tolerance} and {self.utility_tolerance}"
            )
        if not self.growth > 1:
            raise ValueError(f"growth must be > 1, got {self.growth}")
        if self.fast_start_steps is not None and self.fast_start_steps < 1:
            raise ValueError(f"fast_start_steps must be >= 1, got {self.fast_start_steps}")
        check_threads(self.num_threads)
        check_fast_critic_steps(self.fast_critic_steps)
        resolve_kwargs({}, self.reference_kwargs, "reference_kwargs")
        resolve_kwargs({}, self.fast_kwargs, "fast_kwargs")
