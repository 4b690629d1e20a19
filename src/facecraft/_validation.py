"""Tensor checks shared by every public entry point (STYLE.md section 2, rule 5).

Modelled on piq's ``_validate_input`` but raising ``TypeError``/``ValueError`` so
that the checks survive ``python -O``. Messages state expected versus actual.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

__all__ = ["validate_images", "validate_tensors"]


def validate_tensors(
    tensors: Sequence[torch.Tensor],
    *,
    dim_range: Tuple[int, int] = (1, 8),
    same_shape: bool = True,
    data_range: Optional[Tuple[float, float]] = None,
) -> None:
    """Check type, device agreement, ndim, shape agreement and value range.

    Args:
        tensors: tensors to check; the first one's device is the reference.
        dim_range: inclusive (min, max) number of dimensions.
        same_shape: require every tensor to have the first one's shape.
        data_range: inclusive (low, high) bounds on the values, or ``None``.

    Raises:
        TypeError: an element is not a tensor.
        ValueError: device, ndim, shape or value range is off.
    """
    if len(tensors) == 0:
        raise ValueError("expected at least one tensor, got none")
    for i, t in enumerate(tensors):
        if not torch.is_tensor(t):
            raise TypeError(f"argument {i}: expected a torch.Tensor, got {type(t).__name__}")
    ref = tensors[0]
    for i, t in enumerate(tensors):
        if t.device != ref.device:
            raise ValueError(f"argument {i}: expected device {ref.device}, got {t.device}")
        if not dim_range[0] <= t.dim() <= dim_range[1]:
            raise ValueError(
                f"argument {i}: expected {dim_range[0]} to {dim_range[1]} dimensions, "
                f"got {t.dim()} (shape {tuple(t.shape)})"
            )
        if same_shape and t.shape != ref.shape:
            raise ValueError(
                f"argument {i}: expected shape {tuple(ref.shape)} (that of argument 0), "
                f"got {tuple(t.shape)}"
            )
        if data_range is not None and t.numel() > 0:
            lo, hi = float(t.detach().min()), float(t.detach().max())
            if lo < data_range[0] - 1e-6 or hi > data_range[1] + 1e-6:
                raise ValueError(
                    f"argument {i}: expected values in [{data_range[0]}, {data_range[1]}], "
                    f"got [{lo:.4g}, {hi:.4g}]"
                )


def validate_images(
    images: torch.Tensor,
    *,
    channels: Optional[int] = 3,
    size: Optional[int] = None,
    check_range: bool = True,
) -> None:
    """Check a float image batch of shape ``(N, C, H, W)`` with values in [0, 1].

    Args:
        images: the batch.
        channels: required ``C``, or ``None`` for any.
        size: required ``H == W``, or ``None`` for any square or non-square size.
        check_range: check that values lie in [0, 1].

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong ndim, channels, size or value range.
    """
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"expected float images in [0, 1], got dtype {images.dtype}; "
            "convert uint8 with images.float() / 255"
        )
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {images.shape[1]}")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise ValueError(
            f"expected {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}"
        )
    validate_tensors([images], dim_range=(4, 4), data_range=(0.0, 1.0) if check_range else None)
