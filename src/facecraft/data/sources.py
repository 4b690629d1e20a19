"""Dataset scanners: which image files exist, whose face each one is, and its attributes.

A scanner reads a dataset's folder layout and label files and returns a
:class:`~facecraft.data.records.SourceScan`: one
:class:`~facecraft.data.records.ImageRecord` per image (path relative to the
dataset root, identity label, optional attribute vector), the attribute names,
and the centred square crop to apply before resizing. Nothing is decoded here;
that happens once in :mod:`facecraft.data.prepare`. Identities are what the
split of CRAFTER.md section 1 is made on, so every image must have exactly one.

Supported layouts (scanners in :mod:`facecraft.data.celeba` and
:mod:`facecraft.data.folders`; :func:`scan_dataset` picks one by name):

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

import os
from typing import Optional, Union

from facecraft.data.celeba import scan_celeba_chips, scan_celeba_official
from facecraft.data.folders import scan_folder, scan_lfw
from facecraft.data.records import (
    CELEBA_OFFICIAL_CROP,
    DEFAULT_CROP_FRACTION,
    IMAGE_EXTENSIONS,
    LFW_CROP_FRACTION,
    ImageRecord,
    SourceScan,
    centre_square_box,
)

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

PathLike = Union[str, "os.PathLike[str]"]


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
