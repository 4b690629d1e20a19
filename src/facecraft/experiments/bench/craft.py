r"""``facecraft bench craft``: the paper's Crafter against a fast configuration, at equal privacy.

Issue 5 (deliverable 2) and CRAFTER.md section 3: as published, Crafter
re-solves the attacker's inversion (amortized start + ~80 iterations) and
runs a 120-term Neumann series of Hessian-vector products at every one of
~450 outer steps. :func:`bench_craft` measures how much faster a cheaper
configuration reaches the *same* privacy at no worse utility, on one batch of
private ``eval_test`` faces, with both runs in one process one after the other
so the ratio is fair on a noisy machine:

1. the **reference** (the paper's per-step work: ``warm_start=False``, i.e.
   ``Amor(F)`` + ``inner_steps`` re-inversion at every outer step,
   ``solver="neumann"``, ``neumann_iters=120``, ``neumann_alpha`` converging on
   our loss scale, ``critic_steps=10``) runs ``reference_steps`` outer steps, timed;
2. the **fast** configuration runs in growing chunks of outer steps until its
   epsilon-PII is within ``tolerance`` (relative) of the reference's, or lower,
   at no worse utility loss, or ``max_fast_steps`` is reached;
3. both releases are judged by the *same independent measurement*: the
   white-box attacker (:class:`~facecraft.attacks.whitebox.WhiteBoxAttack` with
   the study's amortizer) reconstructs ``G(z*(F))``, and
   :func:`~facecraft.metrics.pii.epsilon_pii` (a fresh critic, fixed seed)
   estimates their EMD to prior samples ``G(z_r)``. The defences' own critic
   estimates (``Crafter.last_epsilon``) are reported too, but are not the test:
   a defence that weakens its critic would look private by its own measure;
4. white-box Eval Acc (top-1) of both releases, with the dlib oracle or the
   Eval-network.

Both configurations come from the profile's preset
(:data:`~facecraft.experiments.profiles.BENCH_DEFAULTS`; why its values:
docs/BENCHMARKS.md, "Notes behind the bench defaults").

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the nested min-max, the Neumann hypergradient with
    ``alpha = 1e-3``, ``i = 120``; 450 outer steps, critic 10 steps per step).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from facecraft._torchutils import machine_info
from facecraft.defenses.crafter import Crafter
from facecraft.experiments.bench._shared import (
    ProgressFn,
    resolve_fast_critic,
    resolve_kwargs,
    threads,
)
from facecraft.experiments.bench.batch import CraftBench
from facecraft.experiments.bench.craft_config import CraftBenchConfig
from facecraft.experiments.profiles import bench_defaults
from facecraft.experiments.study import Study

__all__ = ["bench_craft", "craft_summary"]

log = logging.getLogger(__name__)

#: the keys of ``bench_craft``'s result that ``facecraft bench craft`` prints as its one JSON line
SUMMARY_KEYS = (
    "batch",
    "reference_s",
    "fast_s",
    "ratio",
    "epsilon_reference",
    "epsilon_fast",
    "utility_loss_reference",
    "utility_loss_fast",
    "eval_acc_whitebox_reference",
    "eval_acc_whitebox_fast",
    "fast_setup_s",
    "ratio_with_setup",
)


def bench_craft(
    study: Study,
    config: Optional[CraftBenchConfig] = None,
    *,
    progress: Optional[ProgressFn] = None,
) -> Dict[str, Any]:
    r"""Time the reference Crafter and the fast one until it reaches the reference's privacy
    (issue 5).

    The batch is the first ``config.batch`` of ``study.eval_indices()`` (private
    ``eval_test`` faces). Crafter's trajectory is seeded and its outer Adam has
    a constant step size, so a run of ``k`` outer steps is a prefix of a run of
    ``K > k``: each fast chunk is a fresh run of Crafter with ``outer_steps``
    set to the chunk's total (``fast_start_steps``, then times ``growth``,
    capped at ``max_fast_steps``), exactly what a deployment with that many
    steps computes, and ``fast_s`` is the time of the run that is finally
    reported alone (the search's total is ``fast_search_s``). Only
    :meth:`~facecraft.defenses.crafter.Crafter.protect` is timed
    (``time.perf_counter``, after a CUDA synchronise on GPU); the measurements
    are not.

    Acceptance of a fast run (``reached``): ``epsilon_fast <= epsilon_reference
    + tolerance * |epsilon_reference|`` and ``utility_loss_fast <=
    utility_loss_reference * (1 + utility_tolerance)``. epsilon-PII of each
    release is the mean over ``pii_repeats`` seeded estimates of
    :func:`~facecraft.metrics.pii.epsilon_pii` between the white-box
    reconstructions ``G(z*(F))`` (study's ``whitebox`` attack settings, with its
    amortizer) and ``max(64, batch)`` prior samples ``G(z_r)``, with the
    critic settings of ``study.cfg.eval`` (``pii_steps``, ``pii_width``) and
    seeds ``cfg.seed + 101 + r``: identical for both releases. The utility loss
    is ``||F - Enc(X)||^2 / dim(F)``, the batch mean.

    Args:
        study: the study holding the data and the trained target, prior and amortizer.
        config: the run's settings (Default: None, ``CraftBenchConfig()``: the profile's preset).
        progress: optional ``progress(done, total, desc)``, called after every outer step.

    Returns:
        A JSON-able dict with ``batch``, ``reference_s``, ``fast_s``, ``ratio``
        (``reference_s / fast_s``), ``epsilon_reference``, ``epsilon_fast``,
        ``utility_loss_reference``, ``utility_loss_fast``,
        ``eval_acc_whitebox_reference``, ``eval_acc_whitebox_fast``,
        ``reached``, ``fast_steps``, ``reference_kwargs``, ``fast_kwargs`` (the
        resolved ones, ``outer_steps`` included) and ``device``; extras:
        ``reference_steps``, ``profile``, ``eval_oracle``, ``tolerance``,
        ``utility_tolerance``, ``critic_epsilon_reference`` /
        ``critic_epsilon_fast`` (the defences' own last estimates),
        ``reference_s_per_step``, ``fast_s_per_step``, ``fast_search_s``,
        ``search`` (one dict per fast chunk: ``steps``, ``seconds``,
        ``epsilon``, ``utility_loss``, ``critic_epsilon``, ``reached``),
        ``epsilon_pii_repeats``, ``epsilons_reference`` / ``epsilons_fast``
        (the single estimates), ``fast_critic``, ``fast_setup_s``,
        ``ratio_with_setup``, the confirmation keys (``confirm_repeats``), the
        undefended keys, ``torch_threads``, ``machine`` and ``wall_s``.

    Raises:
        ValueError: fewer than 2 eval faces (bad settings raise in :class:`CraftBenchConfig`).
    """
    config = CraftBenchConfig() if config is None else config
    with threads(config.num_threads):
        return _bench_craft(study, config, progress)


def craft_summary(result: Dict[str, Any]) -> Dict[str, Any]:
    """The headline of a :func:`bench_craft` result: the one JSON line ``facecraft bench craft``
    prints (times, ratios, epsilon-PII, utility loss and Eval Acc of both releases)."""
    return {k: result[k] for k in SUMMARY_KEYS}


@dataclass
class _Run:
    """One timed Crafter run on the batch: its settings, release, time and measurement."""

    kwargs: Dict[str, Any]
    steps: int
    feats: torch.Tensor
    seconds: float
    crafter: Crafter
    m: Dict[str, Any]
    reached: bool = False


def _bench_craft(
    study: Study, config: CraftBenchConfig, progress: Optional[ProgressFn]
) -> Dict[str, Any]:
    """:func:`bench_craft` once the thread count is set."""
    wall0 = time.perf_counter()
    defaults = bench_defaults(study.cfg.profile)
    ref_kw = resolve_kwargs(defaults["reference"], config.reference_kwargs, "reference_kwargs")
    fast_kw = resolve_kwargs(defaults["fast"], config.fast_kwargs, "fast_kwargs")
    fast_critic = resolve_fast_critic(defaults["fast_critic"], config.fast_critic_steps)
    reference_steps = config.reference_steps or defaults["reference_steps"]
    max_fast_steps = config.max_fast_steps or defaults["max_fast_steps"]

    bench = CraftBench(
        study,
        config.batch,
        eval_dlib=config.eval_dlib,
        pii_repeats=config.pii_repeats,
        progress=progress,
    )
    critic, setup_s = _defender_critic(bench, fast_critic, fast_kw)
    if config.warmup:
        bench.warmup(ref_kw)
        bench.warmup(fast_kw, critic)
    ref = _timed_run(bench, ref_kw, reference_steps, "bench reference")
    log.info(
        "bench reference: %d steps in %.2f s, epsilon %.4f, utility loss %.3g",
        reference_steps,
        ref.seconds,
        ref.m["epsilon"],
        ref.m["utility_loss"],
    )
    start = config.fast_start_steps or max(1, reference_steps // 4)
    fast, search = _search_fast(bench, fast_kw, critic, config, ref, start, max_fast_steps)
    out = _result(study, config, bench, ref, fast, search, fast_critic, setup_s)
    if config.confirm_repeats > 0:
        out.update(_confirm(bench, ref, fast, config))
    if config.eval_undefended:
        none_m = bench.measure(bench.f0)
        out["epsilon_undefended"] = none_m["epsilon"]
        out["eval_acc_whitebox_undefended"] = none_m["eval_acc"]
    out["torch_threads"] = torch.get_num_threads()
    out["machine"] = machine_info(study.device)
    out["wall_s"] = time.perf_counter() - wall0
    log.info(
        "bench craft: ratio %.2f (reference %.2f s, fast %.2f s, %d steps, reached=%s)",
        out["ratio"],
        ref.seconds,
        fast.seconds,
        fast.steps,
        fast.reached,
    )
    return out


def _defender_critic(
    bench: CraftBench, fast_critic: Dict[str, int], fast_kw: Dict[str, Any]
) -> Tuple[Optional[torch.nn.Module], float]:
    """The fast configuration's critic, trained once per deployment on public faces, and its
    seconds (timed apart from the batch)."""
    critic, setup_s = bench.defender_critic(fast_critic["steps"], fast_critic["faces"], fast_kw)
    if critic is not None:
        log.info(
            "bench fast: the defender's critic (%d updates, %d public faces) in %.2f s",
            fast_critic["steps"],
            fast_critic["faces"],
            setup_s,
        )
    return critic, setup_s


def _timed_run(
    bench: CraftBench,
    kwargs: Dict[str, Any],
    steps: int,
    desc: str,
    critic: Optional[torch.nn.Module] = None,
) -> _Run:
    """One Crafter run of ``steps`` outer steps on the batch, timed, then measured."""
    feats, seconds, crafter = bench.protect(kwargs, steps, desc, critic)
    return _Run(kwargs, steps, feats, seconds, crafter, bench.measure(feats))


def _search_fast(
    bench: CraftBench,
    fast_kw: Dict[str, Any],
    critic: Optional[torch.nn.Module],
    config: CraftBenchConfig,
    ref: _Run,
    start: int,
    max_fast_steps: int,
) -> Tuple[_Run, List[Dict[str, Any]]]:
    """The fast configuration in growing chunks until it reaches the reference: the last run
    and one record per chunk."""
    eps_bound = ref.m["epsilon"] + config.tolerance * abs(ref.m["epsilon"])
    util_bound = ref.m["utility_loss"] * (1.0 + config.utility_tolerance)
    search: List[Dict[str, Any]] = []
    for steps in _schedule(start, max_fast_steps, config.growth):
        run = _timed_run(bench, fast_kw, steps, f"bench fast ({steps} steps)", critic)
        run.reached = run.m["epsilon"] <= eps_bound and run.m["utility_loss"] <= util_bound
        search.append(
            {
                "steps": steps,
                "seconds": run.seconds,
                "epsilon": run.m["epsilon"],
                "utility_loss": run.m["utility_loss"],
                "critic_epsilon": run.crafter.last_epsilon,
                "reached": run.reached,
            }
        )
        log.info(
            "bench fast: %d steps in %.2f s, epsilon %.4f (bound %.4f), "
            "utility loss %.3g (bound %.3g)%s",
            steps,
            run.seconds,
            run.m["epsilon"],
            eps_bound,
            run.m["utility_loss"],
            util_bound,
            " reached" if run.reached else "",
        )
        if run.reached:
            break
    return run, search


def _result(
    study: Study,
    config: CraftBenchConfig,
    bench: CraftBench,
    ref: _Run,
    fast: _Run,
    search: List[Dict[str, Any]],
    fast_critic: Dict[str, int],
    setup_s: float,
) -> Dict[str, Any]:
    """The JSON-able record of the reference run and the accepted (or last) fast run."""
    total = fast.seconds + setup_s
    return {
        "batch": bench.n,
        "reference_s": ref.seconds,
        "fast_s": fast.seconds,
        "ratio": ref.seconds / fast.seconds if fast.seconds > 0 else math.inf,
        "epsilon_reference": ref.m["epsilon"],
        "epsilon_fast": fast.m["epsilon"],
        "utility_loss_reference": ref.m["utility_loss"],
        "utility_loss_fast": fast.m["utility_loss"],
        "eval_acc_whitebox_reference": ref.m["eval_acc"],
        "eval_acc_whitebox_fast": fast.m["eval_acc"],
        "reached": bool(fast.reached),
        "fast_steps": fast.steps,
        "reference_kwargs": {**ref.kwargs, "outer_steps": ref.steps},
        "fast_kwargs": {**fast.kwargs, "outer_steps": fast.steps},
        "fast_critic": fast_critic,
        "fast_setup_s": setup_s,
        "ratio_with_setup": ref.seconds / total if total > 0 else math.inf,
        "device": str(study.device),
        # extras
        "profile": study.cfg.profile,
        "reference_steps": ref.steps,
        "eval_oracle": "dlib" if config.eval_dlib else "evalnet",
        "tolerance": config.tolerance,
        "utility_tolerance": config.utility_tolerance,
        "critic_epsilon_reference": ref.crafter.last_epsilon,
        "critic_epsilon_fast": fast.crafter.last_epsilon,
        "reference_s_per_step": ref.seconds / ref.steps,
        "fast_s_per_step": fast.seconds / fast.steps,
        "fast_search_s": sum(s["seconds"] for s in search),
        "search": search,
        "epsilon_pii_repeats": config.pii_repeats,
        "epsilons_reference": ref.m["epsilons"],
        "epsilons_fast": fast.m["epsilons"],
    }


def _confirm(bench: CraftBench, ref: _Run, fast: _Run, config: CraftBenchConfig) -> Dict[str, Any]:
    """The search stops at the first chunk whose (noisy) estimate passes: both releases'
    epsilon-PII again on ``confirm_repeats`` fresh seeds."""
    ref_c = bench.measure(ref.feats, seed_offset=1001, repeats=config.confirm_repeats)
    fast_c = bench.measure(fast.feats, seed_offset=1001, repeats=config.confirm_repeats)
    bound = ref_c["epsilon"] + config.tolerance * abs(ref_c["epsilon"])
    return {
        "epsilon_reference_confirm": ref_c["epsilon"],
        "epsilon_fast_confirm": fast_c["epsilon"],
        "epsilons_reference_confirm": ref_c["epsilons"],
        "epsilons_fast_confirm": fast_c["epsilons"],
        "confirmed": fast_c["epsilon"] <= bound,
    }


def _schedule(start: int, stop: int, growth: float) -> List[int]:
    """Chunk totals ``start, ceil(start * growth), ...`` strictly increasing, ending at ``stop``."""
    out = [min(start, stop)]
    while out[-1] < stop:
        out.append(min(stop, max(out[-1] + 1, math.ceil(out[-1] * growth))))
    return out
