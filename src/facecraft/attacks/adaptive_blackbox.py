"""Adaptive black-box attack A1: fine-tune Dec on the defence's outputs (CRAFTER.md section 2).

The attacker runs the defence on its own public images ``X`` and keeps
training its decoder on the pairs ``(defense(X), X)`` (~70 more epochs with
Adam in the paper), so the decoder learns to read protected features.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    As in the release, the protected features are queried once and reused
    every epoch (``requery=True`` queries afresh each epoch, which helps
    against randomised defences). The release minimises the batch L2 norm;
    we minimise the per-pixel MSE (see :mod:`facecraft.attacks.decoder`).
    The release fine-tunes for a fixed number of epochs; ``val_fraction``
    holds out a share of the public images whose reconstruction loss picks
    the best epoch's decoder and, with ``patience``, stops early
    (CRAFTER.md section 6: the adaptive attacker learns from >= 1,024
    releases and its model is chosen on releases it did not train on).
"""

from __future__ import annotations

from typing import Optional

import torch

from facecraft._io import PathLike
from facecraft._torchutils import make_generator
from facecraft.attacks._adaptive import AdaptiveAttack, EpochCallback
from facecraft.attacks._common import check_image_set, trainable_copy
from facecraft.attacks.base import DefenseFn, ProgressFn
from facecraft.attacks.decoder import DecoderAttack, train_decoder_epoch
from facecraft.attacks.registry import register_attack

__all__ = ["AdaptiveBlackBoxAttack"]

_KIND = "adaptive-blackbox"


