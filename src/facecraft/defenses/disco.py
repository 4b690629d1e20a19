r"""DISCO: dynamic, input-dependent channel obfuscation (a baseline).

A pruning network ``P`` scores the channels of each sample's feature ``F =
Enc(X)`` and the lowest-scoring ``ratio`` of them are zeroed before release.
``P`` is trained so the cloud task survives the pruning while a decoder
adversary, trained alongside, fails to reconstruct the face:
``min_P (1 - lambda) BCE(f(P(F)), y) - lambda * MSE(Dec(P(F)), X)``; the
encoder and head are trained on the task loss alone.

References:
    Singh, Chopra, Garza, Zhang, Vepakomma, Sharma, Raskar, "DISCO: Dynamic and
    Invariant Sensitive Channel Obfuscation for deep neural networks", CVPR 2021,
    https://arxiv.org/abs/2012.11025. Wang et al., "Crafter", NDSS 2024,
    https://arxiv.org/abs/2401.07205 (section 6, the DISCO baseline).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as nnf
from torch import nn

from facecraft._torchutils import frozen
from facecraft.defenses._critic import seeded_init
from facecraft.defenses._fitting import (
    StepFn,
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

__all__ = ["DISCO", "ChannelPruner"]

ProgressFn = Callable[[int, int, str], None]


class ChannelPruner(nn.Module):
    """The pruning network: features ``(N, C, h, w)`` -> a channel mask ``(N, C)``.

    Scores come from two 3x3 convolutions (BN + ReLU, the second with stride
    2), global average pooling and a linear layer. The ``k = int(C * ratio)``
    lowest-scoring channels of each sample are pruned. In training mode the
    mask is straight-through: its value is the hard 0/1 mask, its gradient
    that of ``sigmoid((s - t) / temperature)`` with ``t`` halfway between the
    k-th and (k+1)-th smallest scores (the released DISCO code's soft mask).

    Args:
        channels: ``C``.
        ratio: fraction of channels pruned per input, in [0, 1).
        temperature: soft-mask temperature.
        width: hidden channels.
    """

    def __init__(self, channels: int, ratio: float, temperature: float, width: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.temperature = temperature
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, channels),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        scores = self.net(f)
        c = scores.shape[1]
        k = int(c * self.ratio)
        if k == 0:
            return torch.ones_like(scores)
        srt, idx = scores.sort(dim=1)
        hard = torch.ones_like(scores).scatter(1, idx[:, :k], 0.0)
        if not self.training:
            return hard
        thr = 0.5 * (srt[:, k - 1 : k] + srt[:, k : k + 1])
        soft = torch.sigmoid((scores - thr) / self.temperature)
        return hard + soft - soft.detach()


class DISCO(FeatureDefense):
    r"""DISCO: release ``Enc'(X)`` with a learned, input-dependent ``ratio`` of channels zeroed.

    Args:
        encoder: the edge encoder ``Enc`` (copied by :meth:`fit`).
        head: the cloud head ``f`` (copied and trained on pruned features).
        image_size: side ``S`` of the input images (fixes the pruner's channel count) (Default: 64).
        ratio: fraction of channels pruned per input (Default: 0.5).
        lam: privacy weight ``lambda`` in [0, 1] (Default: 0.4, the Crafter authors' DISCO run).
        temperature: soft-mask temperature (Default: 1/30, the released DISCO code).
        epochs: passes over the public data (Default: 10).
        lr: Adam learning rate (Default: 3e-4, the released code).
        batch_size: minibatch size (Default: 64, the released code).
        pruner_width: hidden width of the pruner (Default: 64).
        decoder_width: width of the adversary :class:`~facecraft.models.Decoder` (Default: 64).
        train_encoder: also train the encoder copy on the task loss, as DISCO does (Default: True).
        seed: seeds initialisation and data order (Default: 0).

    Attributes:
        pruner: the :class:`ChannelPruner`.
        decoder: the adversary after :meth:`fit`.
        history: one dict per epoch: ``epoch``, ``task``, ``recon``.

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)`` with ``int(C * ratio)``
          channels zero per sample.

    Note:
        Simplified from DISCO: the pruner is a small conv net rather than the
        released code's ResNet-18 tail; the mask is hard (exactly ``ratio`` of
        the channels pruned) at release and straight-through while training;
        the adversary loss is the decoder's MSE rather than the L2 distance;
        the adversary is the project's :class:`~facecraft.models.Decoder`. The
        Crafter authors' DISCO run prunes 99% of the channels; we default to
        50% since DISCO's paper sweeps the ratio.
    """

    keeps_encoder = False
    study_inputs = ("image_size",)
    fits_on = "attributes"
    relative_cost = 5

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module] = None,
        *,
        image_size: int = 64,
        ratio: float = 0.5,
        lam: float = 0.4,
        temperature: float = 1.0 / 30.0,
        epochs: int = 10,
        lr: float = 3e-4,
        batch_size: int = 64,
        pruner_width: int = 64,
        decoder_width: int = 64,
        train_encoder: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        if not 0 <= lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if temperature <= 0 or epochs < 0 or batch_size < 1:
            raise ValueError(
                "need temperature > 0, epochs >= 0, batch_size >= 1; "
                f"got {temperature}, {epochs}, {batch_size}"
            )
        self.image_size = image_size
        self.ratio = ratio
        self.lam = lam
        self.temperature = temperature
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.pruner_width = pruner_width
        self.decoder_width = decoder_width
        self.train_encoder = train_encoder
        self.seed = seed
        self.feature_shape = feature_shape(encoder, image_size)
        gen = torch.Generator()
        gen.manual_seed(seed)
        p = next(encoder.parameters())
        self.pruner = (
            seeded_init(
                lambda: ChannelPruner(self.feature_shape[0], ratio, temperature, pruner_width), gen
            )
            .to(device=p.device, dtype=p.dtype)
            .eval()
        )
        self.decoder: Optional[nn.Module] = None

    @classmethod
    def name(cls) -> str:
        return "disco"

    def extra_state(self) -> Dict[str, torch.Tensor]:
        return {f"pruner.{k}": v for k, v in self.pruner.state_dict().items()}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        bad = [k for k in tensors if not k.startswith("pruner.")]
        if bad:
            raise ValueError(f"DISCO: unexpected extra-state keys {bad[:5]}")
        self.pruner.load_state_dict({k[len("pruner.") :]: v for k, v in tensors.items()})

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "DISCO":
        """Train the pruner (and encoder/head copies) against a decoder on public images.

        Args:
            public_images: ``(N, 3, S, S)`` in [0, 1] with ``S == image_size``.
            public_attributes: binary targets ``(N, K)``
                (Default: pseudo-labels ``head(Enc(X)) > 0``).
            progress: optional ``progress(epoch, epochs, desc)`` after each epoch.
            checkpoint_stem: if given, state is saved there after every epoch and resumed from.

        Returns:
            ``self``.
        """
        if self.head is None:
            raise ValueError("disco needs the cloud head (the task loss trains it)")
        check_public(public_images, public_attributes)
        if public_images.shape[-1] != self.image_size:
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} public images, "
                f"got {public_images.shape[-2]}x{public_images.shape[-1]}"
            )
        dev = self.device
        targets = targets_for(
            public_images, public_attributes, self.encoder, self.head, self.batch_size
        )
        enc, head, pruner = copy.deepcopy(self.encoder), copy.deepcopy(self.head), self.pruner
        for p in list(enc.parameters()) + list(head.parameters()) + list(pruner.parameters()):
            p.requires_grad_(True)
        dec = new_decoder(
            self.feature_shape,
            self.image_size,
            self.decoder_width,
            seed=self.seed + 1,
            device=dev,
        )
        eh_params = (list(enc.parameters()) if self.train_encoder else []) + list(head.parameters())
        opt_eh = torch.optim.Adam(eh_params, lr=self.lr)
        opt_pr = torch.optim.Adam(pruner.parameters(), lr=self.lr)
        opt_dec = torch.optim.Adam(dec.parameters(), lr=self.lr)
        step = self._pruning_step(enc, head, dec, eh_params, (opt_eh, opt_pr, opt_dec))
        train_epochs(
            self,
            public_images,
            targets,
            name="disco",
            modules={"encoder": enc, "head": head, "pruner": pruner, "decoder": dec},
            optimizers={"encoder_head": opt_eh, "pruner": opt_pr, "decoder": opt_dec},
            step=step,
            device=dev,
            eval_modules=() if self.train_encoder else ("encoder",),
            checkpoint_stem=checkpoint_stem,
            progress=progress,
        )
        self.encoder, self.head, self.decoder = enc.eval(), head.eval(), dec.eval()
        pruner.eval()
        return self

    def _pruning_step(
        self,
        enc: nn.Module,
        head: nn.Module,
        dec: nn.Module,
        eh_params: List[torch.Tensor],
        opts: Tuple[torch.optim.Optimizer, torch.optim.Optimizer, torch.optim.Optimizer],
    ) -> StepFn:
        """DISCO's minibatch update ``step(x, y) -> (task, adv)`` for :func:`train_epochs`.

        One adversary step on the pruned features, then the pruner's step on
        ``(1 - lam) * task - lam * adv`` and the encoder/head's (``eh_params``)
        on the task loss; ``opts`` are the encoder/head's, the pruner's and the
        decoder's optimisers.
        """
        pruner, (opt_eh, opt_pr, opt_dec) = self.pruner, opts
        pr_params, dec_params = list(pruner.parameters()), list(dec.parameters())

        def step(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            with torch.set_grad_enabled(self.train_encoder):
                f = enc(x)
            fp = f * pruner(f)[:, :, None, None]
            # the adversary's step
            decoder_step(dec, dec_params, opt_dec, fp.detach(), x)
            # the defender's steps: pruner on (1 - lam) task - lam adv, encoder/head on task
            task = nnf.binary_cross_entropy_with_logits(head(fp), y)
            with frozen(dec):
                adv = nnf.mse_loss(dec(fp), x)
            g_pr = torch.autograd.grad(
                (1 - self.lam) * task - self.lam * adv, pr_params, retain_graph=True
            )
            set_grads(eh_params, torch.autograd.grad(task, eh_params))
            set_grads(pr_params, g_pr)
            opt_pr.step()
            opt_eh.step()
            opt_pr.zero_grad(set_to_none=True)
            opt_eh.zero_grad(set_to_none=True)
            return task, adv

        return step

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        with frozen(self.encoder, self.pruner), torch.no_grad():
            f = self.encoder(images)
            return f * self.pruner(f)[:, :, None, None]


register_defense("disco", DISCO)
