r"""The defender's critic pre-trained once on public faces (beyond the paper; issue 5).

The paper starts every batch from a fresh critic ``D'`` and trains it
``critic_steps`` times per outer step. Crafter's fast configuration
(``crafter-fast``) instead trains one critic once, on public faces, to tell
the white-box attacker's reconstructions from its prior
(:func:`fit_defender_critic`), and starts every batch from a copy of it:
:meth:`facecraft.defenses.Crafter.fit` gets it from :func:`pretrained_critic`,
which also stores it (safetensors + JSON) so that every setting sharing the
pre-training settings (:class:`CriticPretraining`) reuses it.

References:
    Wang et al., "Crafter", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the per-batch critic this replaces at the start of a batch);
    Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017
    (WGAN-GP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from facecraft._io import checkpoint_exists, load_checkpoint, save_checkpoint
from facecraft._torchutils import frozen, make_generator
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses._critic import (
    CriticConfig,
    latent_dim_of,
    new_critic,
    prior_latents,
    train_critic,
)
from facecraft.models import Critic

__all__ = ["CriticPretraining", "fit_defender_critic", "pretrain_config", "pretrained_critic"]

_KIND = "defender-critic"


@dataclass(frozen=True)
class CriticPretraining:
    """Whether and on how many public faces :meth:`Crafter.fit` pre-trains the starting critic.

    Built from Crafter's ``critic_pretrain_steps`` and ``critic_pretrain_faces``
    (named in the messages) and validated on construction.

    Attributes:
        steps: critic updates, >= 0; 0 turns pre-training off (Default: 0).
        faces: public faces it uses, >= 0 (Default: 256).
    """

    steps: int = 0
    faces: int = 256

    def __post_init__(self) -> None:
        for name, value in (
            ("critic_pretrain_steps", self.steps),
            ("critic_pretrain_faces", self.faces),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


def fit_defender_critic(
    encoder: nn.Module,
    generator: nn.Module,
    amortizer: Optional[nn.Module],
    images: torch.Tensor,
    *,
    steps: int = 200,
    inner_steps: int = 40,
    width: int = 64,
    lr: float = 5e-4,
    gp_weight: float = 20.0,
    batch_size: int = 32,
    seed: int = 0,
) -> nn.Module:
    r"""A critic ``D'`` trained once, on public faces, to tell the attacker's reconstructions from
    its prior.

    Beyond the paper, which starts every batch from a fresh critic and trains it
    ``critic_steps`` times per outer step. The critic's job at the start of a
    batch is the same for every batch: tell ``G(z*(Enc(X)))`` (the white-box
    attacker's reconstructions of undefended faces: ``Amor(F)`` + ``inner_steps``
    iterations of :func:`~facecraft.attacks.whitebox.invert_latent`) from
    ``G(z_r)``, ``z_r ~ N(0, I)``. Trained once here on public ``images`` (WGAN-GP,
    :func:`train_critic`, one random ``batch_size`` of reconstructions per update)
    and passed as Crafter's ``critic``, it is copied for each batch and fine-tuned
    by a few ``critic_steps``: from the first outer step on, the hypergradient
    follows a critic that already sees the reconstructions' difference from the prior.

    Args:
        encoder, generator, amortizer: ``Enc``, the attacker's prior ``G`` and its
            amortizer (None: a random ``N(0, I)`` start).
        images: public faces ``(M, 3, S, S)`` in [0, 1] (never the private ones).
        steps: critic updates (Default: 200).
        inner_steps: inversion iterations per reconstruction (Default: 40).
        width, lr, gp_weight: the critic's base width, Adam rate and gradient-penalty
            weight (Defaults: 64, 5e-4, 20, as Crafter's).
        batch_size: reconstructions (and prior samples) per update, and faces per
            inversion batch (Default: 32).
        seed: seeds the initialisation, the draws and the prior samples (Default: 0).

    Returns:
        The trained critic, in eval mode with ``requires_grad`` off.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"images: expected (M >= 2, 3, S, S), got {tuple(images.shape)}")
    seed_gen = make_generator(seed, "cpu")
    gp_gen = make_generator(seed, images.device)
    zd = latent_dim_of(generator)
    with frozen(encoder, generator, amortizer):
        fakes = []
        for i in range(0, images.shape[0], batch_size):
            with torch.no_grad():
                feats = encoder(images[i : i + batch_size])
                z0 = (
                    amortizer(feats)
                    if amortizer is not None
                    else prior_latents(feats.shape[0], zd, like=feats, seed_gen=seed_gen)
                )
            z = invert_latent(encoder, generator, feats, z0, steps=inner_steps)
            with torch.no_grad():
                fakes.append(generator(z))
        fake = torch.cat(fakes)
        critic, opt = new_critic(images.shape[-1], width, lr, like=fake, seed_gen=seed_gen)
        take = min(batch_size, fake.shape[0])
        for _ in range(steps):
            pick = torch.randperm(fake.shape[0], generator=seed_gen)[:take].to(fake.device)
            train_critic(
                critic,
                opt,
                generator,
                fake[pick],
                steps=1,
                gp_weight=gp_weight,
                seed_gen=seed_gen,
                gp_gen=gp_gen,
            )
    critic.eval()
    for p in critic.parameters():
        p.requires_grad_(False)
    return critic


