"""The paper's Eval-network: an identity classifier trained on ``eval_train`` (CRAFTER.md section 5).

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
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

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
from facecraft._torchutils import eval_mode, make_generator
from facecraft._validation import validate_images
from facecraft.metrics._common import ProgressFn
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
        """Eval Acc: top-``k`` accuracy on ``images`` ``(N, 3, S, S)`` with 0-based ``labels`` ``(N,)``."""
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
        _, meta = load_checkpoint(stem, kind=_KIND)
        _check_config(stem, meta.get("config", {}), config)
        log.info("evalnet: loading finished checkpoint %s", stem)
        return EvalNet.load(stem, device=dev)

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    start = 0
    if stem is not None:
        start = _load_partial(stem, net, opt, rng, config, dev)

    n = images.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    t0 = time.time()
    for epoch in range(start, epochs):
        net.train()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        perm = torch.randperm(n, generator=rng)
        running, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = _as_float(images[idx.to(images.device)], dev)
            y = labels[idx.to(labels.device)].to(dev, torch.long)
            if augment_flip:
                flip = (torch.rand(x.shape[0], generator=rng) < 0.5).to(dev)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            correct += int((logits.detach().argmax(1) == y).sum())
            if progress is not None:
                progress(
                    epoch * steps_per_epoch + b + 1, total, f"evalnet epoch {epoch + 1}/{epochs}"
                )
        train_loss, train_acc = running / steps_per_epoch, correct / n
        log.info(
            "evalnet epoch %d/%d: loss %.4f, train acc %.3f",
            epoch + 1,
            epochs,
            train_loss,
            train_acc,
        )
        if stem is not None:
            _save_partial(
                stem,
                net,
                opt,
                rng,
                epoch + 1,
                config,
                {"train_loss": train_loss, "train_acc": train_acc},
            )
    _recalibrate_batchnorm(net, images, batch_size, dev)
    net.eval()
    if stem is not None:
        net.save(stem, meta={"config": config, "step": epochs, "train_seconds": time.time() - t0})
        for suffix in (".safetensors", ".json"):
            _partial(stem).with_suffix(suffix).unlink(missing_ok=True)
    return net


# ---------------------------------------------------------------------- helpers


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


def _as_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@torch.no_grad()
def _recalibrate_batchnorm(
    net: EvalNet, images: torch.Tensor, batch_size: int, device: torch.device
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
            net(_as_float(images[i : i + batch_size], device))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def _partial(stem: Path) -> Path:
    # no dot in the added part: facecraft._io derives file names with Path.with_suffix
    return stem.with_name(stem.name + "-partial")


def _check_config(stem: Path, stored: Dict[str, Any], config: Dict[str, Any]) -> None:
    diff = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
    if diff:
        raise CheckpointError(
            f"{stem}: checkpoint made with another configuration (stored, requested): {diff}"
        )


def _save_partial(
    stem: Path,
    net: EvalNet,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    epoch: int,
    config: Dict[str, Any],
    extra: Dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_tensors, groups = optimizer_to_tensors(opt, "opt")
    tensors.update(opt_tensors)
    tensors["rng_state"] = rng.get_state()
    save_checkpoint(
        _partial(stem),
        tensors,
        kind=_KIND + "-partial",
        meta={"step": epoch, "config": config, "optimizer": groups, **extra},
    )


def _load_partial(
    stem: Path,
    net: EvalNet,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    config: Dict[str, Any],
    device: torch.device,
) -> int:
    p = _partial(stem)
    if not checkpoint_exists(p):
        return 0
    tensors, meta = load_checkpoint(p, kind=_KIND + "-partial", device=device)
    _check_config(p, meta.get("config", {}), config)
    net.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer_from_tensors(opt, tensors, meta["optimizer"], "opt")
    rng.set_state(tensors["rng_state"].cpu())
    log.info("evalnet: resuming %s after epoch %d", stem, meta["step"])
    return int(meta["step"])
