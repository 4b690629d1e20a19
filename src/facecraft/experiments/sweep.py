"""``facecraft sweep``: a grid of defence parameters, its settings run in parallel processes.

A sweep replaces a profile's defence grid by one or more axes (``-g noise:sigma=0.5,1,2``) and runs
every setting through the demo's own code path
(:meth:`facecraft.experiments.runner.StudyRunner.run_setting`), so its cells are stored, resumable
and identical to the demo's; settings run in parallel on any backend of
:mod:`facecraft.experiments.pool`.

The merged ``results.json`` and report go to ``RUN_DIR/sweeps/<name>/``, so a
sweep in the demo's run directory reuses its trained models without touching
the demo's own report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from facecraft._io import config_hash
from facecraft._locks import holds_run_dir
from facecraft._validation import check_number, check_path_name
from facecraft.defenses import available_defenses, get_defense_class
from facecraft.defenses.base import numeric_parameters, scalar_parameters
from facecraft.experiments.config import RunConfig, config_to_dict
from facecraft.experiments.grid import defense_grid, selected_attacks
from facecraft.experiments.pool import BACKENDS, run_settings, train_shared
from facecraft.experiments.report import build_report
from facecraft.experiments.results import write_results
from facecraft.experiments.runner import ProgressFn, StudyRunner
from facecraft.experiments.study import Study

__all__ = ["SweepAxis", "parse_axis", "parse_fixed", "run_sweep", "sweep_config"]


@dataclasses.dataclass(frozen=True)
class SweepAxis:
    """One defence and the values of one of its constructor parameters, e.g.
    ``noise:sigma=0.5,1,2``."""

    defense: str
    param: str
    values: Tuple[float, ...]

    def __post_init__(self) -> None:
        if self.defense not in available_defenses():
            raise ValueError(
                f"unknown defence {self.defense!r}; choose from {sorted(available_defenses())}"
            )
        if not self.values:
            raise ValueError(f"sweep of {self.defense}.{self.param} has no values")
        valid = numeric_parameters(get_defense_class(self.defense))
        if self.param not in valid:
            raise ValueError(
                f"{self.defense} has no numeric parameter {self.param!r}; "
                f"choose from {', '.join(valid)}"
            )
        for v in self.values:
            check_number(f"{self.defense}:{self.param}", v)


def parse_axis(text: str) -> SweepAxis:
    """Parse ``"defence:param=v1,v2,..."`` (the ``--grid`` option of ``facecraft sweep``)."""
    try:
        name, rest = text.split(":", 1)
        param, vals = rest.split("=", 1)
        values = tuple(float(v) for v in vals.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"expected DEFENCE:PARAM=V1,V2,... (e.g. noise:sigma=0.5,1,2), got {text!r}"
        ) from None
    return SweepAxis(name.strip(), param.strip(), values)


def parse_fixed(text: str) -> Tuple[str, str, Any]:
    """Parse ``"defence:key=value"`` (the ``--set`` option of ``facecraft sweep``): a constructor
    argument held fixed over the sweep, e.g. ``crafter-fast:utility=task``. The value is read as
    an int, a float, ``true``/``false``, or else kept as a string."""
    try:
        name, rest = text.split(":", 1)
        key, raw = (part.strip() for part in rest.split("=", 1))
    except ValueError:
        raise ValueError(
            f"expected DEFENCE:KEY=VALUE (e.g. crafter-fast:utility=task), got {text!r}"
        ) from None
    name = name.strip()
    if name not in available_defenses():
        raise ValueError(f"unknown defence {name!r}; choose from {sorted(available_defenses())}")
    valid = scalar_parameters(get_defense_class(name))
    if key not in valid:
        raise ValueError(f"{name} has no parameter {key!r} to set; choose from {', '.join(valid)}")
    value: Any = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
    return name, key, value


def sweep_config(
    cfg: RunConfig,
    axes: Sequence[SweepAxis],
    *,
    include_none: bool = True,
    fixed: Sequence[Tuple[str, str, Any]] = (),
) -> RunConfig:
    """``cfg`` with its defence grid replaced by ``axes`` (each keeps the profile's other kwargs for
    that defence, and takes the ``fixed`` ``(defence, key, value)`` arguments of
    :func:`parse_fixed`), plus the unprotected reference ``none`` unless ``include_none`` is
    False."""
    if not axes:
        raise ValueError("a sweep needs at least one DEFENCE:PARAM=VALUES axis")
    swept = {ax.defense: ax.param for ax in axes}
    for name, key, _ in fixed:
        if name not in swept:
            raise ValueError(f"--set {name}:{key}=...: {name} is not swept (no -g {name}:...)")
        if key == swept[name]:
            raise ValueError(f"--set {name}:{key}=...: {key} is the swept parameter")
    defenses: Dict[str, Dict[str, Any]] = {"none": {}} if include_none else {}
    for ax in axes:
        if ax.defense in defenses and ax.defense != "none":
            raise ValueError(f"defence {ax.defense!r} appears twice in the sweep")
        kwargs = {
            k: v
            for k, v in cfg.defenses.get(ax.defense, {}).get("kwargs", {}).items()
            if k != ax.param
        }
        kwargs.update({key: value for name, key, value in fixed if name == ax.defense})
        defenses[ax.defense] = {
            "kwargs": kwargs,
            "sweep": {"param": ax.param, "values": list(ax.values)},
        }
    return dataclasses.replace(cfg, defenses=defenses)


@holds_run_dir
def run_sweep(
    cfg: RunConfig,
    run_dir: Path,
    *,
    workers: int = 2,
    backend: str = "process",
    attacks: Optional[List[str]] = None,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    name: Optional[str] = None,
) -> Path:
    """Run (or resume) every setting of ``cfg``'s defence grid, ``workers`` at a time.

    Args:
        cfg: usually :func:`sweep_config` of a profile.
        run_dir: where models and cells are stored and reused (may be a demo's run directory).
        workers: settings run at once.
        backend: one of :data:`BACKENDS`.
        attacks: attack names (default: the profile's, else the demo's five).
        data_root: dataset folder or its parent (else ``FACECRAFT_DATA``).
        progress: ``progress(done, total, desc)`` for the shared stages and the settings.
        name: sub-folder of ``run_dir/sweeps`` for the results and report (default: a hash of the
            grid).

    Returns:
        The path of the sweep's ``report.html``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if name is not None:
        check_path_name(
            name, "--name"
        )  # the results go to run_dir/sweeps/NAME, never outside run_dir
    run_dir = Path(run_dir)
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    demo = StudyRunner(study, progress)
    names = selected_attacks(cfg, attacks)
    train_shared(demo, names, workers=workers if backend == "process" else 1, data_root=data_root)
    rows = run_settings(
        cfg,
        run_dir,
        defense_grid(cfg),
        names,
        workers=workers,
        backend=backend,
        data_root=data_root,
        progress=progress,
        run_started=study.run_started,
    )
    ctx = demo.context()
    out_dir = (
        run_dir / "sweeps" / (name or config_hash([config_to_dict(cfg)["defenses"], names])[:12])
    )
    write_results(
        study, demo.cells, ctx, rows, out_dir, wall_seconds=time.time() - study.run_started
    )
    return build_report(out_dir)
