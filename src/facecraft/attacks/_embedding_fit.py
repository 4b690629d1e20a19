"""Training of the embedding regressors of :mod:`facecraft.attacks.embedding`.

:func:`check_pairs` validates the ``(features, embeddings)`` pairs that
``fit`` gets; :func:`train_regressor` is the epoch loop: Adam on shuffled
batches of at least two rows (batch norm needs them), the held-out loss after
every epoch, early stopping after ``patience`` epochs without a lower one, and
the best state restored at the end.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Protocol

import torch
from torch import nn

from facecraft._torchutils import eval_mode, make_generator, seeded
from facecraft._validation import validate_tensors
from facecraft.attacks._common import epoch_batches
from facecraft.attacks.base import ProgressFn


class FittedRegressor(Protocol):
    """What :func:`train_regressor` reads from and records on the attack it fits (an
    :class:`~facecraft.attacks.embedding.EmbeddingAttack`)."""

    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    patience: int
    seed: int
    history: List[Dict[str, Any]]
    best_epoch: Optional[int]

    def name(self) -> str: ...


__all__ = ["check_pairs", "held_out_loss", "train_regressor"]

#: ``loss_fn(pred, target, reduction=...)``, e.g.
#: :func:`facecraft.attacks.embedding.embedding_loss`.
LossFn = Callable[..., torch.Tensor]

#: Rows per forward pass of the held-out loss.
_EVAL_ROWS = 512


def check_pairs(features: torch.Tensor, embeddings: torch.Tensor) -> None:
    """Validate ``fit``'s ``(features, embeddings)`` (finiteness last, with a message naming which).

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: wrong dimensions, mismatched row counts, fewer than two
            rows, no embedding column, or non-finite values.
    """
    validate_tensors([features], dim_range=(2, 4))
    if not torch.is_tensor(embeddings):
        raise TypeError(f"embeddings: expected a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D (N, E), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] != features.shape[0]:
        raise ValueError(
            f"features and embeddings must have the same number of rows, "
            f"got {features.shape[0]} and {embeddings.shape[0]}"
        )
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 (feature, embedding) pairs, got {features.shape[0]}")
    if embeddings.shape[1] < 1:
        raise ValueError("embeddings must have at least one column")
    for label, t in (("features", features), ("embeddings", embeddings)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{label} must be finite, found NaN or infinite values")


def train_regressor(
    attack: FittedRegressor,
    reg: nn.Module,
    x_all: torch.Tensor,
    e_all: torch.Tensor,
    train_idx: torch.Tensor,
    val_idx: Optional[torch.Tensor],
    *,
    loss_fn: LossFn,
    progress: Optional[ProgressFn],
) -> None:
    """Train ``reg`` on rows ``train_idx`` with early stopping on ``val_idx``; restore the best.

    The settings (``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
    ``patience``, ``seed``) are the ``attack``'s; one ``{"epoch", "loss",
    "val_loss"}`` per epoch is appended to ``attack.history`` and
    ``attack.best_epoch`` follows the best epoch so far (the last one without
    a held-out split). Shuffling draws from a generator seeded with ``seed``,
    dropout from the global RNG forked and seeded with ``seed``. ``reg``'s
    training flag is restored afterwards.

    Args:
        attack: the attack being fitted.
        reg: the regressor, trained in place.
        x_all: features ``(N, *F)``.
        e_all: embeddings ``(N, E)``.
        train_idx: rows trained on (CPU).
        val_idx: held-out rows (CPU), or ``None``.
        loss_fn: ``loss_fn(pred, target, reduction=...)``.
        progress: optional ``progress(done, total, desc)``, in epochs.
    """
    params = [p for p in reg.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=attack.lr, weight_decay=attack.weight_decay)
    gen = make_generator(attack.seed)
    best_loss, best_state, stale = math.inf, None, 0
    desc = f"{attack.name()} regressor training"
    epochs = attack.epochs
    was = reg.training
    try:
        with seeded(attack.seed):  # dropout masks
            for epoch in range(epochs):
                reg.train()
                batches = _batches(train_idx.numel(), attack.batch_size, gen)
                total = _train_epoch(reg, params, opt, x_all, e_all, train_idx, batches, loss_fn)
                val_loss = None
                if val_idx is not None:
                    val_loss = held_out_loss(reg, x_all, e_all, val_idx, loss_fn)
                attack.history.append(
                    {"epoch": epoch, "loss": total / train_idx.numel(), "val_loss": val_loss}
                )
                if progress is not None:
                    progress(epoch + 1, epochs, desc)
                if val_loss is None:
                    attack.best_epoch = epoch
                    continue
                if val_loss < best_loss:
                    best_loss, attack.best_epoch, stale = val_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in reg.state_dict().items()}
                else:
                    stale += 1
                    if stale >= attack.patience:
                        if progress is not None:
                            progress(epochs, epochs, desc)
                        break
    finally:
        reg.train(was)
    if best_state is not None:
        reg.load_state_dict(best_state)


def held_out_loss(
    reg: nn.Module,
    x_all: torch.Tensor,
    e_all: torch.Tensor,
    rows: torch.Tensor,
    loss_fn: LossFn,
) -> float:
    """Mean ``loss_fn`` of ``reg`` over ``rows``, in eval mode without gradients."""
    p0 = next(reg.parameters())
    total = 0.0
    with eval_mode(reg), torch.no_grad():
        for i in range(0, rows.numel(), _EVAL_ROWS):
            r = rows[i : i + _EVAL_ROWS]
            x = x_all[r.to(x_all.device)].to(p0.device, p0.dtype)
            e = e_all[r.to(e_all.device)].to(p0.device, p0.dtype)
            total += float(loss_fn(reg(x), e, reduction="sum"))
    return total / rows.numel()


def _train_epoch(
    reg: nn.Module,
    params: List[torch.Tensor],
    opt: torch.optim.Optimizer,
    x_all: torch.Tensor,
    e_all: torch.Tensor,
    train_idx: torch.Tensor,
    batches: List[torch.Tensor],
    loss_fn: LossFn,
) -> float:
    """One pass over ``batches`` (positions in ``train_idx``); returns the summed loss * rows."""
    p0 = next(reg.parameters())
    total = 0.0
    for batch in batches:
        rows = train_idx[batch]
        x = x_all[rows.to(x_all.device)].to(p0.device, p0.dtype)
        e = e_all[rows.to(e_all.device)].to(p0.device, p0.dtype)
        loss = loss_fn(reg(x), e)
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += float(loss.detach()) * rows.numel()
    return total


def _batches(n: int, batch_size: int, gen: torch.Generator) -> List[torch.Tensor]:
    """One shuffled epoch over ``n >= 2`` rows in batches of at least two (for batch norm)."""
    batches = list(epoch_batches(n, max(batch_size, 2), gen))
    if len(batches) >= 2 and batches[-1].numel() == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches
