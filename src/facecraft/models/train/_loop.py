"""What the resumable training loops share: partial and final checkpoints, uint8 image batches.

A loop keeps its progress in a *partial* checkpoint ``<stem>.partial`` (weights,
optimizer state, RNG state and step, written atomically) and, when done, writes
the final checkpoint ``<stem>`` (weights + JSON metadata) and removes the
partial one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
from torch import nn

from facecraft._io import (
    checkpoint_exists,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)

__all__ = [
    "PathLike",
    "ProgressFn",
    "check_images",
    "finish",
    "load_partial",
    "load_weights",
    "random_flip",
    "save_partial",
    "to_float",
]

log = logging.getLogger("facecraft.models.train")

ProgressFn = Callable[[int, int, str], None]
PathLike = Union[str, Path]


def load_weights(
    module: nn.Module, stem: PathLike, *, kind: str, device: Union[str, torch.device] = "cpu"
) -> Dict[str, Any]:
    """Load a final checkpoint written by a loop here into ``module``; returns its metadata."""
    tensors, meta = load_checkpoint(stem, kind=kind, keys=set(module.state_dict()), device=device)
    module.load_state_dict(tensors)
    return meta


def _partial(stem: Path) -> Path:
    return stem.with_name(stem.name + ".partial")


def save_partial(
    stem: Path,
    modules: Mapping[str, nn.Module],
    opts: Mapping[str, torch.optim.Optimizer],
    rng: torch.Generator,
    step: int,
    kind: str,
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """Write the partial checkpoint of ``stem``: weights, optimizers, RNG, ``step``, ``extra``."""
    tensors: Dict[str, torch.Tensor] = {}
    groups: Dict[str, Any] = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    for name, o in opts.items():
        t, g = optimizer_to_tensors(o, f"opt_{name}")
        tensors.update(t)
        groups[name] = g
    tensors["rng_state"] = rng.get_state()
    save_checkpoint(
        _partial(stem),
        tensors,
        kind=kind + "-partial",
        meta={"step": step, "optimizers": groups, **(extra or {})},
    )


def load_partial(
    stem: Path,
    modules: Mapping[str, nn.Module],
    opts: Mapping[str, torch.optim.Optimizer],
    rng: torch.Generator,
    kind: str,
    device: torch.device,
) -> Optional[Dict[str, Any]]:
    """Load the partial checkpoint of ``stem`` in place; its metadata, or ``None`` if none."""
    p = _partial(stem)
    if not checkpoint_exists(p):
        return None
    tensors, meta = load_checkpoint(p, kind=kind + "-partial", device=device)
    for name, m in modules.items():
        prefix = name + "."
        m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, o in opts.items():
        optimizer_from_tensors(o, tensors, meta["optimizers"][name], f"opt_{name}")
    rng.set_state(tensors["rng_state"].cpu())
    log.info("resuming %s from step %d", stem, meta["step"])
    return meta


def finish(stem: Path, module: nn.Module, kind: str, meta: Dict[str, Any]) -> None:
    """Write the final checkpoint of ``stem`` and remove its partial one."""
    save_checkpoint(stem, module.state_dict(), kind=kind, meta=meta)
    for suffix in (".safetensors", ".json"):
        (stem.parent / (_partial(stem).name + suffix)).unlink(missing_ok=True)


def check_images(images: torch.Tensor) -> None:
    """Accept a non-empty uint8 ``(N, 3, S, S)`` training set."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, S, S), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("no training images")


def to_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch as float in [0, 1] on ``device``."""
    return batch.to(device, non_blocking=True).float().div_(255.0)


def random_flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """A copy of ``x`` with each image flipped horizontally with probability 1/2 (from ``rng``)."""
    mask = torch.rand(x.shape[0], generator=rng) < 0.5
    x = x.clone()
    x[mask] = x[mask].flip(-1)
    return x
