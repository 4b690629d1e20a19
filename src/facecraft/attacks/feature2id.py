"""Feature-to-identity attack: predict who a released feature belongs to (CRAFTER.md section 2).

Unlike the reconstruction attacks, this one never produces an image, so it
has its own small interface, :class:`IdentityAttack`: ``fit(features, labels)``
and ``predict(features) -> scores (N, K)``. It is registered in the same
attack registry (name ``"feature2id"``); callers tell the two kinds apart with
``isinstance(attack, IdentityAttack)``.

Threat model (an assumption stronger than the reconstruction attacks'): the
attacker holds *labelled* images of the private identities. As in the paper's
Feature2ID experiment, the classifier is trained on the released (protected)
features of ``eval_train`` with their identity labels and tested on the
released features of ``eval_test``.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    The release trains a classifier for 400 epochs with Adam at its default
    settings and batch 128; its architecture is not described in the paper.
    Ours is a small CNN on the feature map (two 3x3 convolution stages with
    batch norm, stride-2 downsampling, global average pooling, dropout, a
    linear layer) which fits the 64x16x16 features of ResNet-18 and any other
    ``(C, h, w)`` or flat ``(D,)`` feature.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._io import CheckpointError, PathLike, load_state, read_json, save_state
from facecraft._torchutils import eval_mode, make_generator, modules_device
from facecraft._validation import validate_tensors
from facecraft.attacks._common import epoch_batches
from facecraft.attacks.base import ProgressFn
from facecraft.attacks.registry import register_attack

__all__ = ["IdentityAttack", "Feature2IDAttack", "FeatureClassifier"]


class IdentityAttack(abc.ABC):
    """Base class: released features -> identity scores.

    Subclasses set ``self.models`` and implement :meth:`fit` and
    :meth:`predict`; :meth:`__call__` validates, runs ``predict`` with the
    models in eval mode (flags restored) and detaches.
    """

    def __init__(self) -> None:
        self.models: List[nn.Module] = []
        self.history: List[Dict[str, Any]] = []

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """The name this attack is registered under."""

    @abc.abstractmethod
    def fit(
        self, features: torch.Tensor, labels: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> "IdentityAttack":
        """Learn from released features ``(N, *F)`` and 0-based identity labels ``(N,)``."""

    @abc.abstractmethod
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Identity scores (logits) ``(N, K)`` for features ``(N, *F)``."""

    @property
    def device(self) -> torch.device:
        return modules_device(self.models)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        validate_tensors([features], dim_range=(2, 5), finite=True)
        with eval_mode(*self.models), torch.no_grad():
            out = self.predict(features.detach().to(self.device))
        return out.detach()

    def __repr__(self) -> str:
        params = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, (int, float, str, bool)) and not k.startswith("_")
        }
        return (
            f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
        )


class FeatureClassifier(nn.Module):
    """A small CNN ``(N, C, h, w) -> (N, K)`` (or an MLP for flat ``(N, D)`` features).

    Args:
        feature_shape: ``(C, h, w)`` or ``(D,)``.
        num_classes: ``K``.
        width: channels of the first stage (the second has ``2 * width``).
        dropout: dropout before the last layer.
    """

    def __init__(
        self, feature_shape: Sequence[int], num_classes: int, width: int = 128, dropout: float = 0.3
    ) -> None:
        super().__init__()
        shape = tuple(feature_shape)
        if len(shape) == 3:
            c = shape[0]
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(c, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(True),
                nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False),
                nn.BatchNorm2d(2 * width),
                nn.ReLU(True),
                nn.Conv2d(2 * width, 2 * width, 3, 2, 1, bias=False),
                nn.BatchNorm2d(2 * width),
                nn.ReLU(True),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        elif len(shape) == 1:
            self.body = nn.Sequential(
                nn.Linear(shape[0], 2 * width), nn.BatchNorm1d(2 * width), nn.ReLU(True)
            )
        else:
            raise ValueError(f"feature shape must be (C, h, w) or (D,), got {shape}")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(f))


