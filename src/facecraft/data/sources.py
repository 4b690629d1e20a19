"""Dataset scanners: which image files exist, whose face each one is, and its attributes.

A scanner reads a dataset's folder layout and label files and returns a
:class:`SourceScan`: one :class:`ImageRecord` per image (path relative to the
dataset root, identity label, optional attribute vector), the attribute names,
and the centred square crop to apply before resizing. Nothing is decoded here;
that happens once in :mod:`facecraft.data.prepare`. Identities are what the
split of CRAFTER.md section 1 is made on, so every image must have exactly one.

Supported layouts:

- ``celeba``: aligned chips as in ``shared/data/celeba-chips``
  (``images/NNNNNN.jpg``, ``identity_CelebA.txt``, ``list_attr_celeba.txt``).
- ``celeba-official``: the official ``img_align_celeba/`` (178x218), label
  files at the root or in ``Anno/``.
- ``lfw``: ``lfw-deepfunneled/<Name>/<Name>_NNNN.jpg`` (no attributes).
- ``folder``: ``<root>/<identity>/*.jpg|jpeg|png``.

Label-file problems (a line naming a missing image, an image without a label,
an attribute file whose count, columns or rows disagree with the identity file)
raise :class:`~facecraft.data.errors.DataError` naming the file and line.

References:
    Z. Liu, P. Luo, X. Wang, X. Tang, "Deep Learning Face Attributes in the
    Wild", ICCV 2015 (CelebA), https://doi.org/10.1109/ICCV.2015.425.
    G. B. Huang, M. Mattar, H. Lee, E. Learned-Miller, "Learning to Align from
    Scratch", NIPS 2012 (LFW deep funneling), http://vis-www.cs.umass.edu/lfw/.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from facecraft.data.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CELEBA_OFFICIAL_CROP",
    "LFW_CROP_FRACTION",
    "DEFAULT_CROP_FRACTION",
    "ImageRecord",
    "SourceScan",
    "centre_square_box",
    "scan_celeba_chips",
    "scan_celeba_official",
    "scan_lfw",
    "scan_folder",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: File name endings recognised as images (case-insensitive).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png")

#: Official CelebA aligned crop: a 108x108 square centred in the 178x218 frame,
#: as a fraction of the shorter side (see :func:`scan_celeba_official`).
CELEBA_OFFICIAL_CROP: float = 108 / 178

#: LFW deep-funneled crop: the central 60% of the frame (see :func:`scan_lfw`).
LFW_CROP_FRACTION: float = 0.6

#: The crop each dataset uses when none is given (1.0 = largest centred square).
DEFAULT_CROP_FRACTION: Dict[str, float] = {
    "celeba": 1.0,
    "celeba-official": CELEBA_OFFICIAL_CROP,
    "lfw": LFW_CROP_FRACTION,
    "folder": 1.0,
    "synthetic": 1.0,
}

IDENTITY_FILE = "identity_CelebA.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        file: path relative to the dataset root, with ``/`` separators.
        identity: the dataset's identity label (CelebA number, LFW name, folder name).
        attributes: ``{0, 1}`` floats, one per attribute name, or ``None``.
    """

    file: str
    identity: str
    attributes: Optional[Tuple[float, ...]] = None


@dataclass
class SourceScan:
    """What a scanner found in a dataset folder.

    Attributes:
        dataset: the layout name (``celeba``, ``celeba-official``, ``lfw``, ``folder``).
        root: the folder ``ImageRecord.file`` paths are relative to.
        records: one record per image, sorted by file.
        attribute_names: names of the attribute columns (empty if none).
        crop_fraction: side of the centred square crop applied before resizing,
            as a fraction of the image's shorter side (1.0 = no crop of square images).
    """

    dataset: str
    root: Path
    records: List[ImageRecord]
    attribute_names: List[str] = field(default_factory=list)
    crop_fraction: float = 1.0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_attributes(self) -> bool:
        return bool(self.attribute_names) and all(r.attributes is not None for r in self.records)

    def path(self, record: ImageRecord) -> Path:
        """Absolute path of ``record``'s image."""
        return self.root / record.file

    def sources_sha256(self) -> str:
        """SHA-256 over the sorted ``file<TAB>identity`` lines (identifies the labelled files)."""
        h = hashlib.sha256()
        for f, i in sorted((r.file, r.identity) for r in self.records):
            h.update(f"{f}\t{i}\n".encode("utf-8"))
        return h.hexdigest()


def centre_square_box(width: int, height: int, fraction: float) -> Tuple[int, int, int, int]:
    """The centred square crop box ``(left, top, right, bottom)`` used before resizing.

    The side is ``round(fraction * min(width, height))``; the square is centred
    (offsets rounded down). For official CelebA (178x218) and
    ``fraction = 108 / 178`` this is ``(35, 55, 143, 163)``, the crop of the
    model-inversion literature.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        fraction: in ``(0, 1]``.

    Returns:
        ``(left, top, right, bottom)`` in pixels, as PIL expects.

    Raises:
        ValueError: ``fraction`` is outside ``(0, 1]``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    side = max(1, int(round(fraction * min(width, height))))
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


# --------------------------------------------------------------------------------------------------
# CelebA


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
    present = {e.name for e in os.scandir(images_dir) if e.is_file() and _is_image(e.name)}
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


# --------------------------------------------------------------------------------------------------
# LFW and folder-per-identity


def scan_lfw(root: PathLike, *, crop_fraction: Optional[float] = None) -> SourceScan:
    """Scan LFW deep-funneled: ``lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``.

    The identity is the person's folder name; LFW has no attributes here.

    Args:
        root: the ``lfw-deepfunneled`` folder itself or a folder containing it
            (e.g. ``lfw/``).
        crop_fraction: centred square crop before resizing; default
            :data:`LFW_CROP_FRACTION`.

    Returns:
        The scan, rooted at the ``lfw-deepfunneled`` folder (records look like
        ``Name/Name_0001.jpg``).

    Raises:
        DataError: no person folders, or an image outside any person folder.

    Note:
        Deep-funneled LFW images (250x250, or 125x125 in the shared copy) put
        the face in roughly the central half of the frame. We keep the central
        60% square: the whole face with a little hair and background, framed
        about like the CelebA chips. Pass ``crop_fraction`` to change it.
    """
    root = Path(root)
    if (root / "lfw-deepfunneled").is_dir():
        root = root / "lfw-deepfunneled"
    return _scan_identity_folders(
        "lfw", root, DEFAULT_CROP_FRACTION["lfw"] if crop_fraction is None else crop_fraction
    )


def scan_folder(root: PathLike, *, crop_fraction: Optional[float] = None) -> SourceScan:
    """Scan a folder-per-identity set: ``<root>/<identity>/*.jpg|jpeg|png``.

    Hidden files and folders (``.*``) and non-image files are ignored; images
    in deeper folders are ignored with a log message.

    Args:
        root: the folder holding one sub-folder per identity.
        crop_fraction: centred square crop before resizing; default 1.0 (the
            largest centred square; a no-op for square images).

    Returns:
        The scan, records sorted by file.

    Raises:
        DataError: no identity folders, or an image directly in ``root``.
    """
    return _scan_identity_folders(
        "folder",
        Path(root),
        DEFAULT_CROP_FRACTION["folder"] if crop_fraction is None else crop_fraction,
    )


def _scan_identity_folders(dataset: str, root: Path, crop_fraction: float) -> SourceScan:
    centre_square_box(2, 2, crop_fraction)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected one sub-folder per identity)")
    records: List[ImageRecord] = []
    nested = 0
    seen_dirs: Dict[
        Path, str
    ] = {}  # resolved identity folder -> its name (a symlinked alias is refused)
    seen_files: Dict[Path, str] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if _is_image(entry.name):
                raise DataError(
                    f"{root / entry.name}: image is not inside an identity folder"
                    f" (expected {root}/<identity>/<image>)"
                )
            continue
        if not entry.is_dir():
            continue
        real = Path(entry.path).resolve()
        if real in seen_dirs:
            raise DataError(
                f"{root / entry.name}: the same folder as {root / seen_dirs[real]} (a symbolic link); "
                "each identity must appear once, remove one of them"
            )
        seen_dirs[real] = entry.name
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if sub.name.startswith("."):
                continue
            if sub.is_dir():
                nested += 1
            elif sub.is_file() and _is_image(sub.name):
                file = f"{entry.name}/{sub.name}"
                real_file = Path(sub.path).resolve()
                if real_file in seen_files:
                    raise DataError(
                        f"{root / file}: the same image file as {root / seen_files[real_file]} (a symbolic "
                        "link); each image must appear once, remove one of them"
                    )
                seen_files[real_file] = file
                records.append(ImageRecord(file=file, identity=entry.name))
    if nested:
        logger.info("%s: ignored %d nested folder(s) below identity folders", root, nested)
    if not records:
        raise DataError(
            f"{root}: no images found in identity folders (expected {root}/<identity>/<image>)"
        )
    logger.info(
        "%s: %d images of %d identities in %s",
        dataset,
        len(records),
        len({r.identity for r in records}),
        root,
    )
    return SourceScan(dataset, root, records, [], crop_fraction)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


_SCANNERS = {
    "celeba": scan_celeba_chips,
    "celeba-official": scan_celeba_official,
    "lfw": scan_lfw,
    "folder": scan_folder,
}


def scan_dataset(
    dataset: str, root: PathLike, *, crop_fraction: Optional[float] = None
) -> SourceScan:
    """Scan ``root`` with the scanner for ``dataset``.

    Args:
        dataset: ``celeba``, ``celeba-official``, ``lfw`` or ``folder``
            (``synthetic`` is generated, not scanned).
        root: the dataset folder.
        crop_fraction: overrides the dataset's default crop.

    Returns:
        The scan.

    Raises:
        ValueError: unknown ``dataset``.
        DataError: the folder or its labels are missing or inconsistent.
    """
    if dataset not in _SCANNERS:
        raise ValueError(f"no scanner for dataset {dataset!r}; choose one of {sorted(_SCANNERS)}")
    return _SCANNERS[dataset](root, crop_fraction=crop_fraction)
