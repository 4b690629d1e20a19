"""What a dataset scanner returns: image records, the scan, and the crop applied before resizing.

:class:`ImageRecord` is one image (file relative to the dataset root, identity
label, optional attributes); :class:`SourceScan` is everything a scanner of
:mod:`facecraft.data.sources` found. The crop constants and
:func:`centre_square_box` fix the centred square each dataset is cut to before
resizing (:mod:`facecraft.data.decode`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = [
    "IMAGE_EXTENSIONS",
    "CELEBA_OFFICIAL_CROP",
    "LFW_CROP_FRACTION",
    "DEFAULT_CROP_FRACTION",
    "ImageRecord",
    "SourceScan",
    "centre_square_box",
    "is_image",
]

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


def is_image(name: str) -> bool:
    """Whether ``name`` ends in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
