r"""Adversarial learning: train the encoder against a reconstruction adversary (a baseline).

A copy of the encoder and head is trained on public images so that the task
stays solvable while a decoder adversary, trained alongside, fails to
reconstruct the face: ``min_{Enc, f} BCE(f(Enc(X)), y) - lambda * MSE(Dec(Enc(X)), X)``
alternating with ``min_Dec MSE(Dec(Enc(X)), X)``. The released feature is the
trained encoder's output. The Crafter paper shows such adversarial-game
defences look private against a fixed decoder but collapse under adaptive
attacks that retrain on the new encoder ("false security").

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 6, the adversarial-learning baseline); Li et al., "DeepObfuscator:
    Obfuscating Intermediate Representations with Privacy-Preserving
    Adversarial Learning on Smartphones", IoTDI 2021, https://arxiv.org/abs/1909.04126.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._torchutils import frozen
from facecraft.defenses._fitting import (
    check_public,
    decoder_step,
    new_decoder,
    set_grads,
    targets_for,
    train_epochs,
)
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.registry import register_defense
from facecraft.models import feature_shape

__all__ = ["AdversarialLearning"]

ProgressFn = Callable[[int, int, str], None]


class AdversarialLearning(FeatureDefense):
    r"""Encoder trained against a decoder adversary; releases ``Enc'(X)``.

    Args:
        encoder: the edge encoder ``Enc`` (copied by :meth:`fit`; the original is never changed).
        head: the cloud head ``f`` (copied and trained with the encoder).
        lam: privacy weight ``lambda`` (Default: 1.0).
        epochs: passes over the public data (Default: 10).
        lr: Adam learning rate for encoder, head and decoder (Default: 1e-3, Adam's default).
        batch_size: minibatch size (Default: 32, the authors' code).
        decoder_width: width of the adversary :class:`~facecraft.models.Decoder` (Default: 64).
        decoder_steps: decoder updates per encoder update (Default: 1).
        seed: seeds initialisation and data order (Default: 0).

    Attributes:
        encoder, head: after :meth:`fit`, the trained copies (what the attacker sees).
        decoder: the adversary after :meth:`fit` (``None`` before).
        history: one dict per epoch: ``epoch``, ``task`` (mean BCE), ``recon`` (mean decoder MSE).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)``.

    Note:
        * The authors' code alternates whole epochs (decoder on public data,
          then encoder on private training data) and weights the loss as
          ``(1 - lambda) BCE - lambda ||X - Dec||_2 / S^2``. We alternate per
          minibatch on public data only and use ``BCE - lambda * MSE``; the
          convex weighting equals ours with ``lambda / (1 - lambda)`` up to a
          scale that Adam ignores.
        * Without ``public_attributes`` the targets are the original network's
          pseudo-labels ``head(Enc(X)) > 0``.
    """

    keeps_encoder = False
    fits_on = "attributes"
    relative_cost = 3

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module] = None,
        *,
        lam: float = 1.0,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 32,
        decoder_width: int = 64,
        decoder_steps: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        if lam < 0 or epochs < 0 or batch_size < 1 or decoder_steps < 0:
            raise ValueError(
                f"need lam >= 0, epochs >= 0, batch_size >= 1, decoder_steps >= 0; "
                f"got {lam}, {epochs}, {batch_size}, {decoder_steps}"
            )
        self.lam = lam
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.decoder_width = decoder_width
        self.decoder_steps = decoder_steps
        self.seed = seed
        self.decoder: Optional[nn.Module] = None
        #: whether :meth:`fit` ran (or a saved fitted state was loaded); unfitted, it would release
        #: Enc(X)
        self.fitted = False

    @classmethod
    def name(cls) -> str:
        return "advlearn"

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "AdversarialLearning":
        """Train encoder + head copies against a decoder on public images.

        Args:
            public_images: ``(N, 3, S, S)`` in [0, 1].
            public_attributes: binary targets ``(N, K)`` (Default: pseudo-labels).
            progress: optional ``progress(epoch, epochs, desc)`` after each epoch.
            checkpoint_stem: if given, the state is saved there after every epoch
                and a matching checkpoint found there is resumed from.

        Returns:
            ``self``, with :attr:`encoder`/:attr:`head` replaced by the trained copies.
        """
        if self.head is None:
            raise ValueError("advlearn needs the cloud head (the task loss trains it)")
        check_public(public_images, public_attributes)
        dev = self.device
        targets = targets_for(
            public_images, public_attributes, self.encoder, self.head, self.batch_size
        )
        enc, head = copy.deepcopy(self.encoder), copy.deepcopy(self.head)
        for p in list(enc.parameters()) + list(head.parameters()):
            p.requires_grad_(True)
        fshape = feature_shape(enc, public_images.shape[-1])
        dec = new_decoder(
            fshape, public_images.shape[-1], self.decoder_width, seed=self.seed, device=dev
        )
        eh_params = list(enc.parameters()) + list(head.parameters())
        dec_params = list(dec.parameters())
        opt_eh = torch.optim.Adam(eh_params, lr=self.lr)
        opt_dec = torch.optim.Adam(dec_params, lr=self.lr)

        def step(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            for _ in range(self.decoder_steps):
                with torch.no_grad():
                    f = enc(x)
                decoder_step(dec, dec_params, opt_dec, f, x)
            f = enc(x)
            task = nnf.binary_cross_entropy_with_logits(head(f), y)
            with frozen(dec):
                rec = nnf.mse_loss(dec(f), x)
            set_grads(eh_params, torch.autograd.grad(task - self.lam * rec, eh_params))
            opt_eh.step()
            opt_eh.zero_grad(set_to_none=True)
            return task, rec

        train_epochs(
            self,
            public_images,
            targets,
            name="advlearn",
            modules={"encoder": enc, "head": head, "decoder": dec},
            optimizers={"encoder_head": opt_eh, "decoder": opt_dec},
            step=step,
            device=dev,
            checkpoint_stem=checkpoint_stem,
            progress=progress,
        )
        self.encoder, self.head, self.decoder = enc.eval(), head.eval(), dec.eval()
        self.fitted = True
        return self

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """A ``fitted`` marker, so a loaded protector knows its encoder is the trained copy."""
        return {"fitted": torch.ones(1)} if self.fitted else {}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Inverse of :meth:`extra_state`; raises ``ValueError`` on unexpected keys."""
        bad = [k for k in tensors if k != "fitted"]
        if bad:
            raise ValueError(f"advlearn: unexpected extra-state keys {bad[:5]}")
        self.fitted = "fitted" in tensors

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise ValueError(
                "advlearn is not fitted: call fit(public_images, ...) before protecting "
                "(unfitted, it would release the raw features Enc(X))"
            )
        with frozen(self.encoder), torch.no_grad():
            return self.encoder(images)


register_defense("advlearn", AdversarialLearning)
