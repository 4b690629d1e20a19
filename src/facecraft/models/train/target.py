"""Training the split target network, and a fresh cloud head on released features.

:func:`train_target` trains the whole :class:`~facecraft.models.SplitNetwork`
on public images with BCE over attributes (resumable, one partial checkpoint
per epoch); :func:`train_head` is the training scenario, a head re-initialised
and trained on a defence's released features with the encoder fixed.

References:
    CRAFTER.md section 1; Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", ICLR 2019 (AdamW).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from facecraft._io import checkpoint_exists
from facecraft._torchutils import eval_mode, make_generator
from facecraft.models.train._loop import (
    PathLike,
    ProgressFn,
    check_images,
    finish,
    load_partial,
    load_weights,
    log,
    random_flip,
    save_partial,
    to_float,
)

__all__ = ["predict_logits", "train_head", "train_target"]


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """``model`` applied to uint8 images in eval mode, in batches; logits on the CPU."""
    outs = []
    with eval_mode(model):
        for i in range(0, images.shape[0], batch_size):
            outs.append(model(to_float(images[i : i + batch_size], device)).float().cpu())
    return torch.cat(outs)


def train_target(
    model: nn.Module,
    images: torch.Tensor,
    attributes: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    augment_flip: bool = True,
    device: torch.device,
    seed: int = 0,
    checkpoint_stem: PathLike,
    progress: Optional[ProgressFn] = None,
    meta: Optional[Dict[str, Any]] = None,
    evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
) -> Dict[str, Any]:
    """Train the split target network on public images with BCE over attributes.

    CRAFTER.md section 1. AdamW with a cosine learning-rate schedule; a partial
    checkpoint after every epoch.

    Args:
        model: the :class:`~facecraft.models.SplitNetwork` (trained in place).
        images: uint8 ``(N, 3, S, S)`` public images.
        attributes: ``(N, A)`` targets in {0, 1}.
        epochs, batch_size, lr, weight_decay, augment_flip: optimisation settings.
        device: where to train.
        seed: seeds batch order and augmentation.
        checkpoint_stem: final checkpoint path without suffix.
        progress: ``progress(done, total, desc)``.
        meta: extra JSON metadata (config, data manifest hash).
        evaluate: called with the trained model; its metrics go into the metadata.

    Returns:
        The final checkpoint's metadata (``metrics`` included).
    """
    check_images(images)
    if attributes.shape[0] != images.shape[0]:
        raise ValueError(f"{attributes.shape[0]} attribute rows for {images.shape[0]} images")
    stem = Path(checkpoint_stem)
    model.to(device)
    if checkpoint_exists(stem):
        return load_weights(model, stem, kind="target", device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    modules, opts = {"model": model}, {"model": opt}
    state = load_partial(stem, modules, opts, rng, "target", device)
    start = state["step"] if state else 0
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    batching = {"batch_size": batch_size, "augment_flip": augment_flip, "device": device}
    t0 = time.time()
    targets = attributes.float()
    model.train()
    for epoch in range(start, epochs):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        running = _target_epoch(
            model, opt, images, targets, rng, epoch, epochs, progress, **batching
        )
        loss = running / steps_per_epoch
        log.info("target epoch %d: loss %.4f", epoch + 1, loss)
        save_partial(stem, modules, opts, rng, epoch + 1, "target", {"last_loss": loss})
    model.eval()
    metrics = dict(evaluate(model)) if evaluate else {}
    record = {
        "arch": getattr(model, "arch", None),
        "step": epochs,
        "train_seconds": time.time() - t0,
        "metrics": metrics,
        **(meta or {}),
    }
    finish(stem, model, "target", record)
    return record


def _target_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    rng: torch.Generator,
    epoch: int,
    epochs: int,
    progress: Optional[ProgressFn],
    *,
    batch_size: int,
    augment_flip: bool,
    device: torch.device,
) -> float:
    """One shuffled epoch of :func:`train_target`; returns the summed batch losses."""
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    perm = torch.randperm(n, generator=rng)
    running = 0.0
    for b in range(steps_per_epoch):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        x = images[idx]
        if augment_flip:
            x = random_flip(x, rng)
        logits = model(to_float(x, device))
        loss = F.binary_cross_entropy_with_logits(logits, targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if progress:
            progress(epoch * steps_per_epoch + b + 1, total, f"target epoch {epoch + 1}/{epochs}")
    return running


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()  # type: ignore[operator]


def train_head(
    head: nn.Module,
    features: torch.Tensor,
    attributes: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: torch.device,
    seed: int = 0,
) -> nn.Module:
    """The training scenario (CRAFTER.md section 1): a cloud head trained on released features.

    The encoder stays fixed; a copy of ``head`` is re-initialised (same
    architecture, fresh weights from ``seed``) and trained with BCE over the
    attributes on ``features`` (e.g. a defence's release of the private
    training images), AdamW with a cosine schedule. Short enough to need no
    checkpoints.

    Args:
        head: the cloud head whose architecture is copied (left unchanged).
        features: released features ``(N, *F)``.
        attributes: ``(N, A)`` targets in {0, 1}.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        device: where to train.
        seed: seeds the initialisation and the batch order.

    Returns:
        The trained copy, in eval mode.
    """
    if features.shape[0] != attributes.shape[0] or features.shape[0] == 0:
        raise ValueError(
            f"train_head needs one attribute row per feature, got {features.shape[0]} features "
            f"and {attributes.shape[0]} rows"
        )
    if epochs <= 0 or batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    model = copy.deepcopy(head).to(device)
    _reset(model)
    for q in model.parameters():
        q.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    n = features.shape[0]
    targets = attributes.float()
    model.train()
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        perm = torch.randperm(n, generator=rng)
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            if idx.numel() < 2 and n >= 2:  # a batch of one breaks batch norm
                continue
            loss = F.binary_cross_entropy_with_logits(
                model(features[idx].to(device)), targets[idx].to(device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
