"""Shared plumbing for defences trained on public data (adversarial learning, DISCO).

Seeded epoch permutations, pseudo-labels, and resumable checkpoints that
bundle several modules and optimisers into one safetensors + JSON pair via
:mod:`facecraft._io`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from facecraft._io import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from facecraft._torchutils import frozen
from facecraft._validation import validate_images

__all__ = [
    "check_public",
    "epoch_batches",
    "load_fit_state",
    "save_fit_state",
    "set_grads",
    "targets_for",
]


def check_public(images: torch.Tensor, attributes: Optional[torch.Tensor]) -> None:
    """Validate public training images and (optional) binary attributes ``(N, K)``."""
    validate_images(images)
    if attributes is not None and (
        not torch.is_tensor(attributes)
        or attributes.dim() != 2
        or attributes.shape[0] != images.shape[0]
    ):
        shape = (
            tuple(attributes.shape) if torch.is_tensor(attributes) else type(attributes).__name__
        )
        raise ValueError(f"public_attributes: expected shape ({images.shape[0]}, K), got {shape}")


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> List[torch.Tensor]:
    """Index batches of a seeded permutation of ``range(n)`` for ``epoch`` (same on resume)."""
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def targets_for(
    images: torch.Tensor,
    attributes: Optional[torch.Tensor],
    encoder: nn.Module,
    head: Optional[nn.Module],
    batch_size: int,
) -> torch.Tensor:
    """Binary targets: ``attributes`` as float, else pseudo-labels ``head(Enc(X)) > 0``."""
    if attributes is not None:
        return attributes.float()
    if head is None:
        raise ValueError("no public_attributes given and no head to derive pseudo-labels from")
    dev = next(encoder.parameters()).device
    with frozen(encoder, head):
        out = [
            (head(encoder(images[i : i + batch_size].to(dev))) > 0).float().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    return torch.cat(out)


def set_grads(params: Sequence[torch.Tensor], grads: Tuple[Optional[torch.Tensor], ...]) -> None:
    """Store ``torch.autograd.grad`` results as ``.grad`` for an optimiser step."""
    for p, g in zip(params, grads, strict=True):
        p.grad = g


def save_fit_state(
    stem: Union[str, Path],
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    meta: Mapping[str, Any],
) -> None:
    """Save modules' and optimisers' states to ``<stem>.safetensors`` + ``<stem>.json``."""
    tensors: Dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    groups: Dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, g = optimizer_to_tensors(opt, f"opt_{name}")
        tensors.update(t)
        groups[name] = g
    save_checkpoint(stem, tensors, kind=kind, meta={**dict(meta), "optimizers": groups})


def load_fit_state(
    stem: Union[str, Path],
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    config: Mapping[str, Any],
) -> Optional[Dict[str, Any]]:
    """Load a state saved by :func:`save_fit_state` into ``modules``/``optimizers``.

    Returns:
        The JSON metadata, or ``None`` when there is no checkpoint at ``stem``.

    Raises:
        CheckpointError: wrong kind, corrupt file, or a config different from ``config``
            in anything but ``epochs`` (training may be extended).
    """
    if not checkpoint_exists(stem):
        return None
    dev = next(iter(modules.values())).parameters().__next__().device
    tensors, meta = load_checkpoint(stem, kind=kind, device=dev)
    saved = {k: v for k, v in (meta.get("config") or {}).items() if k != "epochs"}
    current = {k: v for k, v in dict(config).items() if k != "epochs"}
    if saved != current:
        raise CheckpointError(
            f"{stem}: written with config {meta.get('config')}, "
            f"but this defence has {dict(config)}; "
            "use another checkpoint_stem or the same hyperparameters (only epochs may differ)"
        )
    for name, m in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{stem}: {name} keys differ (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    for name, opt in optimizers.items():
        optimizer_from_tensors(opt, tensors, meta["optimizers"][name], f"opt_{name}")
    return meta
