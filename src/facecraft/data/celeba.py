"""Scanners for CelebA: aligned chips and the official ``img_align_celeba`` set.

Both read the official label files: ``identity_CelebA.txt`` (``file identity``
per line) and, optionally, ``list_attr_celeba.txt`` (image count, 40 names,
then ``file`` and 40 values in ``{-1, 1}``, converted to ``{0, 1}`` here).
Every image must be labelled and every label line must name an existing image;
a problem raises :class:`~facecraft.data.errors.DataError` naming the file and
line.

References:
    Z. Liu, P. Luo, X. Wang, X. Tang, "Deep Learning Face Attributes in the
    Wild", ICCV 2015 (CelebA), https://doi.org/10.1109/ICCV.2015.425.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from facecraft.data.errors import DataError
from facecraft.data.records import (
    DEFAULT_CROP_FRACTION,
    ImageRecord,
    SourceScan,
    centre_square_box,
    is_image,
)

__all__ = ["scan_celeba_chips", "scan_celeba_official"]

logger = logging.getLogger("facecraft.data.sources")

PathLike = Union[str, "os.PathLike[str]"]

IDENTITY_FILE = "identity_CelebA.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"


def scan_celeba_chips(root: PathLike, *, crop_fraction: Optional[float] = None) -> SourceScan:
    """Scan aligned CelebA chips: ``images/NNNNNN.jpg`` plus the official label files.

    ``identity_CelebA.txt`` (``file identity`` per line, no header) must list
    exactly the images in ``images/``. ``list_attr_celeba.txt`` (official
    format: image count, 40 names, then ``file`` and 40 values in ``{-1, 1}``)
    is optional; when present it must have one row per labelled image, and its
    values are converted to ``{0, 1}`` floats here (CRAFTER.md section 5 uses
    them for the utility AUC).

    Args:
        root: the folder holding ``images/`` and the label files.
        crop_fraction: centred square crop before resizing; default 1.0 (the
            chips are already aligned and square).

    Returns:
        The scan, records sorted by file.

    Raises:
        DataError: a folder or label file is missing or inconsistent.
    """
    root = Path(root)
    return _scan_celeba_layout(
        "celeba",
        root,
        root / "images",
        [root],
        DEFAULT_CROP_FRACTION["celeba"] if crop_fraction is None else crop_fraction,
    )


def scan_celeba_official(root: PathLike, *, crop_fraction: Optional[float] = None) -> SourceScan:
    """Scan the official CelebA aligned set: ``img_align_celeba/`` (178x218 JPEGs).

    ``root`` is the folder containing ``img_align_celeba/`` (a nested
    ``img_align_celeba/img_align_celeba/``, as some mirrors ship it, is also
    accepted); the label files may sit in ``root``, ``root/Anno`` or the images
    folder's parent. Every image must be labelled and every label line must
    name an existing image (use a folder holding the full set, or trim the
    label files to the images you have).

    Args:
        root: the dataset folder.
        crop_fraction: centred square crop before resizing, as a fraction of
            the shorter side; default :data:`CELEBA_OFFICIAL_CROP`.

    Returns:
        The scan; record paths look like ``img_align_celeba/000001.jpg``.

    Raises:
        DataError: a folder or label file is missing or inconsistent.

    Note:
        We use the 108x108 centre crop (offsets 35, 55 in the 178x218 frame)
        of DCGAN-tensorflow and the model-inversion papers Crafter builds on
        (GMI, KED-MI), then resize; it keeps the whole face and little
        background. The paper does not state its crop.
    """
    root = Path(root)
    images = root / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():
        images = images / "img_align_celeba"
    return _scan_celeba_layout(
        "celeba-official",
        root,
        images,
        [root, root / "Anno", images.parent],
        DEFAULT_CROP_FRACTION["celeba-official"] if crop_fraction is None else crop_fraction,
    )


def _scan_celeba_layout(
    dataset: str, root: Path, images_dir: Path, label_dirs: Sequence[Path], crop_fraction: float
) -> SourceScan:
    centre_square_box(2, 2, crop_fraction)  # validates the fraction
    if not images_dir.is_dir():
        raise DataError(
            f"{images_dir}: image folder not found (expected the {dataset} layout under {root})"
        )
    id_path = _find_label_file(label_dirs, IDENTITY_FILE)
    if id_path is None:
        where = ", ".join(str(d) for d in dict.fromkeys(label_dirs))
        raise DataError(f"{IDENTITY_FILE} not found in {where}; CelebA needs its identity labels")
    present = {e.name for e in os.scandir(images_dir) if e.is_file() and is_image(e.name)}
    identities, id_lines = _read_identity_file(id_path)
    for name, lineno in id_lines.items():
        if name not in present:
            raise DataError(
                f"{id_path}:{lineno}: names {name}, which does not exist in {images_dir}"
            )
    unlabelled = sorted(present - identities.keys())
    if unlabelled:
        raise DataError(
            f"{images_dir / unlabelled[0]}: image has no line in {id_path}"
            f" ({len(unlabelled)} unlabelled image(s) in {images_dir})"
        )
    attr_path = _find_label_file(label_dirs, ATTRIBUTE_FILE)
    names: List[str] = []
    attrs: Dict[str, Tuple[float, ...]] = {}
    if attr_path is None:
        logger.warning(
            "%s not found beside %s; %s loads without attributes", ATTRIBUTE_FILE, id_path, dataset
        )
    else:
        names, attrs, attr_lines = _read_attribute_file(attr_path)
        for name, lineno in attr_lines.items():
            if name not in identities:
                raise DataError(
                    f"{attr_path}:{lineno}: names {name}, which has no line in {id_path}"
                )
        for name, lineno in id_lines.items():
            if name not in attrs:
                raise DataError(f"{id_path}:{lineno}: {name} has no row in {attr_path}")
    rel = images_dir.relative_to(root).as_posix()
    records = [
        ImageRecord(file=f"{rel}/{name}", identity=identities[name], attributes=attrs.get(name))
        for name in sorted(identities)
    ]
    logger.info(
        "%s: %d images of %d identities in %s",
        dataset,
        len(records),
        len(set(identities.values())),
        root,
    )
    return SourceScan(dataset, root, records, names, crop_fraction)


def _find_label_file(dirs: Sequence[Path], name: str) -> Optional[Path]:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def _read_identity_file(path: Path) -> Tuple[Dict[str, str], Dict[str, int]]:
    identities: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}: expected 'file identity', got {line.strip()!r}")
            name, ident = parts
            if name in lines:
                raise DataError(
                    f"{path}:{lineno}: {name} is listed again (first on line {lines[name]})"
                )
            identities[name] = ident
            lines[name] = lineno
    if not identities:
        raise DataError(f"{path}: no identity lines")
    return identities, lines


def _read_attribute_file(
    path: Path,
) -> Tuple[List[str], Dict[str, Tuple[float, ...]], Dict[str, int]]:
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        try:
            declared = int(header.strip())
        except ValueError:
            raise DataError(
                f"{path}:1: expected the number of images, got {header.strip()!r}"
            ) from None
        names = f.readline().split()
        if not names:
            raise DataError(f"{path}:2: expected the attribute names")
        attrs: Dict[str, Tuple[float, ...]] = {}
        lines: Dict[str, int] = {}
        for lineno, line in enumerate(f, 3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(names) + 1:
                raise DataError(
                    f"{path}:{lineno}: expected {len(names) + 1} columns"
                    f" (file + {len(names)} attributes),"
                    f" got {len(parts)}"
                )
            name = parts[0]
            if name in lines:
                raise DataError(
                    f"{path}:{lineno}: {name} is listed again (first on line {lines[name]})"
                )
            values = []
            for v in parts[1:]:
                if v == "1":
                    values.append(1.0)
                elif v == "-1":
                    values.append(0.0)
                else:
                    raise DataError(f"{path}:{lineno}: attribute values must be -1 or 1, got {v!r}")
            attrs[name] = tuple(values)
            lines[name] = lineno
    if declared != len(attrs):
        raise DataError(f"{path}:1: declares {declared} images but has {len(attrs)} rows")
    return names, attrs, lines
