"""Adaptive white-box attack A1: retrain the prior on the defence's outputs (CRAFTER.md section 2).

The attacker knows the defence and can run it as a black box. It queries the
defence with its own public images ``X`` to get protected features ``F*``,
inverts them to ``z*(F*)`` through its prior ``G``, and updates ``G`` so that
``G(z*(F*))`` comes closer to ``X`` (RMSProp), epoch after epoch. A
defence that merely pushes reconstructions somewhere predictable is undone:
the updated ``G`` learns to map that somewhere back to the face.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    - The release inverts every batch from a fresh random start with 600
      steps in every epoch. We warm-start each image's latent from its
      ``z*`` of the previous epoch (the first epoch starts from ``Amor(F*)``
      or ``N(0, I)`` with ``init_steps``), which tracks the slowly changing
      ``G`` with far fewer steps (``inner_steps``).
    - ``G`` is updated in eval mode, as in the release: batch-norm running
      statistics stay those of the prior; its affine and convolution weights
      change.
    - The release minimises the L2 norm of the (ImageNet-normalised) batch
      difference; we minimise the per-pixel MSE, which has the same minimiser,
      and RMSProp's steps hardly depend on the loss scale.
    - The release's RMSProp lr is 1e-3 (50 epochs over the whole public set).
      RMSProp's first steps are about ``10 * lr`` per weight (its running
      average starts at zero); on our CPU runs of 2-4 epochs over a few hundred
      images, 1e-3 wrecked the prior after one epoch (on Gaussian noise
      sigma 1: reconstruction loss 0.018 -> 0.19, Eval Acc 9.4% -> 0%,
      below the plain white-box attack). Our default is 1e-4; the ``paper``
      profile sets the release's 1e-3.
    - Protected features of the public images are queried once and reused
      every epoch, as in the release (``requery=True`` queries afresh each
      epoch, which helps against randomised defences).
    - The release trains a fixed number of epochs. ``val_fraction`` holds out
      a share of the public images instead: after each epoch their protected
      features are inverted by :meth:`AdaptiveWhiteBoxAttack.reconstruct`
      (``steps`` iterations from the same start as at attack time), the
      per-pixel MSE against the images picks the best epoch's ``G``, and
      ``patience`` stops training early (CRAFTER.md section 6: the adaptive
      attacker learns from >= 1,024 releases, and its model is chosen on
      releases it did not train on).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._io import PathLike
from facecraft._torchutils import as_float_images, frozen, make_generator
from facecraft.attacks._adaptive import AdaptiveAttack, EpochCallback
from facecraft.attacks._common import check_image_set, epoch_batches, trainable_copy
from facecraft.attacks.base import DefenseFn, ProgressFn
from facecraft.attacks.registry import register_attack
from facecraft.attacks.whitebox import WhiteBoxAttack, invert_latent

__all__ = ["AdaptiveWhiteBoxAttack", "EpochCallback"]

_KIND = "adaptive-whitebox"


class AdaptiveWhiteBoxAttack(AdaptiveAttack):
    r"""A1 white-box: update a copy of the prior ``G`` on ``(defense(X), X)`` public-image pairs.

    Args:
        encoder: the encoder the attacker inverts through (``Enc``).
        generator: the prior ``G``; a deep copy is trained, the original is
            left untouched.
        defense: the defence as a black box, images ``(N, 3, S, S)`` in [0, 1]
            -> released features.
        amortizer: optional ``Amor`` for the first inversion and for
            :meth:`reconstruct` (Default: None).
        critic: optional prior critic for the inversions' realism term (Default: None).
        epochs: passes over the public images (Default: 50).
        lr: RMSProp learning rate for ``G`` (Default: 1e-4; the release's is 1e-3, see the Note).
        batch_size: images per ``G`` update (Default: 128).
        inner_steps: inversion steps per batch per epoch, warm-started (Default: 100).
        init_steps: inversion steps the first time an image is inverted
            (Default: None, meaning 600 cold or ``inner_steps`` with an amortizer).
        steps: inversion steps of :meth:`reconstruct` (Default: 600).
        inv_lr: inversion step size (Default: 5e-3).
        momentum: inversion momentum (Default: 0.9).
        prior_weight: weight of ``-D(G(z))`` in the inversions (Default: 0.0).
        requery: query the defence afresh every epoch (Default: False).
        query_batch_size: images per defence query and per held-out
            reconstruction batch (Default: 128).
        val_fraction: share of the public images held out from training
            (at least one image, drawn with a generator derived from
            ``seed``); after each epoch their loss ``val_loss`` (per-pixel MSE
            of :meth:`reconstruct` of their protected features) is recorded,
            and :meth:`fit` ends with ``G`` of the epoch where it was lowest.
            0 trains on every image with no held-out loss (Default: 0.0).
        patience: with ``val_fraction > 0``, stop after this many epochs
            without a lower held-out loss; 0 runs every epoch (Default: 0).
        seed: seed for shuffling, start latents and the held-out split
            (Default: 0).

    Attributes:
        history: one dict per epoch: ``epoch``, ``loss`` (mean training loss),
            ``val_loss`` (with ``val_fraction > 0``) and what ``on_epoch`` returned.
        val_indices: held-out rows of the public images (sorted), or ``None``.
        train_indices: the rows trained on (sorted), or ``None`` (all).
        best_epoch: the epoch whose ``G`` :meth:`fit` kept, or ``None``.
        best_val_loss: its held-out loss, or ``None``.

    Shape:
        - features: ``(N, *F)``, the encoder's feature shape.
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (adaptive attacks).
    """

    def __init__(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        defense: DefenseFn,
        *,
        amortizer: Optional[nn.Module] = None,
        critic: Optional[nn.Module] = None,
        epochs: int = 50,
        lr: float = 1e-4,
        batch_size: int = 128,
        inner_steps: int = 100,
        init_steps: Optional[int] = None,
        steps: int = 600,
        inv_lr: float = 5e-3,
        momentum: float = 0.9,
        prior_weight: float = 0.0,
        requery: bool = False,
        query_batch_size: int = 128,
        val_fraction: float = 0.0,
        patience: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if epochs < 0 or lr <= 0 or batch_size < 1 or inner_steps < 0:
            raise ValueError(
                f"need epochs >= 0, lr > 0, batch_size >= 1, inner_steps >= 0; "
                f"got {epochs}, {lr}, {batch_size}, {inner_steps}"
            )
        self._set_early_stopping(val_fraction, patience)
        self.encoder = encoder
        self.original_generator = generator
        self.generator = trainable_copy(generator)
        self.defense = defense
        self.amortizer = amortizer
        self.critic = critic
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.inner_steps = inner_steps
        if init_steps is None:
            init_steps = inner_steps if amortizer is not None else 600
        self.init_steps = init_steps
        self.steps = steps
        self.inv_lr = inv_lr
        self.momentum = momentum
        self.prior_weight = prior_weight
        self.requery = requery
        self.query_batch_size = query_batch_size
        self.seed = seed
        self.epochs_done = 0
        self._opt = torch.optim.RMSprop(self.generator.parameters(), lr=lr)
        self._inverter = self._make_inverter()
        self.models = [m for m in (encoder, self.generator, amortizer, critic) if m is not None]

    @classmethod
    def name(cls) -> str:
        return "adaptive-whitebox"

    def _make_inverter(self) -> WhiteBoxAttack:
        """The white-box attack through the trained ``G`` (first latents, :meth:`reconstruct`)."""
        return WhiteBoxAttack(
            self.encoder,
            self.generator,
            amortizer=self.amortizer,
            critic=self.critic,
            steps=self.steps,
            lr=self.inv_lr,
            momentum=self.momentum,
            prior_weight=self.prior_weight,
            seed=self.seed,
        )

    def _invert(self, features: torch.Tensor, z0: torch.Tensor, steps: int) -> torch.Tensor:
        return invert_latent(
            self.encoder,
            self.generator,
            features,
            z0,
            steps=steps,
            lr=self.inv_lr,
            momentum=self.momentum,
            critic=self.critic,
            prior_weight=self.prior_weight,
        )

    def fit(
        self,
        public_images: torch.Tensor,
        *,
        progress: Optional[ProgressFn] = None,
        on_epoch: Optional[EpochCallback] = None,
        protected: Optional[torch.Tensor] = None,
        checkpoint_stem: Optional[PathLike] = None,
    ) -> "AdaptiveWhiteBoxAttack":
        """Run the remaining epochs of the ``G`` update.

        With ``val_fraction > 0`` the held-out rows (``val_indices``) are never
        trained on, training may stop early (``patience``), and ``G`` ends as
        it was after ``best_epoch``; a resume restores that bookkeeping too.

        Args:
            public_images: the attacker's images ``(N, 3, S, S)``, float in
                [0, 1] or uint8, held-out rows included.
            progress: optional ``progress(done, total, desc)``, in epochs.
            on_epoch: optional ``on_epoch(epoch, self) -> dict``, called after
                each epoch; the dict is merged into that epoch's ``history``
                entry (e.g. privacy of the current ``reconstruct``).
            protected: precomputed ``defense(public_images)`` ``(N, *F)`` to
                use instead of querying, a row per image, held-out ones
                included (ignored with ``requery``).
            checkpoint_stem: save after every epoch and resume from it.

        Returns:
            ``self``.

        Raises:
            ValueError: ``protected`` has the wrong number of rows, no image
                is left to train on, or the checkpoint has another split.
        """
        check_image_set(public_images)
        images = self._held_out_split(public_images)
        n = images.shape[0]
        p = next(self.generator.parameters())
        device = p.device
        gen = make_generator(self.seed)
        z_cache = torch.zeros(n, self._inverter.latent_dim, device=device, dtype=p.dtype)
        seen = torch.zeros(n, dtype=torch.bool)

        def restore(extra: Dict[str, torch.Tensor]) -> None:
            nonlocal z_cache, seen
            z_cache = extra["z"].to(device, p.dtype)
            seen = extra["seen"].to(torch.bool).cpu()

        def run_epoch(feats: Optional[torch.Tensor]) -> float:
            total = 0.0
            for idx in epoch_batches(n, self.batch_size, gen):
                x = as_float_images(images[idx], device, p.dtype)
                if self.requery:
                    with torch.no_grad():
                        f = self.defense(x).detach().to(device)
                else:
                    assert feats is not None
                    f = feats[idx.to(device)]
                z0 = self._warm_latents(f, idx, z_cache, seen, gen)
                z_cache[idx.to(device)] = z0
                loss = self._update_generator(z0, x)
                total += float(loss.detach()) * idx.numel()
            return total / n

        self._fit_epochs(
            public_images,
            kind=_KIND,
            desc="adaptive white-box (updating G)",
            device=device,
            gen=gen,
            modules={"generator": self.generator},
            optimizers={"generator": self._opt},
            run_epoch=run_epoch,
            protected=protected,
            checkpoint_stem=checkpoint_stem,
            progress=progress,
            on_epoch=on_epoch,
            restore=restore,
            state=lambda: {"z": z_cache, "seen": seen.to(torch.uint8)},
        )
        return self

    def _warm_latents(
        self,
        f: torch.Tensor,
        idx: torch.Tensor,
        z_cache: torch.Tensor,
        seen: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """Latents ``z*`` of a batch's features ``f`` under the current ``G``.

        Images never inverted before (``seen[idx]`` false, then set) start
        from :meth:`WhiteBoxAttack.initial_latents` and take ``init_steps``;
        the others start from their ``z_cache`` row and take ``inner_steps``.
        """
        device = z_cache.device
        new = ~seen[idx]
        z0 = z_cache[idx.to(device)]
        if bool(new.any()):
            z_new = self._inverter.initial_latents(f[new.to(device)], generator=gen)
            z_new = self._invert(f[new.to(device)], z_new, self.init_steps)
            z0[new.to(device)] = z_new
            seen[idx[new]] = True
        old = ~new
        if bool(old.any()):
            old_d = old.to(device)
            z0[old_d] = self._invert(f[old_d], z0[old_d], self.inner_steps)
        return z0

    def _update_generator(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One RMSProp step of ``G`` on ``MSE(G(z), x)``; returns the loss.

        ``G`` runs in eval mode, so its batch-norm statistics stay the prior's.
        """
        with frozen(self.encoder):
            self.generator.eval()
            params = [q for q in self.generator.parameters() if q.requires_grad]
            loss = nnf.mse_loss(self.generator(z), x)
            grads = torch.autograd.grad(loss, params)
            for q, g in zip(params, grads):
                q.grad = g
            self._opt.step()
            self._opt.zero_grad(set_to_none=True)
        return loss

    def reconstruct(
        self, features: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """Invert through the updated ``G`` (amortized or cold start, ``steps`` iterations)."""
        return self._inverter.reconstruct(features, progress=progress)


register_attack("adaptive-whitebox", AdaptiveWhiteBoxAttack)
