"""The data configuration: which faces, how they are split and at what size.

It lives in the data layer because :func:`facecraft.data.prepare_data` reads it; the run's
other configs and the profiles are in :mod:`facecraft.experiments.config`, which re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["DATASETS", "DataConfig", "positive"]

DATASETS = ("celeba", "celeba-official", "lfw", "folder", "synthetic")


def positive(obj: Any, *names: str) -> None:
    """Raise ``ValueError`` naming ``type(obj).<name>`` if a named attribute is set and <= 0."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and v <= 0:
            raise ValueError(f"{type(obj).__name__}.{n} must be positive, got {v}")


@dataclass(frozen=True)
class DataConfig:
    """Which faces, how they are split and at what size (CRAFTER.md section 1).

    Attributes:
        dataset: ``celeba`` (aligned chips, e.g. ``shared/data/celeba-chips``),
            ``celeba-official`` (``img_align_celeba`` 178x218, centre crop),
            ``lfw`` (``lfw-deepfunneled/<Name>/...``), ``folder`` (one folder per
            identity) or ``synthetic`` (procedural faces for smoke tests).
        root: the dataset folder (``None`` for synthetic, or resolved from
            ``--data-root`` / ``FACECRAFT_DATA``).
        image_size: side of the cached square images.
        min_private_images: identities with at least this many images are private.
        eval_test_fraction: share of each private identity's images in ``eval_test``.
        max_public: cap on public images (``None`` = all).
        max_private_identities: cap on private identities (``None`` = all).
        seed: seed of the split.
    """

    dataset: str = "celeba"
    root: Optional[str] = None
    image_size: int = 64
    min_private_images: int = 10
    eval_test_fraction: float = 0.3
    max_public: Optional[int] = None
    max_private_identities: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"DataConfig.dataset must be one of {DATASETS}, got {self.dataset!r}")
        positive(self, "image_size", "min_private_images", "max_public", "max_private_identities")
        if not 0.0 < self.eval_test_fraction < 1.0:
            raise ValueError(
                f"DataConfig.eval_test_fraction must be in (0, 1), got {self.eval_test_fraction}"
            )
