"""Tensor checks shared by every public entry point (STYLE.md section 2, rule 5).

Modelled on piq's ``_validate_input`` but raising ``TypeError``/``ValueError`` so
that the checks survive ``python -O``. Messages state expected versus actual.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Tuple

import torch

__all__ = [
    "MAX_WIDTH",
    "MAX_WIDTH_MULTIPLIER",
    "check_number",
    "check_path_name",
    "check_run_dir",
    "check_output_stem",
    "validate_features",
    "validate_images",
    "validate_tensors",
]

#: the largest base channel count accepted for a generator, critic, amortizer or crafter network
#: (the paper's is 64; a critic of width w has up to 8w channels, so 512 is already about 1 GB of
#: weights)
MAX_WIDTH = 512
#: the largest width multiplier accepted for the target network (the study's is 0.25 to 1)
MAX_WIDTH_MULTIPLIER = 8.0


def validate_tensors(
    tensors: Sequence[torch.Tensor],
    *,
    dim_range: Tuple[int, int] = (1, 8),
    same_shape: bool = True,
    data_range: Optional[Tuple[float, float]] = None,
    finite: bool = False,
) -> None:
    """Check type, device agreement, ndim, shape agreement, finiteness and value range.

    Args:
        tensors: tensors to check; the first one's device is the reference.
        dim_range: inclusive (min, max) number of dimensions.
        same_shape: require every tensor to have the first one's shape.
        data_range: inclusive (low, high) bounds on the values, or ``None``;
            a range also requires finite values (NaN compares false with any bound).
        finite: require finite values (no NaN or infinity) in floating-point tensors.

    Raises:
        TypeError: an element is not a tensor.
        ValueError: device, ndim, shape, finiteness or value range is off.
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
        if (finite or data_range is not None) and t.is_floating_point() and t.numel() > 0:
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                raise ValueError(
                    f"argument {i}: expected finite values, got {bad} NaN or infinite "
                    f"of {t.numel()} (shape {tuple(t.shape)})"
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
    dtype: Optional[torch.dtype] = None,
    allow_empty: bool = True,
) -> None:
    """Check a float image batch of shape ``(N, C, H, W)`` with finite values in [0, 1].

    Args:
        images: the batch.
        channels: required ``C``, or ``None`` for any.
        size: required ``H == W``, or ``None`` for any square or non-square size.
        check_range: check that values lie in [0, 1] (values are checked to be finite either way).
        dtype: required floating-point dtype (the networks' ``torch.float32``), or ``None`` for any.
        allow_empty: accept a batch of ``N = 0`` images.

    Raises:
        TypeError: not a floating-point tensor, or not of ``dtype``.
        ValueError: wrong ndim, channels, size, an empty batch, non-finite values or values out of
            range.
    """
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"expected float images in [0, 1], got dtype {images.dtype}; "
            "convert uint8 with images.float() / 255"
        )
    if dtype is not None and images.dtype != dtype:
        raise TypeError(
            f"expected {dtype} images in [0, 1], got dtype {images.dtype}; "
            f"convert with images.to({dtype})"
        )
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got shape {tuple(images.shape)}")
    if not allow_empty and images.shape[0] == 0:
        raise ValueError(
            f"expected at least one image, got an empty batch (shape {tuple(images.shape)})"
        )
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {images.shape[1]}")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise ValueError(
            f"expected {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}"
        )
    try:
        validate_tensors(
            [images], dim_range=(4, 4), data_range=(0.0, 1.0) if check_range else None, finite=True
        )
    except ValueError as e:
        raise ValueError(str(e).replace("argument 0:", "images:", 1)) from None


