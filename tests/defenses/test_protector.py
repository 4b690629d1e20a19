"""Tests for facecraft.defenses.protector (the edge API)."""

from __future__ import annotations

import json

import pytest
import torch

from facecraft._io import CheckpointError
from facecraft.defenses import (
    DISCO,
    AdversarialLearning,
    Crafter,
    GaussianNoise,
    NoDefense,
    Protector,
    load_protector,
)
from facecraft.models import Amortizer


def _images(n: int = 5, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def protector(tiny_target) -> Protector:
    return Protector(
        NoDefense(tiny_target.encoder, tiny_target.head),
        image_size=32,
        arch="resnet18",
        width=0.25,
        batch_size=2,
    )


def test_protect_shape_chunks_and_metadata(protector, tiny_target):
    x = _images()
    out = protector(x)
    assert out.shape == (5, 16, 8, 8) and protector.feature_shape == (16, 8, 8)
    assert torch.allclose(out, tiny_target.encoder(x).detach(), atol=1e-6)  # chunked vs one batch
    assert protector.num_outputs == 4


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (
            _images(2, 64),
            ValueError,
            r"expected images of shape \(N, 3, 32, 32\), got \(2, 3, 64, 64\)",
        ),
        (torch.rand(2, 1, 32, 32), ValueError, r"\(N, 3, 32, 32\), got \(2, 1, 32, 32\)"),
        (torch.rand(3, 32, 32), ValueError, r"got \(3, 32, 32\)"),
        ((_images(2) * 255).to(torch.uint8), TypeError, "torch.uint8"),
        (_images(2) * 2, ValueError, r"values in \[0, 1\]"),
        (torch.zeros(0, 3, 32, 32), ValueError, "empty"),
        ([[0.0]], TypeError, "list"),
    ],
)
def test_invalid_inputs_raise_clear_errors(protector, bad, exc, match):
    with pytest.raises(exc, match=match):
        protector(bad)


def test_output_on_input_device_and_dtype(protector):
    x = _images(3).double()
    out = protector(x)
    assert out.device == x.device and out.dtype == torch.float32


def test_gpu_round_trip(protector):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    protector.defense.encoder.cuda()
    x = _images(3)
    assert protector(x).device == x.device
    assert protector(x.cuda()).is_cuda


def test_save_load_round_trip_none(protector, tmp_path):
    protector.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    assert (
        meta["defense"] == "none"
        and meta["image_size"] == 32
        and meta["feature_shape"] == [16, 8, 8]
    )
    again = load_protector(tmp_path / "p")
    x = _images()
    assert torch.equal(again(x), protector(x))


def test_save_load_round_trip_noise(tiny_target, tmp_path):
    p = Protector(
        GaussianNoise(tiny_target.encoder, tiny_target.head, sigma=0.2, seed=7),
        image_size=32,
        arch="resnet18",
        width=0.25,
    )
    p.save(tmp_path / "noise")
    again = load_protector(tmp_path / "noise")
    assert again.defense.get_config() == {"sigma": 0.2, "relative": True, "seed": 7}
    x = _images()
    assert torch.equal(again(x), p(x))


def test_save_load_round_trip_crafter(tiny_target, tiny_gan, tmp_path):
    amor = Amortizer((16, 8, 8), 16, width=4).eval()
    c = Crafter(
        tiny_target.encoder,
        tiny_target.head,
        tiny_gan[0],
        amortizer=amor,
        outer_steps=1,
        inner_steps=2,
        critic_steps=1,
        critic_width=8,
        solver="gn-cg",
        cg_iters=2,
        beta=3.0,
    )
    p = Protector(c, image_size=32, arch="resnet18", width=0.25)
    p.save(tmp_path / "crafter")
    again = load_protector(tmp_path / "crafter")
    assert isinstance(again.defense, Crafter) and again.defense.get_config() == c.get_config()
    assert set(again.defense.networks()) == {"encoder", "head", "generator", "amortizer"}
    x = _images(4)
    assert torch.equal(again(x), p(x))


def test_save_load_round_trip_disco(tiny_target, tmp_path):
    g = torch.Generator().manual_seed(0)
    d = DISCO(
        tiny_target.encoder,
        tiny_target.head,
        image_size=32,
        epochs=1,
        batch_size=8,
        decoder_width=8,
        pruner_width=8,
    ).fit(torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 2, (8, 4), generator=g).float())
    p = Protector(d, image_size=32, arch="resnet18", width=0.25)
    p.save(tmp_path / "disco")
    again = load_protector(tmp_path / "disco")
    x = _images()
    assert torch.equal(again(x), p(x))


def test_per_image_keywords_are_chunked(tiny_target, tiny_gan):
    c = Crafter(
        tiny_target.encoder,
        tiny_target.head,
        tiny_gan[0],
        utility="task",
        outer_steps=1,
        inner_steps=1,
        init_steps=1,
        critic_steps=1,
        critic_width=8,
        solver="cg",
        cg_iters=1,
    )
    p = Protector(c, image_size=32, batch_size=2)
    attrs = torch.ones(5, 4)
    assert p(_images(), attributes=attrs).shape == (5, 16, 8, 8)  # 3 chunks of <= 2 rows


def test_save_load_round_trip_advlearn(tiny_target, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    d = AdversarialLearning(
        tiny_target.encoder, tiny_target.head, epochs=1, batch_size=8, decoder_width=8
    ).fit(x, torch.randint(0, 2, (8, 4), generator=g).float())
    p = Protector(d, image_size=32, arch="resnet18", width=0.25)
    p.save(tmp_path / "adv")
    again = load_protector(tmp_path / "adv")
    assert torch.equal(again(x), p(x))
    assert not torch.equal(again(x), tiny_target.encoder(x).detach())


def test_save_needs_arch(tiny_target, tmp_path):
    p = Protector(NoDefense(tiny_target.encoder), image_size=32)
    with pytest.raises(ValueError, match="arch"):
        p.save(tmp_path / "p")


def test_load_rejects_tampered_or_wrong_files(protector, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_protector(tmp_path / "missing")
    protector.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    meta["networks"]["encoder"]["width"] = 0.5
    (tmp_path / "p.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_protector(tmp_path / "p")
    meta["kind"] = "generator"
    (tmp_path / "p.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="expected a 'protector'"):
        load_protector(tmp_path / "p")


def test_protector_rejects_non_defense():
    with pytest.raises(TypeError, match="FeatureDefense"):
        Protector(object(), image_size=32)  # type: ignore[arg-type]
