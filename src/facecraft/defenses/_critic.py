"""The defender's WGAN-GP critic ``D'`` shared by Crafter and Crafter-z (CRAFTER.md section 3).

``D'`` estimates the Earth Mover's distance between the attacker's
reconstructions and its prior in Kantorovich-Rubinstein dual form,
``EMD ~ E[D'(G(z_r))] - E[D'(G(z*))]``, and is trained to maximise that
estimate minus a gradient penalty (Gulrajani et al., NeurIPS 2017, eq. 3).

:class:`CriticDefense` is the base both variants share: the networks they
hold, the per-call seeding, one critic round of an optimisation step, the
prior term of the EMD estimate and the per-step record.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from facecraft._torchutils import frozen, make_generator
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.hypergrad import implicit_feature_grad
from facecraft.models import Critic, gradient_penalty

__all__ = [
    "CriticDefense",
    "fit_defender_critic",
    "latent_dim_of",
    "new_critic",
    "prior_latents",
    "seeded_init",
    "train_critic",
]

ProgressFn = Callable[[int, int, str], None]


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
    r"""A critic ``D'`` trained once, on public faces, to tell the attacker's reconstructions from its prior.

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
    Subclasses store the hyperparameters annotated below under these names
    (their constructor arguments) and implement :meth:`protect` and
    :meth:`name`.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f``.

    Attributes:
        last_epsilon: ``epsilon`` of the last step (``None`` before any call).
    """

    generator: nn.Module
    amortizer: Optional[nn.Module]
    critic_steps: int
    critic_width: int
    gp_weight: float
    critic_lr: float
    critic: Optional[nn.Module]
    persistent_critic: bool
    seed: int
    #: updates of a newly initialised critic in its first round (None: ``critic_steps``)
    critic_init_steps: Optional[int] = None

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
        with torch.no_grad():
            fake = self.generator(z)
        steps = self.critic_steps
        if critic is None or not self.persistent_critic:
            if self.critic_init_steps is not None:
                steps = self.critic_init_steps
            critic, critic_opt = new_critic(
                image_size,
                self.critic_width,
                self.critic_lr,
                like=fake,
                seed_gen=seed_gen,
                init=self.critic,
            )
        train_critic(
            critic,
            critic_opt,
            self.generator,
            fake,
            steps=steps,
            gp_weight=self.gp_weight,
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
        **solver: Any,
    ) -> Tuple[
        nn.Module,
        Optional[torch.optim.Optimizer],
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
    ]:
        """The privacy side of one step of the feature-space Crafter objective (CRAFTER.md section 3).

        At the attacker's best response ``z* = z*(F)``: one critic round
        (:meth:`_critic_round`), the prior term ``E[D'(G(z_r))]``
        (:meth:`_prior_score`), ``E[D'(G(z*))]`` with its gradient in ``z*``,
        and the implicit hypergradient ``dL_p/dF`` of ``L_p = -E[D'(G(z*(F)))]``
        (:func:`~facecraft.defenses.hypergrad.implicit_feature_grad`, with the
        ``solver`` keyword arguments). Shared by Crafter (per batch) and the
        amortized Crafter (per training step), in this order of random draws.

        Returns:
            ``(critic, critic_opt, d_prior, d_star, G(z*) detached, dL_p/dF)``.
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
            self.encoder, self.generator, features, z_star, grad_z, **solver
        )
        return critic, critic_opt, d_prior, d_star, x.detach(), grad_p

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
