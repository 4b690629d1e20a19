"""Locks: one writer per run directory, one read-modify-write of a shared file at a time.

Advisory ``flock`` locks, which the kernel drops when their holder dies, so a killed run never
leaves a directory locked (issue 20).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

__all__ = ["file_lock", "holds_run_dir", "run_lock"]

PathLike = Union[str, Path]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (for read-modify-write of a file that
    several worker processes update, e.g. a run's ``stages.json``)."""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: run directories this process holds (path -> depth), so a nested entry point does not wait on
#: itself
_RUN_LOCKS: Dict[str, int] = {}


@contextlib.contextmanager
def run_lock(run_dir: PathLike, on_wait: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold ``run_dir`` for this process: a second writer waits until the first is done (issue 20).

    The lock is an exclusive ``flock`` on ``run_dir/.facecraft.lock`` holding the owner's pid; the
    kernel drops it when the owner dies, so a killed run never leaves the directory locked. Nested
    calls in one process pass through. ``on_wait(message)`` is called once when another process
    holds the directory (the message names its pid), before waiting.
    """
    path = Path(run_dir).resolve() / ".facecraft.lock"
    key = str(path)
    if key in _RUN_LOCKS:
        _RUN_LOCKS[key] += 1
        try:
            yield
        finally:
            _RUN_LOCKS[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if on_wait is not None:
                on_wait(
                    f"{run_dir} is in use by {holder}; waiting for it to finish (Ctrl-C to stop)"
                )
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"facecraft pid {os.getpid()}\n")
        fh.flush()
        _RUN_LOCKS[key] = 1
        try:
            yield
        finally:
            del _RUN_LOCKS[key]
            fcntl.flock(fh, fcntl.LOCK_UN)


def holds_run_dir(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``fn`` runs holding its ``run_dir`` argument (:func:`run_lock`), so
    two commands on one run directory never interleave; the second says so and waits."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def held(*args: Any, **kwargs: Any) -> Any:
        with run_lock(signature.bind(*args, **kwargs).arguments["run_dir"], on_wait=log.warning):
            return fn(*args, **kwargs)

    return held
