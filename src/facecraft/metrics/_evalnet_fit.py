"""Training of the Eval-network (:func:`facecraft.metrics.evalnet.train_evalnet`).

Argument checks, one epoch of cross-entropy training (AdamW, cosine schedule,
label smoothing, random flips), the resumable partial checkpoint
``<stem>-partial`` and the final one-pass re-estimation of BatchNorm
statistics.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from facecraft._io import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from facecraft._validation import validate_images
from facecraft.metrics._common import ProgressFn

__all__ = [
    "as_float",
    "check_config",
    "check_training_args",
    "load_partial",
    "partial_stem",
    "recalibrate_batchnorm",
    "remove_partial",
    "save_partial",
    "train_epoch",
]

log = logging.getLogger("facecraft.metrics.evalnet")

_PARTIAL_KIND = "evalnet-partial"


def check_training_args(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_identities: Optional[int],
    epochs: int,
    batch_size: int,
    lr: float,
) -> int:
    """Check :func:`~facecraft.metrics.evalnet.train_evalnet`'s arguments; returns ``K``.

    Raises:
        TypeError: images neither uint8 nor floating point, or non-integer labels.
        ValueError: bad shapes, labels or settings.
    """
    _check_inputs(images, labels)
    k = int(labels.max()) + 1 if num_identities is None else int(num_identities)
    if k < int(labels.max()) + 1:
        raise ValueError(
            f"expected num_identities >= max(labels) + 1 = {int(labels.max()) + 1}, got {k}"
        )
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"expected a positive integer {name}, got {v!r}")
    if not lr > 0:
        raise ValueError(f"expected a positive lr, got {lr!r}")
    return k


def train_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    images: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    epochs: int,
    progress: Optional[ProgressFn],
    *,
    lr: float,
    batch_size: int,
    label_smoothing: float,
    augment_flip: bool,
    device: torch.device,
) -> Tuple[float, float]:
    """Epoch ``epoch`` of ``epochs``: cosine-scheduled ``lr``, shuffled batches from ``rng``.

    Returns:
        ``(mean training loss, training accuracy)``, also logged.
    """
    net.train()
    for g in opt.param_groups:
        g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    perm = torch.randperm(n, generator=rng)
    running, correct = 0.0, 0
    for b in range(steps_per_epoch):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        x = as_float(images[idx.to(images.device)], device)
        y = labels[idx.to(labels.device)].to(device, torch.long)
        if augment_flip:
            flip = (torch.rand(x.shape[0], generator=rng) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        correct += int((logits.detach().argmax(1) == y).sum())
        if progress is not None:
            progress(epoch * steps_per_epoch + b + 1, total, f"evalnet epoch {epoch + 1}/{epochs}")
    train_loss, train_acc = running / steps_per_epoch, correct / n
    log.info(
        "evalnet epoch %d/%d: loss %.4f, train acc %.3f",
        epoch + 1,
        epochs,
        train_loss,
        train_acc,
    )
    return train_loss, train_acc


def _check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, S, S), got {tuple(images.shape)}")
    else:
        validate_images(images, channels=3)
    if images.shape[0] == 0:
        raise ValueError("expected at least one training image, got none")
    if images.shape[-1] % 32 or images.shape[-2] % 32:
        raise ValueError(
            f"expected an image size divisible by 32, got {images.shape[-2]}x{images.shape[-1]}"
        )
    if not torch.is_tensor(labels) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"expected integer labels, got {getattr(labels, 'dtype', type(labels).__name__)}"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"expected labels of shape ({images.shape[0]},), got {tuple(labels.shape)}"
        )
    if int(labels.min()) < 0:
        raise ValueError(f"expected 0-based labels >= 0, got minimum {int(labels.min())}")


def as_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``, uint8 scaled to float in [0, 1], float left as it is."""
    x = x.to(device)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@torch.no_grad()
def recalibrate_batchnorm(
    net: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> None:
    """Re-estimate BatchNorm running statistics of the final weights in one pass (exact averages).

    The exponential running averages lag behind the weights, which matters
    for short trainings; one extra forward pass over the (unflipped) training
    images replaces them with the final network's own statistics.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    try:
        for i in range(0, images.shape[0], batch_size):
            net(as_float(images[i : i + batch_size], device))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def partial_stem(stem: Path) -> Path:
    """The stem of the partial checkpoint of ``stem``: ``<stem>-partial``."""
    # no dot in the added part: facecraft._io derives file names with Path.with_suffix
    return stem.with_name(stem.name + "-partial")


def remove_partial(stem: Path) -> None:
    """Delete the partial checkpoint of ``stem`` (once the final one is written)."""
    for suffix in (".safetensors", ".json"):
        partial_stem(stem).with_suffix(suffix).unlink(missing_ok=True)


def check_config(stem: Path, stored: Dict[str, Any], config: Dict[str, Any]) -> None:
    """Raise :class:`~facecraft._io.CheckpointError` unless ``stored`` agrees with ``config``."""
    diff = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
    if diff:
        raise CheckpointError(
            f"{stem}: checkpoint made with another configuration (stored, requested): {diff}"
        )


def save_partial(
    stem: Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    epoch: int,
    config: Dict[str, Any],
    extra: Dict[str, Any],
) -> None:
    """Write the partial checkpoint after ``epoch`` epochs: weights, optimizer, RNG, config."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_tensors, groups = optimizer_to_tensors(opt, "opt")
    tensors.update(opt_tensors)
    tensors["rng_state"] = rng.get_state()
    save_checkpoint(
        partial_stem(stem),
        tensors,
        kind=_PARTIAL_KIND,
        meta={"step": epoch, "config": config, "optimizer": groups, **extra},
    )


def load_partial(
    stem: Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    config: Dict[str, Any],
    device: torch.device,
) -> int:
    """Load the partial checkpoint of ``stem`` in place; the epochs it holds (0 if none).

    Raises:
        facecraft._io.CheckpointError: it was made with another configuration.
    """
    p = partial_stem(stem)
    if not checkpoint_exists(p):
        return 0
    tensors, meta = load_checkpoint(p, kind=_PARTIAL_KIND, device=device)
    check_config(p, meta.get("config", {}), config)
    net.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer_from_tensors(opt, tensors, meta["optimizer"], "opt")
    rng.set_state(tensors["rng_state"].cpu())
    log.info("evalnet: resuming %s after epoch %d", stem, meta["step"])
    return int(meta["step"])
