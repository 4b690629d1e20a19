"""Decode, crop and resize image files into one uint8 tensor, once.

Each file is opened with PIL and fully loaded (so a truncated JPEG fails
here, not later), converted to RGB explicitly when it is greyscale, palette
or has an alpha channel, cropped to a centred square and resized with LANCZOS
to the cache size. PIL releases the GIL while decoding and resampling, so a
small thread pool speeds this up even on two cores.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from facecraft.data.errors import DataError
from facecraft.data.records import centre_square_box
from facecraft.data.types import ProgressFn

__all__ = ["load_image", "decode_images"]

logger = logging.getLogger(__name__)

_PROGRESS_EVERY = 256


def load_image(path: Path, size: int, crop_fraction: float = 1.0) -> Tuple[np.ndarray, str]:
    """Decode one image into uint8 ``(size, size, 3)`` RGB.

    Args:
        path: the image file.
        size: output side in pixels.
        crop_fraction: centred square crop before resizing (see
            :func:`~facecraft.data.records.centre_square_box`).

    Returns:
        ``(pixels, original_mode)``; ``original_mode`` is PIL's mode before the
        RGB conversion (``"L"`` for greyscale, ``"RGBA"``, ...).

    Raises:
        DataError: the file is missing, not an image, or truncated/corrupt.

    Note:
        Images with an alpha channel are converted with PIL's ``convert("RGB")``,
        which drops the alpha channel (no compositing).
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            rgb = im if mode == "RGB" else im.convert("RGB")
            box = centre_square_box(rgb.width, rgb.height, crop_fraction)
            out = rgb.resize((size, size), Image.Resampling.LANCZOS, box=box)
            return np.asarray(out, dtype=np.uint8), mode
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        raise DataError(
            f"{path}: cannot decode image ({type(e).__name__}: {e}); replace or remove the file"
        ) from e


def decode_images(
    paths: Sequence[Path],
    size: int,
    *,
    crop_fraction: float = 1.0,
    num_workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
) -> Tuple[torch.Tensor, int]:
    """Decode ``paths`` into a uint8 ``(N, 3, size, size)`` tensor.

    Args:
        paths: image files, in output order.
        size: output side in pixels.
        crop_fraction: centred square crop before resizing.
        num_workers: decoding threads (default ``min(4, os.cpu_count())``).
        progress: called as ``progress(done, total, "decode")``.

    Returns:
        ``(images, n_converted)``: the images and how many were not RGB on disk.

    Raises:
        DataError: a file cannot be decoded (the message names it).
    """
    n = len(paths)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    converted = 0
    modes: dict = {}

    def work(i: int) -> str:
        pixels, mode = load_image(paths[i], size, crop_fraction)
        out[i] = pixels
        return mode

    if progress is not None:
        progress(0, n, "decode")
    if workers <= 1:
        results = map(work, range(n))
        for done, mode in enumerate(results, 1):
            converted += _count(mode, modes)
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == n):
                progress(done, n, "decode")
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facecraft-decode")
        try:
            for done, mode in enumerate(pool.map(work, range(n)), 1):
                converted += _count(mode, modes)
                if progress is not None and (done % _PROGRESS_EVERY == 0 or done == n):
                    progress(done, n, "decode")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    if converted:
        logger.info("converted %d of %d images to RGB (modes: %s)", converted, n, modes)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), converted


def _count(mode: str, modes: dict) -> int:
    if mode == "RGB":
        return 0
    modes[mode] = modes.get(mode, 0) + 1
    return 1
