"""Shared plumbing for defences trained on public data (adversarial learning, DISCO, distilled).

Seeded epoch permutations, pseudo-labels, the decoder adversary (its seeded
construction and its update), the resumable epoch loop, early stopping on a
held-out loss, and checkpoints that bundle several modules and optimisers into
one safetensors + JSON pair via :mod:`facecraft._io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import torch
import torch.nn.functional as nnf
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
from facecraft.defenses._critic import seeded_init
from facecraft.models import Decoder

__all__ = [
    "EarlyStopping",
    "FittedDefense",
    "check_public",
    "decoder_step",
    "epoch_batches",
    "load_fit_state",
    "new_decoder",
    "save_fit_state",
    "set_grads",
    "targets_for",
    "train_epochs",
]

#: ``step(x, y) -> (task, recon)``: one minibatch update of a defence's fit, returning its losses.
StepFn = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class FittedDefense(Protocol):
    """What :func:`train_epochs` reads from (and records on) the defence it fits."""

    epochs: int
    batch_size: int
    seed: int
    history: List[Dict[str, Any]]
    fit_trained: bool

    def name(self) -> str: ...

    def get_config(self) -> Dict[str, Any]: ...


@dataclass
class EarlyStopping:
    """Early stopping on a held-out loss: the best value, its epoch, and the epochs since.

    Args:
        patience: epochs without a strictly lower held-out loss before stopping.
    """

    patience: int
    best_val: float = float("inf")
    best_epoch: Optional[int] = None
    stale: int = 0

    @property
    def stopped(self) -> bool:
        """Whether ``patience`` epochs have passed without a better loss."""
        return self.stale >= self.patience

    def update(self, value: float, epoch: int) -> bool:
        """Record ``epoch``'s held-out loss ``value``; True when it is the best so far."""
        if value < self.best_val:
            self.best_val, self.best_epoch, self.stale = value, epoch, 0
            return True
        self.stale += 1
        return False


def check_public(images: torch.Tensor, attributes: Optional[torch.Tensor]) -> None:
    """Validate public training images (non-empty, float32) and optional binary attributes
    ``(N, K)``."""
    validate_images(images, dtype=torch.float32, allow_empty=False)
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


def new_decoder(
    feature_shape: Sequence[int],
    image_size: int,
    width: int,
    *,
    seed: int,
    device: torch.device,
) -> nn.Module:
    """The decoder adversary: a :class:`~facecraft.models.Decoder` initialised from ``seed``."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return seeded_init(lambda: Decoder(feature_shape, image_size, width=width), gen).to(device)


def decoder_step(
    decoder: nn.Module,
    params: Sequence[torch.Tensor],
    opt: torch.optim.Optimizer,
    features: torch.Tensor,
    images: torch.Tensor,
) -> torch.Tensor:
    """One Adam step of the adversary on ``MSE(Dec(features), images)``; returns that loss.

    Gradients reach only ``params`` (via ``torch.autograd.grad``); pass
    ``features`` detached, or under ``torch.no_grad()``, to leave the
    defender's networks out of the graph.
    """
    rec = nnf.mse_loss(decoder(features), images)
    set_grads(params, torch.autograd.grad(rec, params))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return rec


def train_epochs(
    defense: FittedDefense,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    name: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    step: StepFn,
    device: torch.device,
    eval_modules: Sequence[str] = (),
    checkpoint_stem: Optional[Union[str, Path]] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> None:
    """The resumable epoch loop of a defence trained on public data.

    Resumes from ``checkpoint_stem`` when a matching checkpoint is there
    (restoring ``modules``, ``optimizers`` and ``defense.history``), then for
    each remaining epoch of ``defense.epochs``: puts ``modules`` in training
    mode (those named in ``eval_modules`` in eval mode), calls ``step(x, y)``
    on every minibatch of the seeded permutation (:func:`epoch_batches` with
    ``defense.batch_size`` and ``defense.seed``), appends the epoch's mean
    ``task`` and ``recon`` losses to ``defense.history``, saves the state
    (kind ``"<name>-fit"``) and calls ``progress(epoch + 1, epochs, name)``.

    Args:
        defense: the defence being fitted (see :class:`FittedDefense`).
        images: public images ``(N, 3, S, S)`` in [0, 1] (any device).
        targets: binary targets ``(N, K)``.
        name: the checkpoint kind's prefix and the progress description.
        modules: the networks trained (and checkpointed), by name.
        optimizers: their optimisers, by name.
        step: ``step(x, y) -> (task, recon)`` on a minibatch moved to ``device``.
        device: where minibatches go.
        eval_modules: names of ``modules`` kept in eval mode while training.
        checkpoint_stem: where to save after every epoch and resume from.
        progress: optional ``progress(done, total, desc)``, in epochs.

    Raises:
        CheckpointError: a checkpoint at ``checkpoint_stem`` does not match.
    """
    kind = f"{name}-fit"
    start = 0
    if checkpoint_stem is not None:
        meta = load_fit_state(
            checkpoint_stem,
            kind=kind,
            modules=modules,
            optimizers=optimizers,
            config=defense.get_config(),
        )
        if meta is not None:
            start = int(meta["epoch"])
            defense.history = list(meta.get("history", []))
    defense.fit_trained = start < defense.epochs
    for epoch in range(start, defense.epochs):
        for key, m in modules.items():
            m.train(key not in eval_modules)
        tot_task = tot_rec = 0.0
        batches = epoch_batches(images.shape[0], defense.batch_size, defense.seed, epoch)
        for idx in batches:
            task, rec = step(images[idx].to(device), targets[idx].to(device))
            tot_task += float(task.detach())
            tot_rec += float(rec.detach())
        defense.history.append(
            {"epoch": epoch, "task": tot_task / len(batches), "recon": tot_rec / len(batches)}
        )
        if checkpoint_stem is not None:
            save_fit_state(
                checkpoint_stem,
                kind=kind,
                modules=modules,
                optimizers=optimizers,
                meta={
                    "defense": defense.name(),
                    "config": defense.get_config(),
                    "epoch": epoch + 1,
                    "history": defense.history,
                },
            )
        if progress is not None:
            progress(epoch + 1, defense.epochs, name)
