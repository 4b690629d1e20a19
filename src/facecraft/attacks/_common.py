"""Small helpers shared by the learning attacks: image batches, shuffling, defence queries.

:class:`AdaptiveAttack` holds the ``fit`` scaffolding of the A1 adaptive
attacks (:mod:`facecraft.attacks.adaptive_whitebox`,
:mod:`facecraft.attacks.adaptive_blackbox`): protected features, resuming,
the epoch loop, history and checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from facecraft._io import PathLike
from facecraft._torchutils import eval_mode, make_generator
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

#: Mixed into ``seed`` for the held-out split's generator (kept apart from the shuffling one).
_SPLIT_SALT = 0x5EED_5A17


def check_image_set(images: torch.Tensor) -> None:
    """Accept ``(N, 3, S, S)`` images as uint8 in [0, 255] or float in [0, 1]."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images of shape (N, 3, S, S), got {tuple(images.shape)}"
            )
    else:
        validate_images(images)
    if images.shape[0] == 0:
        raise ValueError("expected at least one image, got none")


def as_float_images(
    x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A batch as float in [0, 1] on ``device`` (uint8 is divided by 255)."""
    if x.dtype == torch.uint8:
        return x.to(device).to(dtype) / 255.0
    return x.to(device, dtype)


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch over ``n`` items (CPU indices)."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def held_out_split(
    n: int, fraction: float, seed: int, *, min_train: int = 1
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Seeded ``(training rows, held-out rows or None)`` of ``n`` rows, each sorted (CPU indices).

    ``round(fraction * n)`` rows (at least 1) are held out for early stopping; ``fraction`` 0 holds out
    none. The permutation comes from a generator of its own seeded with ``seed``.

    Raises:
        ValueError: fewer than ``min_train`` rows would be left to train on.
    """
    if fraction == 0:
        return torch.arange(n), None
    n_val = max(1, round(fraction * n))
    if n - n_val < min_train:
        left = n - n_val
        raise ValueError(
            f"val_fraction={fraction} holds out {n_val} of {n} rows, leaving {left or 'none'} to train "
            f"on (at least {min_train} needed); give more rows or val_fraction=0"
        )
    perm = torch.randperm(n, generator=make_generator(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


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
    _best_state: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
    _last_state: Optional[Dict[str, Dict[str, torch.Tensor]]] = None

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
        defence (:func:`query_in_batches`), made only if an epoch remains;
        with ``requery`` there are none and ``run_epoch`` queries itself. A
        checkpoint at ``checkpoint_stem`` of this ``kind`` restores
        ``modules``, ``optimizers``, ``gen``, ``epochs_done``, ``history`` and
        the held-out bookkeeping below, and is passed to ``restore``. After
        each epoch: ``epochs_done`` is advanced, ``{"epoch", "loss"}`` and
        what ``on_epoch(epoch, self)`` returns (called with ``eval_on_epoch``
        in eval mode) go to ``history``, the state is saved (``state()`` and
        the features as extra tensors) and ``progress(epoch + 1, epochs,
        desc)`` is called.

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
        val = self.val_indices
        train = self.train_indices
        if self.val_fraction > 0 and (
            val is None or train is None or val.numel() + train.numel() != n
        ):
            raise RuntimeError("call _held_out_split(public_images) before _fit_epochs")
        if self._last_state is not None:  # a previous fit ended on the best state
            _load_states(modules, self._last_state)
            self._last_state = None
        feats: Optional[torch.Tensor] = None
        val_feats: Optional[torch.Tensor] = None
        if not self.requery and protected is not None:
            if protected.shape[0] != n:
                raise ValueError(f"`protected` has {protected.shape[0]} rows for {n} images")
            feats = protected.detach().to(device)
        if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
            extra, meta = load_state(
                checkpoint_stem, kind=kind, modules=modules, optimizers=optimizers, rng=gen
            )
            saved_val = extra.get("val_indices")
            if (saved_val is None) != (val is None) or (
                saved_val is not None
                and val is not None
                and not torch.equal(saved_val.cpu().long(), val)
            ):
                raise ValueError(
                    f"checkpoint {checkpoint_stem} was written with another held-out "
                    "split (val_fraction, seed or number of images differ)"
                )
            self.epochs_done = int(meta["epoch"])
            self.history = list(meta.get("history", []))
            self.best_epoch = meta.get("best_epoch")
            self.best_val_loss = meta.get("best_val_loss")
            best = {name: _prefixed(extra, f"best.{name}.") for name in modules}
            self._best_state = best if self.best_epoch is not None else None
            if restore is not None:
                restore(extra)
            if not self.requery and feats is None and "features" in extra:
                feats = extra["features"].to(device)
            if "val_features" in extra:
                val_feats = extra["val_features"].to(device)
        remaining = self.epochs_done < self.epochs and not self._patience_exhausted()
        if not self.requery and feats is None and remaining:
            feats = query_in_batches(self.defense, public_images, device, self.query_batch_size)
        train_feats = feats
        val_images: Optional[torch.Tensor] = None
        if val is not None and train is not None and remaining:
            val_images = public_images[val]
            if feats is not None:
                train_feats = feats[train.to(device)]
                val_feats = feats[val.to(device)]
            elif val_feats is None:
                val_feats = query_in_batches(
                    self.defense, val_images, device, self.query_batch_size
                )
        for epoch in range(self.epochs_done, self.epochs):
            if self._patience_exhausted():
                break
            loss = run_epoch(train_feats)
            self.epochs_done = epoch + 1
            entry: Dict[str, Any] = {"epoch": epoch, "loss": loss}
            if val_images is not None and val_feats is not None:
                val_loss = self._heldout_loss(val_images, val_feats)
                entry["val_loss"] = val_loss
                if not math.isnan(val_loss) and (
                    self.best_val_loss is None or val_loss < self.best_val_loss
                ):
                    self.best_epoch, self.best_val_loss = epoch, val_loss
                    self._best_state = _copy_states(modules)
            if on_epoch is not None:
                with eval_mode(*eval_on_epoch):
                    entry.update(on_epoch(epoch, self))
            self.history.append(entry)
            if checkpoint_stem is not None:
                extra_t = state() if state is not None else {}
                if feats is not None:
                    extra_t["features"] = feats
                meta_t: Dict[str, Any] = {
                    "epoch": self.epochs_done,
                    "history": self.history,
                    "attack": self.name(),
                }
                if val is not None:
                    extra_t["val_indices"] = val
                    if self.requery and val_feats is not None:
                        extra_t["val_features"] = val_feats
                    for name, sd in (self._best_state or {}).items():
                        extra_t.update({f"best.{name}.{k}": v for k, v in sd.items()})
                    meta_t.update(best_epoch=self.best_epoch, best_val_loss=self.best_val_loss)
                save_state(
                    checkpoint_stem,
                    kind=kind,
                    modules=modules,
                    optimizers=optimizers,
                    rng=gen,
                    extra=extra_t,
                    meta=meta_t,
                )
            if progress is not None:
                progress(epoch + 1, self.epochs, desc)
        if self._best_state is not None and self.best_epoch != self.epochs_done - 1:
            self._last_state = _copy_states(modules)
            _load_states(modules, self._best_state)


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``tensors`` whose key starts with ``prefix``, with it removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _copy_states(modules: Mapping[str, nn.Module]) -> Dict[str, Dict[str, torch.Tensor]]:
    """Detached clones of each module's state dict, by name."""
    return {
        name: {k: v.detach().clone() for k, v in m.state_dict().items()}
        for name, m in modules.items()
    }


def _load_states(
    modules: Mapping[str, nn.Module], states: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Copy ``states`` into ``modules`` in place (the optimisers keep their parameters)."""
    for name, m in modules.items():
        m.load_state_dict(dict(states[name]), strict=True)
