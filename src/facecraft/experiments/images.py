"""Image grids as PNG (no torchvision dependency)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from facecraft._io import atomic_write_bytes

__all__ = ["grid_image", "save_grid", "png_bytes"]


def grid_image(
    images: torch.Tensor,
    *,
    nrow: Optional[int] = None,
    pad: int = 2,
    scale: int = 1,
    rows: Optional[Sequence[torch.Tensor]] = None,
) -> Image.Image:
    """Tile float images ``(N, 3, S, S)`` in [0, 1] into a grid, ``nrow`` per row (default ~sqrt N).

    With ``rows`` given (a list of equally sized batches), each batch is one row.
    """
    if rows is not None:
        images = torch.cat(list(rows))
        nrow = rows[0].shape[0]
    x = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol_rows = int(math.ceil(n / nrow))
    canvas = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = arr[i]
    img = Image.fromarray(canvas)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding of a PIL image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: Union[str, Path], **kwargs) -> Path:
    """Write :func:`grid_image` of ``images`` to ``path`` (PNG, atomically)."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(grid_image(images, **kwargs)))
    return path
