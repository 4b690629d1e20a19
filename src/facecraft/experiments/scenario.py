"""Training-scenario utility (CRAFTER.md section 1): the cloud trains its head on released features.

In the inference scenario the cloud's head was trained on raw features and reads
the defence's release; in the training scenario the cloud trains a fresh head on
the defence's release of private training images. A defence that keeps utility
only because the fixed head tolerates its change shows it here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import torch

from facecraft._io import atomic_write_json, read_json
from facecraft.experiments.evaluate import EvalContext, utility_metrics
from facecraft.experiments.study import Study
from facecraft.models.train import train_head

__all__ = ["train_scenario_utility"]

#: ``release(images) -> (features, seconds)``: the defence's stored release of private training
#: images
ReleaseFn = Callable[[torch.Tensor], Tuple[torch.Tensor, float]]


def train_scenario_utility(
    study: Study,
    path: Path,
    release: ReleaseFn,
    head: torch.nn.Module,
    released: torch.Tensor,
    ctx: EvalContext,
) -> Dict[str, Any]:
    """A fresh copy of the cloud ``head`` trained on the defence's ``release`` of
    ``eval.train_scenario.images`` private training images, and its mean AUC on ``released`` (the
    attacked faces' release).

    Stored at ``path`` (a JSON file, read back when it exists); ``{}`` when the profile has no
    ``train_scenario`` or the data no attributes.
    """
    cfg = study.cfg
    spec = cfg.eval.get("train_scenario")
    train = study.data.eval_train
    if not spec or train.attributes is None or ctx.attributes is None:
        return {}
    if path.exists():
        return read_json(path)
    n = min(int(spec.get("images", 256)), len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 31))[:n]
    feats, secs = release(train.float_images(idx))
    t0 = time.time()
    trained = train_head(
        head,
        feats,
        train.attributes[idx],
        epochs=int(spec.get("epochs", 20)),
        lr=float(spec.get("lr", 1e-3)),
        device=study.device,
        seed=cfg.seed,
    )
    out = {
        "mean_auc_train_scenario": utility_metrics(released, trained, ctx)["mean_auc"],
        "train_scenario_images": n,
        "train_scenario_seconds": secs + time.time() - t0,
    }
    atomic_write_json(path, out)
    return out
