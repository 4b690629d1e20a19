"""A study's private pool taken from another face set: ``facecraft demo --dataset lfw``.

The paper also measures on LFW, whose faces carry no attributes here, so the target network (an
attribute classifier) cannot be trained on it. The study therefore keeps its own data for
everything the attacker and the target learn (the public CelebA faces, with attributes) and takes
from the other set only the private identities: whose faces are released, attacked and identified
(``eval_test``) and the oracles' gallery (``eval_train``), e.g. the LFW people with at least 10
images. The other set is prepared like the study's data (the same image size; LFW deep-funneled
images are cut to their central 60% square, about the framing of the CelebA chips, then resized).
Utility is then measured where attributes exist: the mean AUC of the cloud head on the release of
the study's own private test faces (``eval.utility_faces`` of them, spread over identities).

Models that learn from public faces only keep their keys (a run directory's trained target, prior,
amortizer and decoders are reused); everything that reads the private pool is keyed by it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from facecraft._io import config_hash
from facecraft.data import prepare_data, resolve_dataset_root
from facecraft.data.config import DataConfig
from facecraft.data.types import PreparedData
from facecraft.experiments.config import RunConfig, config_to_dict

__all__ = ["POOL_DATASETS", "pool_spec", "prepare_pool", "with_private_pool"]

#: face sets a private pool can come from (no attributes needed)
POOL_DATASETS = ("lfw", "folder", "celeba", "celeba-official")


def with_private_pool(
    cfg: RunConfig, dataset: str, *, min_images: int = 10, utility_faces: int = 512
) -> RunConfig:
    """``cfg`` whose private identities come from ``dataset`` (its people with at least
    ``min_images`` images), split like the study's data (``data.eval_test_fraction``)."""
    if dataset not in POOL_DATASETS:
        raise ValueError(f"--dataset {dataset}: a private pool comes from one of {POOL_DATASETS}")
    spec = {
        "dataset": dataset,
        "min_images": int(min_images),
        "eval_test_fraction": float(cfg.data.eval_test_fraction),
    }
    return dataclasses.replace(
        cfg, eval={**cfg.eval, "private_pool": spec, "utility_faces": int(utility_faces)}
    )


def pool_spec(cfg: RunConfig) -> Optional[Dict[str, Any]]:
    """``cfg.eval['private_pool']``, or ``None`` when the study's own data is the private pool."""
    spec = cfg.eval.get("private_pool")
    return dict(spec) if spec else None


def prepare_pool(
    cfg: RunConfig, run_dir, data_root: Optional[str], progress=None, force: bool = False
) -> PreparedData:
    """The private pool of ``cfg`` prepared (or read back) under ``run_dir/pool-<hash>``: its
    ``eval_train`` and ``eval_test`` are the study's gallery and attacked faces."""
    spec = pool_spec(cfg)
    if spec is None:
        raise ValueError("this study has no separate private pool")
    dcfg = DataConfig(
        dataset=spec["dataset"],
        image_size=cfg.data.image_size,
        min_private_images=int(spec["min_images"]),
        eval_test_fraction=float(spec["eval_test_fraction"]),
        seed=cfg.data.seed,
    )
    dcfg = dataclasses.replace(dcfg, root=str(resolve_dataset_root(dcfg.dataset, data_root)))
    cache_dir = run_dir / f"pool-{config_hash(config_to_dict(dcfg))}"
    return prepare_data(dcfg, cache_dir, progress=progress, force=force)
