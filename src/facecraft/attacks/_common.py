"""Small helpers shared by the learning attacks: image batches, shuffling, defence queries.

:class:`AdaptiveAttack` holds the ``fit`` scaffolding of the A1 adaptive
attacks (:mod:`facecraft.attacks.adaptive_whitebox`,
:mod:`facecraft.attacks.adaptive_blackbox`): protected features, resuming,
the epoch loop, history and checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from facecraft._io import PathLike
from facecraft._torchutils import eval_mode
from facecraft._validation import validate_images
from facecraft.attacks._state import checkpoint_exists, load_state, save_state
from facecraft.attacks.base import DefenseFn, InversionAttack, ProgressFn

__all__ = [
    "AdaptiveAttack",
    "EpochCallback",
    "as_float_images",
    "check_image_set",
    "epoch_batches",
    "query_in_batches",
]

#: ``on_epoch(epoch, attack) -> dict`` of metrics, appended (with the loss) to ``attack.history``.
EpochCallback = Callable[[int, Any], Dict[str, Any]]


def check_image_set(images: torch.Tensor) -> None:
    """Accept ``(N, 3, S, S)`` images as uint8 in [0, 255] or float in [0, 1]."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, 3, S, S), got {tuple(images.shape)}")
    else:
        validate_images(images)
    if images.shape[0] == 0:
        raise ValueError("expected at least one image, got none")


def as_float_images(x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch as float in [0, 1] on ``device`` (uint8 is divided by 255)."""
    if x.dtype == torch.uint8:
        return x.to(device).to(dtype) / 255.0
    return x.to(device, dtype)


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch over ``n`` items (CPU indices)."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def query_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    progress: Optional[Callable[[int, int, str], None]] = None,
    desc: str = "querying",
) -> torch.Tensor:
    """``fn`` on float batches of ``images``; results concatenated and kept on ``device``."""
    out = []
    n = images.shape[0]
    for i in range(0, n, batch_size):
        with torch.no_grad():
            out.append(fn(as_float_images(images[i : i + batch_size], device)).detach())
        if progress is not None:
            progress(min(i + batch_size, n), n, desc)
    return torch.cat(out)


class AdaptiveAttack(InversionAttack):
    """Base of the A1 adaptive attacks: retrain a model on ``(defense(X), X)``, epoch by epoch.

    Subclasses store ``defense``, ``epochs``, ``requery``,
    ``query_batch_size`` and ``epochs_done`` under these names and call
    :meth:`_fit_epochs` from their ``fit`` with their own epoch.
    """

    defense: DefenseFn
    epochs: int
    requery: bool
    query_batch_size: int
    epochs_done: int

    def _fit_epochs(
        self,
        public_images: torch.Tensor,
        *,
        kind: str,
        desc: str,
        device: torch.device,
        gen: torch.Generator,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        run_epoch: Callable[[Optional[torch.Tensor]], float],
        protected: Optional[torch.Tensor] = None,
        checkpoint_stem: Optional[PathLike] = None,
        progress: Optional[ProgressFn] = None,
        on_epoch: Optional[EpochCallback] = None,
        eval_on_epoch: Sequence[nn.Module] = (),
        restore: Optional[Callable[[Dict[str, torch.Tensor]], None]] = None,
        state: Optional[Callable[[], Dict[str, torch.Tensor]]] = None,
    ) -> None:
        """Run epochs ``epochs_done .. epochs - 1`` of ``fit``.

        The protected features are ``protected`` (checked to have a row per
        image), else those saved in the checkpoint, else one query of the
        defence (:func:`query_in_batches`), made only if an epoch remains;
        with ``requery`` there are none and ``run_epoch`` queries itself. A
        checkpoint at ``checkpoint_stem`` of this ``kind`` restores
        ``modules``, ``optimizers``, ``gen``, ``epochs_done`` and ``history``,
        and is passed to ``restore``. After each epoch: ``epochs_done`` is
        advanced, ``{"epoch", "loss"}`` and what ``on_epoch(epoch, self)``
        returns (called with ``eval_on_epoch`` in eval mode) go to
        ``history``, the state is saved (``state()`` and the features as extra
        tensors) and ``progress(epoch + 1, epochs, desc)`` is called.

        Args:
            public_images: the attacker's images ``(N, 3, S, S)``, float in
                [0, 1] or uint8 (already checked).
            kind: the checkpoint kind.
            desc: the progress description.
            device: where the features are kept.
            gen: the shuffling generator (checkpointed).
            modules: the trained networks, by name (checkpointed).
            optimizers: their optimisers, by name (checkpointed).
            run_epoch: ``run_epoch(features) -> mean loss`` trains one epoch
                (``features`` is ``None`` with ``requery``).
            protected: precomputed ``defense(public_images)`` ``(N, *F)``
                (ignored with ``requery``).
            checkpoint_stem: save after every epoch and resume from it.
            progress: optional ``progress(done, total, desc)``, in epochs.
            on_epoch: optional ``on_epoch(epoch, self) -> dict``.
            eval_on_epoch: modules put in eval mode while ``on_epoch`` runs.
            restore: called with the checkpoint's extra tensors on resume.
            state: extra tensors to checkpoint besides the features.

        Raises:
            ValueError: ``protected`` has the wrong number of rows.
        """
        n = public_images.shape[0]
        feats: Optional[torch.Tensor] = None
        if not self.requery and protected is not None:
            if protected.shape[0] != n:
                raise ValueError(f"`protected` has {protected.shape[0]} rows for {n} images")
            feats = protected.detach().to(device)
        if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
            extra, meta = load_state(checkpoint_stem, kind=kind, modules=modules, optimizers=optimizers, rng=gen)
            self.epochs_done = int(meta["epoch"])
            self.history = list(meta.get("history", []))
            if restore is not None:
                restore(extra)
            if not self.requery and feats is None and "features" in extra:
                feats = extra["features"].to(device)
        if not self.requery and feats is None and self.epochs_done < self.epochs:
            feats = query_in_batches(self.defense, public_images, device, self.query_batch_size)
        for epoch in range(self.epochs_done, self.epochs):
            loss = run_epoch(feats)
            self.epochs_done = epoch + 1
            entry: Dict[str, Any] = {"epoch": epoch, "loss": loss}
            if on_epoch is not None:
                with eval_mode(*eval_on_epoch):
                    entry.update(on_epoch(epoch, self))
            self.history.append(entry)
            if checkpoint_stem is not None:
                extra_t = state() if state is not None else {}
                if feats is not None:
                    extra_t["features"] = feats
                save_state(checkpoint_stem, kind=kind, modules=modules, optimizers=optimizers, rng=gen,
                           extra=extra_t, meta={"epoch": self.epochs_done, "history": self.history,
                                                "attack": self.name()})
            if progress is not None:
                progress(epoch + 1, self.epochs, desc)
