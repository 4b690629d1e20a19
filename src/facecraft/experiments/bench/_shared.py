"""Pieces the benchmarks share: the progress callback type, device synchronisation, the thread
count of a timed call and the resolution of Crafter keyword arguments against a preset."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, ContextManager, Dict, Optional

import torch

from facecraft._torchutils import torch_threads
from facecraft.defenses.crafter import Crafter

ProgressFn = Callable[[int, int, str], None]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_threads(num_threads: Optional[int]) -> None:
    """``num_threads`` is None (leave the count) or >= 1; ``ValueError`` otherwise."""
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")


def threads(num_threads: Optional[int]) -> ContextManager[Any]:
    """:func:`~facecraft._torchutils.torch_threads` of ``num_threads``; no change when None."""
    return contextlib.nullcontext() if num_threads is None else torch_threads(num_threads)


def resolve_kwargs(
    defaults: Dict[str, Any], given: Optional[Dict[str, Any]], name: str
) -> Dict[str, Any]:
    """The preset ``defaults`` updated by ``given`` Crafter keyword arguments (option ``name``).

    Raises:
        ValueError: ``given`` sets ``outer_steps`` (the benchmark sets it) or names an argument
            Crafter does not take.
    """
    given = dict(given or {})
    if "outer_steps" in given:
        raise ValueError(
            f"{name} must not set outer_steps: the benchmark sets it (reference_steps, fast chunks)"
        )
    accepted = set(inspect.signature(Crafter.__init__).parameters) - {
        "self",
        "encoder",
        "head",
        "generator",
        "amortizer",
    }
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(
            f"{name}: {unknown} are not Crafter arguments; choose from {sorted(accepted)}"
        )
    return {**defaults, **given}


def resolve_fast_critic(default: Dict[str, int], steps: Optional[int]) -> Dict[str, int]:
    """The preset's ``fast_critic`` (updates, faces) with ``steps`` updates when given."""
    out = dict(default)
    if steps is not None:
        check_fast_critic_steps(steps)
        out["steps"] = steps
    return out


def check_fast_critic_steps(steps: Optional[int]) -> None:
    """``steps`` is None or an integer >= 0; ``ValueError`` otherwise."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"fast_critic_steps must be an integer >= 0, got {steps!r}")
