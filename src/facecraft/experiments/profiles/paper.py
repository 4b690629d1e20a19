"""The ``paper`` profile: the paper's hyperparameters (CRAFTER.md sections 2-4), for a GPU.

:func:`config` is the run (the configs' defaults are the paper's); :data:`BENCH` is this
profile's preset of ``facecraft bench craft``.
"""

from __future__ import annotations

from typing import Any, Dict

from facecraft.data.config import DataConfig
from facecraft.experiments.config import RunConfig

__all__ = ["BENCH", "config"]


def config() -> RunConfig:
    """The ``paper`` profile's :class:`~facecraft.experiments.config.RunConfig`."""
    return RunConfig(
        profile="paper",
        data=DataConfig(dataset="celeba", image_size=64),
        eval={"n_images": None},
        attacks={"adaptive-whitebox": {"lr": 1e-3}},
    )  # the release's RMSProp step (see its Note)


#: ``facecraft bench craft``'s preset: the paper's values (inner 80, Neumann 120, critic 10 steps
#: of width 64, 450 outer steps; docs/BENCHMARKS.md, "Notes behind the bench defaults")
BENCH: Dict[str, Any] = {
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
}
