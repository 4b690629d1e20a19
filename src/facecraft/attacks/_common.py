"""Small helpers shared by the learning attacks: image batches, shuffling, defence queries."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from facecraft._validation import validate_images

__all__ = ["as_float_images", "check_image_set", "epoch_batches", "query_in_batches"]


def check_image_set(images: torch.Tensor) -> None:
    """Accept ``(N, 3, S, S)`` images as uint8 in [0, 255] or float in [0, 1]."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, 3, S, S), got {tuple(images.shape)}")
    else:
        validate_images(images)
    if images.shape[0] == 0:
        raise ValueError("expected at least one image, got none")


def as_float_images(x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch as float in [0, 1] on ``device`` (uint8 is divided by 255)."""
    if x.dtype == torch.uint8:
        return x.to(device).to(dtype) / 255.0
    return x.to(device, dtype)


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch over ``n`` items (CPU indices)."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def query_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    progress: Optional[Callable[[int, int, str], None]] = None,
    desc: str = "querying",
) -> torch.Tensor:
    """``fn`` on float batches of ``images``; results concatenated and kept on ``device``."""
    out = []
    n = images.shape[0]
    for i in range(0, n, batch_size):
        with torch.no_grad():
            out.append(fn(as_float_images(images[i : i + batch_size], device)).detach())
        if progress is not None:
            progress(min(i + batch_size, n), n, desc)
    return torch.cat(out)