def validate_features(
    features: Any,
    *,
    shape: Optional[Sequence[int]] = None,
    dtype: Optional[torch.dtype] = torch.float32,
    name: str = "features",
) -> None:
    """Check a non-empty, finite feature batch ``(N, *F)`` (``F`` equal to ``shape`` when given).

    Args:
        features: the batch.
        shape: the encoder's feature shape ``F`` (without the batch dimension), or ``None`` for any.
        dtype: required dtype (Default: ``torch.float32``, the networks' dtype), or ``None`` for any
            float.
        name: what the features are called in messages (an argument or a file).

    Raises:
        TypeError: not a tensor, or not of ``dtype``.
        ValueError: fewer than 2 or more than 5 dimensions, an empty batch, a shape other than
            ``(N, *shape)`` or non-finite values.
    """
    if not torch.is_tensor(features):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point() or (dtype is not None and features.dtype != dtype):
        raise TypeError(
            f"{name}: expected {dtype or 'floating-point'} features, got dtype {features.dtype}"
        )
    if not 2 <= features.dim() <= 5:
        raise ValueError(
            f"{name}: expected features of shape (N, *F) with 2 to 5 dimensions, "
            f"got shape {tuple(features.shape)}"
        )
    if features.shape[0] == 0 or features.numel() == 0:
        raise ValueError(
            f"{name}: expected at least one feature vector, got shape {tuple(features.shape)}"
        )
    if shape is not None and tuple(features.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name}: expected features of shape (N, {', '.join(map(str, shape))}) "
            f"(the encoder's output), got {tuple(features.shape)}"
        )
    try:
        validate_tensors([features], dim_range=(2, 5), finite=True)
    except ValueError as e:
        raise ValueError(f"{name}: {str(e).replace('argument 0: ', '')}") from None


def check_number(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number (an int when ``integer``) in ``[low, high]``.

    Args:
        name: the argument or option named in the message.
        value: what was given.
        low: lower bound, or ``None``; with ``low_open`` the bound itself is excluded.
        high: inclusive upper bound, or ``None``.
        low_open: exclude ``low`` (``> low`` instead of ``>= low``).
        integer: require an integer.
        optional: accept ``None``.

    Raises:
        TypeError: not a number (``bool`` is not one), or not an integer when ``integer``.
        ValueError: NaN, infinite or out of range.
    """
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        if integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(
                f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}"
            )
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    want = f"a finite {'integer' if integer else 'number'}" + (
        f" {' and '.join(bounds)}" if bounds else ""
    )
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be {want}, got {value!r}")


def check_run_dir(run_dir: Path, option: str = "run directory") -> None:
    """Raise ``ValueError`` when ``run_dir`` (or a parent of it) exists and is not a folder."""
    for p in (Path(run_dir), *Path(run_dir).parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{option}: {p} is a file, expected a folder")
            return


def check_path_name(name: str, option: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one plain path component (no separator, not
    ``.``/``..``)."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or name != name.strip()
        or name.startswith("~")
    ):
        raise ValueError(
            f"{option} must be a plain folder name (no '/', '..' or leading '~'), got {name!r}"
        )


#: files and folders a run directory owns (``Study``, the demo, sweeps, reports)
RUN_DIR_OWN = (
    "results.json",
    "config.json",
    "stages.json",
    "report.html",
    "report.md",
    "cells",
    "models",
    "samples",
    "sweeps",
    "releases",
)


def check_output_stem(
    stem: Path,
    suffixes: Iterable[str],
    *,
    run_dir: Optional[Path],
    option: str,
    kind: Optional[str] = None,
) -> None:
    """Refuse an output that would overwrite a run directory's own files or a file of another kind.

    Args:
        stem: the output path without suffix; ``stem + suffix`` is written for each of ``suffixes``.
        suffixes: the suffixes written (e.g. ``(".safetensors", ".json")``).
        run_dir: the run directory whose files (:data:`RUN_DIR_OWN`, ``data-*`` caches, ``*.png``
            figures, lock files) must not be touched, or ``None``.
        option: the option named in the message (e.g. ``--output``).
        kind: the checkpoint kind written; an existing ``<stem>.json`` recording another kind (or
            none) is refused rather than replaced.

    Raises:
        ValueError: the output names a folder, a run directory's own file, or another kind's
            checkpoint.
    """
    import json

    run = None if run_dir is None else Path(run_dir).resolve()
    for suffix in suffixes:
        path = Path(str(stem) + suffix)
        if path.is_dir():
            raise ValueError(f"{option}: {path} is a folder, expected a file name")
        target = path.resolve()
        if run is not None and (target == run or run in target.parents):
            first = target.relative_to(run).parts[0]
            if (
                first in RUN_DIR_OWN
                or first.startswith("data-")
                or first.endswith((".png", ".lock"))
            ):
                raise ValueError(
                    f"{option}: {path} would overwrite the run directory's own {first!r}; "
                    "choose another name"
                )
        if suffix == ".json" and kind is not None and path.is_file():
            try:
                recorded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                recorded = None
            if not isinstance(recorded, dict) or recorded.get("kind") != kind:
                raise ValueError(
                    f"{option}: {path} exists and is not a {kind!r} file written by facecraft; "
                    "refusing to replace it"
                )
