"""``facecraft craft``, ``attack``, ``export`` and ``audit``: one release, protected, attacked,
exported or audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from facecraft._validation import check_number
from facecraft.cli._common import (
    DataRootOpt,
    DeviceOpt,
    FacesOpt,
    OutOpt,
    ProfileOpt,
    _Bars,
    _config,
    _exit_on_sigterm,
    _fail,
    _setup_logging,
    _with_faces,
    app,
    console,
)


@app.command()
def craft(
    defense: str = typer.Option(
        ..., "--defense", "-d", help="A registered defence (facecraft list defenses)."
    ),
    param: Optional[float] = typer.Option(
        None,
        "--param",
        help="The value of the profile's swept parameter "
        "(e.g. beta for crafter); default: the profile's first.",
    ),
    split: str = typer.Option("eval_test", "--split", help="eval_test, eval_train or public."),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Only the first N images of the split."
    ),
    output: Path = typer.Option(
        ..., "--output", help="Where to write the features (.safetensors + .json)."
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Protect a split's faces with a defence and write the release (with identities) to OUTPUT."""
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.workflows import craft_release

    try:
        cfg = _config(profile, None, device)
        with _Bars() as bars:
            path, n = craft_release(
                cfg,
                out,
                defense,
                output,
                param=param,
                split=split,
                limit=limit,
                data_root=data_root,
                progress=bars,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"[green]wrote[/green] {path} ({n} released features)")


@app.command()
def attack(
    features: Path = typer.Option(
        ..., "--features", help="Released features written by `facecraft craft`."
    ),
    name: str = typer.Option("whitebox", "--attack", "-a", help="whitebox, blackbox or hybrid."),
    output: Optional[Path] = typer.Option(
        None, "--output", help="Also write the reconstructions here."
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Reconstruct faces from a release of the target's encoder and judge them with dlib.

    Prints one JSON line: Eval Acc top-1/top-5 (dlib, gallery = eval_train) when the file holds
        identities,
    with 95% intervals (bootstrap over identities, and per-face Wilson) and the share of identities
    exposed.
    """
    _setup_logging(verbose)
    from facecraft._io import CheckpointError
    from facecraft.data import DataError
    from facecraft.experiments.workflows import attack_release

    try:
        cfg = _config(profile, None, device)
        with _Bars() as bars:
            result = attack_release(
                cfg, out, features, name, output=output, data_root=data_root, progress=bars
            )
    except (DataError, ValueError, TypeError, CheckpointError) as e:
        _fail(e)
    typer.echo(json.dumps(result))


@app.command("export")
def export_cmd(
    defense: str = typer.Option(
        ..., "--defense", "-d", help="An exportable defence (e.g. distilled-crafter)."
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    output: Path = typer.Option(
        ..., "--out", "-o", help="The model file to write (plus FILE.json)."
    ),
    param: Optional[float] = typer.Option(
        None,
        "--param",
        help="The value of the profile's swept "
        "parameter (e.g. beta); default: the profile's first.",
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    run_dir: Path = typer.Option(
        Path("runs/small"),
        "--run-dir",
        help="Run directory holding the study's models and cells (reused as a cache).",
    ),
    faces: Optional[str] = FacesOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Write encoder + protector as one model and a JSON sidecar.

    The model maps images in [0, 1] to released features.

    The sidecar records input size, normalisation, feature shape, the defence's config and, when the
    study in --run-dir (same --faces) has finished cells for the setting, its measured privacy.
    """
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.export import check_exportable, export_study_defense, sidecar_path
    from facecraft.experiments.grid import DEMO_ATTACKS, profile_setting
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study

    try:
        check_exportable(defense)
        cfg = _with_faces(_config(profile, None, device), faces)
        setting = profile_setting(cfg, defense, param)
        with _Bars() as bars:
            runner = StudyRunner(Study(cfg, run_dir, data_root=data_root, progress=bars), bars)
            record = export_study_defense(runner, setting, output, fmt=fmt, attacks=DEMO_ATTACKS)
    except (DataError, ValueError, ImportError) as e:
        _fail(e)
    shape = record["feature_shape"]
    console.print(f"[green]wrote[/green] {output} and {sidecar_path(output)} (features {shape})")


@app.command()
def audit(
    encoder: str = typer.Option(
        ..., "--encoder", help="Your edge encoder: a TorchScript file, or MODULE:FUNCTION."
    ),
    features: Path = typer.Option(
        ...,
        "--features",
        help="The release: .safetensors (features, identities[, images]) or a folder of faces.",
    ),
    gallery: Path = typer.Option(
        ..., "--gallery", help="Labelled faces, one folder per identity (the oracle's gallery)."
    ),
    defense: Optional[str] = typer.Option(
        None, "--defense", "-d", help="Also craft the released faces with this defence."
    ),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="Side of the images your encoder takes (default: profile's)."
    ),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat; default: all four)."
    ),
    name: Optional[str] = typer.Option(
        None, "--name", help="Sub-folder of OUT/audits for the report (default: a hash)."
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Audit your own encoder's release: how many faces each attack identifies, with intervals.

    The attacker learns from the profile's public faces through your encoder.
    dlib judges the faces it draws against your gallery.
    With --defense the released faces are also crafted: a before/after report.
    """
    _setup_logging(verbose)
    _exit_on_sigterm()
    from facecraft.data import DataError
    from facecraft.experiments.audit import AUDIT_ATTACKS, AuditRequest, run_audit

    try:
        check_number("--image-size", image_size, low=8, integer=True, optional=True)
        cfg = _config(profile, None, device)
        request = AuditRequest(
            encoder=encoder,
            features=features,
            gallery=gallery,
            image_size=image_size,
            defense=defense,
            attacks=tuple(attack or AUDIT_ATTACKS),
            name=name,
        )
        with _Bars() as bars:
            report_path = run_audit(cfg, out, request, data_root=data_root, progress=bars)
    except (DataError, ValueError, TypeError) as e:
        _fail(e)
    console.print(f"[green]done[/green]: {report_path}")
