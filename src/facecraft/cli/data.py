"""``facecraft data``, ``train`` and ``list``: prepare data, train the study's models, list the
registries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from facecraft.cli._common import (
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    OutOpt,
    ProfileOpt,
    _Bars,
    _fail,
    _setup_logging,
    _study,
    console,
    data_app,
    list_app,
    train_app,
)


@data_app.command("prepare")
def data_prepare(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    force: bool = typer.Option(
        False, "--force", help="Prepare the split again even when a matching one is cached."
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Build the identity-disjoint public / eval_train / eval_test split, cached as uint8 arrays.

    A cached split is reused only while the data root's file list (names, sizes, modification times)
    is the one it was made from; --force prepares it again regardless.
    """
    _setup_logging(verbose)
    from facecraft.data import DataError

    try:
        with _Bars() as bars:
            study = _study(profile, dataset, data_root, out, "cpu", bars)
            study.force_data = force
            data = study.data
    except (DataError, ValueError) as e:
        _fail(e)
    console.print_json(json.dumps(data.manifest.get("counts", {})))


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="Only 'lfw' is fetchable."),
    data_root: Path = typer.Option(..., "--data-root", help="Where to unpack."),
    url: Optional[str] = typer.Option(None, help="Override the download URL (file:// works)."),
    sha256: Optional[str] = typer.Option(None, help="Expected SHA-256 of the archive."),
) -> None:
    """Download the official LFW archive (needs a network), verify its checksum and unpack it."""
    from facecraft.data import DataError, fetch_lfw

    if name != "lfw":
        _fail(
            ValueError(
                f"cannot fetch {name!r}; only 'lfw' is public without a login (CelebA: see README)"
            )
        )
    kwargs = {k: v for k, v in {"url": url, "sha256": sha256}.items() if v}
    try:
        with _Bars() as bars:
            path = fetch_lfw(data_root, progress=bars, **kwargs)
    except (DataError, OSError) as e:
        _fail(e)
    console.print(f"LFW unpacked at {path}")


def _train(
    which: str,
    profile: str,
    dataset: Optional[str],
    data_root: Optional[str],
    out: Path,
    device: str,
    verbose: bool,
) -> None:
    _setup_logging(verbose)
    from facecraft.data import DataError

    try:
        with _Bars() as bars:
            study = _study(profile, dataset, data_root, out, device, bars)
            getattr(study, which)()
    except (DataError, ValueError) as e:
        _fail(e)
    stages = json.loads((out / "stages.json").read_text())["stages"]
    console.print_json(json.dumps(stages.get(which, {})))


@train_app.command("target")
def train_target_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the target network (attribute classifier) on public images; report its mean AUC.

    The mean AUC is measured on eval_test."""
    _train("target", profile, dataset, data_root, out, device, verbose)


@train_app.command("prior")
def train_prior_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the attacker's WGAN-GP face prior on public images; writes a sample grid PNG."""
    _train("prior", profile, dataset, data_root, out, device, verbose)


@train_app.command("amortizer")
def train_amortizer_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the amortizer Amor(Enc(G(z))) -> z (trains target and prior first if needed)."""
    _train("amortizer", profile, dataset, data_root, out, device, verbose)


@list_app.command("attacks")
def list_attacks() -> None:
    """Registered attack names."""
    from facecraft.attacks import available_attacks

    for n in available_attacks():
        typer.echo(n)


@list_app.command("defenses")
def list_defenses() -> None:
    """Registered defence names."""
    from facecraft.defenses import available_defenses

    for n in available_defenses():
        typer.echo(n)
