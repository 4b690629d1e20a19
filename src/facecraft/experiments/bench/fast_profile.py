"""``facecraft bench craft --top``: where the fast Crafter configuration's time goes (issue 5).

The fast configuration of the profile's ``bench craft`` preset runs once on the benchmark's batch
under ``torch.profiler`` (operator self time) or ``cProfile`` (Python function self time).
"""

from __future__ import annotations

import cProfile
import os
import pstats
from typing import Any, Dict, List, Optional, Tuple

from facecraft.defenses.crafter import Crafter
from facecraft.experiments.bench._shared import (
    check_threads,
    resolve_fast_critic,
    resolve_kwargs,
    sync,
    threads,
)
from facecraft.experiments.bench.batch import CraftBench
from facecraft.experiments.profiles import bench_defaults
from facecraft.experiments.study import Study

__all__ = ["profile_fast"]

Rows = List[Tuple[str, float]]


def profile_fast(
    study: Study,
    *,
    batch: int = 32,
    fast_kwargs: Optional[Dict[str, Any]] = None,
    outer_steps: int = 5,
    top: int = 15,
    backend: str = "torch",
    num_threads: Optional[int] = None,
    fast_critic_steps: Optional[int] = None,
) -> Rows:
    """Where the fast Crafter configuration's time goes: the top functions by self time (issue 5).

    Runs the fast configuration (the profile's ``BENCH_DEFAULTS[...]["fast"]``
    updated by ``fast_kwargs``) once for ``outer_steps`` on the benchmark's
    batch (with the defender's pre-trained critic, trained untimed and
    unprofiled, as in :func:`~facecraft.experiments.bench.bench_craft`), after an
    untimed warm-up, under ``torch.profiler`` (operator self time; on CUDA the
    device self time) or ``cProfile`` (Python function ``tottime``).

    Args:
        study: the study (data, target, prior, amortizer).
        batch: faces in the batch (the first of ``study.eval_indices()``).
        fast_kwargs: Crafter keyword arguments updating the profile's fast ones (Default: None).
        outer_steps: outer steps of the profiled run (Default: 5).
        top: how many functions to return (Default: 15).
        backend: ``"torch"`` or ``"cprofile"`` (Default: ``"torch"``).
        num_threads: torch intra-op threads for the call, restored afterwards
            (Default: None, leave them; see
            :class:`~facecraft.experiments.bench.CraftBenchConfig`).
        fast_critic_steps: updates of the pre-trained critic (Default: None, the profile's
            ``fast_critic``; 0: none, see :func:`~facecraft.experiments.bench.bench_craft`).

    Returns:
        ``[(name, seconds), ...]``, at most ``top`` entries, largest self time first.

    Raises:
        ValueError: unknown backend, ``outer_steps`` or ``top`` < 1, or ``outer_steps`` in the
            kwargs.
    """
    if backend not in ("torch", "cprofile"):
        raise ValueError(f"backend must be 'torch' or 'cprofile', got {backend!r}")
    if outer_steps < 1 or top < 1:
        raise ValueError(f"outer_steps and top must be >= 1, got {outer_steps} and {top}")
    check_threads(num_threads)
    defaults = bench_defaults(study.cfg.profile)
    fast_kw = resolve_kwargs(defaults["fast"], fast_kwargs, "fast_kwargs")
    fast_critic = resolve_fast_critic(defaults["fast_critic"], fast_critic_steps)
    with threads(num_threads):
        bench = CraftBench(study, batch, eval_dlib=False, pii_repeats=1, progress=None)
        critic, _ = bench.defender_critic(fast_critic["steps"], fast_critic["faces"], fast_kw)
        bench.warmup(fast_kw, critic)
        crafter = bench.crafter(fast_kw, outer_steps, critic)
        if backend == "cprofile":
            return _cprofile_rows(crafter, bench)[:top]
        return _torch_profiler_rows(crafter, bench)[:top]


def _cprofile_rows(crafter: Crafter, bench: CraftBench) -> Rows:
    """``crafter.protect`` on the batch under ``cProfile``: Python functions by ``tottime``."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        crafter.protect(bench.images)
        sync(bench.study.device)
    finally:
        prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    return sorted(
        (
            (f"{fn} ({os.path.basename(path)}:{line})", float(v[2]))
            for (path, line, fn), v in stats.items()
        ),
        key=lambda r: -r[1],
    )


def _torch_profiler_rows(crafter: Crafter, bench: CraftBench) -> Rows:
    """``crafter.protect`` on the batch under ``torch.profiler``: operators by self time (CPU, or
    the device's on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = bench.study.device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        crafter.protect(bench.images)
        sync(bench.study.device)

    def self_us(e: Any) -> float:
        if cuda:
            return float(
                getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
            )
        return float(e.self_cpu_time_total)

    return sorted(((e.key, self_us(e) * 1e-6) for e in prof.key_averages()), key=lambda r: -r[1])