class AdaptiveBlackBoxAttack(AdaptiveAttack):
    r"""A1 black-box: fine-tune a copy of a trained decoder on ``(defense(X), X)`` pairs.

    Args:
        decoder_attack: a :class:`~facecraft.attacks.decoder.DecoderAttack`
            whose decoder has been built (and normally fitted on raw
            features); its decoder is deep-copied on :meth:`fit` (or now, if
            it already exists), so the original stays untouched.
        defense: the defence as a black box, images ``(N, 3, S, S)`` in [0, 1]
            -> released features.
        epochs: fine-tuning epochs (Default: 70).
        lr: Adam learning rate, other settings at their defaults (Default: 1e-3).
        batch_size: minibatch size (Default: 64; the release uses 128).
        l1_weight: weight of an added pixel L1 term (Default: 0.0).
        requery: query the defence afresh every epoch (Default: False).
        query_batch_size: images per defence query and per held-out
            reconstruction batch (Default: 128).
        val_fraction: share of the public images held out from training
            (at least one image, drawn with a generator derived from
            ``seed``); after each epoch their loss ``val_loss`` (per-pixel MSE
            of :meth:`reconstruct` of their protected features) is recorded,
            and :meth:`fit` ends with the decoder of the epoch where it was
            lowest. 0 trains on every image with no held-out loss
            (Default: 0.0).
        patience: with ``val_fraction > 0``, stop after this many epochs
            without a lower held-out loss; 0 runs every epoch (Default: 0).
        seed: seed for shuffling and the held-out split (Default: 0).

    Attributes:
        history: one dict per epoch: ``epoch``, ``loss`` (mean training loss),
            ``val_loss`` (with ``val_fraction > 0``) and what ``on_epoch`` returned.
        val_indices: held-out rows of the public images (sorted), or ``None``.
        train_indices: the rows trained on (sorted), or ``None`` (all).
        best_epoch: the epoch whose decoder :meth:`fit` kept, or ``None``.
        best_val_loss: its held-out loss, or ``None``.

    Shape:
        - features: ``(N, *F)``, the released feature shape.
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (adaptive attacks).
    """

    def __init__(
        self,
        decoder_attack: DecoderAttack,
        defense: DefenseFn,
        *,
        epochs: int = 70,
        lr: float = 1e-3,
        batch_size: int = 64,
        l1_weight: float = 0.0,
        requery: bool = False,
        query_batch_size: int = 128,
        val_fraction: float = 0.0,
        patience: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if epochs < 0 or lr <= 0 or batch_size < 1:
            raise ValueError(
                f"need epochs >= 0, lr > 0, batch_size >= 1; got {epochs}, {lr}, {batch_size}"
            )
        self._set_early_stopping(val_fraction, patience)
        self.decoder_attack = decoder_attack
        self.defense = defense
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.l1_weight = l1_weight
        self.requery = requery
        self.query_batch_size = query_batch_size
        self.seed = seed
        self.epochs_done = 0
        self.decoder: Optional[torch.nn.Module] = None
        self._opt: Optional[torch.optim.Optimizer] = None
        if decoder_attack.decoder is not None:
            self._copy_decoder()

    @classmethod
    def name(cls) -> str:
        return "adaptive-blackbox"

    def _copy_decoder(self) -> torch.nn.Module:
        if self.decoder_attack.decoder is None:
            raise RuntimeError(
                "the decoder attack has no decoder yet: fit it before the adaptive attack"
            )
        self.decoder = trainable_copy(self.decoder_attack.decoder)
        self._opt = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)
        self.models = [self.decoder]
        return self.decoder

    def fit(
        self,
        public_images: torch.Tensor,
        *,
        progress: Optional[ProgressFn] = None,
        on_epoch: Optional[EpochCallback] = None,
        protected: Optional[torch.Tensor] = None,
        checkpoint_stem: Optional[PathLike] = None,
    ) -> "AdaptiveBlackBoxAttack":
        """Fine-tune for the remaining epochs.

        With ``val_fraction > 0`` the held-out rows (``val_indices``) are never
        trained on, training may stop early (``patience``), and the decoder
        ends as it was after ``best_epoch``; a resume restores that
        bookkeeping too.

        Args:
            public_images: the attacker's images ``(N, 3, S, S)``, float in
                [0, 1] or uint8, held-out rows included.
            progress: optional ``progress(done, total, desc)``, in epochs.
            on_epoch: optional ``on_epoch(epoch, self) -> dict`` merged into
                that epoch's ``history`` entry.
            protected: precomputed ``defense(public_images)`` to use instead
                of querying, a row per image, held-out ones included (ignored
                with ``requery``).
            checkpoint_stem: save after every epoch and resume from it.

        Returns:
            ``self``.

        Raises:
            ValueError: ``protected`` has the wrong number of rows, no image
                is left to train on, or the checkpoint has another split.
        """
        check_image_set(public_images)
        images = self._held_out_split(public_images)
        decoder = self.decoder if self.decoder is not None else self._copy_decoder()
        opt = self._opt
        assert opt is not None
        gen = make_generator(self.seed)

        def run_epoch(feats: Optional[torch.Tensor]) -> float:
            if self.requery:
                return train_decoder_epoch(
                    decoder,
                    opt,
                    images,
                    batch_size=self.batch_size,
                    gen=gen,
                    query=self.defense,
                    l1_weight=self.l1_weight,
                )
            return train_decoder_epoch(
                decoder,
                opt,
                images,
                batch_size=self.batch_size,
                gen=gen,
                features=feats,
                l1_weight=self.l1_weight,
            )

        self._fit_epochs(
            public_images,
            kind=_KIND,
            desc="adaptive black-box (fine-tuning Dec)",
            device=next(decoder.parameters()).device,
            gen=gen,
            modules={"decoder": decoder},
            optimizers={"decoder": opt},
            run_epoch=run_epoch,
            protected=protected,
            checkpoint_stem=checkpoint_stem,
            progress=progress,
            on_epoch=on_epoch,
            eval_on_epoch=(decoder,),
        )
        return self

    def reconstruct(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """``Dec(F)`` clamped to [0, 1], through the fine-tuned decoder."""
        decoder = self.decoder if self.decoder is not None else self._copy_decoder()
        with torch.no_grad():
            return decoder(features).clamp(0, 1).detach()


register_attack("adaptive-blackbox", AdaptiveBlackBoxAttack)
