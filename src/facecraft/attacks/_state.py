"""Resumable training state for learning attacks (STYLE.md rule 9).

Modules, optimizers, a ``torch.Generator`` and extra tensors go to one
safetensors file; epoch, config, optimizer hyperparameters and history go to
its JSON. Nothing is pickled.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from facecraft._io import (
    PathLike,
    checkpoint_exists,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)

__all__ = ["save_state", "load_state", "checkpoint_exists"]


def save_state(
    stem: PathLike,
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    rng: Optional[torch.Generator] = None,
    extra: Optional[Mapping[str, torch.Tensor]] = None,
    meta: Optional[Mapping[str, Any]] = None,
) -> None:
    """Save modules (``<name>.<key>``), optimizers (``opt.<name>.*``), RNG and ``extra.<key>`` tensors."""
    tensors: Dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"{name}.{k}"] = v
    groups: Dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, g = optimizer_to_tensors(opt, f"opt.{name}")
        tensors.update(t)
        groups[name] = g
    if rng is not None:
        tensors["rng"] = rng.get_state()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v
    save_checkpoint(stem, tensors, kind=kind, meta={**dict(meta or {}), "optimizers": groups})


def load_state(
    stem: PathLike,
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    rng: Optional[torch.Generator] = None,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Inverse of :func:`save_state`: loads in place and returns ``(extra tensors, meta)``.

    Raises:
        facecraft._io.CheckpointError: wrong kind, missing files or a key mismatch.
    """
    device = next(iter(modules.values())).parameters().__next__().device if modules else "cpu"
    tensors, meta = load_checkpoint(stem, kind=kind, device=device)
    for name, m in modules.items():
        pre = f"{name}."
        sd = {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}
        m.load_state_dict(sd, strict=True)
    for name, opt in optimizers.items():
        optimizer_from_tensors(opt, tensors, meta["optimizers"][name], f"opt.{name}")
    if rng is not None and "rng" in tensors:
        rng.set_state(tensors["rng"].to("cpu"))
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return extra, meta
