"""``results.json``: every cell of a study in one file, with what a reader needs to judge them.

Besides the rows (one per defence setting and attack) it records the attacked
faces' identities (the order of every row's per-face hits, for paired tests),
chance, the oracle's ceiling on real faces, the adaptive attackers' curves, the
configuration, and the run's wall time and peak memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from facecraft._io import atomic_write_json, read_json, save_checkpoint
from facecraft.experiments.config import config_to_dict
from facecraft.experiments.evaluate import EvalContext, oracle_ceiling
from facecraft.experiments.study import Study

__all__ = ["GRID_FACES", "peak_rss_mb", "write_results"]

#: reconstructions (and originals) stored per cell for the report's grid
GRID_FACES = 6

STATISTICS = (
    "ci95: 95% percentile bootstrap over identities (2,000 resamples); wilson95: per-face "
    "Wilson score interval; exposed_identities: share of identities with a face identified "
    "(top-1); hits: per-face 0/1 in the order of labels"
)


def write_results(
    study: Study,
    cells: Path,
    ctx: EvalContext,
    rows: List[Dict[str, Any]],
    out_dir: Optional[Path] = None,
    wall_seconds: Optional[float] = None,
) -> Path:
    """Write ``results.json`` (the issue-3 schema plus curves and config) to ``out_dir`` (default:
    the run directory) and the first attacked faces to ``cells`` (for the report's grid).

    Args:
        study: the study the rows were measured in.
        cells: the cells folder the rows come from.
        ctx: the attacked faces.
        rows: finished cells (:meth:`~facecraft.experiments.runner.StudyRunner.run_setting`).
        out_dir: where ``results.json`` goes.
        wall_seconds: the wall-clock time of the invocation that computed them (a resumed run's is
            only that of its last invocation).

    Returns:
        The path of ``results.json``.
    """
    cfg = study.cfg
    out_dir = Path(out_dir or study.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ceiling = oracle_ceiling(ctx)
    data, private = study.data, study.private
    results = {
        "dataset": cfg.data.dataset if private is data else private.manifest.get("dataset"),
        "profile": cfg.profile,
        "synthetic": bool(data.synthetic),
        "n_identities": private.eval_train.num_identities,
        "n_images": int(ctx.originals.shape[0]),
        "n_identities_attacked": int(ctx.labels.unique().numel()),
        # the attacked faces' identities, in the order of every row's per-face "hits" (paired tests)
        "labels": ctx.labels.tolist(),
        "chance": 1.0 / private.eval_train.num_identities,
        "utility_faces": _utility_faces(study),
        "oracle_ceiling": ceiling["top1"],
        "oracle_ceiling_top5": ceiling["top5"],
        "statistics": STATISTICS,
        "target_mean_auc_eval_test": read_json(study.run_dir / "stages.json")["stages"]
        .get("target", {})
        .get("metrics", {}),
        "rows": [{k: v for k, v in r.items() if k != "history"} for r in rows],
        "adaptive_curves": [
            {k: r[k] for k in ("defense", "param", "attack", "history")}
            for r in rows
            if r.get("history")
        ],
        "config": config_to_dict(cfg),
        "cells": os.path.relpath(cells, out_dir),
        "run_dir": os.path.relpath(study.run_dir, out_dir),
        "wall_seconds": wall_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    save_checkpoint(cells / "originals", {"images": ctx.originals[:GRID_FACES]}, kind="originals")
    atomic_write_json(out_dir / "results.json", results)
    return out_dir / "results.json"


def peak_rss_mb() -> float:
    """Peak resident memory in MiB of this process or of any finished child (pool workers),
    whichever is larger (``getrusage``; Linux reports KiB, macOS bytes)."""
    import resource  # POSIX only

    unit = 1 if sys.platform == "darwin" else 1024
    peak = max(
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return round(peak * unit / 2**20, 1)


def _utility_faces(study: Study) -> str:
    """Which faces the mean AUC is measured on (the attacked ones, or the study's own)."""
    if study.private is study.data:
        return "the attacked faces"
    n = study.cfg.eval.get("utility_faces", 512)
    return (
        f"{n} private test faces of the study's own data ({study.cfg.data.dataset}, attributes): "
        f"the private pool ({study.private.manifest.get('dataset')}) has no attributes"
    )
