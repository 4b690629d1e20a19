"""Tests for facecraft.experiments.export (the edge protector as one ONNX / TorchScript file; issue
16)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from facecraft.defenses import DistilledCrafter, available_defenses, get_defense_class
from facecraft.experiments.export import (
    INPUT_NAME,
    check_exportable,
    export_module,
    export_study_defense,
    exportable_defenses,
    privacy_summary,
    sidecar_path,
)

REAL_FACES = 8


@pytest.fixture()
def protector(tiny_target) -> DistilledCrafter:
    """A distilled protector fitted (a few epochs) to a teacher that moves every feature."""
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    teacher = tiny_target.encoder(x).detach() * 0.5 + 0.3
    d = DistilledCrafter(
        tiny_target.encoder,
        tiny_target.head,
        width=8,
        epochs=5,
        batch_size=8,
        lr=1e-2,
        val_fraction=0.25,
    )
    return d.fit(x, teacher_features=teacher)


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def real_faces(shared_data: Path) -> torch.Tensor:
    """The first CelebA face chips of the shared data, at 32 px (skips without the data)."""
    from facecraft.data.decode import load_image

    files = sorted((shared_data / "celeba-chips" / "images").glob("*.jpg"))[:REAL_FACES]
    pixels = np.stack([load_image(f, 32)[0] for f in files])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255.0)


def _onnx_run(path: Path, x: torch.Tensor) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x.numpy()})[0]


def test_onnx_round_trip_matches_pytorch(protector, images, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = tmp_path / "protector.onnx"
    record = export_module(protector.edge_module(), path, fmt="onnx", image_size=32)
    expected = protector(images).numpy()
    got = _onnx_run(
        path, images
    )  # a batch of 5: the traced batch was 2, so the batch axis is dynamic
    assert got.shape == expected.shape == (5, *record["feature_shape"])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert not np.allclose(
        got, protector.encoder(images).detach().numpy(), atol=1e-3
    )  # C is in the graph


def test_onnx_round_trip_on_real_faces(protector, real_faces, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = tmp_path / "protector.onnx"
    export_module(protector.edge_module(), path, fmt="onnx", image_size=32)
    np.testing.assert_allclose(
        _onnx_run(path, real_faces), protector(real_faces).numpy(), atol=1e-4, rtol=0
    )


def test_torchscript_round_trip(protector, images, tmp_path: Path) -> None:
    path = tmp_path / "protector.pt"
    export_module(protector.edge_module(), path, fmt="torchscript", image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # TorchScript is deprecated in torch 2.x, still loads
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = loaded(images)
    torch.testing.assert_close(got, protector(images), atol=1e-5, rtol=0)


def test_sidecar_describes_the_model(protector, tmp_path: Path) -> None:
    path = tmp_path / "p.onnx"
    export_module(
        protector.edge_module(),
        path,
        fmt="torchscript",
        image_size=32,
        sidecar={"defense": "distilled-crafter", "config": protector.get_config()},
    )
    side = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == tmp_path / "p.onnx.json"
    assert side["input"]["shape"] == ["N", 3, 32, 32] and side["input"]["range"] == [0.0, 1.0]
    assert side["feature_shape"] == [16, 8, 8] and side["output"]["shape"] == ["N", 16, 8, 8]
    assert side["config"] == protector.get_config() and side["format"] == "torchscript"
    assert "normalisation" in side


def test_unknown_format_is_refused(protector, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_module(protector.edge_module(), tmp_path / "p.x", fmt="tflite", image_size=32)


@pytest.mark.parametrize("name", ["crafter", "crafter-fast", "crafter-z", "noise"])
def test_per_image_optimisation_and_noise_refuse_naming_the_exportable_one(name: str) -> None:
    with pytest.raises(ValueError) as e:
        check_exportable(name)
    msg = str(e.value)
    assert "\n" not in msg and f"{name!r} cannot be exported" in msg and "distilled-crafter" in msg


def test_exportable_is_asked_of_the_defence() -> None:
    assert "distilled-crafter" in exportable_defenses()
    for name in available_defenses():
        assert (name in exportable_defenses()) == bool(
            getattr(get_defense_class(name), "exportable", False)
        )
    check_exportable("distilled-crafter")  # no error


def test_study_export_refuses_before_building_anything(tmp_path: Path) -> None:
    from facecraft.experiments.grid import Setting

    class NoRunner:
        def build_defense(self, setting):  # pragma: no cover - must not be reached
            raise AssertionError("built a defence that cannot be exported")

    with pytest.raises(ValueError, match="cannot be exported"):
        export_study_defense(
            NoRunner(),
            Setting("crafter", 1.0, {}),
            tmp_path / "x.onnx",
            fmt="onnx",
            attacks=["blackbox"],
        )
    assert not (tmp_path / "x.onnx").exists()


def test_privacy_summary_reads_the_dlib_top1_rows() -> None:
    row = {
        "attack": "blackbox",
        "eval_acc_top1": {"dlib": 0.25, "evalnet": 0.5},
        "ci95": {"eval_acc_top1": {"dlib": [0.2, 0.3]}},
        "wilson95": {"eval_acc_top1": {"dlib": [0.21, 0.29]}},
        "exposed_identities": {"dlib": 0.4},
        "n_faces": 512,
        "mean_auc": 0.85,
    }
    out = privacy_summary([row], "cells/x")
    assert out["mean_auc"] == 0.85 and out["cells"] == "cells/x"
    assert out["attacks"]["blackbox"] == {
        "eval_acc_top1": 0.25,
        "ci95_identities": [0.2, 0.3],
        "wilson95": [0.21, 0.29],
        "exposed_identities": 0.4,
        "n_faces": 512,
        "public_faces": None,
    }


def test_cli_export_refuses_crafter_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facecraft.cli import app

    r = CliRunner().invoke(
        app,
        [
            "export",
            "--defense",
            "crafter",
            "--out",
            str(tmp_path / "p.onnx"),
            "--profile",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 2
    assert "cannot be exported" in r.output and "distilled-crafter" in r.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "p.onnx").exists()


@pytest.fixture(scope="module")
def tiny_runner(tmp_path_factory: pytest.TempPathFactory):
    """A StudyRunner on the synthetic tiny profile (trains its small models once for this
    module)."""
    from facecraft.experiments.profiles import profile_config
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study

    return StudyRunner(
        Study(profile_config("tiny", device="cpu"), tmp_path_factory.mktemp("export-run")), None
    )


def test_study_builds_the_distilled_protector_from_the_stored_teacher_release(
    tiny_runner, tmp_path: Path
) -> None:
    from facecraft._io import load_checkpoint
    from facecraft.experiments.grid import Setting, profile_setting

    setting = profile_setting(tiny_runner.cfg, "distilled-crafter")
    d = tiny_runner.build_defense(setting)
    teacher = Setting(*d.teacher_setting())
    stem = tiny_runner.cells / f"{tiny_runner.stem(teacher)}-public-features"
    pairs = load_checkpoint(stem, kind="released-features")[0]["features"]
    assert (
        pairs.shape[0] == tiny_runner.attacker.public_subset_indices().numel()
    )  # the attacker's public faces
    assert d.fit_trained and d.crafter is not None
    record_file = stem.parent / (stem.name + ".json")
    made = record_file.stat().st_mtime_ns
    again = tiny_runner.build_defense(
        setting
    )  # the release and the fit are read back, not recomputed
    assert not again.fit_trained and record_file.stat().st_mtime_ns == made
    x = tiny_runner.attacker.public_subset()[:4]
    assert torch.equal(again(x), d(x))
    # exported through the study: the sidecar names the setting; no cells finished, so no privacy
    # yet
    record = export_study_defense(
        tiny_runner, setting, tmp_path / "p.onnx", fmt="torchscript", attacks=["blackbox"]
    )
    assert record["defense"] == "distilled-crafter" and record["privacy"] is None
    assert record["config"] == d.get_config() and record["setting"] == tiny_runner.stem(setting)


def test_no_protection_exports_the_bare_encoder(tiny_target, images, tmp_path: Path) -> None:
    """`none` is exportable (the unprotected baseline a device would run); its file computes
    Enc(X)."""
    from facecraft.defenses import create_defense

    check_exportable("none")
    d = create_defense("none", encoder=tiny_target.encoder, head=tiny_target.head)
    path = tmp_path / "none.pt"
    export_module(d.edge_module(), path, fmt="torchscript", image_size=32)
    loaded = torch.jit.load(str(path))
    assert torch.allclose(loaded(images), d(images), atol=1e-6)
