"""``facecraft demo``: the whole study of a profile, defences x attacks, evaluated, with a report.

It trains what the settings share (:func:`~facecraft.experiments.pool.train_shared`), runs every
defence setting of the profile through :class:`~facecraft.experiments.runner.StudyRunner` (here, one
after the other, or in worker processes), writes ``results.json`` and draws the report. Every cell
is stored as it finishes, so a killed demo resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from facecraft._locks import holds_run_dir
from facecraft._torchutils import torch_threads
from facecraft.experiments.config import RunConfig
from facecraft.experiments.grid import Setting, defense_grid, selected_attacks
from facecraft.experiments.pool import run_settings, study_threads, train_shared
from facecraft.experiments.report import build_report
from facecraft.experiments.results import write_results
from facecraft.experiments.runner import ProgressFn, StudyRunner
from facecraft.experiments.study import Study

__all__ = ["build_report", "run_demo"]


@holds_run_dir
def run_demo(
    cfg: RunConfig,
    run_dir: Path,
    *,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    attacks: Optional[List[str]] = None,
    defenses: Optional[List[str]] = None,
    workers: int = 1,
    finished_only: bool = False,
) -> Path:
    """Run (or resume) the study of ``cfg`` in ``run_dir``; writes ``results.json`` and the report.

    Args:
        cfg: the run's configuration (profile).
        run_dir: where everything is stored and reused.
        data_root: dataset folder or its parent (else ``FACECRAFT_DATA``).
        progress: ``progress(done, total, desc)``.
        attacks: attack names to run (default: ``cfg.eval['attacks']`` or :data:`DEMO_ATTACKS`).
        defenses: defence names to run (default: every one in ``cfg.defenses``).
        workers: defence settings run at once in separate processes
            (:func:`facecraft.experiments.pool.run_settings`); 1 runs them here, one after the
            other.
        finished_only: compute no cell: write the results and report of the cells finished so far
            (to look at a long run while it goes on, or after it was stopped).

    Returns:
        The path of ``report.html``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = _demo_settings(cfg, defenses)
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    demo = StudyRunner(study, progress)
    names = selected_attacks(cfg, attacks)
    rows: List[Dict[str, Any]] = []
    if finished_only:
        for setting in settings:
            rows += demo.finished_rows(setting, names)
        if not rows:
            raise ValueError(f"no finished cell in {demo.cells}: nothing to report yet")
        write_results(study, demo.cells, demo.context(), rows)
        return build_report(study.run_dir)
    if progress:
        progress(0, len(settings), "defence settings")
    with torch_threads(study_threads()):
        train_shared(demo, names, workers=workers, data_root=data_root)
        ctx = demo.context()
        if workers > 1:
            rows = run_settings(
                cfg,
                study.run_dir,
                settings,
                names,
                workers=workers,
                data_root=data_root,
                progress=progress,
                run_started=study.run_started,
            )
        else:
            for i, setting in enumerate(settings):
                rows += demo.run_setting(setting, names, ctx)
                if progress:
                    progress(i + 1, len(settings), "defence settings")
    write_results(study, demo.cells, ctx, rows, wall_seconds=time.time() - study.run_started)
    return build_report(study.run_dir)


def _demo_settings(cfg: RunConfig, defenses: Optional[List[str]]) -> List[Setting]:
    """The settings of ``cfg``'s grid the demo runs: those of ``defenses`` (names in the profile),
    or every defence whose spec does not say ``"demo": False``."""
    if defenses is not None:
        unknown = set(defenses) - set(cfg.defenses)
        if unknown:
            raise ValueError(
                f"defences {sorted(unknown)} are not in the {cfg.profile} profile; "
                f"choose from {sorted(cfg.defenses)}"
            )
        return [st for st in defense_grid(cfg) if st.name in defenses]
    return [st for st in defense_grid(cfg) if cfg.defenses[st.name].get("demo", True)]
