"""``facecraft demo``, ``sweep``, ``evaluate`` and ``report``: run a study and write its report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import typer

from facecraft.cli._common import (
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    FacesOpt,
    OutOpt,
    ProfileOpt,
    _Bars,
    _check_out,
    _exit_on_sigterm,
    _fail,
    _setup_logging,
    _study_config,
    _with_faces,
    _workers,
    app,
    console,
)


@app.command()
def demo(
    profile: str = typer.Option("tiny", "--profile", "-p", help="tiny, small or paper."),
    data_root: Optional[str] = DataRootOpt,
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", callback=_check_out),
    device: str = DeviceOpt,
    workers: str = typer.Option(
        "auto",
        "--workers",
        "-w",
        help="Defence settings run at once (processes); auto: one per CPU core, at most 2.",
    ),
    faces: Optional[str] = FacesOpt,
    dataset: Optional[str] = typer.Option(
        None,
        "--dataset",
        help="lfw or folder: private people from that set (the attacker and target keep the "
        "profile's data); celeba or celeba-official: the study's data.",
    ),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat; default: every one)."
    ),
    defense: Optional[List[str]] = typer.Option(
        None,
        "--defense",
        "-d",
        help="Defence(s) of the profile to run (repeat; default: every demo one).",
    ),
    finished_only: bool = typer.Option(
        False,
        "--finished-only",
        help="Compute nothing: results and report of the cells finished so far.",
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Run the whole study: data, models, defences x attacks, results.json, report. Resumable."""
    _setup_logging(verbose)
    _exit_on_sigterm()
    from facecraft.data import DataError
    from facecraft.experiments.pipeline import run_demo

    try:
        with _Bars() as bars:
            result = run_demo(
                _with_faces(_study_config(profile, dataset, device), faces),
                out,
                data_root=data_root,
                progress=bars,
                workers=_workers(workers),
                finished_only=finished_only,
                attacks=attack or None,
                defenses=defense or None,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    from facecraft.experiments.report import headline

    console.print(
        headline(json.loads((result.parent / "results.json").read_text())), highlight=False
    )
    console.print(f"[green]done[/green]: report at {result}")


@app.command()
def sweep(
    grid: List[str] = typer.Option(
        ..., "--grid", "-g", help="DEFENCE:PARAM=V1,V2,... (repeat), e.g. noise:sigma=0.5,1,2"
    ),
    fixed: Optional[List[str]] = typer.Option(
        None,
        "--set",
        "-s",
        help="DEFENCE:KEY=VALUE held fixed over the sweep (repeat), e.g. crafter-fast:utility=task",
    ),
    profile: str = typer.Option("small", "--profile", "-p", help="tiny, small or paper."),
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = typer.Option(Path("runs/small"), "--out", "-o", callback=_check_out),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat)."
    ),
    workers: int = typer.Option(2, "--workers", "-w", help="Defence settings run at once."),
    backend: str = typer.Option("process", "--backend", help="serial, process or ray."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Sub-folder of OUT/sweeps for the results."
    ),
    skip_evalnet: bool = typer.Option(
        False, "--skip-evalnet", help="Judge with the dlib oracle only."
    ),
    faces: Optional[str] = FacesOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Sweep defence parameters (plus the unprotected reference), settings in parallel; resumable.

    Reuses the models of a demo in the same --out directory; writes OUT/sweeps/NAME/results.json and
    a report.
    """
    _setup_logging(verbose)
    _exit_on_sigterm()
    from facecraft._validation import check_path_name
    from facecraft.data import DataError
    from facecraft.experiments.sweep import parse_axis, parse_fixed, run_sweep, sweep_config

    try:
        if name is not None:
            check_path_name(name, "--name")
        cfg = sweep_config(
            _with_faces(_study_config(profile, dataset, device), faces),
            [parse_axis(g) for g in grid],
            fixed=[parse_fixed(f) for f in fixed or []],
        )
        if skip_evalnet:
            cfg = dataclasses.replace(cfg, eval={**cfg.eval, "oracles": ["dlib"]})
        with _Bars() as bars:
            report_path = run_sweep(
                cfg,
                out,
                workers=workers,
                backend=backend,
                attacks=attack or None,
                data_root=data_root,
                progress=bars,
                name=name,
            )
    except (DataError, ValueError, RuntimeError) as e:
        _fail(e)
    console.print(f"[green]done[/green]: {report_path}")


@app.command()
def evaluate(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    defense: Optional[List[str]] = typer.Option(
        None, "--defense", "-d", help="Defence(s) to evaluate (repeat)."
    ),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat)."
    ),
    skip_evalnet: bool = typer.Option(
        False, "--skip-evalnet", help="Judge with the dlib oracle only (no Eval-net training)."
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Attack the chosen defences' releases and write results.json.

    It holds Eval Acc, FSIM, SSIM, PSNR, epsilon-PII and mean AUC."""
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.pipeline import run_demo

    try:
        with _Bars() as bars:
            cfg = _study_config(profile, dataset, device)
            if skip_evalnet:
                cfg = dataclasses.replace(cfg, eval={**cfg.eval, "oracles": ["dlib"]})
            report = run_demo(
                cfg,
                out,
                data_root=data_root,
                progress=bars,
                attacks=attack or None,
                defenses=defense or None,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"[green]done[/green]: {out / 'results.json'}, {report}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory holding results.json."),
) -> None:
    """Write report.html (self-contained) and report.md from a run directory's results."""
    from facecraft.experiments.report import build_report

    try:
        path = build_report(run_dir)
    except ValueError as e:
        _fail(e)
    console.print(f"[green]wrote[/green] {path} and {path.with_suffix('.md')}")