class Feature2IDAttack(IdentityAttack):
    r"""Identity classifier trained directly on released features.

    Args:
        num_classes: number of identities ``K``; ``None`` takes
            ``max(labels) + 1`` at :meth:`fit` (Default: None).
        epochs: training epochs (Default: 400).
        batch_size: minibatch size (Default: 128).
        lr: Adam learning rate (Default: 1e-3).
        width: classifier width (Default: 128).
        weight_decay: Adam weight decay (Default: 0.0).
        seed: seed for initialisation, shuffling and dropout (Default: 0).
        device: where to build the classifier (Default: "cpu"; the pipeline
            passes the run's device).

    Shape:
        - features: ``(N, *F)``.
        - labels: ``(N,)`` 0-based identity indices.
        - output of :meth:`predict`: ``(N, K)`` logits.

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (Feature2ID).

    Example:
        >>> f, y = torch.randn(8, 4, 4, 4), torch.arange(8) % 2
        >>> atk = Feature2IDAttack(epochs=1, width=4).fit(f, y)
        >>> atk(f).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        num_classes: Optional[int] = None,
        *,
        epochs: int = 400,
        batch_size: int = 128,
        lr: float = 1e-3,
        width: int = 128,
        weight_decay: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        if epochs < 0 or batch_size < 1 or lr <= 0 or width < 1:
            raise ValueError(
                f"need epochs >= 0, batch_size >= 1, lr > 0, width >= 1; "
                f"got {epochs}, {batch_size}, {lr}, {width}"
            )
        self.num_classes = num_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.width = width
        self.weight_decay = weight_decay
        self.seed = seed
        self._device = torch.device(device)
        self.classifier: Optional[FeatureClassifier] = None
        self._fshape: tuple = ()

    @classmethod
    def name(cls) -> str:
        return "feature2id"

    def _build(self, feature_shape: Sequence[int], num_classes: int) -> FeatureClassifier:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            clf = FeatureClassifier(feature_shape, num_classes, width=self.width)
        self.classifier = clf.to(self._device)
        self._fshape = tuple(int(v) for v in feature_shape)
        self.num_classes = num_classes
        self.models = [self.classifier]
        return self.classifier

    def fit(
        self, features: torch.Tensor, labels: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> "Feature2IDAttack":
        """Train the classifier with cross-entropy on ``(features, labels)``.

        Args:
            features: released features ``(N, *F)``.
            labels: 0-based identity labels ``(N,)``.
            progress: optional ``progress(done, total, desc)``, in epochs.
        """
        validate_tensors([features], dim_range=(2, 4), finite=True)
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}"
            )
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("labels must be 0-based non-negative identity indices")
        k = self.num_classes if self.num_classes is not None else int(labels.max()) + 1
        if int(labels.max()) >= k:
            raise ValueError(f"label {int(labels.max())} out of range for num_classes={k}")
        clf = (
            self.classifier
            if self.classifier is not None
            else self._build(tuple(features.shape[1:]), k)
        )
        opt = torch.optim.Adam(clf.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = make_generator(self.seed)
        params = [p for p in clf.parameters() if p.requires_grad]
        x_all = features.detach()
        y_all = labels.detach().long()
        was = clf.training
        clf.train()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)  # dropout masks
                for epoch in range(self.epochs):
                    total = 0.0
                    for idx in epoch_batches(x_all.shape[0], self.batch_size, gen):
                        if idx.numel() < 2 and x_all.shape[0] >= 2:
                            continue  # batch norm needs two samples
                        x = x_all[idx.to(x_all.device)].to(self._device)
                        y = y_all[idx.to(y_all.device)].to(self._device)
                        loss = nnf.cross_entropy(clf(x), y)
                        grads = torch.autograd.grad(loss, params)
                        for p, g in zip(params, grads):
                            p.grad = g
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        total += float(loss.detach()) * idx.numel()
                    self.history.append({"epoch": epoch, "loss": total / x_all.shape[0]})
                    if progress is not None:
                        progress(epoch + 1, self.epochs, "feature-to-ID training")
        finally:
            clf.train(was)
        return self

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("Feature2IDAttack is not fitted: call fit() first")
        return self.classifier(features)

    def save(self, stem: PathLike) -> None:
        """Save the classifier (safetensors) with its feature shape and class count (JSON)."""
        if self.classifier is None:
            raise RuntimeError("Feature2IDAttack is not fitted: nothing to save")
        save_state(
            stem,
            kind="feature2id",
            modules={"classifier": self.classifier},
            optimizers={},
            meta={
                "feature_shape": list(self._fshape),
                "num_classes": self.num_classes,
                "width": self.width,
                "attack": self.name(),
            },
        )

    def load(self, stem: PathLike) -> "Feature2IDAttack":
        """Build the classifier recorded in a state written by :meth:`save` and load its weights."""
        meta = read_json(Path(stem).with_suffix(".json"))
        if meta.get("kind") != "feature2id":
            raise CheckpointError(f"{stem}: holds a {meta.get('kind')!r}, expected a 'feature2id'")
        self.width = int(meta["width"])
        clf = self._build(tuple(meta["feature_shape"]), int(meta["num_classes"]))
        load_state(stem, kind="feature2id", modules={"classifier": clf}, optimizers={})
        return self


register_attack("feature2id", Feature2IDAttack)  # type: ignore[arg-type]
