"""Feature-to-embedding attack: regress a face-recognition embedding from a feature.

The attacker sees released features ``F = Enc(X)``. On its own public faces it
holds pairs ``(released feature, face-recognition embedding of the face)``,
for instance dlib's 128-d face descriptor (computed by the caller; nothing
here depends on dlib) and trains a network ``F -> embedding``. To name a
private face, the caller hands the predicted embedding to an identity oracle
(nearest class mean over a gallery of embeddings). The attack needs no
labelled private faces and never produces an image, so it has its own small
interface (:class:`EmbeddingAttack`: ``fit(features, embeddings)``,
``predict(features) -> (N, E)``); it is neither an
:class:`~facecraft.attacks.base.InversionAttack` nor an
:class:`~facecraft.attacks.feature2id.IdentityAttack`, and callers tell it
apart with ``isinstance(attack, EmbeddingAttack)``.

Its A1 adaptive version is
:class:`~facecraft.attacks.adaptive_embedding.AdaptiveEmbeddingAttack`.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (threat model, adaptive attacks). Regressing a face-recognition embedding
    straight from the released feature is one of the stronger attacks listed
    in CRAFTER.md section 6 ("Measuring privacy so that the numbers can be
    trusted").

Note:
    The paper has no such attack; the architecture and loss are our choice.
    The network is :class:`~facecraft.attacks.feature2id.FeatureClassifier`
    with ``E`` outputs (a small CNN on ``(C, h, w)`` features, an MLP on flat
    ``(D,)`` ones). The loss is the mean squared error plus the mean cosine
    distance, :func:`embedding_loss`: the MSE fixes the scale (face
    descriptors are compared by Euclidean distance), the cosine term the
    direction (what a nearest-class-mean oracle on cosines uses). A seeded
    held-out share of the pairs drives early stopping.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._io import (
    CheckpointError,
    PathLike,
    checkpoint_exists,
    load_state,
    read_json,
    save_state,
)
from facecraft._torchutils import eval_mode, modules_device, seeded
from facecraft._validation import validate_tensors
from facecraft.attacks._common import held_out_split
from facecraft.attacks._embedding_fit import check_pairs, train_regressor
from facecraft.attacks.base import ProgressFn
from facecraft.attacks.feature2id import FeatureClassifier
from facecraft.attacks.registry import register_attack

__all__ = ["EmbeddingAttack", "embedding_loss"]

_KIND = "embedding-attack"
_REDUCTIONS = ("none", "mean", "sum")


def embedding_loss(
    pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    r"""Mean squared error plus cosine distance between predicted and target embeddings.

    Per row ``i``: ``mean_j (pred_ij - target_ij)^2 + 1 - cos(pred_i, target_i)``.
    Its mean over rows is ``MSE(pred, target) + (1 - cos).mean()``.

    Args:
        pred: predicted embeddings ``(N, E)``.
        target: target embeddings ``(N, E)``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` over rows (Default: ``'mean'``).

    Returns:
        ``(N,)`` with ``'none'``, else a scalar.

    Raises:
        ValueError: the shapes differ or are not 2-D, or the reduction is unknown.

    Example:
        >>> e = torch.randn(3, 8)
        >>> bool(embedding_loss(e, e) < 1e-6), tuple(embedding_loss(e, -e, reduction="none").shape)
        (True, (3,))
    """
    if pred.dim() != 2 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target of the same shape (N, E), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"expected reduction in {_REDUCTIONS}, got {reduction!r}")
    per_row = (pred - target).pow(2).mean(dim=1) + 1 - nnf.cosine_similarity(pred, target, dim=1)
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    return per_row


class EmbeddingAttack:
    r"""Regress a face-recognition embedding from released features.

    Trains :class:`~facecraft.attacks.feature2id.FeatureClassifier` with ``E``
    outputs on ``(feature, embedding)`` pairs of the attacker's public faces,
    minimising :func:`embedding_loss` with Adam. A seeded share
    ``val_fraction`` of the pairs is held out: after every epoch its loss is
    computed (eval mode), the best state is kept, training stops after
    ``patience`` epochs without improvement, and the best state is restored.

    Args:
        epochs: the most training epochs (Default: 60).
        batch_size: minibatch size; every batch has at least two rows (batch
            norm needs them), so a trailing single row joins the batch before
            (Default: 128).
        lr: Adam learning rate (Default: 1e-3).
        width: regressor width (Default: 64).
        weight_decay: Adam weight decay (Default: 1e-4).
        val_fraction: share of the pairs held out for early stopping, at least
            one row when positive; 0 trains on all and keeps the last epoch
            (Default: 0.1).
        patience: epochs without a better held-out loss before stopping
            (Default: 10).
        seed: seed for initialisation, the held-out split, shuffling and
            dropout (Default: 0).
        device: where to build the regressor (Default: "cpu"; the pipeline
            passes the run's device).

    Attributes:
        history: one ``{"epoch", "loss", "val_loss"}`` per epoch of the last
            :meth:`fit` (``val_loss`` is ``None`` without a held-out split).
        best_epoch: the epoch whose state was kept (``None`` before any epoch).
        val_index: the held-out rows of the last :meth:`fit` (``None`` if none,
            or when loaded from a file).
        fit_trained: whether the last :meth:`fit` trained (False: loaded from
            a finished checkpoint).

    Shape:
        - features: ``(N, C, h, w)`` or ``(N, D)``.
        - embeddings: ``(N, E)``, e.g. ``E = 128`` for dlib's descriptor.
        - output of :meth:`predict` and ``__call__``: ``(N, E)``.

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (threat model).

    Example:
        >>> f, e = torch.randn(16, 4, 4, 4), torch.randn(16, 8)
        >>> atk = EmbeddingAttack(epochs=2, width=4, batch_size=8).fit(f, e)
        >>> atk(f).shape, len(atk.history)
        (torch.Size([16, 8]), 2)
    """

    def __init__(
        self,
        *,
        epochs: int = 60,
        batch_size: int = 128,
        lr: float = 1e-3,
        width: int = 64,
        weight_decay: float = 1e-4,
        val_fraction: float = 0.1,
        patience: int = 10,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        problems = []
        if epochs < 0:
            problems.append(f"epochs >= 0 (got {epochs})")
        if batch_size < 1:
            problems.append(f"batch_size >= 1 (got {batch_size})")
        if not (math.isfinite(lr) and lr > 0):
            problems.append(f"finite lr > 0 (got {lr})")
        if width < 1:
            problems.append(f"width >= 1 (got {width})")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            problems.append(f"finite weight_decay >= 0 (got {weight_decay})")
        if not 0 <= val_fraction < 1:
            problems.append(f"0 <= val_fraction < 1 (got {val_fraction})")
        if patience < 1:
            problems.append(f"patience >= 1 (got {patience})")
        if problems:
            raise ValueError(f"{type(self).__name__}: need {'; '.join(problems)}")
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.width = width
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self._device = torch.device(device)
        self.regressor: Optional[FeatureClassifier] = None
        self.models: List[nn.Module] = []
        self.history: List[Dict[str, Any]] = []
        self.best_epoch: Optional[int] = None
        self.val_index: Optional[torch.Tensor] = None
        self.fit_trained = False
        self._fshape: Tuple[int, ...] = ()
        self.embedding_dim: Optional[int] = None

    @classmethod
    def name(cls) -> str:
        return "embedding"

    @property
    def device(self) -> torch.device:
        return modules_device(self.models)

    # ---------------------------------------------------------------- set-up
    def _set_regressor(
        self, reg: FeatureClassifier, feature_shape: Sequence[int], dim: int
    ) -> None:
        self.regressor = reg.to(self._device)
        self._fshape = tuple(int(v) for v in feature_shape)
        self.embedding_dim = int(dim)
        self.models = [self.regressor]

    def _build(self, feature_shape: Sequence[int], dim: int) -> FeatureClassifier:
        with seeded(self.seed):
            reg = FeatureClassifier(feature_shape, dim, width=self.width)
        self._set_regressor(reg, feature_shape, dim)
        return reg

    def _start(self, feature_shape: Tuple[int, ...], dim: int) -> FeatureClassifier:
        """The network :meth:`fit` starts from: a fresh seeded one."""
        return self._build(feature_shape, dim)

    def _config(self) -> Dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "val_fraction": self.val_fraction,
            "patience": self.patience,
            "seed": self.seed,
        }

    # ---------------------------------------------------------------- training
    def fit(
        self,
        features: torch.Tensor,
        embeddings: torch.Tensor,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[PathLike] = None,
    ) -> "EmbeddingAttack":
        """Train the regressor on ``(features, embeddings)`` pairs with early stopping.

        Every call starts afresh (:class:`EmbeddingAttack`: a new seeded
        network; :class:`AdaptiveEmbeddingAttack`: a new copy of its base's)
        and replaces ``history``, ``best_epoch`` and ``val_index``.

        Args:
            features: released features ``(N, C, h, w)`` or ``(N, D)``.
            embeddings: the faces' embeddings ``(N, E)``, row-aligned.
            progress: optional ``progress(done, total, desc)``, in epochs.
            checkpoint_stem: save the finished model there; if a finished
                model of this attack is already there, load it instead of
                training.

        Returns:
            ``self``; ``fit_trained`` says whether this call trained.

        Raises:
            TypeError: an argument is not a tensor.
            ValueError: wrong dimensions, mismatched row counts, fewer than two
                rows, or non-finite values.
            facecraft._io.CheckpointError: the checkpoint holds another attack
                or other shapes.
        """
        check_pairs(features, embeddings)
        fshape = tuple(int(v) for v in features.shape[1:])
        dim = int(embeddings.shape[1])
        if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
            self.load(checkpoint_stem)
            if self._fshape != fshape or self.embedding_dim != dim:
                raise CheckpointError(
                    f"{checkpoint_stem}: holds a regressor {self._fshape} -> {self.embedding_dim}, "
                    f"the data is {fshape} -> {dim}"
                )
            self.val_index = None
            self.fit_trained = False
            return self
        train_idx, val_idx = held_out_split(
            features.shape[0], self.val_fraction, self.seed + 1, min_train=2
        )
        reg = self._start(fshape, dim)
        self.history, self.best_epoch, self.val_index = [], None, val_idx
        train_regressor(
            self,
            reg,
            features.detach(),
            embeddings.detach(),
            train_idx,
            val_idx,
            loss_fn=embedding_loss,
            progress=progress,
        )
        self.fit_trained = True
        if checkpoint_stem is not None:
            self.save(checkpoint_stem)
        return self

    # ---------------------------------------------------------------- attack
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted embeddings ``(N, E)`` for features ``(N, *F)`` (no mode or grad handling)."""
        if self.regressor is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        return self.regressor(features)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Validate, then :meth:`predict` in eval mode (flag restored) without gradients."""
        validate_tensors([features], dim_range=(2, 4), finite=True)
        if self.regressor is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        if tuple(features.shape[1:]) != self._fshape:
            expected = ", ".join(map(str, self._fshape))
            raise ValueError(
                f"expected features of shape (N, {expected}), got {tuple(features.shape)}"
            )
        p0 = next(self.regressor.parameters())
        with eval_mode(*self.models), torch.no_grad():
            out = self.predict(features.detach().to(p0.device, p0.dtype))
        return out.detach()

    # ---------------------------------------------------------------- state
    def save(self, stem: PathLike) -> None:
        """Save the regressor (safetensors) with shapes, width, best epoch and history (JSON)."""
        if self.regressor is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: nothing to save")
        save_state(
            stem,
            kind=_KIND,
            modules={"regressor": self.regressor},
            optimizers={},
            meta={
                "feature_shape": list(self._fshape),
                "embedding_dim": self.embedding_dim,
                "width": self.width,
                "best_epoch": self.best_epoch,
                "history": self.history,
                "config": self._config(),
                "attack": self.name(),
            },
        )

    def load(self, stem: PathLike) -> "EmbeddingAttack":
        """Build the regressor recorded by :meth:`save` and load its weights.

        Raises:
            facecraft._io.CheckpointError: the files are missing or hold
                something else (another kind, or the other one of
                ``"embedding"`` and ``"adaptive-embedding"``).
        """
        js = Path(stem).parent / (Path(stem).name + ".json")
        if not js.exists():
            raise CheckpointError(f"no checkpoint at {stem} (need {js.name})")
        meta = read_json(js)
        if meta.get("kind") != _KIND:
            raise CheckpointError(f"{stem}: holds a {meta.get('kind')!r}, expected a {_KIND!r}")
        if meta.get("attack") != self.name():
            raise CheckpointError(
                f"{stem}: holds a {meta.get('attack')!r} attack, expected {self.name()!r}"
            )
        self.width = int(meta["width"])
        reg = self._build(tuple(meta["feature_shape"]), int(meta["embedding_dim"]))
        load_state(stem, kind=_KIND, modules={"regressor": reg}, optimizers={})
        self.history = list(meta.get("history", []))
        self.best_epoch = meta.get("best_epoch")
        return self

    def __repr__(self) -> str:
        params = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, (int, float, str, bool)) and not k.startswith("_")
        }
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))
        return f"{type(self).__name__}({inner})"


register_attack("embedding", EmbeddingAttack)  # type: ignore[arg-type]
