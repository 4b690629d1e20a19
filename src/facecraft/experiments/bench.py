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
   ``solver="neumann"``, ``neumann_iters=120``, ``neumann_alpha`` converging on our loss scale (see BENCH_DEFAULTS),
   ``critic_steps=10``) runs ``reference_steps`` outer steps, timed;
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

:func:`profile_fast` shows where the fast configuration's time goes.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the nested min-max, the Neumann hypergradient with
    ``alpha = 1e-3``, ``i = 120``; 450 outer steps, critic 10 steps per step).
"""

from __future__ import annotations

import copy
import cProfile
import inspect
import logging
import math
import os
import pstats
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from facecraft._torchutils import frozen
from facecraft.attacks.whitebox import WhiteBoxAttack
from facecraft.defenses.crafter import FAST_STEP, Crafter
from facecraft.experiments.study import Study, machine_info
from facecraft.metrics.identity import topk_accuracy
from facecraft.metrics.pii import epsilon_pii

__all__ = [
    "BENCH_DEFAULTS",
    "CraftBench",
    "bench_craft",
    "bench_defaults",
    "bench_latency",
    "bench_protector_latency",
    "bench_spectrum",
    "bench_train_steps",
    "profile_fast",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

#: Per-profile defaults of ``facecraft bench craft``: the reference and fast Crafter
#: keyword arguments (``outer_steps`` is set by the benchmark) and suggested
#: ``reference_steps`` / ``max_fast_steps``.
#:
#: * ``tiny``: a few iterations of everything, for tests (seconds).
#: * ``small``: the paper's per-step work except ``inner_steps=40`` instead of 80
#:   for the reference's amortized re-inversion. On this 2-core CPU one reference
#:   step at batch 32 (64x64, ``zd = 128``) takes of the order of a minute, dominated
#:   by the 120 Neumann Hessian-vector products (each a double backward through
#:   ``G`` and ``Enc``); 40 inner iterations cost roughly a quarter of that, 80 would
#:   add ~20% more. Halving them makes the reference *cheaper*, so a ratio measured
#:   against it understates the speed-up over the paper's 80. ``critic_width=16``
#:   is the small profile's critic.
#: * ``paper``: the paper's values (inner 80, Neumann 120, critic 10 steps of
#:   width 64, 450 outer steps).
#:
#: The Neumann step is ``alpha = 5e-5``, not the paper's 1e-3: the series converges
#: only when ``alpha * lambda_max(H) < 2``, and the Hessian of our
#: ``||F - Enc(G(z))||^2`` at the small profile's ``z*`` (32 private faces, 40
#: amortized inner steps, 40 power iterations) has ``lambda_max`` up to 2.2e4 and
#: ``lambda_min`` of 35 to 130 (docs/BENCHMARKS.md): at 1e-3, and at 1e-4 for some
#: faces, the reference diverges and its hypergradient is noise. The paper's
#: ``alpha`` belongs to its loss scale; 5e-5 converges on ours with a margin of 2.
#:
#: The fast configuration in every profile (docs/BENCHMARKS.md, session 6, for the
#: probe that chose it): the critic is trained **once per deployment** on public
#: faces (``fast_critic``: updates and faces of
#: :func:`~facecraft.defenses.fit_defender_critic`, timed apart as ``fast_setup_s``)
#: and fine-tuned by ``critic_steps=2`` per outer step, where the reference starts
#: every batch from a fresh critic; the inner solve starts from ``Amor(F)`` plus the
#: previous solve's correction (``warm_offset``) with a few iterations (the first
#: solve gets the reference's ``inner_steps`` via ``init_steps``); the inverse-HVP
#: is Gauss-Newton CG with one or two iterations. Measured on the small profile, the
#: pre-trained critic carries the privacy (a fixed one, ``critic_steps=0``, is
#: exploited: epsilon 7.2) and more CG iterations did not help (1, 2, 4: epsilon
#: -0.33, 0.19, 0.40, one batch, beta 1). The stronger critic also moves the features
#: further, so the fast configuration weights utility more (``beta=5`` against the
#: reference's 1); acceptance is judged on the measured epsilon-PII and utility
#: loss alone. In ``small`` both take the small demo's Adam step ``lr = 0.1``
#: (10 steps at the paper's 1e-2 move a feature by at most 0.1, too little for
#: epsilon-PII to tell apart from its estimation noise: measured, such a reference
#: ended at epsilon 0.62 vs 0.87 undefended with *more* white-box hits, 7 vs 4 of 32).
_PRETRAIN_KEYS = ("critic_pretrain_steps", "critic_pretrain_faces", "outer_steps")
BENCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "reference": {
            "warm_start": False,
            "inner_steps": 5,
            "solver": "neumann",
            "neumann_iters": 10,
            "neumann_alpha": 1e-3,
            "critic_steps": 3,
            "critic_width": 8,
            "persistent_critic": True,
        },
        "fast": {
            "warm_start": True,
            "warm_offset": True,
            "inner_steps": 2,
            "init_steps": 5,
            "solver": "gn-cg",
            "cg_iters": 1,
            "critic_steps": 1,
            "critic_width": 8,
            "persistent_critic": True,
            "beta": 5.0,
        },
        "fast_critic": {"steps": 3, "faces": 8},
        "reference_steps": 3,
        "max_fast_steps": 6,
    },
    "small": {
        "reference": {
            "warm_start": False,
            "inner_steps": 40,
            "solver": "neumann",
            "neumann_iters": 120,
            "neumann_alpha": 5e-5,
            "critic_steps": 10,
            "critic_width": 16,
            "persistent_critic": True,
            "lr": 0.1,
        },
        # the step registered as ``crafter-fast`` (crafter.FAST_STEP), one source for both
        "fast": {
            **{k: v for k, v in FAST_STEP.items() if k not in _PRETRAIN_KEYS},
            "persistent_critic": True,
        },
        "fast_critic": {
            "steps": FAST_STEP["critic_pretrain_steps"],
            "faces": FAST_STEP["critic_pretrain_faces"],
        },
        "reference_steps": 10,
        "max_fast_steps": 30,
    },
    "paper": {
        "reference": {
            "warm_start": False,
            "inner_steps": 80,
            "solver": "neumann",
            "neumann_iters": 120,
            "neumann_alpha": 5e-5,
            "critic_steps": 10,
            "critic_width": 64,
            "persistent_critic": True,
        },
        "fast": {
            "warm_start": True,
            "warm_offset": True,
            "inner_steps": 10,
            "init_steps": 80,
            "solver": "gn-cg",
            "cg_iters": 2,
            "critic_steps": 2,
            "critic_width": 64,
            "persistent_critic": True,
            "beta": 5.0,
        },
        "fast_critic": {"steps": 1000, "faces": 2048},
        "reference_steps": 450,
        "max_fast_steps": 900,
    },
}


def bench_defaults(profile: str) -> Dict[str, Any]:
    """A deep copy of :data:`BENCH_DEFAULTS` for ``profile`` (``paper``'s for unknown names, e.g. ``custom``)."""
    return copy.deepcopy(BENCH_DEFAULTS.get(profile, BENCH_DEFAULTS["paper"]))


def bench_craft(
    study: Study,
    *,
    batch: int = 32,
    reference_steps: int,
    reference_kwargs: Optional[Dict[str, Any]] = None,
    fast_kwargs: Optional[Dict[str, Any]] = None,
    max_fast_steps: int,
    tolerance: float = 0.10,
    utility_tolerance: float = 0.0,
    fast_start_steps: Optional[int] = None,
    growth: float = 1.5,
    eval_dlib: bool = True,
    eval_undefended: bool = True,
    pii_repeats: int = 1,
    warmup: bool = True,
    num_threads: Optional[int] = None,
    fast_critic_steps: Optional[int] = None,
    confirm_repeats: int = 0,
    progress: Optional[ProgressFn] = None,
) -> Dict[str, Any]:
    r"""Time the reference Crafter and the fast one until it reaches the reference's privacy (issue 5).

    The batch is the first ``batch`` of ``study.eval_indices()`` (private
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
        batch: faces in the batch (at least 2, for the held-out epsilon-PII).
        reference_steps: outer steps of the reference run.
        reference_kwargs: :class:`~facecraft.defenses.crafter.Crafter` keyword
            arguments that update the profile's ``BENCH_DEFAULTS[...]["reference"]``
            (Default: None, the profile's).
        fast_kwargs: the same for the fast configuration (Default: None).
        max_fast_steps: the most outer steps the fast configuration may take.
        tolerance: relative slack on epsilon-PII (Default: 0.10, issue 5's 10%).
        utility_tolerance: relative slack on the utility loss (Default: 0.0, "no worse").
        fast_start_steps: outer steps of the first fast chunk (Default: None:
            ``max(1, reference_steps // 4)``, capped at ``max_fast_steps``).
        growth: factor between successive chunk totals, > 1 (Default: 1.5).
        eval_dlib: judge Eval Acc with the dlib oracle (``study.dlib_oracle()``);
            otherwise with the Eval-network (``study.evalnet()``) (Default: True).
        eval_undefended: also measure the undefended release ``Enc(X)``
            (extra keys ``epsilon_undefended``, ``eval_acc_whitebox_undefended``,
            a yardstick for both) (Default: True).
        pii_repeats: seeded epsilon-PII estimates averaged per release (Default: 1).
        warmup: before timing, run each configuration once at the batch's shape
            with one iteration of every part, so neither timed run pays
            first-call costs (kernel selection, thread pools) (Default: True).
        num_threads: ``torch.set_num_threads`` for the call, restored afterwards
            (Default: None, leave it). On a CPU shared with other jobs, intra-op
            threads that outnumber the free cores can slow every operator down
            many times over (a 10-step critic loop took 0.7 s with 1 thread and
            28 s with 2 on a loaded 2-core machine); the value used is reported
            as ``torch_threads``.
        fast_critic_steps: updates of the fast configuration's critic, trained
            once on the study's public faces before the runs
            (:func:`~facecraft.defenses.fit_defender_critic`, timed apart as
            ``fast_setup_s``; ``ratio_with_setup`` charges it to this one batch)
            (Default: None: the profile's ``fast_critic``; 0: a fresh critic per batch).
        confirm_repeats: after the search, re-estimate epsilon-PII of the
            reference and of the accepted fast release with this many fresh
            seeds (``cfg.seed + 1001 + r``), since the search stops at the first
            chunk whose estimate passes: keys ``epsilon_reference_confirm``,
            ``epsilon_fast_confirm``, their single estimates and ``confirmed``
            (Default: 0, none).
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
        ValueError: bad step counts, batch, tolerances or growth, ``outer_steps``
            in the kwargs, or fewer than 2 eval faces.
    """
    for name, v in (
        ("reference_steps", reference_steps),
        ("max_fast_steps", max_fast_steps),
        ("pii_repeats", pii_repeats),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if (
        isinstance(confirm_repeats, bool)
        or not isinstance(confirm_repeats, int)
        or confirm_repeats < 0
    ):
        raise ValueError(f"confirm_repeats must be an integer >= 0, got {confirm_repeats!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ValueError(
            f"batch must be an integer >= 2 (epsilon-PII splits it in halves), got {batch!r}"
        )
    if not tolerance >= 0 or not utility_tolerance >= 0:
        raise ValueError(f"tolerances must be >= 0, got {tolerance} and {utility_tolerance}")
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    if fast_start_steps is not None and fast_start_steps < 1:
        raise ValueError(f"fast_start_steps must be >= 1, got {fast_start_steps}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _bench_craft(
            study,
            batch=batch,
            reference_steps=reference_steps,
            reference_kwargs=reference_kwargs,
            fast_kwargs=fast_kwargs,
            fast_critic_steps=fast_critic_steps,
            confirm_repeats=confirm_repeats,
            max_fast_steps=max_fast_steps,
            tolerance=tolerance,
            utility_tolerance=utility_tolerance,
            fast_start_steps=fast_start_steps,
            growth=growth,
            eval_dlib=eval_dlib,
            eval_undefended=eval_undefended,
            pii_repeats=pii_repeats,
            warmup=warmup,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads)


def _bench_craft(
    study: Study,
    *,
    batch: int,
    reference_steps: int,
    reference_kwargs: Optional[Dict[str, Any]],
    fast_kwargs: Optional[Dict[str, Any]],
    fast_critic_steps: Optional[int],
    confirm_repeats: int,
    max_fast_steps: int,
    tolerance: float,
    utility_tolerance: float,
    fast_start_steps: Optional[int],
    growth: float,
    eval_dlib: bool,
    eval_undefended: bool,
    pii_repeats: int,
    warmup: bool,
    progress: Optional[ProgressFn],
) -> Dict[str, Any]:
    """:func:`bench_craft` after its arguments are checked and the thread count set."""
    wall0 = time.perf_counter()
    defaults = bench_defaults(study.cfg.profile)
    ref_kw = _resolve_kwargs(defaults["reference"], reference_kwargs, "reference_kwargs")
    fast_kw = _resolve_kwargs(defaults["fast"], fast_kwargs, "fast_kwargs")
    fast_critic = _resolve_fast_critic(defaults["fast_critic"], fast_critic_steps)

    bench = CraftBench(
        study, batch, eval_dlib=eval_dlib, pii_repeats=pii_repeats, progress=progress
    )
    # once per deployment, on public faces: timed apart from the batch
    critic, setup_s = bench.defender_critic(fast_critic["steps"], fast_critic["faces"], fast_kw)
    if critic is not None:
        log.info(
            "bench fast: the defender's critic (%d updates, %d public faces) in %.2f s",
            fast_critic["steps"],
            fast_critic["faces"],
            setup_s,
        )
    if warmup:
        bench.warmup(ref_kw)
        bench.warmup(fast_kw, critic)

    # 1. the reference, timed, then measured
    ref_feats, reference_s, ref_crafter = bench.protect(ref_kw, reference_steps, "bench reference")
    ref_m = bench.measure(ref_feats)
    log.info(
        "bench reference: %d steps in %.2f s, epsilon %.4f, utility loss %.3g",
        reference_steps,
        reference_s,
        ref_m["epsilon"],
        ref_m["utility_loss"],
    )
    eps_bound = ref_m["epsilon"] + tolerance * abs(ref_m["epsilon"])
    util_bound = ref_m["utility_loss"] * (1.0 + utility_tolerance)

    # 2. the fast configuration in growing chunks until it reaches the reference
    search: List[Dict[str, Any]] = []
    fast_m: Dict[str, Any] = {}
    fast_s, fast_steps, fast_crafter, reached = math.nan, 0, None, False
    fast_feats = bench.f0
    for steps in _schedule(
        fast_start_steps or max(1, reference_steps // 4), max_fast_steps, growth
    ):
        feats, secs, crafter = bench.protect(fast_kw, steps, f"bench fast ({steps} steps)", critic)
        m = bench.measure(feats)
        reached = m["epsilon"] <= eps_bound and m["utility_loss"] <= util_bound
        search.append(
            {
                "steps": steps,
                "seconds": secs,
                "epsilon": m["epsilon"],
                "utility_loss": m["utility_loss"],
                "critic_epsilon": crafter.last_epsilon,
                "reached": reached,
            }
        )
        log.info(
            "bench fast: %d steps in %.2f s, epsilon %.4f (bound %.4f), utility loss %.3g (bound %.3g)%s",
            steps,
            secs,
            m["epsilon"],
            eps_bound,
            m["utility_loss"],
            util_bound,
            " reached" if reached else "",
        )
        fast_m, fast_s, fast_steps, fast_crafter, fast_feats = m, secs, steps, crafter, feats
        if reached:
            break

    out: Dict[str, Any] = {
        "batch": bench.n,
        "reference_s": reference_s,
        "fast_s": fast_s,
        "ratio": reference_s / fast_s if fast_s > 0 else math.inf,
        "epsilon_reference": ref_m["epsilon"],
        "epsilon_fast": fast_m["epsilon"],
        "utility_loss_reference": ref_m["utility_loss"],
        "utility_loss_fast": fast_m["utility_loss"],
        "eval_acc_whitebox_reference": ref_m["eval_acc"],
        "eval_acc_whitebox_fast": fast_m["eval_acc"],
        "reached": bool(reached),
        "fast_steps": fast_steps,
        "reference_kwargs": {**ref_kw, "outer_steps": reference_steps},
        "fast_kwargs": {**fast_kw, "outer_steps": fast_steps},
        "fast_critic": fast_critic,
        "fast_setup_s": setup_s,
        "ratio_with_setup": reference_s / (fast_s + setup_s) if fast_s + setup_s > 0 else math.inf,
        "device": str(study.device),
        # extras
        "profile": study.cfg.profile,
        "reference_steps": reference_steps,
        "eval_oracle": "dlib" if eval_dlib else "evalnet",
        "tolerance": tolerance,
        "utility_tolerance": utility_tolerance,
        "critic_epsilon_reference": ref_crafter.last_epsilon,
        "critic_epsilon_fast": fast_crafter.last_epsilon if fast_crafter is not None else None,
        "reference_s_per_step": reference_s / reference_steps,
        "fast_s_per_step": fast_s / fast_steps,
        "fast_search_s": sum(s["seconds"] for s in search),
        "search": search,
        "epsilon_pii_repeats": pii_repeats,
        "epsilons_reference": ref_m["epsilons"],
        "epsilons_fast": fast_m["epsilons"],
    }
    if confirm_repeats > 0:
        # the search stops at the first chunk whose (noisy) estimate passes: confirm on fresh seeds
        ref_c = bench.measure(ref_feats, seed_offset=1001, repeats=confirm_repeats)
        fast_c = bench.measure(fast_feats, seed_offset=1001, repeats=confirm_repeats)
        out["epsilon_reference_confirm"] = ref_c["epsilon"]
        out["epsilon_fast_confirm"] = fast_c["epsilon"]
        out["epsilons_reference_confirm"] = ref_c["epsilons"]
        out["epsilons_fast_confirm"] = fast_c["epsilons"]
        out["confirmed"] = fast_c["epsilon"] <= ref_c["epsilon"] + tolerance * abs(ref_c["epsilon"])
    if eval_undefended:
        none_m = bench.measure(bench.f0)
        out["epsilon_undefended"] = none_m["epsilon"]
        out["eval_acc_whitebox_undefended"] = none_m["eval_acc"]
    out["torch_threads"] = torch.get_num_threads()
    out["machine"] = machine_info(study.device)
    out["wall_s"] = time.perf_counter() - wall0
    log.info(
        "bench craft: ratio %.2f (reference %.2f s, fast %.2f s, %d steps, reached=%s)",
        out["ratio"],
        reference_s,
        fast_s,
        fast_steps,
        reached,
    )
    return out


def bench_spectrum(
    study: Study, *, batch: int = 32, inner_steps: int = 40, iters: int = 40
) -> Dict[str, Any]:
    r"""Spectrum of the inversion Hessian at the attacker's ``z*`` on private faces (issue 5; section 4's IHVP).

    On the first ``batch`` of ``study.eval_indices()``: ``z*`` from the amortizer
    plus ``inner_steps`` of the white-box inversion of the undefended features,
    then per sample the extreme eigenvalues of the exact Hessian ``H`` of
    ``||F - Enc(G(z))||^2`` and of its Gauss-Newton matrix
    (:func:`~facecraft.defenses.hypergrad.extreme_eigenvalues`, ``iters`` power
    iterations each). ``neumann_alpha_max = 2 / max lambda_max(H)`` is the
    largest Neumann step that converges on every face, ``neumann_residual_120``
    the fraction of the slowest component a 120-term series leaves at that step's
    0.95x, and ``condition`` the median ``lambda_max / lambda_min`` (CG needs
    about its square root of iterations).

    Returns:
        A JSON-able dict: ``batch``, ``inner_steps``, per-sample lists
        ``hessian_max``, ``hessian_min``, ``gauss_newton_max``,
        ``gauss_newton_min``, and the summaries above.
    """
    from facecraft.attacks.whitebox import invert_latent
    from facecraft.defenses.hypergrad import extreme_eigenvalues, gauss_newton_vp, inversion_hvp

    idx = study.eval_indices()[:batch]
    images = study.data.eval_test.float_images(idx).to(study.device)
    net, (gen, _), amor = study.target(), study.prior(), study.amortizer()
    with frozen(net.encoder, gen, amor):
        with torch.no_grad():
            feats = net.encoder(images)
            z0 = amor(feats)
        z = invert_latent(net.encoder, gen, feats, z0, steps=inner_steps)
        h_max, h_min = extreme_eigenvalues(
            inversion_hvp(net.encoder, gen, feats, z), z, iters=iters
        )
        g_max, g_min = extreme_eigenvalues(gauss_newton_vp(net.encoder, gen, z), z, iters=iters)
    alpha = 2.0 / float(h_max.max())
    return {
        "batch": int(idx.shape[0]),
        "inner_steps": inner_steps,
        "power_iters": iters,
        "hessian_max": h_max.tolist(),
        "hessian_min": h_min.tolist(),
        "gauss_newton_max": g_max.tolist(),
        "gauss_newton_min": g_min.tolist(),
        "neumann_alpha_max": alpha,
        "neumann_residual_120": float((1 - 0.95 * alpha * h_min.min().clamp_min(0)) ** 121),
        "condition": float((h_max / h_min.clamp_min(1e-12)).median()),
    }


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
) -> List[Tuple[str, float]]:
    """Where the fast Crafter configuration's time goes: the top functions by self time (issue 5).

    Runs the fast configuration (the profile's ``BENCH_DEFAULTS[...]["fast"]``
    updated by ``fast_kwargs``) once for ``outer_steps`` on the benchmark's
    batch (with the defender's pre-trained critic, trained untimed and
    unprofiled, as in :func:`bench_craft`), after an untimed warm-up, under ``torch.profiler`` (operator self
    time; on CUDA the device self time) or ``cProfile`` (Python function
    ``tottime``).

    Args:
        study: the study (data, target, prior, amortizer).
        batch: faces in the batch (the first of ``study.eval_indices()``).
        fast_kwargs: Crafter keyword arguments updating the profile's fast ones (Default: None).
        outer_steps: outer steps of the profiled run (Default: 5).
        top: how many functions to return (Default: 15).
        backend: ``"torch"`` or ``"cprofile"`` (Default: ``"torch"``).
        num_threads: ``torch.set_num_threads`` for the call, restored afterwards
            (Default: None, leave it; see :func:`bench_craft`).
        fast_critic_steps: updates of the pre-trained critic (Default: None, the
            profile's ``fast_critic``; 0: none, see :func:`bench_craft`).

    Returns:
        ``[(name, seconds), ...]``, at most ``top`` entries, largest self time first.

    Raises:
        ValueError: unknown backend, ``outer_steps`` or ``top`` < 1, or ``outer_steps`` in the kwargs.
    """
    if backend not in ("torch", "cprofile"):
        raise ValueError(f"backend must be 'torch' or 'cprofile', got {backend!r}")
    if outer_steps < 1 or top < 1:
        raise ValueError(f"outer_steps and top must be >= 1, got {outer_steps} and {top}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    defaults = bench_defaults(study.cfg.profile)
    fast_kw = _resolve_kwargs(defaults["fast"], fast_kwargs, "fast_kwargs")
    fast_critic = _resolve_fast_critic(defaults["fast_critic"], fast_critic_steps)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _profile_fast(study, batch, fast_kw, fast_critic, outer_steps, top, backend)
    finally:
        torch.set_num_threads(threads)


def _profile_fast(
    study: Study,
    batch: int,
    fast_kw: Dict[str, Any],
    fast_critic: Dict[str, int],
    outer_steps: int,
    top: int,
    backend: str,
) -> List[Tuple[str, float]]:
    bench = CraftBench(study, batch, eval_dlib=False, pii_repeats=1, progress=None)
    critic, _ = bench.defender_critic(fast_critic["steps"], fast_critic["faces"], fast_kw)
    bench.warmup(fast_kw, critic)
    crafter = bench.crafter(fast_kw, outer_steps, critic)
    if backend == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        try:
            crafter.protect(bench.images)
            _sync(study.device)
        finally:
            prof.disable()
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        rows = sorted(
            (
                (f"{fn} ({os.path.basename(path)}:{line})", float(v[2]))
                for (path, line, fn), v in stats.items()
            ),
            key=lambda r: -r[1],
        )
        return rows[:top]
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = study.device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        crafter.protect(bench.images)
        _sync(study.device)
    events = prof.key_averages()

    def self_us(e: Any) -> float:
        if cuda:
            return float(
                getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
            )
        return float(e.self_cpu_time_total)

    rows = sorted(((e.key, self_us(e) * 1e-6) for e in events), key=lambda r: -r[1])
    return rows[:top]


# -- helpers --------------------------------------------------------------------------------------


class CraftBench:
    """One batch of private faces, the study's models and the one measurement every release gets.

    :func:`bench_craft` and :func:`profile_fast` are built on it; scripts use it to
    compare Crafter configurations on the same batch (``benchmarks/fast_probe.py``).
    :meth:`protect` times one Crafter run; :meth:`measure` gives its utility loss,
    white-box epsilon-PII (CRAFTER.md section 3) and white-box Eval Acc.
    """

    def __init__(
        self,
        study: Study,
        batch: int,
        *,
        eval_dlib: bool,
        pii_repeats: int,
        progress: Optional[ProgressFn],
    ) -> None:
        self.study = study
        self.progress = progress
        self.eval_dlib = eval_dlib
        self.pii_repeats = pii_repeats
        idx = study.eval_indices()[:batch]
        if idx.shape[0] < 2:
            raise ValueError(
                f"the benchmark needs at least 2 eval faces, the study has {idx.shape[0]}"
            )
        test = study.data.eval_test
        dev = study.device
        self.n = int(idx.shape[0])
        self.images = test.float_images(idx).to(dev)
        self.labels = test.identities[idx]
        self.target = study.target()
        self.generator, _ = study.prior()
        self.amortizer = study.amortizer()
        with torch.no_grad(), frozen(self.target.encoder):
            self.f0 = self.target.encoder(self.images).detach()
        cfg = study.cfg
        gen = torch.Generator().manual_seed(cfg.seed + 5)
        z = torch.randn(max(64, self.n), self.generator.latent_dim, generator=gen).to(dev)
        with torch.no_grad(), frozen(self.generator):
            self.prior_samples = torch.cat(
                [self.generator(z[i : i + 128]) for i in range(0, z.shape[0], 128)]
            )
        self.pii_steps = int(cfg.eval.get("pii_steps", 300))
        self.pii_width = int(cfg.eval.get("pii_width", 32))
        self.attack = WhiteBoxAttack(
            self.target.encoder,
            self.generator,
            amortizer=self.amortizer,
            **dict(cfg.attacks.get("whitebox", {})),
        )

    def crafter(
        self, kwargs: Dict[str, Any], outer_steps: int, critic: Optional[torch.nn.Module] = None
    ) -> Crafter:
        """A Crafter with ``kwargs``, ``outer_steps`` and, when given, ``critic`` as its starting critic."""
        extra = {} if critic is None else {"critic": critic}
        return Crafter(
            self.target.encoder,
            self.target.head,
            self.generator,
            amortizer=self.amortizer,
            **{**kwargs, **extra, "outer_steps": outer_steps},
        )

    def defender_critic(
        self, steps: int, faces: int, kwargs: Dict[str, Any]
    ) -> Tuple[Optional[torch.nn.Module], float]:
        """The critic a Crafter with ``kwargs`` pre-trains on the study's first ``faces`` public faces, timed.

        :meth:`~facecraft.defenses.Crafter.fit` with ``critic_pretrain_steps=steps``
        (:func:`~facecraft.defenses.fit_defender_critic`: the critic's width, learning
        rate, GP weight and seed are those of ``kwargs``).

        Returns:
            ``(critic, seconds)``, or ``(None, 0.0)`` when ``steps`` is 0 (a fresh critic per batch).
        """
        if steps == 0:
            return None, 0.0
        crafter = self.crafter(
            {**kwargs, "critic_pretrain_steps": steps, "critic_pretrain_faces": faces}, 1
        )
        _sync(self.study.device)
        t0 = time.perf_counter()
        crafter.fit(self.study.data.public.images)
        _sync(self.study.device)
        return crafter.critic, time.perf_counter() - t0

    def warmup(self, kwargs: Dict[str, Any], critic: Optional[torch.nn.Module] = None) -> None:
        """One outer step at the batch's shape with one iteration of every part (untimed)."""
        kw = dict(kwargs)
        for k in ("inner_steps", "init_steps", "neumann_iters", "cg_iters", "critic_steps"):
            if kw.get(k) is not None and kw[k] > 0:
                kw[k] = 1
        self.crafter(kw, 1, critic).protect(self.images)

    def protect(
        self,
        kwargs: Dict[str, Any],
        outer_steps: int,
        desc: str,
        critic: Optional[torch.nn.Module] = None,
    ) -> Tuple[torch.Tensor, float, Crafter]:
        """Time one Crafter run of ``outer_steps`` on the batch: ``(features, seconds, crafter)``."""
        crafter = self.crafter(kwargs, outer_steps, critic)
        cb = None
        if self.progress is not None:
            progress = self.progress
            cb = lambda d, t, _s: progress(d, t, desc)
        _sync(self.study.device)
        t0 = time.perf_counter()
        feats = crafter.protect(self.images, progress=cb)
        _sync(self.study.device)
        return feats, time.perf_counter() - t0, crafter

    def measure(
        self, feats: torch.Tensor, *, seed_offset: int = 101, repeats: Optional[int] = None
    ) -> Dict[str, Any]:
        """Utility loss, white-box epsilon-PII and Eval Acc (top-1) of one release.

        epsilon-PII is the mean of ``repeats`` (Default: ``pii_repeats``) estimates
        seeded ``cfg.seed + seed_offset + r``; the single estimates are in ``epsilons``.
        """
        feats = feats.detach().to(self.f0.device, self.f0.dtype)
        utility = float((feats - self.f0).flatten(1).pow(2).mean(dim=1).mean())
        recon = self.attack(feats).detach().clamp(0, 1)
        prior = self.prior_samples.to(recon.device, recon.dtype)
        seed = self.study.cfg.seed + seed_offset
        eps = [
            float(
                epsilon_pii(
                    recon,
                    prior,
                    steps=self.pii_steps,
                    critic_width=self.pii_width,
                    generator=torch.Generator().manual_seed(seed + r),
                )
            )
            for r in range(self.pii_repeats if repeats is None else repeats)
        ]
        if self.eval_dlib:
            oracle = self.study.dlib_oracle()
            scores = oracle.scores_from_embeddings(oracle.embed(recon.float().cpu()))
        else:
            net = self.study.evalnet()
            scores = net.scores(recon.to(net.device)).cpu()
        acc = float(topk_accuracy(scores.cpu(), self.labels, k=1))
        return {
            "epsilon": sum(eps) / len(eps),
            "utility_loss": utility,
            "eval_acc": acc,
            "epsilons": eps,
        }


def _resolve_kwargs(
    defaults: Dict[str, Any], given: Optional[Dict[str, Any]], name: str
) -> Dict[str, Any]:
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


def _resolve_fast_critic(default: Dict[str, int], steps: Optional[int]) -> Dict[str, int]:
    out = dict(default)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"fast_critic_steps must be an integer >= 0, got {steps!r}")
        out["steps"] = steps
    return out


def _schedule(start: int, stop: int, growth: float) -> List[int]:
    """Chunk totals ``start, ceil(start * growth), ...`` strictly increasing, ending at ``stop``."""
    out = [min(start, stop)]
    while out[-1] < stop:
        out.append(min(stop, max(out[-1] + 1, math.ceil(out[-1] * growth))))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_latency(
    encoder: torch.nn.Module,
    defense: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    batch_sizes: Tuple[int, ...] = (1, 64),
    repeats: int = 20,
    num_threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Per-image latency of ``defense(images)`` as a multiple of the encoder's own forward (issues 5 and 16).

    Both are timed in this process, interleaved (encoder, defence, encoder, ...)
    so that a noisy machine slows both alike; each figure is the median over
    ``repeats`` calls, after one warm-up call each. ``defense`` is any callable
    images -> features: a trained defence (its input checks included) or an
    exported protector. ``images`` needs at least ``max(batch_sizes)`` rows.

    Returns:
        ``{"threads", "by_batch": {b: {"encoder_ms_per_image", "defense_ms_per_image", "ratio"}}}``.
    """
    import statistics

    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if images.shape[0] < max(batch_sizes):
        raise ValueError(
            f"bench_latency needs {max(batch_sizes)} images for batch {max(batch_sizes)}, "
            f"got {images.shape[0]}"
        )
    out: Dict[str, Any] = {"threads": torch.get_num_threads(), "by_batch": {}}
    try:
        for b in batch_sizes:
            x = images[:b]
            with torch.no_grad():
                encoder(x), defense(x)
            enc_t, def_t = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                with torch.no_grad():
                    encoder(x)
                enc_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                defense(x)
                def_t.append(time.perf_counter() - t0)
            e, d = statistics.median(enc_t) / b, statistics.median(def_t) / b
            out["by_batch"][str(b)] = {
                "encoder_ms_per_image": 1e3 * e,
                "defense_ms_per_image": 1e3 * d,
                "ratio": d / e,
            }
    finally:
        torch.set_num_threads(old)
    return out


def bench_protector_latency(
    encoder: torch.nn.Module,
    defense: Any,
    images: torch.Tensor,
    *,
    batch_sizes: Tuple[int, ...] = (1, 64),
    repeats: int = 20,
    num_threads: Optional[int] = None,
) -> Dict[str, Any]:
    """:func:`bench_latency` of a defence's call, plus, for an exportable defence (its ``edge_module()``, issue 16), of
    that bare network (what ``facecraft export`` writes and a device runs, without the Python API's input
    and output checks) under ``"edge_module"``."""
    out = bench_latency(
        encoder, defense, images, batch_sizes=batch_sizes, repeats=repeats, num_threads=num_threads
    )
    if defense.exportable:
        module = defense.edge_module()
        with torch.no_grad():
            edge = bench_latency(
                encoder,
                module,
                images,
                batch_sizes=batch_sizes,
                repeats=repeats,
                num_threads=num_threads,
            )
        out["edge_module"] = edge["by_batch"]
    return out


def bench_train_steps(
    cfg: Any,
    *,
    image_size: Optional[int] = None,
    num_outputs: int = 40,
    repeats: int = 5,
    num_threads: Optional[int] = None,
) -> Dict[str, float]:
    """Seconds per optimisation step of the three foundation trainings of ``cfg`` (a RunConfig), on
    random data of the profile's shapes: target (BCE step), prior (``n_critic`` critic steps with
    gradient penalty + one generator step) and amortizer. Mean over ``repeats`` after one warm-up step.
    Multiply by the profile's step counts to predict a training's wall time on this machine."""
    import torch.nn.functional as nnf

    from facecraft.models import (
        Amortizer,
        Critic,
        Generator,
        build_target,
        feature_shape,
        gradient_penalty,
    )

    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        m, s = cfg.model, image_size or cfg.data.image_size
        torch.manual_seed(0)
        net = build_target(m.target_arch, num_outputs=num_outputs, width=m.target_width)
        g, d = Generator(m.latent_dim, s, m.generator_width), Critic(s, m.critic_width)
        amor = Amortizer(feature_shape(net.encoder, s), m.latent_dim, m.amortizer_width)
        opt_t, opt_g = torch.optim.Adam(net.parameters()), torch.optim.Adam(g.parameters())
        opt_d, opt_a = torch.optim.Adam(d.parameters()), torch.optim.Adam(amor.parameters())
        gp_gen = torch.Generator().manual_seed(0)
        tb, pb, ab = cfg.target.batch_size, cfg.prior.batch_size, cfg.amortizer.batch_size

        def target_step() -> None:
            x, y = torch.rand(tb, 3, s, s), (torch.rand(tb, num_outputs) > 0.5).float()
            loss = nnf.binary_cross_entropy_with_logits(net(x), y)
            opt_t.zero_grad()
            loss.backward()
            opt_t.step()

        def prior_step() -> None:
            for _ in range(cfg.prior.n_critic):
                real = torch.rand(pb, 3, s, s)
                with torch.no_grad():
                    fake = g(torch.randn(pb, m.latent_dim))
                loss = (
                    d(fake).mean()
                    - d(real).mean()
                    + cfg.prior.gp_weight * gradient_penalty(d, real, fake, gp_gen)
                )
                opt_d.zero_grad()
                loss.backward()
                opt_d.step()
            loss = -d(g(torch.randn(pb, m.latent_dim))).mean()
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()

        def amortizer_step() -> None:
            z = torch.randn(ab, m.latent_dim)
            with torch.no_grad():
                f = net.encoder(g(z))
            loss = nnf.mse_loss(amor(f), z)
            opt_a.zero_grad()
            loss.backward()
            opt_a.step()

        out: Dict[str, float] = {"threads": float(torch.get_num_threads())}
        for name, fn in (
            ("target", target_step),
            ("prior", prior_step),
            ("amortizer", amortizer_step),
        ):
            fn()
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            out[f"{name}_s_per_step"] = (time.perf_counter() - t0) / repeats
        return out
    finally:
        torch.set_num_threads(old)
