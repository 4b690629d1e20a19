"""Scanners: layouts, attribute conversion, and label-file errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecraft.data import (
    CELEBA_OFFICIAL_CROP,
    LFW_CROP_FRACTION,
    DataError,
    centre_square_box,
    scan_celeba_chips,
    scan_celeba_official,
    scan_dataset,
    scan_folder,
    scan_lfw,
)

from .conftest import (
    ATTR_NAMES,
    attr_row,
    id_counts,
    make_celeba_chips,
    make_folder_tree,
    write_attr_file,
    write_image,
)

# ------------------------------------------------------------------------------------------------
# CelebA chips


def test_celeba_chips_records_and_attributes(tmp_path: Path) -> None:
    lines = make_celeba_chips(tmp_path)
    scan = scan_celeba_chips(tmp_path)
    assert len(scan) == len(lines) == sum(id_counts().values())
    assert scan.attribute_names == ATTR_NAMES
    assert scan.has_attributes and scan.crop_fraction == 1.0
    by_file = {r.file: r for r in scan.records}
    for j, (name, ident) in enumerate(lines):
        rec = by_file[f"images/{name}"]
        assert rec.identity == ident
        assert rec.attributes == tuple(1.0 if v == 1 else 0.0 for v in attr_row(j))
        assert scan.path(rec).is_file()
    assert [r.file for r in scan.records] == sorted(by_file)


def test_celeba_chips_without_attribute_file(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path, with_attributes=False)
    scan = scan_celeba_chips(tmp_path)
    assert scan.attribute_names == [] and not scan.has_attributes
    assert all(r.attributes is None for r in scan.records)


def test_sources_hash_depends_on_labels(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    h1 = scan_celeba_chips(tmp_path).sources_sha256()
    assert h1 == scan_celeba_chips(tmp_path).sources_sha256()
    id_file = tmp_path / "identity_CelebA.txt"
    id_file.write_text(id_file.read_text().replace("000001.jpg 7", "000001.jpg 8"))
    assert scan_celeba_chips(tmp_path).sources_sha256() != h1


def test_label_line_naming_missing_image(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    (tmp_path / "images" / "000004.jpg").unlink()
    with pytest.raises(DataError, match=r"identity_CelebA\.txt:4: names 000004\.jpg"):
        scan_celeba_chips(tmp_path)


def test_image_without_label(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    write_image(tmp_path / "images" / "999999.jpg", 1)
    with pytest.raises(
        DataError, match=r"999999\.jpg: image has no line in .*identity_CelebA\.txt"
    ):
        scan_celeba_chips(tmp_path)


def test_malformed_identity_line(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    id_file = tmp_path / "identity_CelebA.txt"
    text = id_file.read_text().splitlines()
    text[2] = text[2] + " extra"
    id_file.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"identity_CelebA\.txt:3: expected 'file identity'"):
        scan_celeba_chips(tmp_path)


def test_duplicate_identity_line(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    id_file = tmp_path / "identity_CelebA.txt"
    id_file.write_text(id_file.read_text() + "000002.jpg 7\n")
    with pytest.raises(DataError, match=r"identity_CelebA\.txt:\d+: 000002\.jpg is listed again"):
        scan_celeba_chips(tmp_path)


def test_attribute_count_line_wrong(tmp_path: Path) -> None:
    lines = make_celeba_chips(tmp_path)
    write_attr_file(tmp_path / "list_attr_celeba.txt", [f for f, _ in lines], count=len(lines) + 1)
    with pytest.raises(
        DataError, match=r"list_attr_celeba\.txt:1: declares 37 images but has 36 rows"
    ):
        scan_celeba_chips(tmp_path)


def test_attribute_count_not_a_number(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text("many\n" + attr.read_text().split("\n", 1)[1])
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt:1: expected the number of images"):
        scan_celeba_chips(tmp_path)


def test_attribute_columns_wrong(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    rows = attr.read_text().splitlines()
    rows[4] = rows[4] + " 1"  # line 5 gets an extra column
    attr.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt:5: expected 4 columns"):
        scan_celeba_chips(tmp_path)


def test_attribute_value_out_of_range(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    rows = attr.read_text().splitlines()
    rows[3] = rows[3].rsplit(" ", 1)[0] + " 0"
    attr.write_text("\n".join(rows) + "\n")
    with pytest.raises(
        DataError, match=r"list_attr_celeba\.txt:4: attribute values must be -1 or 1"
    ):
        scan_celeba_chips(tmp_path)


def test_attribute_file_names_unknown_image(tmp_path: Path) -> None:
    lines = make_celeba_chips(tmp_path)
    names = [f for f, _ in lines]
    names[5] = "123456.jpg"
    write_attr_file(tmp_path / "list_attr_celeba.txt", names)
    with pytest.raises(
        DataError, match=r"list_attr_celeba\.txt:8: names 123456\.jpg, which has no line"
    ):
        scan_celeba_chips(tmp_path)


def test_attribute_file_missing_a_row(tmp_path: Path) -> None:
    lines = make_celeba_chips(tmp_path)
    write_attr_file(tmp_path / "list_attr_celeba.txt", [f for f, _ in lines][:-1])
    with pytest.raises(
        DataError, match=r"identity_CelebA\.txt:36: 000036\.jpg has no row in .*list_attr"
    ):
        scan_celeba_chips(tmp_path)


def test_missing_identity_file(tmp_path: Path) -> None:
    make_celeba_chips(tmp_path)
    (tmp_path / "identity_CelebA.txt").unlink()
    with pytest.raises(DataError, match="identity_CelebA.txt not found"):
        scan_celeba_chips(tmp_path)


# ------------------------------------------------------------------------------------------------
# Official CelebA


def _official_tree(root: Path, label_dir: str) -> None:
    lines = []
    for j in range(6):
        name = f"{j + 1:06d}.jpg"
        write_image(root / "img_align_celeba" / name, j, (178, 218))
        lines.append((name, str(j % 2)))
    labels = root / label_dir
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in lines))
    write_attr_file(labels / "list_attr_celeba.txt", [f for f, _ in lines])


@pytest.mark.parametrize("label_dir", [".", "Anno"])
def test_celeba_official_layout(tmp_path: Path, label_dir: str) -> None:
    _official_tree(tmp_path, label_dir)
    scan = scan_celeba_official(tmp_path)
    assert len(scan) == 6
    assert scan.records[0].file == "img_align_celeba/000001.jpg"
    assert scan.crop_fraction == pytest.approx(CELEBA_OFFICIAL_CROP)
    assert scan.attribute_names == ATTR_NAMES
    assert {r.identity for r in scan.records} == {"0", "1"}


def test_celeba_official_crop_box() -> None:
    assert centre_square_box(178, 218, CELEBA_OFFICIAL_CROP) == (35, 55, 143, 163)
    assert centre_square_box(250, 250, LFW_CROP_FRACTION) == (50, 50, 200, 200)
    assert centre_square_box(64, 64, 1.0) == (0, 0, 64, 64)
    with pytest.raises(ValueError):
        centre_square_box(64, 64, 1.5)


def test_celeba_official_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="img_align_celeba: image folder not found"):
        scan_celeba_official(tmp_path)


# ------------------------------------------------------------------------------------------------
# LFW and folder-per-identity


@pytest.mark.parametrize("give", ["lfw", "lfw-deepfunneled"])
def test_lfw_layout(tmp_path: Path, give: str) -> None:
    counts = {"Ann_Smith": 3, "Bob_Jones": 1, "Carla_Diaz": 2}
    make_folder_tree(tmp_path / "lfw" / "lfw-deepfunneled", counts)
    scan = scan_lfw(tmp_path / "lfw" if give == "lfw" else tmp_path / "lfw" / "lfw-deepfunneled")
    assert scan.root == tmp_path / "lfw" / "lfw-deepfunneled"
    assert len(scan) == 6 and scan.attribute_names == [] and not scan.has_attributes
    assert scan.records[0].file == "Ann_Smith/Ann_Smith_0001.jpg"
    assert {
        r.identity: sum(1 for q in scan.records if q.identity == r.identity) for r in scan.records
    } == counts
    assert scan.crop_fraction == LFW_CROP_FRACTION


def test_lfw_stray_image_at_top_level(tmp_path: Path) -> None:
    make_folder_tree(tmp_path / "lfw-deepfunneled", {"Ann_Smith": 2})
    write_image(tmp_path / "lfw-deepfunneled" / "stray.jpg", 0)
    with pytest.raises(DataError, match=r"stray\.jpg: image is not inside an identity folder"):
        scan_lfw(tmp_path)


def test_folder_per_identity(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"alice": 2}, ext=".png", name_style="plain")
    make_folder_tree(tmp_path, {"bob": 3}, ext=".JPG", name_style="plain")
    (tmp_path / "bob" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    write_image(tmp_path / ".hidden" / "x.jpg", 0)
    (tmp_path / "README.md").write_text("top-level non-image files are fine")
    scan = scan_folder(tmp_path, crop_fraction=0.8)
    assert [(r.file, r.identity) for r in scan.records] == [
        ("alice/img1.png", "alice"),
        ("alice/img2.png", "alice"),
        ("bob/img1.JPG", "bob"),
        ("bob/img2.JPG", "bob"),
        ("bob/img3.JPG", "bob"),
    ]
    assert scan.crop_fraction == 0.8


def test_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    with pytest.raises(DataError, match="no images found"):
        scan_folder(tmp_path)


def test_scan_dataset_dispatch(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"a": 1})
    assert scan_dataset("folder", tmp_path).dataset == "folder"
    assert scan_dataset("lfw", tmp_path).dataset == "lfw"
    with pytest.raises(ValueError, match="no scanner"):
        scan_dataset("synthetic", tmp_path)
