"""Where a study's defence settings run: in this process, a process pool, or a Ray cluster.

A setting's work is a plain picklable ``dict`` (a *task*) and :func:`run_task` a
module-level function, so any executor with a ``multiprocessing.Pool``-like
``imap`` runs it without a change in the algorithms:

* ``serial``: in this process (debugging);
* ``process``: a ``spawn`` process pool on this machine, each worker with
  :func:`study_threads` torch threads (the count of a serial run, so ``workers``
  never changes a number);
* ``ray``: ``ray.util.multiprocessing.Pool``, the same API on a Ray cluster
  (``ray.init(address=...)`` before calling, or ``RAY_ADDRESS``), whose nodes
  must see the run directory on a shared file system.

Everything the settings share (data, target network, prior, amortizer, oracles,
the target's decoder) is trained first by :func:`train_shared`, in two lanes when
there are workers; tasks only read it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from facecraft._torchutils import torch_threads
from facecraft.defenses import create_defense, get_defense_class
from facecraft.experiments.config import RunConfig, config_from_dict, config_to_dict
from facecraft.experiments.grid import EMBEDDING_ATTACKS, UNPROTECTED, Setting
from facecraft.experiments.runner import StudyRunner
from facecraft.experiments.study import Study

__all__ = [
    "BACKENDS",
    "process_pool",
    "run_settings",
    "run_task",
    "study_threads",
    "train_shared",
]

ProgressFn = Callable[[int, int, str], None]

#: executors a study's settings can run on
BACKENDS = ("serial", "process", "ray")


def study_threads() -> int:
    """Torch threads of every study computation, whatever ``--workers``: half the cores (at least
    one).

    Floating-point sums depend on how many threads split them, so a model trained with 2 threads
    differs in its last bits from one trained with 1; a fixed count per computation makes a run with
    ``--workers 1`` and one with ``--workers 2`` (two processes, each with this many threads) agree
    bit for bit (issue 20).
    """
    return max(1, (os.cpu_count() or 1) // 2)


def run_task(task: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run one defence setting (in whichever process or node receives it); returns its rows."""
    torch.set_num_threads(int(task["threads"]))
    cfg = config_from_dict(RunConfig, task["config"])
    study = Study(
        cfg, Path(task["run_dir"]), data_root=task["data_root"], run_started=task.get("run_started")
    )
    runner = StudyRunner(study, None)
    ctx = runner.context()
    return runner.run_setting(
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

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    everywhere a daemon thread also polls the parent's pid, so a killed demo leaves no worker
    writing to its run directory.
    """
    if sys.platform.startswith("linux"):
        try:
            # 1 = PR_SET_PDEATHSIG
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
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
    """Run defence ``settings`` against ``attacks``, ``workers`` at a time, each worker with
    :func:`study_threads` torch threads (the count of a serial run, so results do not depend on
    ``workers``); the costliest defences (``relative_cost``) start first, so the short ones fill the
    tail. The shared models must exist already. Rows in the order of ``settings``."""
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
    cost = [-get_defense_class(t["defense"]).relative_cost for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: (cost[i], i))
    done: Dict[int, List[Dict[str, Any]]] = {}
    with _pool(backend, workers) as pool:
        for n, task_rows in enumerate(pool.imap(run_task, [tasks[i] for i in order])):
            done[order[n]] = task_rows
            if progress:
                progress(n + 1, len(tasks), "defence settings")
    return [row for i in range(len(tasks)) for row in done[i]]


def _train_stages(task: Dict[str, Any]) -> None:
    """Train (or load) the named stages in a worker process (:func:`train_shared`): a :class:`Study`
    stage, or one of the attacker's (the public faces' dlib embeddings)."""
    torch.set_num_threads(int(task["threads"]))
    cfg = config_from_dict(RunConfig, task["config"])
    study = Study(
        cfg, Path(task["run_dir"]), data_root=task["data_root"], run_started=task["run_started"]
    )
    attacker = StudyRunner(study, None).attacker
    for stage in task["stages"]:
        getattr(study if hasattr(study, stage) else attacker, stage)()


def train_shared(
    runner: StudyRunner, attacks: List[str], *, workers: int = 1, data_root: Optional[str] = None
) -> None:
    """Train (or load) everything the settings share before any of them runs.

    With ``workers > 1`` the independent trainings run in two lanes: a spawned process trains the
    WGAN-GP prior, then the amortizer and the public faces' dlib embeddings, while this one trains
    the target network, the identity oracles and the target's black-box decoder (each lane, and a
    serial run, with :func:`study_threads` torch threads); the embedding attack follows once both
    lanes are done. ``stages.json`` keeps the time of each stage where it ran.
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
                # queued behind the prior: the amortizer reads the target just trained; the public
                # faces' dlib embeddings (the embedding attacks' targets) need no gallery, so they
                # run beside its fit
                later = ["amortizer"] + (
                    ["public_embeddings"] if set(attacks) & set(EMBEDDING_ATTACKS) else []
                )
                rest = pool.apply_async(_train_stages, ({**base, "stages": later},))
                _oracles_ready(runner)
                _shared_decoder(runner, attacks, embedding=False)
                prior.get()
                rest.get()
    with torch_threads(study_threads()):
        _shared_models(runner, attacks)


def _oracles_ready(runner: StudyRunner) -> None:
    """Fit (or load) the identity oracles every cell is judged by."""
    runner.study.dlib_oracle()
    if "evalnet" in runner.oracles:
        runner.study.evalnet()


def _shared_decoder(runner: StudyRunner, attacks: List[str], *, embedding: bool = True) -> None:
    """Train (or load) the black-box decoder and (with ``embedding``) the embedding attack of the
    target's own encoder, if ``attacks`` use them."""
    t = runner.study.target()
    raw = create_defense(UNPROTECTED.name, encoder=t.encoder, head=t.head)
    if set(attacks) & {"blackbox", "hybrid", "adaptive-blackbox"}:
        runner.attacker.decoder(UNPROTECTED, raw)
    if embedding and set(attacks) & set(EMBEDDING_ATTACKS):
        runner.attacker.embedding_attack(UNPROTECTED, raw)


def _shared_models(runner: StudyRunner, attacks: List[str]) -> None:
    """Train (or load) everything several settings share, before any of them runs (so parallel
    workers never train the same model twice)."""
    s = runner.study
    s.target(), s.prior(), s.amortizer()
    _oracles_ready(runner)
    _shared_decoder(runner, attacks)
