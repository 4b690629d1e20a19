"""Image similarity of reconstructions to originals: SSIM and PSNR (CRAFTER.md section 5).

The paper reports SSIM between each reconstruction of an ``eval_test`` image
and the image itself as a pixel-level privacy measure (lower is better for
the defender). PSNR is given alongside as the usual companion.

References:
    Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error
    Visibility to Structural Similarity", IEEE TIP 13(4), 2004,
    https://doi.org/10.1109/TIP.2003.819861.
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    SSIM is computed by ``pytorch-msssim`` (Gongfan Fang's port of the
    reference implementation; Gaussian window 11, sigma 1.5, K = (0.01, 0.03),
    "valid" filtering). For images smaller than 11 pixels the window shrinks to
    the largest odd size that fits, and sigma shrinks with it (``1.5 * win / 11``),
    instead of pytorch-msssim's default of silently skipping the smoothing.
"""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ssim as _ms_ssim

from facecraft._validation import validate_tensors
from facecraft.metrics._common import check_reduction, reduce

__all__ = ["psnr", "ssim"]

_WIN = 11
_SIGMA = 1.5


def ssim(
    x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    r"""Structural similarity of two image batches (Wang et al., 2004), averaged over channels.

    Args:
        x: images ``(N, C, H, W)`` with values in ``[0, data_range]``; ``H, W >= 3``.
        y: images of the same shape, device and range.
        data_range: the value range of the images (1.0 for [0, 1], 255 for uint8-scaled floats).
        reduction: ``'none'`` (one value per image, ``(N,)``), ``'mean'`` or ``'sum'``.

    Returns:
        SSIM in [-1, 1] (1 for identical images), in the input's dtype.

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: shapes, devices or ranges disagree, an image is smaller than
            3x3, ``data_range`` is not positive, or ``reduction`` is unknown.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> float(ssim(x, x))
        1.0
    """
    check_reduction(reduction)
    _check_pair(x, y, data_range)
    side = min(x.shape[-2:])
    if side < 3:
        raise ValueError(
            f"SSIM needs images of at least 3x3 pixels, got {x.shape[-2]}x{x.shape[-1]}"
        )
    win = min(_WIN, side if side % 2 == 1 else side - 1)
    values = _ms_ssim(
        x,
        y,
        data_range=data_range,
        size_average=False,
        win_size=win,
        win_sigma=_SIGMA * win / _WIN,
    )
    return reduce(values, reduction)


def psnr(
    x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    r"""Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image, in dB.

    Args:
        x: images ``(N, C, H, W)`` with values in ``[0, data_range]``.
        y: images of the same shape, device and range.
        data_range: the value range of the images.
        reduction: ``'none'`` (``(N,)``), ``'mean'`` or ``'sum'`` over images.

    Returns:
        PSNR in dB, in the input's dtype; ``inf`` for an identical pair (so a
        ``'mean'`` over a batch with one identical pair is ``inf`` too).

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: shapes, devices or ranges disagree, ``data_range`` is not
            positive, or ``reduction`` is unknown.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); y = torch.full((1, 1, 4, 4), 0.1)
        >>> round(float(psnr(x, y)), 4)
        20.0
    """
    check_reduction(reduction)
    _check_pair(x, y, data_range)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(data_range**2 / mse)
    return reduce(values, reduction)


def _check_pair(x: torch.Tensor, y: torch.Tensor, data_range: float) -> None:
    if (
        not isinstance(data_range, (int, float))
        or isinstance(data_range, bool)
        or not data_range > 0
    ):
        raise ValueError(f"expected a positive data_range, got {data_range!r}")
    if not math.isfinite(data_range):
        raise ValueError(f"expected a finite data_range, got {data_range!r}")
    validate_tensors([x, y], dim_range=(4, 4), data_range=(0.0, float(data_range)))
    for name, t in (("x", x), ("y", y)):
        if not t.is_floating_point():
            raise TypeError(f"expected floating-point {name}, got dtype {t.dtype}")
    if x.dtype != y.dtype:
        raise TypeError(f"expected x and y of the same dtype, got {x.dtype} and {y.dtype}")
    if x.shape[0] == 0:
        raise ValueError("expected at least one image, got an empty batch")
