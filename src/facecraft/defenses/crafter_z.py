r"""Crafter-z: the cheaper latent-space variant of Crafter (CRAFTER.md section 3).

Instead of crafting ``F`` through the attacker's inner argmin, Crafter-z
optimises a latent ``z`` directly: starting from the attacker's inversion
``z*(Enc(X))``, it trains a critic ``D'`` between ``G(z)`` and the prior
``G(z_r)`` and minimises ``-D'(G(z)) + beta ||Enc(G(z)) - Enc(X)||^2 / d``
over ``z``, then releases ``F* = Enc(G(z))``. The release lies on the
generator's range, so the attacker's inversion of it recovers ``G(z)``, which
the critic has pushed towards the prior.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4, the latent-space variant; appendix: its CelebA results).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft._validation import check_number
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses._critic import CriticConfig, CriticDefense, latent_dim_of, prior_latents
from facecraft.defenses.registry import register_defense

__all__ = ["CrafterZ"]

ProgressFn = Callable[[int, int, str], None]


class CrafterZ(CriticDefense):
    r"""Crafter-z: push the latent of the face towards the prior, release its encoding.

    The critic's arguments (``critic_*``, ``gp_weight``, ``persistent_critic``) make up
    :attr:`critic_config`, a frozen :class:`~facecraft.defenses._critic.CriticConfig`.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (unused by the optimisation; kept for utility metrics).
        generator: the attacker's prior ``G`` (with a ``latent_dim`` attribute).
        amortizer: ``Amor: F -> z`` for the initial inversion (Default: None: ``N(0, I)`` start).
        beta: utility weight ``beta`` (Default: 1.0).
        steps: Adam steps on ``z`` (Default: 500, the authors' released setting).
        lr: Adam learning rate on ``z`` (Default: 5e-3, the authors' released setting).
        init_steps: iterations of the initial inversion ``z*(Enc(X))``; ``None``
            means 110 with an amortizer (the authors' code) and 600 without (Default: None).
        inner_lr: step size of that inversion (Default: 5e-3, the paper's).
        critic_steps: critic updates per step (Default: 10, the paper's).
        critic_width: the critic's base width (Default: 64, the paper's critic).
        gp_weight: gradient-penalty weight (Default: 20, the paper's Crafter value).
        critic_lr: critic Adam learning rate (Default: 5e-4, the authors' code).
        critic: an initial critic ``D'`` (e.g. the attacker's prior critic or one the
            defender pre-trained), copied for each batch and never modified; with
            ``critic_steps=0`` it stays fixed (Default: None: a fresh
            :class:`~facecraft.models.Critic` of width ``critic_width``).
        persistent_critic: one critic per batch (True) or a fresh one per step (Default: True).
        seed: seeds every random draw; each :meth:`protect` call restarts from it (Default: 0).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)``, the shape of ``Enc(X)``.

    Attributes:
        history: one dict per step: ``call``, ``step``, ``epsilon`` (critic EMD
            estimate ``E[D'(G(z_r))] - E[D'(G(z))]``), ``utility``
            (``||Enc(G(z)) - Enc(X)||^2 / d``, batch mean).
        last_epsilon: ``epsilon`` of the last step.

    References:
        arXiv 2401.07205, section 4; CRAFTER.md section 3.

    Note:
        * The authors' Crafter-z script uses ``beta = 100``, GP weight 15 and a
          critic per batch; ``beta`` here defaults to Crafter's 1.0 and the GP
          weight to Crafter's 20, so both variants share defaults.
        * Prior samples are redrawn at every critic step (the authors fix one
          set per batch).
    """

    crafts_features = True
    study_inputs = ("generator", "amortizer")
    relative_cost = 7

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module],
        generator: nn.Module,
        *,
        amortizer: Optional[nn.Module] = None,
        beta: float = 1.0,
        steps: int = 500,
        lr: float = 5e-3,
        init_steps: Optional[int] = None,
        inner_lr: float = 5e-3,
        critic_steps: int = 10,
        critic_width: int = 64,
        gp_weight: float = 20.0,
        critic_lr: float = 5e-4,
        critic: Optional[nn.Module] = None,
        persistent_critic: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        self._check_generator(generator)
        if steps < 0 or critic_steps < 0:
            raise ValueError(f"steps and critic_steps must be >= 0, got {steps}, {critic_steps}")
        check_number("beta", beta, low=0.0)
        for name, value in (("lr", lr), ("inner_lr", inner_lr)):
            check_number(name, value, low=0.0, low_open=True)
        self.critic_config = CriticConfig(
            critic_steps,
            width=critic_width,
            gp_weight=gp_weight,
            lr=critic_lr,
            persistent=persistent_critic,
        )
        self.generator = generator
        self.amortizer = amortizer
        self.beta = beta
        self.steps = steps
        self.lr = lr
        self.init_steps = init_steps
        self.inner_lr = inner_lr
        self.critic = critic
        self.seed = seed

    @classmethod
    def name(cls) -> str:
        return "crafter-z"

    def protect(
        self, images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """Released features ``Enc(G(z))`` ``(N, *F)`` for images ``(N, 3, S, S)`` in [0, 1]."""
        seed_gen, gp_gen, call = self._begin_call(images.device)
        enc, gen, amor = self.encoder, self.generator, self.amortizer
        zd = latent_dim_of(gen)
        with frozen(enc, gen, amor, self.head):
            with torch.no_grad():
                f0 = enc(images)
                if amor is not None:
                    z0 = amor(f0)
                    steps = 110 if self.init_steps is None else self.init_steps
                else:
                    z0 = prior_latents(f0.shape[0], zd, like=f0, seed_gen=seed_gen)
                    steps = 600 if self.init_steps is None else self.init_steps
            z = invert_latent(enc, gen, f0, z0, steps=steps, lr=self.inner_lr).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.lr)
            critic: Optional[nn.Module] = None
            critic_opt: Optional[torch.optim.Optimizer] = None
            for step in range(self.steps):
                critic, critic_opt = self._critic_round(
                    critic, critic_opt, z, images.shape[-1], seed_gen=seed_gen, gp_gen=gp_gen
                )
                d_prior = self._prior_score(critic, f0.shape[0], like=f0, seed_gen=seed_gen)
                with frozen(critic):
                    x = gen(z)
                    d_z = critic(x).mean()
                    l_u = (enc(x) - f0).flatten(1).pow(2).mean(dim=1).mean()
                    (g,) = torch.autograd.grad(-d_z + self.beta * l_u, z)
                z.grad = g
                opt.step()
                opt.zero_grad(set_to_none=True)
                self._record_step(
                    call, step, self.steps, d_prior, d_z, l_u, progress=progress, desc="crafter-z"
                )
            with torch.no_grad():
                return enc(gen(z.detach()))


register_defense("crafter-z", CrafterZ)
