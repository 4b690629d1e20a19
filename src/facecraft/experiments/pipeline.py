"""The whole study behind ``facecraft demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from facecraft.experiments.config import RunConfig
from facecraft.experiments.study import Study

__all__ = ["run_demo"]


def run_demo(cfg: RunConfig, run_dir: Path, *, data_root: Optional[str] = None,
             progress: Optional[Callable[[int, int, str], None]] = None) -> Path:
    """Prepare data and train the models of ``cfg`` in ``run_dir``; returns the run directory."""
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    study.data
    study.target()
    study.prior()
    study.amortizer()
    return Path(run_dir)
