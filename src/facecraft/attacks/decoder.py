"""Black-box learned decoder attack (CRAFTER.md section 2).

The attacker can query ``Enc`` with its own public images ``X'``. It trains a
decoder ``Dec`` on pairs ``(Enc(X'), X')`` to minimise the pixel error
``||Dec(Enc(X')) - X'||`` and outputs ``Dec(F)``.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    The authors' release minimises the L2 norm of the batch difference; we
    minimise the per-pixel MSE (plus an optional L1 term), which has the same
    minimiser and suits Adam's scale invariance. Horizontal flips of the
    public images (queried through ``Enc`` as flipped images) augment the
    training set; the paper does not mention augmentation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._io import PathLike, checkpoint_exists, load_state, save_state
from facecraft._torchutils import as_float_images, eval_mode, frozen, make_generator, seeded
from facecraft.attacks._common import check_image_set, epoch_batches
from facecraft.attacks.base import InversionAttack, ProgressFn
from facecraft.attacks.registry import register_attack
from facecraft.models import Decoder, feature_shape

__all__ = ["DecoderAttack", "train_decoder_epoch"]

_KIND = "decoder-attack"


def train_decoder_epoch(
    decoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    *,
    batch_size: int,
    gen: torch.Generator,
    features: Optional[torch.Tensor] = None,
    query: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    flip: bool = False,
    l1_weight: float = 0.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> float:
    """One shuffled epoch of ``min ||Dec(F) - X||^2 (+ l1_weight * |Dec(F) - X|)``.

    Exactly one of ``features`` (fixed, row-aligned with ``images``) and
    ``query`` (called on each float batch, e.g. ``Enc`` or a defence) is given.
    With ``flip``, a random half of each batch is mirrored before querying
    (only possible with ``query``). The decoder trains in train mode (its
    flag is restored); gradients are taken w.r.t. its parameters only and its
    ``.grad`` fields are left ``None``.

    Returns:
        The mean training loss over the epoch.
    """
    if (features is None) == (query is None):
        raise ValueError("give exactly one of `features` and `query`")
    if flip and query is None:
        raise ValueError(
            "flip augmentation needs `query` (features of mirrored images are unknown)"
        )
    p = next(decoder.parameters())
    params = [q for q in decoder.parameters() if q.requires_grad]
    total, count = 0.0, 0
    n = images.shape[0]
    done = 0
    was = decoder.training
    decoder.train()
    try:
        for idx in epoch_batches(n, batch_size, gen):
            x = as_float_images(images[idx], p.device, p.dtype)
            if flip:
                mask = torch.rand(x.shape[0], generator=gen) < 0.5
                x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(-1), x)
            if query is not None:
                with torch.no_grad():
                    f = query(x).detach()
            else:
                assert features is not None
                f = features[idx.to(features.device)].to(p.device, p.dtype)
            out = decoder(f)
            loss = nnf.mse_loss(out, x)
            if l1_weight > 0:
                loss = loss + l1_weight * nnf.l1_loss(out, x)
            grads = torch.autograd.grad(loss, params)
            for q, g in zip(params, grads):
                q.grad = g
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            done += x.shape[0]
            if progress is not None:
                progress(done, n)
    finally:
        decoder.train(was)
    return total / max(count, 1)


class DecoderAttack(InversionAttack):
    r"""Black-box attack: a decoder trained on ``(Enc(X'), X')`` pairs of public images.

    Args:
        encoder: the encoder the attacker can query (``Enc``, or the encoder a
            defence exposes).
        decoder: a decoder ``F -> X`` to train; when ``None`` a
            :class:`facecraft.models.Decoder` of width ``width`` is built from
            ``feature_shape(encoder, image_size)``, at construction if
            ``image_size`` is given, else on the first :meth:`fit` (Default: None).
        image_size: image side ``S`` (Default: None, taken from the data).
        epochs: training epochs (Default: 500).
        batch_size: minibatch size (Default: 64).
        lr: Adam learning rate, other Adam settings at their defaults (Default: 1e-3).
        width: decoder width when it is built here (Default: 128).
        l1_weight: weight of an added pixel L1 term (Default: 0.0).
        flip: mirror a random half of each batch (Default: True).
        seed: seed for shuffling and flips (Default: 0).

    Shape:
        - features: ``(N, C, h, w)``, the encoder's feature shape.
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205.

    Example:
        >>> from facecraft.models import build_target
        >>> enc = build_target("resnet18", num_outputs=2, width=0.25).encoder
        >>> atk = DecoderAttack(enc, epochs=1, width=8).fit(torch.rand(4, 3, 32, 32))
        >>> atk(torch.rand(2, 16, 8, 8)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        decoder: Optional[nn.Module] = None,
        image_size: Optional[int] = None,
        epochs: int = 500,
        batch_size: int = 64,
        lr: float = 1e-3,
        width: int = 128,
        l1_weight: float = 0.0,
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if epochs < 0 or batch_size < 1 or lr <= 0 or width < 1:
            raise ValueError(
                f"need epochs >= 0, batch_size >= 1, lr > 0, width >= 1; "
                f"got {epochs}, {batch_size}, {lr}, {width}"
            )
        self.encoder = encoder
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.width = width
        self.l1_weight = l1_weight
        self.flip = flip
        self.seed = seed
        self.epochs_done = 0
        self.fit_trained = False
        self.decoder: Optional[nn.Module] = None
        self._opt: Optional[torch.optim.Optimizer] = None
        if decoder is not None:
            self._set_decoder(decoder)
        elif image_size is not None:
            self._build(image_size)
        self.models = [m for m in (encoder, self.decoder) if m is not None]

    @classmethod
    def name(cls) -> str:
        return "blackbox"

    # ---------------------------------------------------------------- set-up
    def _set_decoder(self, decoder: nn.Module) -> None:
        self.decoder = decoder
        self._opt = torch.optim.Adam(decoder.parameters(), lr=self.lr)
        self.models = [self.encoder, decoder]

    def _build(self, image_size: int) -> None:
        p = next(self.encoder.parameters())
        shape = feature_shape(self.encoder, image_size)
        with seeded(self.seed + 2):
            decoder = Decoder(shape, image_size, width=self.width)
        self._set_decoder(decoder.to(p.device, p.dtype))

    def _require_decoder(self) -> nn.Module:
        if self.decoder is None:
            raise RuntimeError(
                "DecoderAttack has no decoder yet: call fit() first or pass decoder/image_size"
            )
        return self.decoder

    def _config(self) -> Dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "width": self.width,
            "l1_weight": self.l1_weight,
            "flip": self.flip,
            "seed": self.seed,
        }

    # ---------------------------------------------------------------- training
    def fit(
        self,
        public_images: torch.Tensor,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[PathLike] = None,
    ) -> "DecoderAttack":
        """Train the decoder on ``(Enc(X'), X')`` for ``epochs`` epochs.

        Args:
            public_images: the attacker's images ``(N, 3, S, S)``, float in
                [0, 1] or uint8.
            progress: optional ``progress(done, total, desc)``, in epochs.
            checkpoint_stem: if given, the state is saved there after every
                epoch and a run with the same stem resumes from it (a finished
                run returns at once).

        Returns:
            ``self``; ``fit_trained`` says whether this call trained at all (False:
            loaded from a finished checkpoint).
        """
        check_image_set(public_images)
        if self.decoder is None:
            self._build(public_images.shape[-1])
        decoder = self._require_decoder()
        assert self._opt is not None
        gen = make_generator(self.seed)
        if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
            _, meta = load_state(
                checkpoint_stem,
                kind=_KIND,
                modules={"decoder": decoder},
                optimizers={"decoder": self._opt},
                rng=gen,
            )
            self.epochs_done = int(meta["epoch"])
            self.history = list(meta.get("history", []))
        self.fit_trained = self.epochs_done < self.epochs
        with frozen(self.encoder):
            for epoch in range(self.epochs_done, self.epochs):
                loss = train_decoder_epoch(
                    decoder,
                    self._opt,
                    public_images,
                    batch_size=self.batch_size,
                    gen=gen,
                    query=self.encoder,
                    flip=self.flip,
                    l1_weight=self.l1_weight,
                )
                self.epochs_done = epoch + 1
                self.history.append({"epoch": epoch, "loss": loss})
                if checkpoint_stem is not None:
                    self.save(checkpoint_stem, rng=gen)
                if progress is not None:
                    progress(epoch + 1, self.epochs, "decoder training")
        return self

    def fine_tune(
        self,
        features: torch.Tensor,
        images: torch.Tensor,
        *,
        epochs: int,
        lr: Optional[float] = None,
        progress: Optional[ProgressFn] = None,
        on_epoch: Optional[Callable[[int, "DecoderAttack"], Dict[str, Any]]] = None,
    ) -> "DecoderAttack":
        """Continue training on fixed ``(features, images)`` pairs (no flips).

        Used by the adaptive black-box attack with protected features. A new
        Adam optimizer (learning rate ``lr`` or the constructor's) is used.

        Args:
            features: ``(N, *F)`` released features, row-aligned with ``images``.
            images: ``(N, 3, S, S)`` float in [0, 1] or uint8.
            epochs: passes over the pairs.
            lr: Adam learning rate (Default: the constructor's ``lr``).
            progress: optional ``progress(done, total, desc)``, in epochs.
            on_epoch: optional ``on_epoch(epoch, self) -> dict`` merged into the
                epoch's ``history`` entry.

        Returns:
            ``self``.
        """
        check_image_set(images)
        if features.shape[0] != images.shape[0]:
            raise ValueError(
                f"features and images must pair up, "
                f"got {features.shape[0]} and {images.shape[0]} rows"
            )
        if self.decoder is None:
            self._build(images.shape[-1])
        decoder = self._require_decoder()
        opt = torch.optim.Adam(decoder.parameters(), lr=self.lr if lr is None else lr)
        gen = make_generator(self.seed + 1)
        for epoch in range(epochs):
            loss = train_decoder_epoch(
                decoder,
                opt,
                images,
                batch_size=self.batch_size,
                gen=gen,
                features=features.detach(),
                l1_weight=self.l1_weight,
            )
            entry: Dict[str, Any] = {"epoch": epoch, "loss": loss}
            if on_epoch is not None:
                with eval_mode(decoder):
                    entry.update(on_epoch(epoch, self))
            self.history.append(entry)
            if progress is not None:
                progress(epoch + 1, epochs, "decoder fine-tuning")
        return self

    # ---------------------------------------------------------------- state
    def save(self, stem: PathLike, *, rng: Optional[torch.Generator] = None) -> None:
        """Save decoder, optimizer, epoch count and history (safetensors + JSON)."""
        decoder = self._require_decoder()
        assert self._opt is not None
        save_state(
            stem,
            kind=_KIND,
            modules={"decoder": decoder},
            optimizers={"decoder": self._opt},
            rng=rng,
            meta={
                "epoch": self.epochs_done,
                "config": self._config(),
                "history": self.history,
                "attack": self.name(),
            },
        )

    def load(self, stem: PathLike) -> "DecoderAttack":
        """Load a state written by :meth:`save` (the decoder must exist with the same shapes)."""
        decoder = self._require_decoder()
        assert self._opt is not None
        _, meta = load_state(
            stem, kind=_KIND, modules={"decoder": decoder}, optimizers={"decoder": self._opt}
        )
        self.epochs_done = int(meta["epoch"])
        self.history = list(meta.get("history", []))
        return self

    # ---------------------------------------------------------------- attack
    def reconstruct(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        decoder = self._require_decoder()
        with torch.no_grad(), frozen(decoder):
            return decoder(features).clamp(0, 1).detach()


register_attack("blackbox", DecoderAttack)
