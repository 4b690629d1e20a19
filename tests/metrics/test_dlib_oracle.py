"""Tests of facecraft.metrics.dlib_oracle (dlib's face-recognition ResNet as an identity oracle)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from facecraft._io import CheckpointError
from facecraft.metrics import CELEBA_CROP_FRACTION, DlibOracle, feature_cosine
from facecraft.metrics.dlib_oracle import dlib_model_path

N_IDS, N_GALLERY, N_QUERY = 5, 4, 2


@pytest.fixture(scope="module")
def oracle() -> DlibOracle:
    return DlibOracle(crop_fraction=CELEBA_CROP_FRACTION)


# ---------------------------------------------------------------------- no data needed


def test_model_file_found() -> None:
    path = dlib_model_path()
    assert (
        path.name == "dlib_face_recognition_resnet_model_v1.dat" and path.stat().st_size > 1_000_000
    )


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="crop_fraction"):
        DlibOracle(crop_fraction=0.0)
    with pytest.raises(ValueError, match="crop_fraction"):
        DlibOracle(crop_fraction=1.5)
    with pytest.raises(ValueError, match="scoring"):
        DlibOracle(scoring="median")
    with pytest.raises(ValueError, match="similarity"):
        DlibOracle(similarity="manhattan")


def test_scoring_rules_on_hand_made_embeddings(oracle: DlibOracle) -> None:
    e = torch.eye(128)
    gallery = torch.stack(
        [e[0], e[1], e[2], e[2] + e[3]]
    )  # identity 0: e0, e1; identity 2: e2, e2+e3
    labels = torch.tensor([0, 0, 2, 2])  # identity 1 has no gallery images
    query = torch.stack([e[1], e[3]])
    o = DlibOracle(scoring="max")
    o.fit_embeddings(gallery, labels)
    s = o.scores_from_embeddings(query)
    assert s.shape == (2, 3)
    assert bool(torch.isinf(s[:, 1]).all()) and float(s[0, 1]) < 0
    assert torch.allclose(s[0, [0, 2]], torch.tensor([1.0, 0.0]))
    assert torch.allclose(s[1, [0, 2]], torch.tensor([0.0, 2**-0.5]))
    o.scoring = "mean"
    assert torch.allclose(o.scores_from_embeddings(query)[0, [0, 2]], torch.tensor([0.5, 0.0]))
    o.scoring = "centroid"  # centroid of identity 0: (e0 + e1) / 2 -> cosine with e1 = 1/sqrt(2)
    assert torch.allclose(o.scores_from_embeddings(query)[0, 0], torch.tensor(2**-0.5))
    o.scoring, o.similarity = "max", "euclidean"
    assert torch.allclose(
        o.scores_from_embeddings(query)[0, [0, 2]], torch.tensor([0.0, -(2**0.5)])
    )


def test_requires_gallery(oracle: DlibOracle) -> None:
    with pytest.raises(RuntimeError, match="no gallery"):
        DlibOracle().scores_from_embeddings(torch.zeros(1, 128))
    with pytest.raises(ValueError, match=r"\(M, 128\)"):
        DlibOracle().fit_embeddings(torch.zeros(3, 64), torch.zeros(3, dtype=torch.long))


def test_chips_geometry(oracle: DlibOracle) -> None:
    x = torch.zeros(1, 3, 64, 64)
    x[..., 8:56, 8:56] = 1.0  # exactly the central 75 %
    chip = oracle.chips(x)
    assert chip.shape == (1, 150, 150, 3) and chip.dtype == np.uint8
    assert chip.min() == 255  # the crop holds only the white square
    with pytest.raises(TypeError, match="float images"):
        oracle.chips(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


# ---------------------------------------------------------------------- real faces


def _load(path: Path, size: int) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0


def _faces(root: Path, size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    chips = root / "celeba-chips"
    by_id: Dict[str, List[str]] = collections.defaultdict(list)
    for line in (chips / "identity_CelebA.txt").read_text().splitlines():
        name, ident = line.split()
        by_id[ident].append(name)
    chosen = sorted((i for i, f in by_id.items() if len(f) >= 10), key=int)[:N_IDS]
    gx, gy, qx, qy = [], [], [], []
    for label, ident in enumerate(chosen):
        files = sorted(by_id[ident])[: N_GALLERY + N_QUERY]
        for j, f in enumerate(files):
            img = _load(chips / "images" / f, size)
            (gx if j < N_GALLERY else qx).append(img)
            (gy if j < N_GALLERY else qy).append(label)
    return torch.stack(gx), torch.tensor(gy), torch.stack(qx), torch.tensor(qy)


@pytest.fixture(scope="module")
def faces64(shared_data: Path) -> tuple:
    return _faces(shared_data, 64)


@pytest.mark.slow
def test_real_faces_identified(oracle: DlibOracle, faces64: tuple, tmp_path: Path) -> None:
    gx, gy, qx, qy = faces64
    calls = []
    oracle.fit(gx, gy, progress=lambda *c: calls.append(c))
    assert calls and calls[-1][:2] == (len(gx), len(gx))
    acc = oracle.identify(qx, qy, k=1)
    assert torch.is_tensor(acc) and float(acc) >= 0.8  # chance is 0.2
    assert float(oracle.identify(qx, qy, k=3)) >= float(acc)
    # a different person's image is less similar than the same person's
    e = oracle.embed(qx)
    same = feature_cosine(e[0::2], e[1::2], reduction="none")  # the two queries of each identity
    other = feature_cosine(e[0::2], e[1::2].roll(1, dims=0), reduction="none")
    assert float(same.mean()) > float(other.mean())

    stem = tmp_path / "gallery"
    oracle.save(stem)
    loaded = DlibOracle.load(stem)
    assert loaded.crop_fraction == oracle.crop_fraction and loaded.num_identities == N_IDS
    assert torch.allclose(loaded.scores_from_embeddings(e), oracle.scores_from_embeddings(e))
    with pytest.raises(ValueError, match="crop_fraction"):
        DlibOracle.load(stem, crop_fraction=0.5)
    with pytest.raises(CheckpointError):
        DlibOracle.load(tmp_path / "missing")


@pytest.mark.slow
def test_batched_equals_single(faces64: tuple) -> None:
    x = faces64[2][:4]
    batched = DlibOracle(batch_size=32).embed(x)
    single = DlibOracle(batch_size=1).embed(x)
    assert batched.shape == (4, 128) and batched.dtype == torch.float32
    assert torch.allclose(batched, single, atol=1e-6)


@pytest.mark.slow
def test_resolution_invariance(oracle: DlibOracle, shared_data: Path, faces64: tuple) -> None:
    _, _, q128, _ = _faces(shared_data, 128)
    q64 = faces64[2]
    cos = feature_cosine(oracle.embed(q64[:4]), oracle.embed(q128[:4]), reduction="none")
    assert bool((cos > 0.9).all()), cos
    fsim = oracle.feature_similarity(q64[:2], q64[:2])
    assert float(fsim) == pytest.approx(1.0, abs=1e-5)


def test_interrupted_embedding_resumes_from_its_checkpoint(
    faces64: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill part-way through a long embedding keeps the rows done so far.

    The same call resumes them and returns what one uninterrupted call returns.
    """
    x = faces64[2][:6]
    want = DlibOracle(batch_size=2).embed(x)
    stem = tmp_path / "partial"
    calls = {"n": 0}
    oracle = DlibOracle(batch_size=2)
    real = oracle._model.compute_face_descriptor

    def dies_on_third_batch(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(
        oracle,
        "_model",
        type("M", (), {"compute_face_descriptor": staticmethod(dies_on_third_batch)}),
    )
    with pytest.raises(KeyboardInterrupt):
        oracle.embed(x, checkpoint_stem=stem, checkpoint_every=2)
    assert (tmp_path / "partial.safetensors").exists()  # 4 of 6 rows kept
    calls["n"] = 10  # no more failures; count what the resumed call still computes
    got = oracle.embed(x, checkpoint_stem=stem, checkpoint_every=2)
    assert calls["n"] == 11  # only the last batch of 2 was embedded again
    assert torch.equal(got, want) and not (tmp_path / "partial.safetensors").exists()
