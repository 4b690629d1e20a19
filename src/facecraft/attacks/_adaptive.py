"""The ``fit`` scaffolding of the A1 adaptive attacks (CRAFTER.md section 2).

:class:`AdaptiveAttack` is the base of :mod:`facecraft.attacks.adaptive_whitebox`
and :mod:`facecraft.attacks.adaptive_blackbox`: it gets the protected features
of the public images, resumes from a checkpoint, runs the epoch loop with the
subclass's own epoch, keeps the history, and does the held-out early stopping
(best state, patience) and the per-epoch checkpoints.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (adaptive attacks).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from facecraft._io import PathLike, checkpoint_exists, load_state, save_state
from facecraft._torchutils import as_float_images, eval_mode, query_in_batches
from facecraft.attacks._common import copy_states, held_out_split, load_states, prefixed_tensors
from facecraft.attacks.base import DefenseFn, InversionAttack, ProgressFn

__all__ = ["AdaptiveAttack", "EpochCallback"]

#: ``on_epoch(epoch, attack) -> dict`` of metrics, appended (with the loss) to ``attack.history``.
EpochCallback = Callable[[int, Any], Dict[str, Any]]

#: Mixed into ``seed`` for the held-out split's generator (kept apart from the shuffling one).
_SPLIT_SALT = 0x5EED_5A17

_States = Dict[str, Dict[str, torch.Tensor]]  # module name -> state dict


class AdaptiveAttack(InversionAttack):
    """Base of the A1 adaptive attacks: retrain a model on ``(defense(X), X)``, epoch by epoch.

    Subclasses store ``defense``, ``epochs``, ``requery``,
    ``query_batch_size``, ``seed`` and ``epochs_done`` under these names, call
    :meth:`_set_early_stopping` from their constructor, take their training
    images from :meth:`_held_out_split` and call :meth:`_fit_epochs` from their
    ``fit`` with their own epoch.

    With ``val_fraction > 0`` a seeded share of the public images is held out:
    after each epoch the held-out loss (per-pixel MSE of :meth:`reconstruct`
    of their protected features against the images) goes to ``history`` as
    ``val_loss``, the state of the epoch with the lowest one is kept
    (``best_epoch``, ``best_val_loss``), training stops after ``patience``
    epochs without improvement, and ``fit`` ends with that state restored.

    Attributes:
        val_indices: rows of the public images held out (sorted, CPU), or
            ``None`` without a held-out split; set by :meth:`_held_out_split`.
        train_indices: the other rows, the only ones trained on (sorted, CPU).
        best_epoch: the epoch with the lowest held-out loss so far, or ``None``.
        best_val_loss: that loss, or ``None``.
    """

    defense: DefenseFn
    epochs: int
    requery: bool
    query_batch_size: int
    seed: int
    epochs_done: int
    val_fraction: float = 0.0
    patience: int = 0
    val_indices: Optional[torch.Tensor] = None
    train_indices: Optional[torch.Tensor] = None
    best_epoch: Optional[int] = None
    best_val_loss: Optional[float] = None
    _best_state: Optional[_States] = None
    _last_state: Optional[_States] = None

    def _set_early_stopping(self, val_fraction: float, patience: int) -> None:
        """Check and store ``val_fraction`` (in [0, 1)) and ``patience`` (>= 0).

        Raises:
            ValueError: either is out of range.
        """
        if not 0.0 <= val_fraction < 1.0 or patience < 0:
            raise ValueError(
                f"need 0 <= val_fraction < 1 and patience >= 0; got {val_fraction}, {patience}"
            )
        self.val_fraction = float(val_fraction)
        self.patience = int(patience)

    def _held_out_split(self, public_images: torch.Tensor) -> torch.Tensor:
        """Split the public images; return the training ones (all when ``val_fraction`` is 0).

        ``round(val_fraction * N)`` rows (at least 1) are held out, drawn by
        a generator of their own seeded with ``seed ^ _SPLIT_SALT``, so the
        shuffling generator (seeded with ``seed``) makes the same draws as
        without a split. Sets ``val_indices`` and ``train_indices``.

        Raises:
            ValueError: no image would be left to train on.
        """
        self.train_indices, self.val_indices = held_out_split(
            public_images.shape[0], self.val_fraction, self.seed ^ _SPLIT_SALT
        )
        if self.val_indices is None:
            self.train_indices = None
            return public_images
        return public_images[self.train_indices]

    def _heldout_loss(self, images: torch.Tensor, features: torch.Tensor) -> float:
        """The held-out loss: mean per-pixel MSE of ``self(features)`` against ``images``.

        Runs the attack's own :meth:`reconstruct` path (through ``__call__``,
        models in eval mode), ``query_batch_size`` rows at a time; no gradient
        reaches the trained modules. The squared errors are summed in float64.
        """
        sse = 0.0
        count = 0
        step = self.query_batch_size
        for i in range(0, images.shape[0], step):
            rec = self(features[i : i + step])
            with torch.no_grad():
                x = as_float_images(images[i : i + step], rec.device, torch.float64)
                sse += float((rec.to(torch.float64) - x).pow(2).sum())
            count += x.numel()
        return sse / count

    def _patience_exhausted(self) -> bool:
        """``patience`` epochs (> 0) have passed since the best held-out loss (or the start)."""
        if self.patience <= 0 or self.val_indices is None or self.epochs_done == 0:
            return False
        best = self.best_epoch if self.best_epoch is not None else -1
        return self.epochs_done - 1 - best >= self.patience

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
        defence (:func:`~facecraft._torchutils.query_in_batches`), made only if
        an epoch remains; with ``requery`` there are none and ``run_epoch``
        queries itself. A checkpoint at ``checkpoint_stem`` of this ``kind``
        restores ``modules``, ``optimizers``, ``gen``, ``epochs_done``,
        ``history`` and the held-out bookkeeping below, and is passed to
        ``restore``. After each epoch: ``epochs_done`` is advanced,
        ``{"epoch", "loss"}`` and what ``on_epoch(epoch, self)`` returns
        (called with ``eval_on_epoch`` in eval mode) go to ``history``, the
        state is saved (``state()`` and the features as extra tensors) and
        ``progress(epoch + 1, epochs, desc)`` is called.

        With a held-out split (``val_indices`` set by :meth:`_held_out_split`,
        which the caller ran on ``public_images``), ``run_epoch`` gets the
        training rows' features only, and after each epoch the held-out loss
        (:meth:`_heldout_loss`; held-out features are the rows of the
        features, or with ``requery`` one query of the held-out images) is
        recorded as the entry's ``val_loss`` before ``on_epoch`` runs. A
        strictly lower one makes the epoch ``best_epoch`` and keeps a copy of
        the ``modules``' state dicts; once ``patience`` (> 0) epochs pass
        without one, no further epoch runs. The best copy, ``best_epoch``,
        ``best_val_loss``, ``val_indices`` (a resume with another split
        raises) and any queried held-out features go in the checkpoint. At
        the end the ``modules`` are set to the best copy (the last epoch's
        state is kept aside and put back if ``fit`` runs again).

        Args:
            public_images: the attacker's images ``(N, 3, S, S)``, float in
                [0, 1] or uint8 (already checked), all of them (held-out rows
                included).
            kind: the checkpoint kind.
            desc: the progress description.
            device: where the features are kept.
            gen: the shuffling generator (checkpointed).
            modules: the trained networks, by name (checkpointed).
            optimizers: their optimisers, by name (checkpointed).
            run_epoch: ``run_epoch(features) -> mean loss`` trains one epoch
                on the training rows (``features`` ``(N - n_val, *F)``, is
                ``None`` with ``requery``).
            protected: precomputed ``defense(public_images)`` ``(N, *F)``
                (ignored with ``requery``).
            checkpoint_stem: save after every epoch and resume from it.
            progress: optional ``progress(done, total, desc)``, in epochs.
            on_epoch: optional ``on_epoch(epoch, self) -> dict``.
            eval_on_epoch: modules put in eval mode while ``on_epoch`` runs.
            restore: called with the checkpoint's extra tensors on resume.
            state: extra tensors to checkpoint besides the features.

        Raises:
            ValueError: ``protected`` has the wrong number of rows, or the
                checkpoint was written with another held-out split.
        """
        n = public_images.shape[0]
        self._check_split_made(n)
        if self._last_state is not None:  # a previous fit ended on the best state
            load_states(modules, self._last_state)
            self._last_state = None
        feats: Optional[torch.Tensor] = None
        val_feats: Optional[torch.Tensor] = None
        if not self.requery and protected is not None:
            if protected.shape[0] != n:
                raise ValueError(f"`protected` has {protected.shape[0]} rows for {n} images")
            feats = protected.detach().to(device)
        if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
            feats, val_feats = self._resume(
                checkpoint_stem, kind, modules, optimizers, gen, restore, feats, device
            )
        remaining = self.epochs_done < self.epochs and not self._patience_exhausted()
        if not self.requery and feats is None and remaining:
            feats = query_in_batches(self.defense, public_images, device, self.query_batch_size)
        train_feats, val_images, val_feats = self._split_features(
            public_images, feats, val_feats, device, remaining
        )
        for epoch in range(self.epochs_done, self.epochs):
            if self._patience_exhausted():
                break
            loss = run_epoch(train_feats)
            self.epochs_done = epoch + 1
            entry = self._epoch_entry(epoch, loss, modules, val_images, val_feats)
            if on_epoch is not None:
                with eval_mode(*eval_on_epoch):
                    entry.update(on_epoch(epoch, self))
            self.history.append(entry)
            if checkpoint_stem is not None:
                extra = state() if state is not None else {}
                self._save_epoch(
                    checkpoint_stem, kind, modules, optimizers, gen, extra, feats, val_feats
                )
            if progress is not None:
                progress(epoch + 1, self.epochs, desc)
        if self._best_state is not None and self.best_epoch != self.epochs_done - 1:
            self._last_state = copy_states(modules)
            load_states(modules, self._best_state)

    def _check_split_made(self, n: int) -> None:
        """With ``val_fraction > 0``, :meth:`_held_out_split` must have split these ``n`` rows."""
        val, train = self.val_indices, self.train_indices
        if self.val_fraction > 0 and (
            val is None or train is None or val.numel() + train.numel() != n
        ):
            raise RuntimeError("call _held_out_split(public_images) before _fit_epochs")

    def _resume(
        self,
        stem: PathLike,
        kind: str,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        gen: torch.Generator,
        restore: Optional[Callable[[Dict[str, torch.Tensor]], None]],
        feats: Optional[torch.Tensor],
        device: torch.device,
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Load the checkpoint at ``stem`` into the fit; returns ``(features, held-out features)``.

        ``feats`` (the caller's ``protected``) wins over the saved features;
        held-out features are the saved ones (queried with ``requery``), or
        ``None``.

        Raises:
            ValueError: the checkpoint was written with another held-out split.
        """
        val = self.val_indices
        extra, meta = load_state(stem, kind=kind, modules=modules, optimizers=optimizers, rng=gen)
        saved_val = extra.get("val_indices")
        if (saved_val is None) != (val is None) or (
            saved_val is not None
            and val is not None
            and not torch.equal(saved_val.cpu().long(), val)
        ):
            raise ValueError(
                f"checkpoint {stem} was written with another held-out "
                "split (val_fraction, seed or number of images differ)"
            )
        self.epochs_done = int(meta["epoch"])
        self.history = list(meta.get("history", []))
        self.best_epoch = meta.get("best_epoch")
        self.best_val_loss = meta.get("best_val_loss")
        best = {name: prefixed_tensors(extra, f"best.{name}.") for name in modules}
        self._best_state = best if self.best_epoch is not None else None
        if restore is not None:
            restore(extra)
        if not self.requery and feats is None and "features" in extra:
            feats = extra["features"].to(device)
        val_feats = extra["val_features"].to(device) if "val_features" in extra else None
        return feats, val_feats

    def _split_features(
        self,
        public_images: torch.Tensor,
        feats: Optional[torch.Tensor],
        val_feats: Optional[torch.Tensor],
        device: torch.device,
        remaining: bool,
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(training features, held-out images, held-out features)`` for the epochs to come.

        Without a held-out split (or with no epoch remaining) the training
        features are ``feats`` whole and there are no held-out images. With
        ``requery`` and no saved held-out features, the held-out images are
        queried once here.
        """
        val, train = self.val_indices, self.train_indices
        if val is None or train is None or not remaining:
            return feats, None, val_feats
        val_images = public_images[val]
        if feats is not None:
            return feats[train.to(device)], val_images, feats[val.to(device)]
        if val_feats is None:
            val_feats = query_in_batches(self.defense, val_images, device, self.query_batch_size)
        return feats, val_images, val_feats

    def _epoch_entry(
        self,
        epoch: int,
        loss: float,
        modules: Mapping[str, nn.Module],
        val_images: Optional[torch.Tensor],
        val_feats: Optional[torch.Tensor],
    ) -> Dict[str, Any]:
        """The ``history`` entry of ``epoch``, with its held-out loss; keeps a new best state."""
        entry: Dict[str, Any] = {"epoch": epoch, "loss": loss}
        if val_images is not None and val_feats is not None:
            val_loss = self._heldout_loss(val_images, val_feats)
            entry["val_loss"] = val_loss
            if not math.isnan(val_loss) and (
                self.best_val_loss is None or val_loss < self.best_val_loss
            ):
                self.best_epoch, self.best_val_loss = epoch, val_loss
                self._best_state = copy_states(modules)
        return entry

    def _save_epoch(
        self,
        stem: PathLike,
        kind: str,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        gen: torch.Generator,
        extra: Dict[str, torch.Tensor],
        feats: Optional[torch.Tensor],
        val_feats: Optional[torch.Tensor],
    ) -> None:
        """Checkpoint the fit after an epoch: ``extra``, the features and the held-out state."""
        if feats is not None:
            extra["features"] = feats
        meta: Dict[str, Any] = {
            "epoch": self.epochs_done,
            "history": self.history,
            "attack": self.name(),
        }
        val = self.val_indices
        if val is not None:
            extra["val_indices"] = val
            if self.requery and val_feats is not None:
                extra["val_features"] = val_feats
            for name, sd in (self._best_state or {}).items():
                extra.update({f"best.{name}.{k}": v for k, v in sd.items()})
            meta.update(best_epoch=self.best_epoch, best_val_loss=self.best_val_loss)
        save_state(
            stem,
            kind=kind,
            modules=modules,
            optimizers=optimizers,
            rng=gen,
            extra=extra,
            meta=meta,
        )
