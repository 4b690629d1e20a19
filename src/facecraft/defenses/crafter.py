r"""Crafter: feature crafting against inversion-based identity theft (CRAFTER.md section 3).

Per batch of private images ``X``, Crafter solves the nested min-max

.. code-block:: text

    min_F  max_D'  L_p(D', z*(F)) + beta * L_u(F)
    s.t.   z*(F) = argmin_z ||F - Enc(G(z))||^2

where ``L_p = E[D'(G(z_r))] - E[D'(G(z*))]`` estimates the Earth Mover's
distance between the white-box attacker's reconstructions and its own prior
(``z_r ~ N(0, I)``) with a WGAN-GP critic ``D'``, and ``L_u`` keeps the
feature useful. The gradient of ``L_p`` reaches ``F`` through the inner
argmin by the implicit function theorem (:mod:`facecraft.defenses.hypergrad`).

References:
    Wang, Ji, Xiang, Zhang, Wang, Zhou, Li, "Crafter: Facial Feature Crafting
    against Inversion-based Identity Theft on Deep Models", NDSS 2024,
    https://arxiv.org/abs/2401.07205 (section 4: eq. of the min-max, the
    hypergradient and its Neumann approximation; section 3: epsilon-PII).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from facecraft._torchutils import derive_seed, frozen, make_generator
from facecraft._validation import check_number
from facecraft.defenses._critic import CriticConfig, CriticDefense
from facecraft.defenses.base import ConfigField
from facecraft.defenses.best_response import BestResponse, InnerInversion
from facecraft.defenses.critic_pretraining import (
    CriticPretraining,
    pretrain_config,
    pretrained_critic,
)
from facecraft.defenses.hypergrad import IHVPSolver
from facecraft.defenses.noise import add_relative_noise
from facecraft.defenses.outer_loop import UTILITIES, OuterLoop
from facecraft.defenses.registry import register_defense

__all__ = ["UTILITIES", "Crafter"]

ProgressFn = Callable[[int, int, str], None]


class Crafter(CriticDefense):
    r"""Crafter: craft ``F`` so the attacker's best-response inversion lands on its prior.

    For a batch ``X``: ``F0 = Enc(X)``, ``F = F0``; at each outer step,

    1. inner solve: ``z* = invert_latent(Enc, G, F, z0, steps=inner_steps)`` from
       ``z0 = Amor(F)`` (or the previous ``z*`` when ``warm_start``)
       (:class:`~facecraft.defenses.best_response.BestResponse`);
    2. train the critic ``D'`` for ``critic_steps`` WGAN-GP steps between
       ``G(z_r)`` and ``G(z*)``;
    3. ``L_p = E[D'(G(z_r))] - E[D'(G(z*))]`` (recorded as the step's epsilon
       estimate), ``dL_p/dz*`` by autograd through ``G`` and ``D'``, and the
       hypergradient ``dL_p/dF`` by :func:`~facecraft.defenses.hypergrad.implicit_feature_grad`;
    4. add ``beta * dL_u/dF`` and take an Adam step on ``F``.

    The flat keyword arguments (named by profiles, sweeps and saved protectors) are
    grouped into the frozen, validated configs of the sections below.

    Args:
        encoder: the edge encoder ``Enc`` (images in [0, 1] -> features).
        head: the cloud head ``f`` (features -> logits); needed for ``utility="task"`` or
            ``"logits"``.
        generator: the attacker's prior ``G`` (with a ``latent_dim`` attribute).
        amortizer: the attacker's ``Amor: F -> z`` for the inner warm start (Default: None).
        critic: an initial critic ``D'`` (e.g. the attacker's prior critic or one the
            defender pre-trained), copied for each batch and never modified; with
            ``critic_steps=0`` it stays fixed (Default: None: a fresh
            :class:`~facecraft.models.Critic` of width ``critic_width``).
        seed: seeds every random draw (critic initialisation, prior samples,
            gradient-penalty interpolation, random inner starts); each :meth:`protect`
            call restarts from it: same seed and input, same output (Default: 0), except
            for the ``release_noise`` stream below.
        release_noise: when > 0, Gaussian noise of this many standard deviations of each
            ``Enc(X)``'s entries is added to the crafted feature (a randomised release: Crafter
            plus calibrated noise, issue 15; ours). Its stream advances across calls and
            :meth:`reseed` restarts it, like :class:`~facecraft.defenses.noise.GaussianNoise`'s
            (Default: 0).

    Outer problem (:attr:`outer`, an :class:`OuterLoop`):
        beta: utility weight ``beta`` (Default: 1.0; the paper uses 0.5, 1, 2, 10 on CelebA).
        utility: ``"feature"``: ``L_u = ||F - F0||^2 / dim(F)``; ``"task"``:
            BCE of ``head(F)`` against ``attributes`` (given to :meth:`protect`) or
            the pseudo-labels ``head(F0) > 0``; ``"logits"`` (ours):
            ``||head(F) - head(F0)||^2 / K`` (Default: ``"feature"``).
        outer_steps: Adam steps on ``F`` (Default: 450, the paper's).
        lr: Adam learning rate on ``F`` (Default: 1e-2, the paper's).
        loss_scale: multiplies ``L_p + beta * L_u`` before the Adam step, as the
            authors' code does, so Adam's ``eps`` does not swamp tiny hypergradients
            (Default: 100.0).

    Inner inversion (:attr:`inner`, an :class:`~facecraft.defenses.best_response.InnerInversion`):
        inner_steps: inversion iterations per outer step (Default: 80, the paper's).
        inner_lr: inversion step size (Default: 5e-3, the paper's).
        inner_momentum: inversion momentum (Default: 0.9, the paper's).
        init_steps: iterations of the first inner solve of a batch; ``None`` means
            ``inner_steps`` with an amortizer and 600 (a cold attacker's) without (Default: None).
        warm_start: start each inner solve from the previous outer step's ``z*``
            instead of ``Amor(F)`` (Default: False).
        warm_offset: with ``warm_start`` and an amortizer, start from ``Amor(F)`` plus the
            last solve's correction ``z*_prev - Amor(F_prev)`` instead (Default: False).

    Critic (:attr:`critic_config`, a :class:`~facecraft.defenses._critic.CriticConfig`):
        critic_steps: critic updates per outer step (Default: 10, the paper's).
        critic_init_steps: updates of a new critic at its first outer step
            (Default: None: ``critic_steps``).
        critic_width: the critic's base width (Default: 64, the paper's critic).
        gp_weight: gradient-penalty weight (Default: 20, the paper's).
        critic_lr: critic Adam learning rate (Default: 5e-4, the authors' released code).
        persistent_critic: one critic (and optimiser) for all outer steps of a batch;
            else a fresh one at every outer step (Default: True, the authors' code).

    Critic pre-training (:attr:`pretraining`, a
    :class:`~facecraft.defenses.critic_pretraining.CriticPretraining`; beyond the paper):
        critic_pretrain_steps: when > 0, :meth:`fit` trains the initial critic this many
            updates on public faces, so every batch starts from a critic that already
            tells the attacker's reconstructions from the prior (Default: 0).
        critic_pretrain_faces: public faces it uses (Default: 256).

    Hypergradient (:attr:`ihvp`, an :class:`~facecraft.defenses.hypergrad.IHVPSolver`):
        solver: ``"neumann"``, ``"cg"`` or ``"gn-cg"`` (Default: ``"neumann"``, the paper's).
        neumann_alpha: Neumann step (Default: 1e-3, the paper's).
        neumann_iters: Neumann terms (Default: 120, the paper's).
        cg_iters: CG iterations for ``"cg"``/``"gn-cg"`` (Default: 20).
        cg_tol: CG relative tolerance (Default: 1e-6).
        damping: damping added to ``H`` by the CG solvers (Default: 0).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output: ``(N, *F)``, the shape of ``Enc(X)``.

    Attributes:
        history: one dict per outer step: ``call`` (index of the :meth:`protect`
            call), ``step``, ``epsilon`` (the critic's EMD estimate at the step's
            ``F``, before its update), ``utility`` (``L_u``), ``inversion`` (mean
            ``L_inv(F, z*) / dim(F)``, the inner solve's residual).
        last_epsilon: ``epsilon`` of the last outer step (``None`` before any call).

    Examples::

        >>> crafter = Crafter(enc, head, G, amortizer=amor, beta=2.0)  # doctest: +SKIP
        >>> released = crafter(images)  # (N, *F), like target.encoder(images)  # doctest: +SKIP
        >>> crafter.last_epsilon  # doctest: +SKIP

    References:
        arXiv 2401.07205, section 4 (min-max objective, eq. of ``L_p`` and ``L_u``,
        hypergradient with a Neumann IHVP, ``alpha = 1e-3``, ``i = 120``, Adam on
        ``F`` with lr 1e-2 for 450 steps, critic trained 10 steps per outer step
        with GP weight 20); CRAFTER.md section 3.

    Note:
        * ``persistent_critic`` defaults to True, as in CRAFTER.md and the
          authors' code (see :class:`~facecraft.defenses._critic.CriticConfig`).
        * The critic's training departs from the authors' code as
          :mod:`facecraft.defenses._critic` notes (fresh prior samples, fixed GP weight).
        * The Hessian uses the paper's un-normalised ``||F - Enc(G(z))||^2``
          (see :func:`~facecraft.defenses.hypergrad.implicit_feature_grad`), so
          ``neumann_alpha`` is on the paper's scale; the inner solve itself is
          the attacker's :func:`~facecraft.attacks.whitebox.invert_latent`.
        * Without an amortizer the first inner solve starts from ``N(0, I)`` and
          later ones always warm-start (:class:`~facecraft.defenses.best_response.BestResponse`).
        * ``L_p`` and ``L_u`` are batch means (scaled by ``loss_scale``).
    """

    crafts_features = True
    study_inputs = ("generator", "amortizer")
    relative_cost = 8

    # the flat constructor arguments, read from the configs (get_config, sweeps, repr)
    beta = ConfigField("outer")
    utility = ConfigField("outer")
    outer_steps = ConfigField("outer", "steps")
    lr = ConfigField("outer")
    loss_scale = ConfigField("outer")
    inner_steps = ConfigField("inner", "steps")
    inner_lr = ConfigField("inner", "lr")
    inner_momentum = ConfigField("inner", "momentum")
    init_steps = ConfigField("inner")
    warm_start = ConfigField("inner")
    warm_offset = ConfigField("inner")
    critic_pretrain_steps = ConfigField("pretraining", "steps")
    critic_pretrain_faces = ConfigField("pretraining", "faces")
    solver = ConfigField("ihvp", "kind")
    neumann_alpha = ConfigField("ihvp")
    neumann_iters = ConfigField("ihvp")
    cg_iters = ConfigField("ihvp")
    cg_tol = ConfigField("ihvp")
    damping = ConfigField("ihvp")

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module],
        generator: nn.Module,
        *,
        amortizer: Optional[nn.Module] = None,
        beta: float = 1.0,
        utility: str = "feature",
        outer_steps: int = 450,
        lr: float = 1e-2,
        inner_steps: int = 80,
        inner_lr: float = 5e-3,
        inner_momentum: float = 0.9,
        init_steps: Optional[int] = None,
        critic_steps: int = 10,
        critic_init_steps: Optional[int] = None,
        critic_width: int = 64,
        gp_weight: float = 20.0,
        critic_lr: float = 5e-4,
        critic: Optional[nn.Module] = None,
        solver: str = "neumann",
        neumann_alpha: float = 1e-3,
        neumann_iters: int = 120,
        cg_iters: int = 20,
        cg_tol: float = 1e-6,
        damping: float = 0.0,
        critic_pretrain_steps: int = 0,
        critic_pretrain_faces: int = 256,
        warm_start: bool = False,
        warm_offset: bool = False,
        persistent_critic: bool = True,
        loss_scale: float = 100.0,
        release_noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        check_number("release_noise", release_noise, low=0.0)
        self.release_noise = release_noise
        self.outer = OuterLoop(outer_steps, lr, beta, utility, loss_scale)
        if utility != "feature" and head is None:
            raise ValueError(f"utility={utility!r} needs the cloud head")
        self._check_generator(generator)
        self.inner = InnerInversion(
            inner_steps, inner_lr, inner_momentum, init_steps, warm_start, warm_offset
        )
        self.critic_config = CriticConfig(
            critic_steps, critic_init_steps, critic_width, gp_weight, critic_lr, persistent_critic
        )
        self.pretraining = CriticPretraining(critic_pretrain_steps, critic_pretrain_faces)
        self.ihvp = IHVPSolver(solver, neumann_alpha, neumann_iters, cg_iters, cg_tol, damping)
        self.generator = generator
        self.amortizer = amortizer
        self.critic = critic
        self.seed = seed
        self.reseed("release-noise")

    @classmethod
    def name(cls) -> str:
        return "crafter"

    @property
    def fits_on(self) -> Optional[str]:  # type: ignore[override]
        """``"prior"`` when the critic is pre-trained on public faces
        (``critic_pretrain_steps > 0``)."""
        return "prior" if self.critic_pretrain_steps > 0 else None

    def fit_key(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """One stored critic for all beta and outer steps sharing :meth:`critic_pretrain_config`."""
        return ("defense-crafter-critic", self.critic_pretrain_config())

    def critic_pretrain_config(self) -> Dict[str, Any]:
        """The arguments the critic :meth:`fit` pre-trains depends on (not ``beta``, the steps)."""
        return pretrain_config(self.pretraining, self.critic_config, self.seed)

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "Crafter":
        """Pre-train the starting critic on public faces when ``critic_pretrain_steps > 0``.

        Sets :attr:`critic` by :func:`~facecraft.defenses.critic_pretraining.pretrained_critic`
        (saved to, or loaded from, ``checkpoint_stem``) unless the constructor was
        given one, and returns ``self``.
        """
        self.fit_trained = False
        if self.pretraining.steps == 0 or self.critic is not None:
            return self
        self.critic, self.fit_trained = pretrained_critic(
            self.encoder,
            self.generator,
            self.amortizer,
            public_images,
            pretraining=self.pretraining,
            critic=self.critic_config,
            seed=self.seed,
            checkpoint_stem=checkpoint_stem,
        )
        return self

    def protect(
        self,
        images: torch.Tensor,
        *,
        attributes: Optional[torch.Tensor] = None,
        progress: Optional[ProgressFn] = None,
    ) -> torch.Tensor:
        """Craft released features for one batch.

        Args:
            images: private images ``(N, 3, S, S)`` in [0, 1].
            attributes: optional binary targets ``(N, K)`` for ``utility="task"``
                (Default: pseudo-labels ``head(Enc(X)) > 0``).
            progress: optional ``progress(done, total, desc)`` called after each outer step.

        Returns:
            Crafted features ``(N, *F)``, detached.
        """
        if self.pretraining.steps > 0 and self.critic is None:
            raise RuntimeError(
                f"{self.name()} pre-trains its critic (critic_pretrain_steps="
                f"{self.pretraining.steps}): call fit() on public faces first"
            )
        seed_gen, gp_gen, call = self._begin_call(images.device)
        enc, gen, amor = self.encoder, self.generator, self.amortizer
        with frozen(enc, gen, amor, self.head):
            with torch.no_grad():
                f0 = enc(images).detach()
            targets = self.outer.utility_targets(f0, self.head, attributes)
            feat = f0.clone().requires_grad_(True)
            opt = torch.optim.Adam([feat], lr=self.outer.lr)
            best_response = BestResponse(self.inner, enc, gen, amor, seed_gen=seed_gen)
            critic: Optional[nn.Module] = None
            critic_opt: Optional[torch.optim.Optimizer] = None
            for step in range(self.outer.steps):
                fd = feat.detach()
                # 1. the attacker's best response z*(F)
                z_star = best_response(fd, step)
                # 2-3. the critic D' between G(z_r) and G(z*), L_p and the hypergradient dL_p/dF
                rnd = self._privacy_round(
                    critic,
                    critic_opt,
                    fd,
                    z_star,
                    images.shape[-1],
                    seed_gen=seed_gen,
                    gp_gen=gp_gen,
                    solver=self.ihvp,
                )
                critic, critic_opt = rnd.critic, rnd.critic_opt
                with torch.no_grad():  # before the step: fd shares F's storage
                    inv = (enc(rnd.reconstruction) - fd).flatten(1).pow(2).mean(dim=1).mean()
                # 4. utility and the Adam step on F
                l_u = self.outer.step(feat, f0, targets, self.head, rnd.grad_p, opt)
                self._record_step(
                    call,
                    step,
                    self.outer.steps,
                    rnd.d_prior,
                    rnd.d_star,
                    l_u,
                    progress=progress,
                    desc="crafter",
                    inversion=float(inv),
                )
        if self.release_noise > 0:
            return add_relative_noise(feat.detach(), f0, self.release_noise, self._noise_gen)
        return feat.detach()

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        """True with ``release_noise > 0`` (a randomised release)."""
        return self.release_noise > 0

    def reseed(self, key: str) -> None:
        """Restart the ``release_noise`` stream at ``derive_seed(seed, key)`` (see
        :meth:`FeatureDefense.reseed`); the crafting itself restarts from ``seed`` at every
        call."""
        self._noise_gen = make_generator(derive_seed(self.seed, key), "cpu")


register_defense("crafter", Crafter)
