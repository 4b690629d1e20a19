"""The defender's WGAN-GP critic ``D'`` shared by Crafter and Crafter-z (CRAFTER.md section 3).

``D'`` estimates the Earth Mover's distance between the attacker's
reconstructions and its prior in Kantorovich-Rubinstein dual form,
``EMD ~ E[D'(G(z_r))] - E[D'(G(z*))]``, and is trained to maximise that
estimate minus a gradient penalty (Gulrajani et al., NeurIPS 2017, eq. 3).

:class:`CriticConfig` holds the critic's settings and :class:`CriticDefense`
is the base both variants (and the amortized Crafter) share: the networks
they hold, the per-call seeding, one critic round of an optimisation step,
the prior term of the EMD estimate and the per-step record. Pre-training the
critic once on public faces is :mod:`facecraft.defenses.critic_pretraining`.

Note:
    Prior samples ``z_r`` are redrawn for every critic step and for the EMD
    estimate; the Crafter authors' code fixes one set per batch and sub-samples
    32 of them per critic step. Their code also doubles the GP weight when the
    penalty exceeds 1; we keep it fixed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn

from facecraft._torchutils import frozen, make_generator
from facecraft._validation import MAX_WIDTH, check_number
from facecraft.defenses.base import ConfigField, FeatureDefense
from facecraft.defenses.hypergrad import IHVPSolver, implicit_feature_grad
from facecraft.models import Critic, gradient_penalty

__all__ = [
    "CriticConfig",
    "CriticDefense",
    "PrivacyRound",
    "latent_dim_of",
    "new_critic",
    "prior_latents",
    "seeded_init",
    "train_critic",
]

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CriticConfig:
    """The defender's critic ``D'`` and its training schedule, validated on construction.

    Crafter, Crafter-z and the amortized Crafter build it from their flat
    ``critic_*`` arguments (named in the messages).

    Attributes:
        steps: WGAN-GP updates per step, >= 0 (``critic_steps``; Default: 10, the paper's).
        init_steps: updates of a newly initialised critic in its first round, >= 0, so a
            cheap per-step ``steps`` starts from a critic that already tells ``G(z*)``
            from the prior (``critic_init_steps``; Default: None: ``steps``).
        width: base width of a fresh :class:`~facecraft.models.Critic`
            (``critic_width``; Default: 64, the paper's critic).
        gp_weight: gradient-penalty weight, >= 0 (Default: 20, the paper's).
        lr: Adam learning rate, > 0 (``critic_lr``; Default: 5e-4, the authors' code).
        persistent: keep one critic (and its optimiser) for a whole batch; else a
            fresh one every step (``persistent_critic``; Default: True, as CRAFTER.md
            and the authors' code: one critic per batch, updated ``steps`` times at
            every outer step; re-initialising it every step gives a far weaker EMD
            estimate from only ``steps`` updates).
    """

    steps: int = 10
    init_steps: Optional[int] = None
    width: int = 64
    gp_weight: float = 20.0
    lr: float = 5e-4
    persistent: bool = True

    def __post_init__(self) -> None:
        for name, value in (
            ("critic_steps", self.steps),
            ("critic_init_steps", self.init_steps or 0),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        check_number("critic_lr", self.lr, low=0.0, low_open=True)
        check_number("gp_weight", self.gp_weight, low=0.0)
        check_number("critic_width", self.width, low=1, high=MAX_WIDTH, integer=True)


class PrivacyRound(NamedTuple):
    """What :meth:`CriticDefense._privacy_round` returns."""

    #: the critic after the round, and its optimiser
    critic: nn.Module
    critic_opt: Optional[torch.optim.Optimizer]
    #: ``E[D'(G(z_r))]`` and ``E[D'(G(z*))]``
    d_prior: torch.Tensor
    d_star: torch.Tensor
    #: ``G(z*)``, detached
    reconstruction: torch.Tensor
    #: the hypergradient ``dL_p/dF``
    grad_p: torch.Tensor


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


class CriticDefense(FeatureDefense):
    """Base of Crafter and Crafter-z: steer ``G``'s latents towards the prior as ``D'`` judges it.

    Declares the extra networks and provides the steps of :meth:`protect`
    that are the same in both: seeding a call (:meth:`_begin_call`), one
    critic round (:meth:`_critic_round`), the prior term of the EMD estimate
    (:meth:`_prior_score`) and the per-step record (:meth:`_record_step`).
    Subclasses store the networks annotated below, build :attr:`critic_config`
    from their ``critic_*`` arguments (read back under those names) and
    implement :meth:`protect` and :meth:`name`.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f``.

    Attributes:
        last_epsilon: ``epsilon`` of the last step (``None`` before any call).
    """

    generator: nn.Module
    amortizer: Optional[nn.Module]
    critic: Optional[nn.Module]
    seed: int
    #: the critic's settings; the flat constructor arguments below read from it
    critic_config: CriticConfig
    critic_steps = ConfigField("critic_config", "steps")
    critic_init_steps = ConfigField("critic_config", "init_steps")
    critic_width = ConfigField("critic_config", "width")
    gp_weight = ConfigField("critic_config", "gp_weight")
    critic_lr = ConfigField("critic_config", "lr")
    persistent_critic = ConfigField("critic_config", "persistent")

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module]) -> None:
        super().__init__(encoder, head)
        self.last_epsilon: Optional[float] = None
        self._calls = 0

    def networks(self) -> Dict[str, nn.Module]:
        nets = super().networks()
        nets["generator"] = self.generator
        if self.amortizer is not None:
            nets["amortizer"] = self.amortizer
        if self.critic is not None:
            nets["critic"] = self.critic
        return nets

    @staticmethod
    def _check_generator(generator: nn.Module) -> None:
        """Raise ``ValueError`` unless ``generator`` has the ``latent_dim`` the defence draws."""
        if getattr(generator, "latent_dim", None) is None:
            raise ValueError(
                f"the generator ({type(generator).__name__}) needs a latent_dim attribute"
            )

    def _begin_call(self, device: torch.device) -> Tuple[torch.Generator, torch.Generator, int]:
        """``(seed_gen, gp_gen, call)`` for a :meth:`protect` call on ``device``.

        ``seed_gen`` (CPU) draws critic initialisations and prior samples,
        ``gp_gen`` (on ``device``) the gradient-penalty interpolation; both
        restart from ``seed``. ``call`` is the call's index in ``history``.
        """
        seed_gen = make_generator(self.seed, "cpu")
        gp_gen = make_generator(self.seed, device)
        call = self._calls
        self._calls += 1
        return seed_gen, gp_gen, call

    def _critic_round(
        self,
        critic: Optional[nn.Module],
        critic_opt: Optional[torch.optim.Optimizer],
        z: torch.Tensor,
        image_size: int,
        *,
        seed_gen: torch.Generator,
        gp_gen: torch.Generator,
    ) -> Tuple[nn.Module, Optional[torch.optim.Optimizer]]:
        """Train ``D'`` for ``critic_steps`` between ``G(z_r)`` and ``G(z)``.

        A new critic (:func:`new_critic`) replaces ``critic`` when there is none
        yet or ``persistent_critic`` is off; it is then trained by
        :func:`train_critic`, for ``critic_init_steps`` updates when that is set
        (a critic that starts a batch well trained), else ``critic_steps``.

        Returns:
            The (possibly new) critic and its optimiser.
        """
        cfg = self.critic_config
        with torch.no_grad():
            fake = self.generator(z)
        steps = cfg.steps
        if critic is None or not cfg.persistent:
            if cfg.init_steps is not None:
                steps = cfg.init_steps
            critic, critic_opt = new_critic(
                image_size, cfg.width, cfg.lr, like=fake, seed_gen=seed_gen, init=self.critic
            )
        train_critic(
            critic,
            critic_opt,
            self.generator,
            fake,
            steps=steps,
            gp_weight=cfg.gp_weight,
            seed_gen=seed_gen,
            gp_gen=gp_gen,
        )
        return critic, critic_opt

    def _prior_score(
        self, critic: nn.Module, n: int, *, like: torch.Tensor, seed_gen: torch.Generator
    ) -> torch.Tensor:
        """``E[D'(G(z_r))]`` over ``n`` fresh prior samples, without gradients (critic frozen)."""
        gen = self.generator
        with frozen(critic), torch.no_grad():
            return critic(
                gen(prior_latents(n, latent_dim_of(gen), like=like, seed_gen=seed_gen))
            ).mean()

    def _privacy_round(
        self,
        critic: Optional[nn.Module],
        critic_opt: Optional[torch.optim.Optimizer],
        features: torch.Tensor,
        z_star: torch.Tensor,
        image_size: int,
        *,
        seed_gen: torch.Generator,
        gp_gen: torch.Generator,
        solver: IHVPSolver,
    ) -> PrivacyRound:
        """The privacy side of one step of the feature-space Crafter objective (CRAFTER.md s. 3).

        At the attacker's best response ``z* = z*(F)``: one critic round
        (:meth:`_critic_round`), the prior term ``E[D'(G(z_r))]``
        (:meth:`_prior_score`), ``E[D'(G(z*))]`` with its gradient in ``z*``,
        and the implicit hypergradient ``dL_p/dF`` of ``L_p = -E[D'(G(z*(F)))]``
        (:func:`~facecraft.defenses.hypergrad.implicit_feature_grad` with
        ``solver``). Shared by Crafter (per batch) and the amortized Crafter
        (per training step), in this order of random draws.
        """
        critic, critic_opt = self._critic_round(
            critic, critic_opt, z_star, image_size, seed_gen=seed_gen, gp_gen=gp_gen
        )
        d_prior = self._prior_score(critic, features.shape[0], like=features, seed_gen=seed_gen)
        with frozen(critic):
            zs = z_star.clone().requires_grad_(True)
            x = self.generator(zs)
            d_star = critic(x).mean()
            (grad_z,) = torch.autograd.grad(-d_star, zs)
        grad_p = implicit_feature_grad(
            self.encoder, self.generator, features, z_star, grad_z, solver=solver
        )
        return PrivacyRound(critic, critic_opt, d_prior, d_star, x.detach(), grad_p)

    def _record_step(
        self,
        call: int,
        step: int,
        total: int,
        d_prior: torch.Tensor,
        d_fake: torch.Tensor,
        utility: torch.Tensor,
        *,
        progress: Optional[ProgressFn],
        desc: str,
        **extra: float,
    ) -> None:
        """Append step ``step`` of ``total`` to ``history`` and report it to ``progress``.

        The entry holds ``call``, ``step``, ``epsilon = d_prior - d_fake`` (also
        kept as ``last_epsilon``), ``utility`` and any ``extra`` values, in that
        order; ``progress(step + 1, total, desc)`` is called when given.
        """
        eps = float(d_prior - d_fake.detach())
        self.last_epsilon = eps
        entry: Dict[str, Any] = {
            "call": call,
            "step": step,
            "epsilon": eps,
            "utility": float(utility.detach()),
        }
        entry.update(extra)
        self.history.append(entry)
        if progress is not None:
            progress(step + 1, total, desc)
