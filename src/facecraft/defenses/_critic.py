"""The defender's WGAN-GP critic ``D'`` shared by Crafter and Crafter-z (CRAFTER.md section 3).

``D'`` estimates the Earth Mover's distance between the attacker's
reconstructions and its prior in Kantorovich-Rubinstein dual form,
``EMD ~ E[D'(G(z_r))] - E[D'(G(z*))]``, and is trained to maximise that
estimate minus a gradient penalty (Gulrajani et al., NeurIPS 2017, eq. 3).
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import nn

from facecraft.models import Critic, gradient_penalty

__all__ = ["new_critic", "prior_latents", "seeded_init", "train_critic"]


def seeded_init(build, seed_gen: torch.Generator) -> nn.Module:
    """Run ``build()`` (which initialises a module) under a CPU RNG seeded from ``seed_gen``.

    The global RNG state is restored afterwards, so callers' randomness is untouched.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=seed_gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def new_critic(
    image_size: int,
    width: int,
    lr: float,
    *,
    like: torch.Tensor,
    seed_gen: torch.Generator,
    init: Optional[nn.Module] = None,
) -> Tuple[nn.Module, Optional[torch.optim.Optimizer]]:
    """A critic on ``like``'s device/dtype and its Adam optimiser.

    A copy of ``init`` (trainable) when given, otherwise a freshly
    initialised :class:`~facecraft.models.Critic` (``image_size``, ``width``).
    The optimiser is ``None`` for a critic without parameters (a fixed function).
    """
    if init is not None:
        critic = copy.deepcopy(init).to(device=like.device, dtype=like.dtype)
        for p in critic.parameters():
            p.requires_grad_(True)
    else:
        critic = seeded_init(lambda: Critic(image_size, width=width), seed_gen)
        critic = critic.to(device=like.device, dtype=like.dtype)
    params = list(critic.parameters())
    return critic, (torch.optim.Adam(params, lr=lr) if params else None)


def prior_latents(
    n: int, latent_dim: int, *, like: torch.Tensor, seed_gen: torch.Generator
) -> torch.Tensor:
    """``z_r ~ N(0, I)`` of shape ``(n, latent_dim)``, drawn on the CPU (so device-independent)."""
    return torch.randn(n, latent_dim, generator=seed_gen, dtype=like.dtype).to(like.device)


def train_critic(
    critic: nn.Module,
    opt: Optional[torch.optim.Optimizer],
    generator: nn.Module,
    fake: torch.Tensor,
    *,
    steps: int,
    gp_weight: float,
    seed_gen: torch.Generator,
    gp_gen: torch.Generator,
) -> None:
    """``steps`` Adam steps on ``E[D'(fake)] - E[D'(G(z_r))] + gp_weight * GP``.

    ``fake`` are the reconstructions ``G(z*)`` (detached); fresh prior samples
    ``G(z_r)`` are drawn at every step. Only the critic's parameters get
    gradients (via ``torch.autograd.grad``); ``generator`` is used without grad.
    Nothing happens when ``steps == 0`` or ``opt`` is ``None`` (a fixed critic).
    """
    if steps == 0 or opt is None:
        return
    fake = fake.detach()
    params = [p for p in critic.parameters() if p.requires_grad]
    critic.train()
    for _ in range(steps):
        with torch.no_grad():
            real = generator(
                prior_latents(fake.shape[0], latent_dim_of(generator), like=fake, seed_gen=seed_gen)
            )
        loss = (
            critic(fake).mean()
            - critic(real).mean()
            + gp_weight * gradient_penalty(critic, real, fake, gp_gen)
        )
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
    critic.eval()


def latent_dim_of(generator: nn.Module) -> int:
    zd = getattr(generator, "latent_dim", None)
    if zd is None:
        raise ValueError(
            f"{type(generator).__name__} has no latent_dim attribute; the defences need it"
        )
    return int(zd)
