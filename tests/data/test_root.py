"""resolve_dataset_root: dataset folder or parent, env var, and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecraft.data import DataError, resolve_dataset_root

from .conftest import make_celeba_chips, make_folder_tree, write_image


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    make_celeba_chips(tmp_path / "celeba-chips", {"1": 1})
    make_folder_tree(tmp_path / "lfw" / "lfw-deepfunneled", {"Ann_A": 1})
    return tmp_path


def test_celeba_from_parent_or_itself(data_root: Path) -> None:
    assert resolve_dataset_root("celeba", str(data_root)) == data_root / "celeba-chips"
    assert (
        resolve_dataset_root("celeba", str(data_root / "celeba-chips"))
        == data_root / "celeba-chips"
    )


def test_lfw_variants(data_root: Path, tmp_path_factory) -> None:
    lfw = data_root / "lfw" / "lfw-deepfunneled"
    assert resolve_dataset_root("lfw", str(data_root)) == lfw
    assert resolve_dataset_root("lfw", str(data_root / "lfw")) == lfw
    assert resolve_dataset_root("lfw", str(lfw)) == lfw
    other = tmp_path_factory.mktemp("other")
    make_folder_tree(other / "lfw-deepfunneled", {"Bo_B": 1})
    assert resolve_dataset_root("lfw", str(other)) == other / "lfw-deepfunneled"


def test_celeba_official(tmp_path: Path) -> None:
    write_image(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", 0)
    assert resolve_dataset_root("celeba-official", str(tmp_path)) == tmp_path / "celeba"
    assert (
        resolve_dataset_root("celeba-official", str(tmp_path / "celeba" / "img_align_celeba"))
        == tmp_path / "celeba"
    )


def test_folder(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"x": 1})
    assert resolve_dataset_root("folder", str(tmp_path)) == tmp_path
    with pytest.raises(DataError, match="not found"):
        resolve_dataset_root("folder", str(tmp_path / "x"))


def test_environment_variable(data_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("FACECRAFT_DATA", str(data_root))
    assert resolve_dataset_root("celeba", None) == data_root / "celeba-chips"
    # an explicit option wins over the environment
    other = data_root / "lfw"
    assert resolve_dataset_root("lfw", str(other)) == other / "lfw-deepfunneled"


def test_nothing_found_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        resolve_dataset_root("celeba", str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "celeba-chips") in msg
    assert (
        "facecraft data fetch lfw" in msg and "img_align_celeba" in msg and "FACECRAFT_DATA" in msg
    )


def test_no_root_given(monkeypatch) -> None:
    monkeypatch.delenv("FACECRAFT_DATA", raising=False)
    with pytest.raises(
        DataError, match="no data root for dataset 'lfw'.*\n(.*\n)*.*facecraft data fetch lfw"
    ):
        resolve_dataset_root("lfw", None)


def test_root_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        resolve_dataset_root("lfw", str(tmp_path / "missing"))


def test_unknown_and_synthetic(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_dataset_root("imagenet", str(tmp_path))
    with pytest.raises(ValueError, match="needs no data root"):
        resolve_dataset_root("synthetic", str(tmp_path))
