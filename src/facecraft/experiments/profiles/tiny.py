"""The ``tiny`` profile: a few iterations of everything, for tests (seconds, synthetic faces).

:func:`config` assembles the run from its parts (data, models, attacks, defences, evaluation);
:data:`BENCH` is this profile's preset of ``facecraft bench craft``.
"""

from __future__ import annotations

from typing import Any, Dict

from facecraft.data.config import DataConfig
from facecraft.experiments.config import (
    AmortizerTrainConfig,
    ModelConfig,
    PriorTrainConfig,
    RunConfig,
    TargetTrainConfig,
)

__all__ = ["BENCH", "config"]

Settings = Dict[str, Dict[str, Any]]


def config() -> RunConfig:
    """The ``tiny`` profile's :class:`~facecraft.experiments.config.RunConfig`."""
    return RunConfig(
        profile="tiny",
        data=DataConfig(
            dataset="synthetic", image_size=32, min_private_images=6, eval_test_fraction=0.34
        ),
        **_models(),
        attacks=_attacks(),
        defenses={**_baselines(), **_crafters()},
        eval=_eval(),
    )


def _models() -> Dict[str, Any]:
    return {
        "model": ModelConfig(
            target_width=0.25,
            latent_dim=32,
            generator_width=16,
            critic_width=16,
            decoder_width=32,
            amortizer_width=8,
        ),
        "target": TargetTrainConfig(epochs=2, batch_size=64),
        "prior": PriorTrainConfig(steps=30, batch_size=32, n_critic=2, lr=2e-4, sample_every=15),
        "amortizer": AmortizerTrainConfig(steps=30, batch_size=32),
    }


def _attacks() -> Settings:
    return {
        "whitebox": {"steps": 15},
        "blackbox": {"epochs": 2, "batch_size": 32, "width": 16},
        "hybrid": {"steps": 10},
        "adaptive-whitebox": {
            "epochs": 2,
            "inner_steps": 5,
            "init_steps": 10,
            "steps": 10,
            "batch_size": 16,
        },
        "adaptive-blackbox": {"epochs": 2, "batch_size": 16, "val_fraction": 0.25},
        "embedding": {"epochs": 3, "width": 8, "batch_size": 32, "patience": 2},
        "adaptive-embedding": {"epochs": 3, "batch_size": 16, "patience": 2},
    }


def _baselines() -> Settings:
    return {
        "none": {},
        "noise": {"sweep": {"param": "sigma", "values": [1.0]}},
        "advlearn": {
            "kwargs": {"epochs": 1, "decoder_width": 16},
            "sweep": {"param": "lam", "values": [1.0]},
        },
        "disco": {
            "kwargs": {"epochs": 1, "pruner_width": 8, "decoder_width": 16},
            "sweep": {"param": "ratio", "values": [0.5]},
        },
        "crafter-z": {
            "kwargs": {"steps": 4, "critic_steps": 2, "critic_width": 8, "init_steps": 5},
            "sweep": {"param": "beta", "values": [1.0]},
        },
    }


def _fast_step() -> Dict[str, Any]:
    """crafter-fast's tiny step, also distilled-crafter's teacher (a fresh dict each call)."""
    return {
        "outer_steps": 3,
        "inner_steps": 2,
        "init_steps": 5,
        "critic_width": 8,
        "critic_pretrain_steps": 3,
        "critic_pretrain_faces": 16,
    }


def _crafters() -> Settings:
    return {
        "crafter": {
            "kwargs": {
                "outer_steps": 3,
                "inner_steps": 3,
                "init_steps": 5,
                "critic_steps": 2,
                "critic_width": 8,
                "solver": "gn-cg",
                "cg_iters": 3,
                "warm_start": True,
            },
            "sweep": {"param": "beta", "values": [1.0, 10.0]},
        },
        "amortized-crafter": {
            "kwargs": {
                "steps": 4,
                "batch_size": 8,
                "width": 8,
                "inner_steps": 3,
                "critic_steps": 2,
                "critic_width": 8,
                "cg_iters": 3,
            },
            "sweep": {"param": "beta", "values": [1.0]},
            "demo": False,
        },
        "crafter-fast": {
            "kwargs": _fast_step(),
            "sweep": {"param": "beta", "values": [5.0]},
            "demo": False,
        },
        "distilled-crafter": {
            "kwargs": {
                "teacher_kwargs": _fast_step(),
                "width": 8,
                "epochs": 3,
                "batch_size": 8,
                "val_fraction": 0.25,
            },
            "sweep": {"param": "beta", "values": [5.0]},
            "demo": False,
        },
    }


def _eval() -> Dict[str, Any]:
    return {
        "n_images": 8,
        "n_images_by_attack": {"whitebox": 6},
        "pii_steps": 10,
        "pii_width": 8,
        "adaptive_public": 16,
        "adaptive_public_by_attack": {"adaptive-whitebox": 12},
        "adaptive_curve_images": 4,
        # the embedding attacks learn dlib's embedding of 64 public faces (dlib: ~0.15 s a face
        # on the CPU)
        "embedding_public": 64,
        "evalnet": {"epochs": 3, "width": 0.25},
        "train_scenario": {"images": 24, "epochs": 5},
    }


#: ``facecraft bench craft``'s preset: a few iterations of everything (docs/BENCHMARKS.md, "Notes
#: behind the bench defaults")
BENCH: Dict[str, Any] = {
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
}
