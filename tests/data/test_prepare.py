"""prepare_data / load_prepared on tiny fake data: shapes, manifest, determinism, cache, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facecraft.data.prepare as prepare_mod
from facecraft.data import DataError, load_image, load_prepared, prepare_data
from facecraft.experiments.config import DataConfig

from .conftest import id_counts, make_celeba_chips, make_folder_tree, write_attr_file, write_image

SPLITS = ("public", "eval_train", "eval_test")


def test_shapes_counts_and_manifest(tiny_cfg: DataConfig, tmp_path: Path, progress_log) -> None:
    log, cb = progress_log
    data = prepare_data(tiny_cfg, tmp_path / "cache", progress=cb)
    assert not data.synthetic and data.has_attributes and data.image_size == 16
    for s in SPLITS:
        fs = getattr(data, s)
        assert fs.images.dtype == torch.uint8 and fs.images.shape[1:] == (3, 16, 16)
        assert fs.identities.dtype == torch.long
        assert fs.attributes is not None and fs.attributes.shape == (len(fs), 3)
        assert set(fs.attributes.unique().tolist()) <= {0.0, 1.0}
        assert len(fs.files) == len(fs)
    assert data.eval_train.identity_names == data.eval_test.identity_names == ["3", "7", "12", "40"]
    assert sorted(data.public.identity_names, key=int) == data.public.identity_names
    assert set(data.public.identity_names).isdisjoint(data.eval_train.identity_names)
    assert len(data.public) == 12 and len(data.eval_train) + len(data.eval_test) == 24
    m = data.manifest
    assert m["dataset"] == "celeba" and m["synthetic"] is False
    assert m["counts"]["public"] == {"images": 12, "identities": 6}
    assert m["counts"]["eval_test"]["identities"] == 4
    assert m["identities"]["eval_train"] == ["3", "7", "12", "40"]
    assert len(m["sources_sha256"]) == 64 and set(m["arrays_sha256"]) == set(SPLITS)
    assert m["config"] == json.loads(json.dumps(dataclasses.asdict(tiny_cfg)))
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text()) == m
    assert log[-1] == (36, 36, "decode")


def test_identities_and_attributes_follow_the_files(tiny_cfg: DataConfig, tmp_path: Path) -> None:
    data = prepare_data(tiny_cfg, tmp_path / "cache")
    id_lines = dict(
        line.split()
        for line in (Path(tiny_cfg.root) / "identity_CelebA.txt").read_text().splitlines()
    )
    for s in SPLITS:
        fs = getattr(data, s)
        for k, f in enumerate(fs.files):
            assert fs.identity_names[int(fs.identities[k])] == id_lines[Path(f).name]
    # pixels equal a direct decode of the same file
    f = data.eval_test.files[0]
    pixels, _ = load_image(Path(tiny_cfg.root) / f, 16)
    assert torch.equal(data.eval_test.images[0], torch.from_numpy(pixels.copy()).permute(2, 0, 1))


def test_load_prepared_round_trip(tiny_cfg: DataConfig, tmp_path: Path) -> None:
    data = prepare_data(tiny_cfg, tmp_path / "cache")
    again = load_prepared(tmp_path / "cache")
    for s in SPLITS:
        a, b = getattr(data, s), getattr(again, s)
        assert torch.equal(a.images, b.images) and torch.equal(a.identities, b.identities)
        assert torch.equal(a.attributes, b.attributes)
        assert a.identity_names == b.identity_names and a.files == b.files
    assert again.attribute_names == data.attribute_names and again.manifest == data.manifest


def test_same_seed_identical_different_seed_differs(celeba_chips: Path, tmp_path: Path) -> None:
    cfg = DataConfig(
        dataset="celeba", root=str(celeba_chips), image_size=16, min_private_images=5, seed=1
    )
    a = prepare_data(cfg, tmp_path / "a")
    b = prepare_data(cfg, tmp_path / "b")
    for s in SPLITS:
        assert torch.equal(getattr(a, s).images, getattr(b, s).images)
        assert getattr(a, s).files == getattr(b, s).files
    assert a.manifest["arrays_sha256"] == b.manifest["arrays_sha256"]
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    c = prepare_data(dataclasses.replace(cfg, seed=2), tmp_path / "c")
    assert (a.eval_test.files, a.eval_train.files) != (c.eval_test.files, c.eval_train.files)
    assert a.manifest["arrays_sha256"]["eval_test"] != c.manifest["arrays_sha256"]["eval_test"]
    assert a.manifest["sources_sha256"] == c.manifest["sources_sha256"]
    assert a.manifest["content_hash"] != c.manifest["content_hash"]


def test_cache_reused_then_rebuilt_on_config_change(
    tiny_cfg: DataConfig, tmp_path: Path, monkeypatch
) -> None:
    calls = []
    real = prepare_mod.decode_images

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_mod, "decode_images", counting)
    cache = tmp_path / "cache"
    first = prepare_data(tiny_cfg, cache)
    second = prepare_data(tiny_cfg, cache)
    assert len(calls) == 1
    assert torch.equal(first.public.images, second.public.images)
    bigger = prepare_data(dataclasses.replace(tiny_cfg, image_size=20), cache)
    assert len(calls) == 2 and bigger.image_size == 20
    assert load_prepared(cache).image_size == 20
    prepare_data(dataclasses.replace(tiny_cfg, image_size=20), cache, crop_fraction=0.5)
    assert len(calls) == 3
    prepare_data(dataclasses.replace(tiny_cfg, image_size=20), cache, crop_fraction=0.5, force=True)
    assert len(calls) == 4


def test_corrupt_cache_is_rebuilt_and_load_rejects_it(tiny_cfg: DataConfig, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare_data(tiny_cfg, cache)
    st = cache / "eval_test.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(st))
    tensors["images"][0, 0, 0, 0] ^= 1
    save_file(tensors, str(st))
    with pytest.raises(DataError, match=r"eval_test\.safetensors: contents do not match"):
        load_prepared(cache)
    assert (
        load_prepared(cache, verify=False).eval_test.images.shape[0] == tensors["images"].shape[0]
    )
    rebuilt = prepare_data(tiny_cfg, cache)
    assert load_prepared(cache).manifest["arrays_sha256"] == rebuilt.manifest["arrays_sha256"]


def test_load_prepared_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest.json: no prepared data here"):
        load_prepared(tmp_path)


def test_corrupt_jpeg_names_the_file(celeba_chips: Path, tmp_path: Path) -> None:
    bad = celeba_chips / "images" / "000003.jpg"  # private identity "7": always decoded
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    cfg = DataConfig(dataset="celeba", root=str(celeba_chips), image_size=16, min_private_images=5)
    with pytest.raises(DataError, match=r"000003\.jpg: cannot decode image"):
        prepare_data(cfg, tmp_path / "cache")
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_garbage_file_names_the_file(celeba_chips: Path, tmp_path: Path) -> None:
    (celeba_chips / "images" / "000010.jpg").write_bytes(b"this is not a jpeg at all")
    cfg = DataConfig(dataset="celeba", root=str(celeba_chips), image_size=16, min_private_images=5)
    with pytest.raises(DataError, match=r"000010\.jpg: cannot decode image"):
        prepare_data(cfg, tmp_path / "cache", num_workers=1)


def test_grayscale_and_rgba_converted(celeba_chips: Path, tmp_path: Path, caplog) -> None:
    write_image(celeba_chips / "images" / "000001.jpg", 5, (24, 24), mode="L")
    rgba = Image.fromarray(np.full((24, 24, 4), 200, dtype=np.uint8), "RGBA")
    rgba.save(celeba_chips / "images" / "000002.jpg", format="PNG")  # PIL goes by content, not name
    cfg = DataConfig(dataset="celeba", root=str(celeba_chips), image_size=16, min_private_images=5)
    with caplog.at_level("INFO", logger="facecraft.data.decode"):
        data = prepare_data(cfg, tmp_path / "cache")
    assert data.manifest["converted_to_rgb"] == 2
    assert "converted 2 of 36 images to RGB" in caplog.text
    fs = data.eval_train if "images/000001.jpg" in data.eval_train.files else data.eval_test
    img = fs.images[fs.files.index("images/000001.jpg")].int()
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_centre_crop_applied(tmp_path: Path) -> None:
    arr = np.zeros((80, 80, 3), dtype=np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[20:60, 20:60] = (255, 0, 0)
    for ident in ("a", "b"):
        for k in range(3):
            (tmp_path / "faces" / ident).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "faces" / ident / f"{k}.png")
    (tmp_path / "faces" / "c").mkdir()
    Image.fromarray(arr).save(tmp_path / "faces" / "c" / "0.png")
    cfg = DataConfig(
        dataset="folder", root=str(tmp_path / "faces"), image_size=8, min_private_images=3
    )
    full = prepare_data(cfg, tmp_path / "full")
    cropped = prepare_data(cfg, tmp_path / "crop", crop_fraction=0.25)
    assert int(full.public.images[0, 2].max()) == 255  # blue border survives without a crop
    img = cropped.public.images[0].int()
    assert (
        int(img[0].min()) > 240 and int(img[2].max()) < 15
    )  # all red after a central crop (LANCZOS support included)


def test_lfw_layout_prepares_without_attributes(tmp_path: Path) -> None:
    make_folder_tree(
        tmp_path / "lfw" / "lfw-deepfunneled",
        {"Ann_A": 4, "Bob_B": 1, "Cy_C": 5, "Di_D": 2},
        size=(50, 50),
    )
    cfg = DataConfig(dataset="lfw", root=str(tmp_path), image_size=12, min_private_images=4)
    data = prepare_data(cfg, tmp_path / "cache")
    assert not data.has_attributes and data.public.attributes is None and data.attribute_names == []
    assert data.eval_test.identity_names == ["Ann_A", "Cy_C"]
    assert data.public.identity_names == ["Bob_B", "Di_D"]
    assert data.manifest["crop_fraction"] == pytest.approx(0.6)
    assert data.manifest["root"] == str((tmp_path / "lfw" / "lfw-deepfunneled").resolve())
    assert load_prepared(tmp_path / "cache").public.attributes is None


def test_root_from_environment(celeba_chips: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FACECRAFT_DATA", str(celeba_chips.parent))
    cfg = DataConfig(dataset="celeba", root=None, image_size=16, min_private_images=5)
    data = prepare_data(cfg, tmp_path / "cache")
    assert data.manifest["root"] == str(celeba_chips.resolve())
    assert len(data.public) == sum(n for n in id_counts().values() if n < 5)


def test_max_public_and_private_caps(celeba_chips: Path, tmp_path: Path) -> None:
    cfg = DataConfig(
        dataset="celeba",
        root=str(celeba_chips),
        image_size=16,
        min_private_images=5,
        max_public=5,
        max_private_identities=2,
    )
    data = prepare_data(cfg, tmp_path / "cache")
    assert len(data.public) == 5 and data.eval_train.num_identities == 2
    assert set(data.public.identity_names).isdisjoint(data.eval_test.identity_names)
    # the two unchosen private-sized identities are public, but max_public caps the images


def test_same_results_with_one_or_many_workers(tiny_cfg: DataConfig, tmp_path: Path) -> None:
    a = prepare_data(tiny_cfg, tmp_path / "a", num_workers=1)
    b = prepare_data(tiny_cfg, tmp_path / "b", num_workers=3)
    assert a.manifest["arrays_sha256"] == b.manifest["arrays_sha256"]


def test_missing_root_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FACECRAFT_DATA", raising=False)
    with pytest.raises(DataError, match="facecraft data fetch lfw"):
        prepare_data(DataConfig(dataset="celeba"), tmp_path / "cache")


def test_mismatched_label_file_surfaces_through_prepare(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path / "chips")
    (tmp_path / "chips" / "images" / "000020.jpg").unlink()
    cfg = DataConfig(
        dataset="celeba", root=str(tmp_path / "chips"), image_size=16, min_private_images=5
    )
    with pytest.raises(DataError, match=r"identity_CelebA\.txt:20: names 000020\.jpg"):
        prepare_data(cfg, tmp_path / "cache")


def test_changed_root_invalidates_the_cached_split(
    celeba_chips: Path, tiny_cfg: DataConfig, tmp_path: Path, caplog
) -> None:
    """Issue 20: images deleted from a prepared root were silently served from the old split."""
    cache = tmp_path / "cache"
    first = prepare_data(tiny_cfg, cache)
    assert first.manifest["root_listing"]["count"] == len(list(celeba_chips.rglob("*.*")))
    # delete identity 3's images (and their label lines), as a user pruning a data root would
    lines = (celeba_chips / "identity_CelebA.txt").read_text().splitlines()
    gone = {f for f, i in (line.split() for line in lines) if i == "3"}
    for f in gone:
        (celeba_chips / "images" / f).unlink()
    kept = [line for line in lines if line.split()[0] not in gone]
    (celeba_chips / "identity_CelebA.txt").write_text("".join(f"{line}\n" for line in kept))
    write_attr_file(celeba_chips / "list_attr_celeba.txt", [line.split()[0] for line in kept])
    caplog.set_level("WARNING", logger="facecraft.data.prepare")
    second = prepare_data(tiny_cfg, cache)
    assert "changed since its split was prepared" in caplog.text and str(cache) in caplog.text
    every = set().union(
        *(set(s.files) for s in (second.public, second.eval_train, second.eval_test))
    )
    assert not every & {f"images/{f}" for f in gone}
    assert second.manifest["content_hash"] != first.manifest["content_hash"]
    assert load_prepared(cache).manifest["root_listing"] == second.manifest["root_listing"]


def test_touched_file_invalidates_and_unchanged_root_reuses(
    celeba_chips: Path, tiny_cfg: DataConfig, tmp_path: Path, monkeypatch
) -> None:
    calls = []
    real = prepare_mod.decode_images
    monkeypatch.setattr(
        prepare_mod, "decode_images", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    cache = tmp_path / "cache"
    prepare_data(tiny_cfg, cache)
    prepare_data(tiny_cfg, cache)
    assert len(calls) == 1  # same files: reused
    img = next((celeba_chips / "images").iterdir())
    st = img.stat()
    import os

    os.utime(
        img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)
    )  # replaced in place (same name and size)
    prepare_data(tiny_cfg, cache)
    assert len(calls) == 2
