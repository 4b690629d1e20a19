"""What every ``facecraft`` command shares: the Typer apps, options, progress display, errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from facecraft.experiments.config import RunConfig
from facecraft.experiments.profiles import profile_config

app = typer.Typer(
    help="Protect face features against inversion (Crafter) and audit feature releases.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare or fetch face data.", no_args_is_help=True)
train_app = typer.Typer(
    help="Train the target network, the attacker's prior and amortizer.", no_args_is_help=True
)
list_app = typer.Typer(help="List registered attacks or defences.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmark scripts that print figures (not timed tests).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(list_app, name="list")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)


def _fail(e: Exception) -> None:
    """Print ``e`` as one unwrapped ``error:`` line (its text is not read as markup) and exit with
    code 2."""
    from rich.markup import escape

    console.print(
        "[red]error:[/red] " + escape(" ".join(str(e).split())), soft_wrap=True, highlight=False
    )
    raise typer.Exit(2)


def _check_out(out: Optional[Path]) -> Optional[Path]:
    """``--out``: refused (one line) when it, or a parent of it, is a file."""
    from facecraft._validation import check_run_dir

    if out is not None:
        try:
            check_run_dir(out, "--out")
        except ValueError as e:
            _fail(e)
    return out


def _workers(value: str) -> int:
    """``--workers``: a positive count, or ``auto`` (one per CPU core, at most 2: the settings of a
    study share memory bandwidth, and two already halve a demo on a 2-core machine)."""
    if value == "auto":
        return max(1, min(2, os.cpu_count() or 1))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        _fail(ValueError(f"--workers must be a positive integer or 'auto', got {value!r}"))
    return n


def _check_device(device: str) -> str:
    """``--device``: refused (one line) when this machine or torch build lacks it."""
    from facecraft._torchutils import resolve_device

    try:
        resolve_device(device)
    except ValueError as e:
        _fail(e)
    return device


ProfileOpt = typer.Option(
    "small",
    "--profile",
    "-p",
    help="tiny (tests, synthetic data), small (CPU study) or paper (GPU).",
)
DataRootOpt = typer.Option(
    None, "--data-root", help="Dataset folder or its parent (default: $FACECRAFT_DATA)."
)
OutOpt = typer.Option(
    Path("runs/default"),
    "--out",
    "-o",
    help="Run directory (reused as a cache).",
    callback=_check_out,
)
DeviceOpt = typer.Option(
    "auto", "--device", help="auto, cpu, cuda, cuda:1, mps ...", callback=_check_device
)
DatasetOpt = typer.Option(
    None,
    "--dataset",
    help="celeba, celeba-official, lfw, folder or synthetic (default: the profile's).",
)


class _Bars:
    """Turns ``progress(done, total, desc)`` callbacks into one live display of two lines: the whole
    run (defence settings done, elapsed, estimate left) and the step now running (stage or cell),
    which each new step replaces."""

    #: the description under which the pipeline reports settings done (the whole run's line)
    OVERALL = "defence settings"

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.overall = None
        self.last = (0, 0, "")

    def __enter__(self) -> "_Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int, desc: str) -> None:
        if desc == self.OVERALL:
            if self.overall is None:
                self.overall = self.progress.add_task(desc, total=total)
            self.progress.update(self.overall, completed=done, total=total)
            return
        if self.task is None:
            self.task = self.progress.add_task(desc, total=total)
        elif (total, desc) != self.last[1:] or done < self.last[0]:
            self.progress.reset(self.task, total=total, completed=0, description=desc)
        self.progress.update(self.task, completed=done, description=desc)
        self.last = (done, total, desc)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a scheduler's stop) into ``SystemExit``, so the process pools of a
    demo or sweep are shut down by their ``with`` blocks instead of outliving the command."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _config(profile: str, dataset: Optional[str], device: str) -> RunConfig:
    cfg = profile_config(profile, device=device)
    if dataset:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    return cfg


def _study_config(profile: str, dataset: Optional[str], device: str) -> RunConfig:
    """The profile's config for a study: ``--dataset lfw`` or ``folder`` (no attributes) keeps the
    profile's data for the attacker and the target and takes the private pool from that set."""
    from facecraft.experiments.private_pool import with_private_pool
    from facecraft.experiments.study import UNLABELLED_DATASETS

    if dataset in UNLABELLED_DATASETS:
        return with_private_pool(profile_config(profile, device=device), dataset)
    return _config(profile, dataset, device)


#: ``--faces``: how many private test faces are attacked (``eval.n_images``)
FacesOpt = typer.Option(
    None,
    "--faces",
    help="Private test faces to attack: a number, or 'all' (default: the profile's).",
)


def _with_faces(cfg: RunConfig, faces: Optional[str]) -> RunConfig:
    """``cfg`` with ``eval.n_images`` set from ``--faces`` (a positive number or ``all``)."""
    if faces is None:
        return cfg
    if faces.strip().lower() == "all":
        n: Optional[int] = None
    else:
        try:
            n = int(faces)
        except ValueError:
            raise ValueError(f"--faces must be a positive number or 'all', got {faces!r}") from None
        if n < 1:
            raise ValueError(f"--faces must be a positive number or 'all', got {faces!r}")
    return dataclasses.replace(cfg, eval={**cfg.eval, "n_images": n})


def _study(
    profile: str, dataset: Optional[str], data_root: Optional[str], out: Path, device: str, bars
):
    from facecraft.experiments.study import Study

    return Study(_config(profile, dataset, device), out, data_root=data_root, progress=bars)
