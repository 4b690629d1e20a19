"""Scanners for one-folder-per-identity layouts: LFW deep-funneled and a generic folder set.

The identity of an image is the name of the folder it sits in; these layouts
have no attributes.

References:
    G. B. Huang, M. Mattar, H. Lee, E. Learned-Miller, "Learning to Align from
    Scratch", NIPS 2012 (LFW deep funneling), http://vis-www.cs.umass.edu/lfw/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

from facecraft.data.errors import DataError
from facecraft.data.records import (
    DEFAULT_CROP_FRACTION,
    ImageRecord,
    SourceScan,
    centre_square_box,
    is_image,
)

__all__ = ["scan_folder", "scan_lfw"]

logger = logging.getLogger("facecraft.data.sources")

PathLike = Union[str, "os.PathLike[str]"]


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
    """Scan ``root/<identity>/<image>`` (the work of :func:`scan_lfw` and :func:`scan_folder`).

    An image directly in ``root``, or a folder or file seen twice through a
    symbolic link, raises :class:`~facecraft.data.errors.DataError`.
    """
    centre_square_box(2, 2, crop_fraction)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected one sub-folder per identity)")
    records: List[ImageRecord] = []
    nested = 0
    # resolved identity folder -> its name (a symlinked alias is refused)
    seen_dirs: Dict[Path, str] = {}
    seen_files: Dict[Path, str] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if is_image(entry.name):
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
                f"{root / entry.name}: the same folder as {root / seen_dirs[real]} "
                "(a symbolic link); each identity must appear once, remove one of them"
            )
        seen_dirs[real] = entry.name
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if sub.name.startswith("."):
                continue
            if sub.is_dir():
                nested += 1
            elif sub.is_file() and is_image(sub.name):
                file = f"{entry.name}/{sub.name}"
                real_file = Path(sub.path).resolve()
                if real_file in seen_files:
                    raise DataError(
                        f"{root / file}: the same image file as "
                        f"{root / seen_files[real_file]} (a symbolic link); "
                        "each image must appear once, remove one of them"
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