def pretrain_config(
    pretraining: CriticPretraining, critic: CriticConfig, seed: int
) -> Dict[str, Any]:
    """The settings a pre-trained critic depends on, by Crafter's argument names (its fit key)."""
    return {
        "critic_pretrain_steps": pretraining.steps,
        "critic_pretrain_faces": pretraining.faces,
        "critic_width": critic.width,
        "critic_lr": critic.lr,
        "gp_weight": critic.gp_weight,
        "seed": seed,
    }


def pretrained_critic(
    encoder: nn.Module,
    generator: nn.Module,
    amortizer: Optional[nn.Module],
    public_images: torch.Tensor,
    *,
    pretraining: CriticPretraining,
    critic: CriticConfig,
    seed: int,
    checkpoint_stem: Optional[Union[str, Path]] = None,
) -> Tuple[nn.Module, bool]:
    """The starting critic: loaded from ``checkpoint_stem``, or pre-trained and saved there.

    Trains with :func:`fit_defender_critic` on the first ``pretraining.faces``
    of ``public_images`` (float in [0, 1] or uint8) for ``pretraining.steps``
    updates, with ``critic``'s width, learning rate and gradient-penalty weight,
    on the encoder's device; its JSON records :func:`pretrain_config`.

    Args:
        encoder, generator, amortizer: ``Enc``, the attacker's prior ``G`` and its
            amortizer (None: a random start).
        public_images: public faces ``(M >= 2, 3, S, S)``.
        pretraining: how many updates and faces.
        critic: the critic's settings.
        seed: seeds the initialisation and every draw.
        checkpoint_stem: where the critic is stored (Default: None: not stored).

    Returns:
        ``(critic, trained)``: the critic in eval mode with ``requires_grad``
        off, and whether it was trained now (False: loaded).
    """
    if public_images.dim() != 4 or public_images.shape[0] < 2:
        raise ValueError(
            f"expected public images (N >= 2, 3, S, S), got {tuple(public_images.shape)}"
        )
    dev = next(encoder.parameters()).device
    size = int(public_images.shape[-1])
    stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
    if stem is not None and checkpoint_exists(stem):
        tensors, _ = load_checkpoint(stem, kind=_KIND)
        net = Critic(size, width=critic.width).to(dev)
        net.load_state_dict(tensors)
        trained = False
    else:
        x = public_images[: pretraining.faces].to(dev)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x
        net = fit_defender_critic(
            encoder,
            generator,
            amortizer,
            x,
            steps=pretraining.steps,
            width=critic.width,
            lr=critic.lr,
            gp_weight=critic.gp_weight,
            seed=seed,
        )
        trained = True
        if stem is not None:
            save_checkpoint(
                stem,
                {k: v.detach().cpu() for k, v in net.state_dict().items()},
                kind=_KIND,
                meta={"config": pretrain_config(pretraining, critic, seed), "image_size": size},
            )
    for q in net.parameters():
        q.requires_grad_(False)
    return net.eval(), trained
