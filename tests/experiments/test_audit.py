"""``facecraft audit`` on a TorchScript encoder that is not the project's, tiny profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from facecraft.cli import app
from facecraft.data.synthetic import make_synthetic

SIZE = 32  # the tiny profile's image side


class _SmallCNN(nn.Module):
    """Someone else's edge network: two strided convolutions, (N, 3, 32, 32) -> (N, 16, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


class _TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x.mean(1), x.std(1)


def _script(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def _write_faces(root: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One folder per identity (``id07``), PNG files."""
    for i, (img, lab) in enumerate(zip(images, labels.tolist())):
        folder = root / f"id{lab:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A TorchScript encoder, a gallery and a release of synthetic faces (6 people)."""
    root = tmp_path_factory.mktemp("user")
    data = make_synthetic(6, 6, 3, 2, SIZE, seed=11, eval_test_fraction=0.34)
    _write_faces(root / "gallery", data.eval_train.float_images(), data.eval_train.identities)
    _write_faces(root / "release", data.eval_test.float_images(), data.eval_test.identities)
    return {
        "encoder": _script(_SmallCNN(), root / "encoder.pt"),
        "gallery": root / "gallery",
        "release": root / "release",
        "root": root,
    }


def _audit(files: Dict[str, Path], out: Path, *extra: str):
    args = ["audit", "--profile", "tiny", "--out", str(out), "--device", "cpu"]
    args += ["--encoder", str(files["encoder"]), "--gallery", str(files["gallery"])]
    return CliRunner().invoke(app, args + list(extra))


@pytest.mark.slow
def test_audit_of_a_foreign_torchscript_encoder_end_to_end(
    user_files: Dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    res = _audit(user_files, out, "--features", str(user_files["release"]), "-d", "crafter-fast")
    assert res.exit_code == 0, res.output
    folder = out / "audits"
    (report,) = folder.glob("*/report.html")
    results = json.loads((report.parent / "results.json").read_text())
    assert results["chance"] == pytest.approx(1 / 6) and results["n_identities"] == 6
    assert results["audit"]["feature_shape"] == [16, 8, 8]
    pairs = {(r["defense"], r["attack"]) for r in results["rows"]}
    assert pairs == {
        (d, a)
        for d in ("none", "crafter-fast")
        for a in ("whitebox", "blackbox", "hybrid", "embedding")
    }
    for r in results["rows"]:
        acc, (lo, hi) = r["eval_acc_top1"]["dlib"], r["ci95"]["eval_acc_top1"]["dlib"]
        assert 0.0 <= lo <= acc <= hi <= 1.0
        assert r["fsim"] is not None and r["n_faces"] == len(results["labels"])
        assert (r["ssim"] is None) == (r["attack"] == "embedding")
    html = report.read_text()
    assert "crafter-fast" in html and "no cloud head" in html
    # the crafted release differs from the raw one: the attacker's decoder sees other features
    fsim = {(r["defense"], r["attack"]): r["fsim"] for r in results["rows"]}
    assert fsim[("none", "blackbox")] != fsim[("crafter-fast", "blackbox")]

    # a release of features only (no faces): Eval Acc alone, from the models trained above
    feats = torch.jit.load(str(user_files["encoder"]))(
        torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    ).detach()
    save_file(
        {"features": feats.contiguous(), "identities": torch.tensor([0, 1, 2, 3, 0])},
        str(tmp_path / "release.safetensors"),
    )
    res = _audit(
        user_files, out, "--features", str(tmp_path / "release.safetensors"), "--name", "feats"
    )
    assert res.exit_code == 0, res.output
    only = json.loads((folder / "feats" / "results.json").read_text())
    assert {r["defense"] for r in only["rows"]} == {"none"}
    assert all(r["fsim"] is None and r["ssim"] is None for r in only["rows"])
    assert all(r["eval_acc_top1"]["dlib"] is not None for r in only["rows"])


def _tree(root: Path) -> Dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


@pytest.mark.parametrize(
    "case, message",
    [
        ("tuple-output", "not a tensor"),
        ("feature-shape", "shape"),
        ("one-image-gallery", "one image per identity"),
        ("other-size", "but the encoder takes 32x32"),
        ("not-torchscript", "not a TorchScript file"),
        ("unknown-identity", "is not in the gallery"),
        ("defense-without-faces", "crafts the released faces"),
    ],
)
def test_audit_refuses_bad_input_in_one_line(
    case: str, message: str, user_files: Dict[str, Path], tmp_path: Path
) -> None:
    files = dict(user_files)
    extra = ["--features", str(files["release"])]
    if case == "tuple-output":
        files["encoder"] = _script(_TupleOut(), tmp_path / "tuple.pt")
    elif case == "feature-shape":
        save_file(
            {"features": torch.zeros(2, 16, 4, 4), "identities": torch.tensor([0, 1])},
            str(tmp_path / "r.safetensors"),
        )
        extra = ["--features", str(tmp_path / "r.safetensors")]
    elif case == "one-image-gallery":
        g = tmp_path / "g1"
        for person in sorted(files["gallery"].iterdir()):
            (g / person.name).mkdir(parents=True)
            first = sorted(person.iterdir())[0]
            (g / person.name / first.name).write_bytes(first.read_bytes())
        files["gallery"] = g
    elif case == "other-size":
        g = tmp_path / "g2" / "id00"
        g.mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(g / "a.png")
        Image.new("RGB", (40, 40)).save(g / "b.png")
        extra = ["--features", str(tmp_path / "g2")]
    elif case == "not-torchscript":
        (tmp_path / "enc.pt").write_bytes(b"not a model")
        files["encoder"] = tmp_path / "enc.pt"
    elif case == "unknown-identity":
        r = tmp_path / "r2" / "stranger"
        r.mkdir(parents=True)
        Image.new("RGB", (SIZE, SIZE)).save(r / "a.png")
        extra = ["--features", str(tmp_path / "r2")]
    elif case == "defense-without-faces":
        save_file(
            {"features": torch.zeros(2, 16, 8, 8), "identities": torch.tensor([0, 1])},
            str(tmp_path / "r3.safetensors"),
        )
        extra = ["--features", str(tmp_path / "r3.safetensors"), "-d", "crafter-fast"]
    out = tmp_path / "run"
    res = _audit(files, out, *extra)
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert line.startswith("error:") and message in line, res.output
    assert _tree(out) == {}  # refused before anything was written


def test_an_encoder_given_as_module_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facecraft.experiments.audit_inputs import encoder_feature_shape, load_encoder

    (tmp_path / "user_nets.py").write_text(
        "import torch\n"
        "def edge():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Conv2d(3, 4, 4, stride=4)\n"
        "def not_a_module():\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    enc, key = load_encoder("user_nets:edge")
    again, key2 = load_encoder("user_nets:edge")
    assert key == key2 and len(key) == 16
    assert encoder_feature_shape(enc, 32) == (4, 8, 8)
    with pytest.raises(ValueError, match="returned int, not a torch nn.Module"):
        load_encoder("user_nets:not_a_module")
    with pytest.raises(ValueError, match="cannot import it"):
        load_encoder("user_nets:missing")
    with pytest.raises(ValueError, match="no such file, and not MODULE:FUNCTION"):
        load_encoder(str(tmp_path / "nothing.pt"))


def test_resize_square_is_the_encoders_and_the_reports_resize() -> None:
    import torch.nn.functional as nnf

    from facecraft.experiments.audit_inputs import ResizedEncoder, resize_square

    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    assert resize_square(x, 40) is x and resize_square(x, 40, clamp=True) is x
    for size, down in ((32, True), (48, False)):
        plain = nnf.interpolate(x, size=(size, size), mode="bilinear", antialias=down)
        assert torch.equal(resize_square(x, size), plain)
        assert torch.equal(ResizedEncoder(nn.Identity(), size)(x), plain)
        aa = nnf.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        assert torch.equal(resize_square(x, size, antialias=True, clamp=True), aa.clamp(0, 1))
