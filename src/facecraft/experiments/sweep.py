"""``facecraft sweep``: a grid of defence parameters, its settings run in parallel processes.

A sweep is a list of *tasks*, one per defence setting (name, parameter value,
constructor arguments). A task runs every chosen attack against its setting
through the demo's own code path (:meth:`facecraft.experiments.pipeline.StudyRunner.run_setting`),
so its cells are stored, resumable and identical to the demo's. Everything the
settings share (data, target network, prior, amortizer, oracles, the target's
decoder) is trained first (:func:`train_shared`, in two processes when there are
workers); tasks only read it.

A task is a plain picklable ``dict`` and :func:`run_task` a module-level
function, so any executor with a ``multiprocessing.Pool``-like ``imap`` runs a
sweep without a change in the algorithms:

* ``serial``: in this process (debugging);
* ``process``: a ``spawn`` process pool on this machine, each worker with
  ``study_threads()`` torch threads (half the cores: the count of a serial run, so ``workers``
  never changes a number);
* ``ray``: ``ray.util.multiprocessing.Pool``, the same API on a Ray cluster
  (``ray.init(address=...)`` before calling, or ``RAY_ADDRESS``), whose nodes
  must see the run directory on a shared file system.

The merged ``results.json`` and report go to ``RUN_DIR/sweeps/<name>/``, so a
sweep in the demo's run directory reuses its trained models without touching
the demo's own report.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from facecraft._io import config_hash
from facecraft._torchutils import torch_threads
from facecraft._validation import check_number, check_path_name
from facecraft.defenses import available_defenses, get_defense_class
from facecraft.defenses.base import numeric_parameters
from facecraft.experiments.config import RunConfig, config_from_dict, config_to_dict
from facecraft.experiments.pipeline import (
    EMBEDDING_ATTACKS,
    Setting,
    StudyRunner,
    build_report,
    defense_grid,
    holds_run_dir,
    selected_attacks,
    study_threads,
)
from facecraft.experiments.study import Study

__all__ = [
    "BACKENDS",
    "SweepAxis",
    "parse_axis",
    "sweep_config",
    "run_settings",
    "run_sweep",
    "run_task",
    "train_shared",
]

ProgressFn = Callable[[int, int, str], None]

#: executors a sweep can run on
BACKENDS = ("serial", "process", "ray")


@dataclasses.dataclass(frozen=True)
class SweepAxis:
    """One defence and the values of one of its constructor parameters, e.g. ``noise:sigma=0.5,1,2``."""

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


def sweep_config(
    cfg: RunConfig, axes: Sequence[SweepAxis], *, include_none: bool = True
) -> RunConfig:
    """``cfg`` with its defence grid replaced by ``axes`` (each keeps the profile's other kwargs for
    that defence), plus the unprotected reference ``none`` unless ``include_none`` is False."""
    if not axes:
        raise ValueError("a sweep needs at least one DEFENCE:PARAM=VALUES axis")
    defenses: Dict[str, Dict[str, Any]] = {"none": {}} if include_none else {}
    for ax in axes:
        if ax.defense in defenses and ax.defense != "none":
            raise ValueError(f"defence {ax.defense!r} appears twice in the sweep")
        kwargs = {
            k: v
            for k, v in cfg.defenses.get(ax.defense, {}).get("kwargs", {}).items()
            if k != ax.param
        }
        defenses[ax.defense] = {
            "kwargs": kwargs,
            "sweep": {"param": ax.param, "values": list(ax.values)},
        }
    return dataclasses.replace(cfg, defenses=defenses)


def run_task(task: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run one defence setting of a sweep (in whichever process or node receives it); returns its rows."""
    torch.set_num_threads(int(task["threads"]))
    cfg = config_from_dict(RunConfig, task["config"])
    study = Study(
        cfg, Path(task["run_dir"]), data_root=task["data_root"], run_started=task.get("run_started")
    )
    demo = StudyRunner(study, None)
    ctx = demo.context()
    return demo.run_setting(
        Setting(task["defense"], task["param"], task["kwargs"]), task["attacks"], ctx
    )


class _Serial:
    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        return map(fn, items)

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: the worker ends as soon as the process that started it is gone (issue 20).

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere
    a daemon thread also polls the parent's pid, so a killed demo leaves no worker writing to its run
    directory.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(
                1, signal.SIGKILL
            )  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def process_pool(workers: int) -> Any:
    """A ``spawn`` process pool of ``workers`` whose workers die with this process."""
    return multiprocessing.get_context("spawn").Pool(
        workers, initializer=_die_with_parent, initargs=(os.getpid(),)
    )


