"""Command-line options checked before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecraft.cli._common import _with_faces
from facecraft.experiments.profiles import profile_config


@pytest.mark.parametrize("cmd", [["demo"], ["sweep", "-g", "noise:sigma=1"]])
@pytest.mark.parametrize("faces", ["0", "-5", "many", "1.5"])
def test_faces_option_rejects_what_is_not_a_count(tmp_path: Path, cmd, faces: str) -> None:
    from typer.testing import CliRunner

    from facecraft.cli import app

    r = CliRunner().invoke(
        app, [*cmd, "--profile", "tiny", "--out", str(tmp_path / "run"), "--faces", faces]
    )
    assert r.exit_code == 2
    assert "--faces must be a positive number or 'all'" in r.output
    assert not (tmp_path / "run").exists()


def test_faces_option_sets_the_number_of_attacked_faces() -> None:
    cfg = profile_config("small")
    assert _with_faces(cfg, None) is cfg
    assert _with_faces(cfg, "all").eval["n_images"] is None
    assert _with_faces(cfg, "512").eval["n_images"] == 512
    assert (
        _with_faces(cfg, "512").eval["pii_steps"] == cfg.eval["pii_steps"]
    )  # the rest of eval is kept


def test_data_prepare_force_rebuilds_a_cached_split(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facecraft.cli import app

    args = ["data", "prepare", "--profile", "tiny", "--out", str(tmp_path / "run")]
    assert CliRunner().invoke(app, args).exit_code == 0
    (manifest,) = (tmp_path / "run").glob("data-*/manifest.json")
    first = manifest.stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert manifest.stat().st_mtime_ns == first  # reused
    r = CliRunner().invoke(app, args + ["--force"])
    assert r.exit_code == 0, r.output
    assert manifest.stat().st_mtime_ns != first  # prepared again
