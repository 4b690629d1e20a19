"""The run profiles and their ``bench craft`` presets (STYLE.md rule 6), one module per profile.

``tiny`` runs in seconds for tests, ``small`` is a real CPU study on the shared
data, ``paper`` carries the paper's hyperparameters for a GPU (CRAFTER.md
sections 2-4). Each profile module builds a
:class:`~facecraft.experiments.config.RunConfig` from named parts (data,
models, attacks, defences, evaluation) and holds its preset of ``facecraft bench
craft`` (:data:`BENCH_DEFAULTS`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Dict

from facecraft.experiments.config import PROFILE_NAMES, RunConfig
from facecraft.experiments.profiles import paper, small, tiny

__all__ = ["PROFILES", "profile_config", "BENCH_DEFAULTS", "bench_defaults"]

#: profile name -> builder of its :class:`~facecraft.experiments.config.RunConfig`
PROFILES: Dict[str, Callable[[], RunConfig]] = {
    "tiny": tiny.config,
    "small": small.config,
    "paper": paper.config,
}
assert tuple(PROFILES) == PROFILE_NAMES, "config.PROFILE_NAMES names the profiles built here"

#: Per-profile presets of ``facecraft bench craft``: the reference and fast Crafter keyword
#: arguments (``outer_steps`` is set by the benchmark), the fast configuration's critic
#: pre-training (``fast_critic``: updates and public faces, see
#: :func:`~facecraft.defenses.fit_defender_critic`) and the suggested ``reference_steps`` /
#: ``max_fast_steps``. Why these values: docs/BENCHMARKS.md, "Notes behind the bench defaults".
BENCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "tiny": tiny.BENCH,
    "small": small.BENCH,
    "paper": paper.BENCH,
}


def profile_config(name: str, **overrides: Any) -> RunConfig:
    """The :class:`~facecraft.experiments.config.RunConfig` of profile ``name``, its top-level
    fields replaced by ``overrides``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[name](), **overrides)


def bench_defaults(profile: str) -> Dict[str, Any]:
    """A deep copy of :data:`BENCH_DEFAULTS` for ``profile`` (``paper``'s for unknown names, e.g.
    ``custom``)."""
    return copy.deepcopy(BENCH_DEFAULTS.get(profile, BENCH_DEFAULTS["paper"]))