def _pool(backend: str, workers: int):
    if backend == "serial" or (backend == "process" and workers == 1):
        return _Serial()
    if backend == "process":
        return process_pool(workers)
    if backend == "ray":
        try:
            from ray.util.multiprocessing import Pool
        except ImportError:
            raise RuntimeError("the 'ray' backend needs Ray: pip install -e '.[cluster]'") from None
        return Pool(processes=workers)
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")


#: defences by how long one setting takes (slowest first; measured in docs/BENCHMARKS.md: an optimisation
#: defence queries cost seconds per face, a trained one fits once); a pool hands tasks out in order, so the
#: long settings start first and the short ones fill the tail
_SLOWEST_FIRST = (
    "crafter",
    "crafter-z",
    "crafter-fast",
    "disco",
    "amortized-crafter",
    "advlearn",
    "noise",
    "none",
)


def _cost_rank(name: str) -> int:
    return _SLOWEST_FIRST.index(name) if name in _SLOWEST_FIRST else 0


def run_settings(
    cfg: RunConfig,
    run_dir: Path,
    settings: Sequence[Setting],
    attacks: List[str],
    *,
    workers: int,
    backend: str = "process",
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    run_started: Optional[float] = None,
) -> List[Dict[str, Any]]:
    """Run defence ``settings`` against ``attacks``, ``workers`` at a time, each
    worker with :func:`~facecraft.experiments.pipeline.study_threads` torch threads (the count of a serial
    run, so results do not depend on ``workers``), the slowest defences first; the shared models must
    exist already. Rows in the order of ``settings``."""
    threads = study_threads()
    tasks = [
        {
            "config": config_to_dict(cfg),
            "run_dir": str(Path(run_dir).resolve()),
            "data_root": data_root,
            "defense": d,
            "param": p,
            "kwargs": kw,
            "attacks": list(attacks),
            "threads": threads,
            "run_started": run_started,
        }
        for d, p, kw in settings
    ]
    order = sorted(range(len(tasks)), key=lambda i: (_cost_rank(tasks[i]["defense"]), i))
    done: Dict[int, List[Dict[str, Any]]] = {}
    with _pool(backend, workers) as pool:
        for n, task_rows in enumerate(pool.imap(run_task, [tasks[i] for i in order])):
            done[order[n]] = task_rows
            if progress:
                progress(n + 1, len(tasks), "defence settings")
    return [row for i in range(len(tasks)) for row in done[i]]


def _train_stages(task: Dict[str, Any]) -> None:
    """Train (or load) the named :class:`Study` stages in a worker process (:func:`train_shared`)."""
    torch.set_num_threads(int(task["threads"]))
    cfg = config_from_dict(RunConfig, task["config"])
    study = Study(
        cfg, Path(task["run_dir"]), data_root=task["data_root"], run_started=task["run_started"]
    )
    runner = StudyRunner(study, None)
    for stage in task[
        "stages"
    ]:  # a Study stage, or one of the runner's (the public faces' dlib embeddings)
        getattr(study if hasattr(study, stage) else runner, stage)()


def train_shared(
    runner: StudyRunner, attacks: List[str], *, workers: int = 1, data_root: Optional[str] = None
) -> None:
    """Train (or load) everything the settings share before any of them runs.

    With ``workers > 1`` the independent trainings run in two lanes: a spawned process trains the WGAN-GP
    prior, then the amortizer and the public faces' dlib embeddings, while this one trains the target
    network, the identity oracles and the target's black-box decoder (each lane, and a serial run, with
    :func:`~facecraft.experiments.pipeline.study_threads` torch threads); the embedding attack follows once
    both lanes are done. ``stages.json`` keeps
    the time of each stage where it ran.
    """
    study = runner.study
    study.data  # prepared once, here, before the worker reads it
    if workers > 1:
        base = {
            "config": config_to_dict(study.cfg),
            "run_dir": str(study.run_dir.resolve()),
            "data_root": data_root,
            "threads": study_threads(),
            "run_started": study.run_started,
        }
        with torch_threads(base["threads"]):
            with process_pool(1) as pool:
                prior = pool.apply_async(_train_stages, ({**base, "stages": ["prior"]},))
                study.target()
                # queued behind the prior: the amortizer reads the target just trained; the public faces'
                # dlib embeddings (the embedding attacks' targets) need no gallery, so they run beside its fit
                later = ["amortizer"] + (
                    ["public_embeddings"] if set(attacks) & set(EMBEDDING_ATTACKS) else []
                )
                rest = pool.apply_async(_train_stages, ({**base, "stages": later},))
                runner.oracles_ready()
                runner.shared_decoder(attacks, embedding=False)
                prior.get()
                rest.get()
    with torch_threads(study_threads()):
        runner.shared_models(attacks)


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
        name: sub-folder of ``run_dir/sweeps`` for the results and report (default: a hash of the grid).

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
    demo.write_results(ctx, rows, out_dir, wall_seconds=time.time() - study.run_started)
    return build_report(out_dir)
