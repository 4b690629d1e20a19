"""The paper's Eval-network: an identity classifier trained on ``eval_train`` (CRAFTER.md sec. 5).

The privacy oracle of the paper is a face classifier trained on the private
``eval_train`` images (identities shared with ``eval_test``). Its top-1
accuracy on reconstructions of ``eval_test`` images is *Eval Acc*, and the
cosine of its penultimate-layer embeddings of a reconstruction and its
original is *FSIM*.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).

Note:
    The network is the ResNet-18 of :func:`facecraft.models.build_target` used
    whole (encoder and head), with a ``width`` multiplier. Training uses AdamW,
    a cosine learning-rate schedule, label smoothing 0.1 and random horizontal
    flips. The release trains an ImageNet-style classifier for the oracle;
    architecture details and schedule here are ours.

    After training, BatchNorm statistics are re-estimated in one pass over the
    training images with the final weights (exact averages instead of lagging
    exponential ones).

    Training is resumable: after each epoch a partial checkpoint
    ``<stem>-partial.{safetensors,json}`` holds weights, optimizer state, the
    RNG state and the epoch; when training ends the final ``<stem>`` checkpoint
    is written and the partial one removed. With the same seed an interrupted
    and resumed run gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from facecraft._io import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    save_checkpoint,
)
from facecraft._torchutils import eval_mode, make_generator
from facecraft._validation import validate_images
from facecraft.metrics._common import ProgressFn
from facecraft.metrics._evalnet_fit import (
    check_config,
    check_training_args,
    load_partial,
    recalibrate_batchnorm,
    remove_partial,
    save_partial,
    train_epoch,
)
from facecraft.metrics.identity import feature_cosine, topk_accuracy
from facecraft.models.target import build_target

__all__ = ["EvalNet", "train_evalnet"]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

_KIND = "evalnet"


class EvalNet(nn.Module):
    r"""An identity classifier ``(N, 3, S, S) -> (N, K)`` with a penultimate embedding.

    Args:
        num_identities: ``K``.
        width: channel multiplier of the ResNet-18 (1.0 = published widths).
        arch: a :data:`facecraft.models.TARGET_ARCHS` name used as a full network.

    Example:
        >>> net = EvalNet(5, width=0.25).eval()
        >>> net.scores(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(self, num_identities: int, *, width: float = 0.5, arch: str = "resnet18") -> None:
        super().__init__()
        if (
            isinstance(num_identities, bool)
            or not isinstance(num_identities, int)
            or num_identities < 2
        ):
            raise ValueError(f"expected num_identities >= 2, got {num_identities!r}")
        if not width > 0:
            raise ValueError(f"expected a positive width, got {width!r}")
        self.num_identities = num_identities
        self.width = float(width)
        self.arch = arch
        self.net = build_target(arch, num_outputs=num_identities, width=width)

    def config(self) -> Dict[str, Any]:
        """The constructor arguments, as stored in checkpoints."""
        return {"num_identities": self.num_identities, "width": self.width, "arch": self.arch}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of images ``(N, 3, S, S)`` in [0, 1] (``S`` divisible by 32)."""
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, D)`` (input of the last linear layer)."""
        head = self.net.head
        if not isinstance(head, nn.Sequential):
            raise TypeError(
                f"expected a Sequential head ending in a linear layer, got {type(head).__name__}"
            )
        return head[:-1](self.net.encoder(x))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def scores(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Identity logits ``(N, K)`` in eval mode, on the images' device.

        Args:
            images: ``(N, 3, S, S)`` float images in [0, 1].
            batch_size: images per forward pass.
        """
        return self._batched(images, self.forward, batch_size)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Penultimate embeddings ``(N, D)`` in eval mode (for FSIM), on the images' device."""
        return self._batched(images, self.features, batch_size)

    def identify(self, images: torch.Tensor, labels: torch.Tensor, *, k: int = 1) -> torch.Tensor:
        """Eval Acc: top-``k`` accuracy on ``images`` ``(N, 3, S, S)``, 0-based labels ``(N,)``."""
        return topk_accuracy(self.scores(images), labels.to(images.device), k=k)

    def feature_similarity(
        self, reconstructions: torch.Tensor, originals: torch.Tensor, *, reduction: str = "mean"
    ) -> torch.Tensor:
        """FSIM: cosine of penultimate embeddings of reconstructions and their originals."""
        if reconstructions.shape != originals.shape:
            raise ValueError(
                f"expected reconstructions and originals of the same shape, got "
                f"{tuple(reconstructions.shape)} and {tuple(originals.shape)}"
            )
        return feature_cosine(
            self.embed(reconstructions), self.embed(originals), reduction=reduction
        )

    def _batched(self, images: torch.Tensor, fn: Any, batch_size: int) -> torch.Tensor:
        validate_images(images, channels=3)
        if images.shape[0] == 0:
            raise ValueError("expected at least one image, got an empty batch")
        dev = self.device
        outs = []
        with eval_mode(self):
            for i in range(0, images.shape[0], batch_size):
                outs.append(fn(images[i : i + batch_size].to(dev)))
        return torch.cat(outs).to(images.device)

    @classmethod
    def load(cls, stem: PathLike, *, device: Union[str, torch.device] = "cpu") -> "EvalNet":
        """Load a finished network saved by :func:`train_evalnet` (or :meth:`save`)."""
        tensors, meta = load_checkpoint(stem, kind=_KIND, device=device)
        cfg = meta.get("config")
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{stem}: no 'config' record in the JSON")
        net = cls(int(cfg["num_identities"]), width=float(cfg["width"]), arch=str(cfg["arch"]))
        expected = set(net.state_dict())
        if set(tensors) != expected:
            raise CheckpointError(f"{stem}: key set does not match an EvalNet with config {cfg}")
        net.load_state_dict(tensors)
        return net.to(device).eval()

    def save(self, stem: PathLike, *, meta: Optional[Dict[str, Any]] = None) -> None:
        """Save weights and config as ``<stem>.safetensors`` + ``<stem>.json``."""
        save_checkpoint(
            stem, self.state_dict(), kind=_KIND, meta={"config": self.config(), **dict(meta or {})}
        )


def train_evalnet(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_identities: Optional[int] = None,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    width: float = 0.5,
    arch: str = "resnet18",
    label_smoothing: float = 0.1,
    augment_flip: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    checkpoint_stem: Optional[PathLike] = None,
) -> EvalNet:
    r"""Train the Eval-network on ``eval_train`` (cross-entropy over identities).

    Args:
        images: ``(N, 3, S, S)`` uint8 images or float images in [0, 1];
            ``S`` divisible by 32. Kept where they are; batches move to ``device``.
        labels: ``(N,)`` 0-based identities.
        num_identities: ``K``; default ``max(labels) + 1``.
        epochs: passes over the data.
        batch_size: images per step.
        lr: peak AdamW learning rate (cosine-annealed to 0 over ``epochs``).
        weight_decay: AdamW weight decay.
        width: ResNet-18 channel multiplier.
        arch: network name for :func:`facecraft.models.build_target`.
        label_smoothing: cross-entropy label smoothing.
        augment_flip: random horizontal flips.
        device: where to train; default: the images' device.
        seed: seeds initialisation, batch order and augmentation.
        progress: ``progress(done, total, description)`` after each step.
        checkpoint_stem: if given, a partial checkpoint is written after every
            epoch and training resumes from it; a finished checkpoint there is
            loaded and returned without training.

    Returns:
        The trained :class:`EvalNet` in eval mode on ``device``.

    Raises:
        TypeError: images neither uint8 nor floating point, or non-integer labels.
        ValueError: bad shapes, labels or settings.
        facecraft._io.CheckpointError: a checkpoint at ``checkpoint_stem`` was
            made with another configuration.
    """
    k = check_training_args(images, labels, num_identities, epochs, batch_size, lr)
    dev = torch.device(device) if device is not None else images.device

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
        torch.manual_seed(seed)
        net = EvalNet(k, width=width, arch=arch).to(dev)
    config = {
        **net.config(),
        "image_size": int(images.shape[-1]),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "augment_flip": augment_flip,
        "seed": seed,
        "num_images": int(images.shape[0]),
    }
    stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
    if stem is not None and checkpoint_exists(stem):
        return _load_finished(stem, config, dev)

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    start = load_partial(stem, net, opt, rng, config, dev) if stem is not None else 0

    settings = {
        "lr": lr,
        "batch_size": batch_size,
        "label_smoothing": label_smoothing,
        "augment_flip": augment_flip,
        "device": dev,
    }
    t0 = time.time()
    for epoch in range(start, epochs):
        loss, acc = train_epoch(net, opt, rng, images, labels, epoch, epochs, progress, **settings)
        if stem is not None:
            extra = {"train_loss": loss, "train_acc": acc}
            save_partial(stem, net, opt, rng, epoch + 1, config, extra)
    recalibrate_batchnorm(net, images, batch_size, dev)
    net.eval()
    if stem is not None:
        net.save(stem, meta={"config": config, "step": epochs, "train_seconds": time.time() - t0})
        remove_partial(stem)
    return net


def _load_finished(stem: Path, config: Dict[str, Any], device: torch.device) -> EvalNet:
    """The finished network at ``stem``, after checking it was trained with ``config``."""
    _, meta = load_checkpoint(stem, kind=_KIND)
    check_config(stem, meta.get("config", {}), config)
    log.info("evalnet: loading finished checkpoint %s", stem)
    return EvalNet.load(stem, device=device)
