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
import torch.nn.functional as nnf
from torch import nn

from facecraft._io import checkpoint_exists, load_checkpoint, save_checkpoint
from facecraft._torchutils import frozen
from facecraft._validation import MAX_WIDTH, check_number
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses._critic import (
    CriticDefense,
    fit_defender_critic,
    latent_dim_of,
    prior_latents,
)
from facecraft.defenses.hypergrad import SOLVERS
from facecraft.defenses.registry import register_defense
from facecraft.models import Critic

__all__ = ["FAST_STEP", "UTILITIES", "Crafter", "FastCrafter"]

#: the utility losses ``L_u`` Crafter supports.
UTILITIES = ("feature", "task")

ProgressFn = Callable[[int, int, str], None]


class Crafter(CriticDefense):
    r"""Crafter: craft ``F`` so the attacker's best-response inversion lands on its prior.

    For a batch ``X``: ``F0 = Enc(X)``, ``F = F0``; at each outer step,

    1. inner solve: ``z* = invert_latent(Enc, G, F, z0, steps=inner_steps)`` from
       ``z0 = Amor(F)`` (or the previous ``z*`` when ``warm_start``);
    2. train the critic ``D'`` for ``critic_steps`` WGAN-GP steps between
       ``G(z_r)`` and ``G(z*)``;
    3. ``L_p = E[D'(G(z_r))] - E[D'(G(z*))]`` (recorded as the step's epsilon
       estimate), ``dL_p/dz*`` by autograd through ``G`` and ``D'``, and the
       hypergradient ``dL_p/dF`` by :func:`~facecraft.defenses.hypergrad.implicit_feature_grad`;
    4. add ``beta * dL_u/dF`` and take an Adam step on ``F``.

    Args:
        encoder: the edge encoder ``Enc`` (images in [0, 1] -> features).
        head: the cloud head ``f`` (features -> logits); needed for ``utility="task"``.
        generator: the attacker's prior ``G`` (with a ``latent_dim`` attribute).
        amortizer: the attacker's amortizer ``Amor: F -> z`` for the inner warm start
            (Default: None).
        beta: utility weight ``beta`` (Default: 1.0; the paper uses 0.5, 1, 2, 10 on CelebA).
        utility: ``"feature"``: ``L_u = ||F - F0||^2 / dim(F)``; ``"task"``:
            BCE of ``head(F)`` against ``attributes`` (given to :meth:`protect`) or
            the pseudo-labels ``head(F0) > 0`` (Default: ``"feature"``).
        outer_steps: Adam steps on ``F`` (Default: 450, the paper's).
        lr: Adam learning rate on ``F`` (Default: 1e-2, the paper's).
        inner_steps: inversion iterations per outer step (Default: 80, the paper's).
        inner_lr: inversion step size (Default: 5e-3, the paper's).
        inner_momentum: inversion momentum (Default: 0.9, the paper's).
        init_steps: iterations of the first inner solve of a batch; ``None`` means
            ``inner_steps`` with an amortizer and 600 (a cold attacker's) without (Default: None).
        critic_steps: critic updates per outer step (Default: 10, the paper's).
        critic_init_steps: updates of a new critic at its first outer step, so a
            cheap per-step ``critic_steps`` starts from a critic that already tells
            ``G(z*)`` from the prior (Default: None: ``critic_steps``).
        critic_width: the critic's base width (Default: 64, the paper's critic).
        gp_weight: gradient-penalty weight (Default: 20, the paper's).
        critic_lr: critic Adam learning rate (Default: 5e-4, the authors' released code).
        critic: an initial critic ``D'`` (e.g. the attacker's prior critic or one the
            defender pre-trained), copied for each batch and never modified; with
            ``critic_steps=0`` it stays fixed (Default: None: a fresh
            :class:`~facecraft.models.Critic` of width ``critic_width``).
        critic_pretrain_steps: when > 0, :meth:`fit` trains the initial critic once on
            public faces (:func:`~facecraft.defenses.fit_defender_critic`, this many
            updates), so every batch starts from a critic that already tells the
            attacker's reconstructions from the prior (beyond the paper; Default: 0).
        critic_pretrain_faces: public faces it uses (Default: 256).
        solver: IHVP solver, ``"neumann"``, ``"cg"`` or ``"gn-cg"``
            (Default: ``"neumann"``, the paper's).
        neumann_alpha: Neumann step (Default: 1e-3, the paper's).
        neumann_iters: Neumann terms (Default: 120, the paper's).
        cg_iters: CG iterations for ``"cg"``/``"gn-cg"`` (Default: 20).
        cg_tol: CG relative tolerance (Default: 1e-6).
        damping: damping added to ``H`` by the CG solvers (Default: 0).
        warm_start: start each inner solve from the previous outer step's ``z*``
            instead of ``Amor(F)`` (Default: False).
        warm_offset: with ``warm_start`` and an amortizer, start from
            ``Amor(F) + (z*_prev - Amor(F_prev))`` instead: the amortizer follows
            the change of ``F`` and the offset carries the previous solve's
            correction of it, so a few iterations track the attacker's
            ``Amor(F)`` + ``inner_steps`` solution rather than drifting from it (Default: False).
        persistent_critic: keep one critic (and its optimiser) for all outer steps
            of a batch; if False a fresh critic is initialised at every outer step
            (Default: True, as in the authors' code: one critic per batch).
        loss_scale: multiplies ``L_p + beta * L_u`` before the Adam step, as the
            authors' code does (x100). Adam is scale-invariant except for its
            ``eps`` (1e-8), which would otherwise swamp hypergradients of order
            1e-8 (Default: 100.0).
        seed: seeds every random draw (critic initialisation, prior samples,
            gradient-penalty interpolation, random inner starts); each
            :meth:`protect` call restarts from it, so the same seed and input give
            the same output (Default: 0).

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
        * ``persistent_critic`` defaults to True: CRAFTER.md and the authors'
          code use one critic per batch, updated ``critic_steps`` times at every
          outer step. Re-initialising it every outer step (``False``) gives a far
          weaker EMD estimate from only ``critic_steps`` updates.
        * Prior samples ``z_r`` are redrawn for every critic step and for the EMD
          estimate; the authors' code fixes one set per batch and sub-samples 32
          of them per critic step.
        * The authors' code doubles the GP weight when the penalty exceeds 1;
          we keep it fixed.
        * The Hessian uses the paper's un-normalised ``||F - Enc(G(z))||^2``
          (see :func:`~facecraft.defenses.hypergrad.implicit_feature_grad`), so
          ``neumann_alpha`` is on the paper's scale; the inner solve itself is
          the attacker's :func:`~facecraft.attacks.whitebox.invert_latent`.
        * Without an amortizer the first inner solve starts from ``N(0, I)``
          (``init_steps``, 600 by default) and later ones always warm-start from
          the previous ``z*`` (a random restart with ``inner_steps`` iterations
          would not track ``z*``).
        * ``L_p`` and ``L_u`` are batch means (scaled by ``loss_scale``).
    """

    crafts_features = True
    study_inputs = ("generator", "amortizer")
    relative_cost = 8

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
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        if utility not in UTILITIES:
            raise ValueError(f"unknown utility {utility!r}; choose one of {UTILITIES}")
        if utility == "task" and head is None:
            raise ValueError("utility='task' needs the cloud head")
        if solver not in SOLVERS:
            raise ValueError(f"unknown IHVP solver {solver!r}; choose one of {SOLVERS}")
        if getattr(generator, "latent_dim", None) is None:
            raise ValueError(
                f"the generator ({type(generator).__name__}) needs a latent_dim attribute"
            )
        for name, value in (
            ("outer_steps", outer_steps),
            ("inner_steps", inner_steps),
            ("critic_steps", critic_steps),
            ("critic_init_steps", critic_init_steps or 0),
            ("neumann_iters", neumann_iters),
            ("cg_iters", cg_iters),
            ("critic_pretrain_steps", critic_pretrain_steps),
            ("critic_pretrain_faces", critic_pretrain_faces),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        check_number("beta", beta, low=0.0)
        for name, value in (
            ("lr", lr),
            ("inner_lr", inner_lr),
            ("critic_lr", critic_lr),
            ("neumann_alpha", neumann_alpha),
            ("loss_scale", loss_scale),
        ):
            check_number(name, value, low=0.0, low_open=True)
        for name, value in (
            ("inner_momentum", inner_momentum),
            ("gp_weight", gp_weight),
            ("cg_tol", cg_tol),
            ("damping", damping),
        ):
            check_number(name, value, low=0.0)
        check_number("critic_width", critic_width, low=1, high=MAX_WIDTH, integer=True)
        self.generator = generator
        self.amortizer = amortizer
        self.beta = beta
        self.utility = utility
        self.outer_steps = outer_steps
        self.lr = lr
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_momentum = inner_momentum
        self.init_steps = init_steps
        self.critic_steps = critic_steps
        self.critic_init_steps = critic_init_steps
        self.critic_width = critic_width
        self.gp_weight = gp_weight
        self.critic_lr = critic_lr
        self.critic = critic
        self.solver = solver
        self.neumann_alpha = neumann_alpha
        self.neumann_iters = neumann_iters
        self.cg_iters = cg_iters
        self.cg_tol = cg_tol
        self.damping = damping
        self.critic_pretrain_steps = critic_pretrain_steps
        self.critic_pretrain_faces = critic_pretrain_faces
        self.warm_start = warm_start
        self.warm_offset = warm_offset
        self.persistent_critic = persistent_critic
        self.loss_scale = loss_scale
        self.seed = seed

    @classmethod
    def name(cls) -> str:
        return "crafter"

    @property
    def fits_on(self) -> Optional[str]:  # type: ignore[override]
        """``"prior"`` when the critic is pre-trained on public faces (``critic_pretrain_steps > 0``)."""
        return "prior" if self.critic_pretrain_steps > 0 else None

    def fit_key(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """One stored critic for every beta and outer step that share :meth:`critic_pretrain_config`."""
        return ("defense-crafter-critic", self.critic_pretrain_config())

    def critic_pretrain_config(self) -> Dict[str, Any]:
        """The arguments the critic :meth:`fit` pre-trains depends on (``beta`` and the outer step do not)."""
        return {
            k: getattr(self, k)
            for k in (
                "critic_pretrain_steps",
                "critic_pretrain_faces",
                "critic_width",
                "critic_lr",
                "gp_weight",
                "seed",
            )
        }

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "Crafter":
        """Pre-train the starting critic on public faces when ``critic_pretrain_steps > 0`` (else nothing).

        Trains :attr:`critic` with :func:`~facecraft.defenses.fit_defender_critic`
        on the first ``critic_pretrain_faces`` of ``public_images`` (float in [0, 1]
        or uint8), with this Crafter's ``critic_width``, ``critic_lr``,
        ``gp_weight`` and ``seed``; saved to, or loaded from, ``checkpoint_stem``
        (safetensors + JSON). A critic given to the constructor is kept as is.

        Returns:
            ``self``.
        """
        self.fit_trained = False
        if self.critic_pretrain_steps == 0 or self.critic is not None:
            return self
        if public_images.dim() != 4 or public_images.shape[0] < 2:
            raise ValueError(
                f"expected public images (N >= 2, 3, S, S), got {tuple(public_images.shape)}"
            )
        dev = self.device
        size = int(public_images.shape[-1])
        stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
        if stem is not None and checkpoint_exists(stem):
            tensors, _ = load_checkpoint(stem, kind="defender-critic")
            critic = Critic(size, width=self.critic_width).to(dev)
            critic.load_state_dict(tensors)
        else:
            x = public_images[: self.critic_pretrain_faces].to(dev)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x
            critic = fit_defender_critic(
                self.encoder,
                self.generator,
                self.amortizer,
                x,
                steps=self.critic_pretrain_steps,
                width=self.critic_width,
                lr=self.critic_lr,
                gp_weight=self.gp_weight,
                seed=self.seed,
            )
            self.fit_trained = True
            if stem is not None:
                save_checkpoint(
                    stem,
                    {k: v.detach().cpu() for k, v in critic.state_dict().items()},
                    kind="defender-critic",
                    meta={"config": self.critic_pretrain_config(), "image_size": size},
                )
        for q in critic.parameters():
            q.requires_grad_(False)
        self.critic = critic.eval()
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
        if self.critic_pretrain_steps > 0 and self.critic is None:
            raise RuntimeError(
                f"{self.name()} pre-trains its critic (critic_pretrain_steps="
                f"{self.critic_pretrain_steps}): call fit() on public faces first"
            )
        seed_gen, gp_gen, call = self._begin_call(images.device)
        enc, gen, amor, head = self.encoder, self.generator, self.amortizer, self.head
        zd = latent_dim_of(gen)
        image_size = images.shape[-1]
        with frozen(enc, gen, amor, head):
            with torch.no_grad():
                f0 = enc(images).detach()
                targets = None
                if self.utility == "task":
                    if attributes is not None:
                        if attributes.shape[0] != images.shape[0]:
                            raise ValueError(
                                f"attributes: expected {images.shape[0]} rows (one per image), "
                                f"got {attributes.shape[0]}"
                            )
                        targets = attributes.to(device=f0.device, dtype=f0.dtype)
                    else:
                        assert head is not None  # checked in __init__
                        targets = (head(f0) > 0).to(f0.dtype)
            n = f0.shape[0]
            feat = f0.clone().requires_grad_(True)
            opt = torch.optim.Adam([feat], lr=self.lr)
            critic: Optional[nn.Module] = None
            critic_opt: Optional[torch.optim.Optimizer] = None
            z_prev: Optional[torch.Tensor] = None
            offset: Optional[torch.Tensor] = None  # z*_prev - Amor(F_prev), for warm_offset
            for step in range(self.outer_steps):
                fd = feat.detach()
                # 1. the attacker's best response z*(F)
                if offset is not None:  # warm_offset (set after the first solve)
                    with torch.no_grad():
                        z_amor = amor(fd)
                    z0, steps = z_amor + offset, self.inner_steps
                elif z_prev is not None and (self.warm_start or amor is None):
                    z0, steps = z_prev, self.inner_steps
                elif amor is not None:
                    with torch.no_grad():
                        z0 = z_amor = amor(fd)
                    steps = (
                        self.inner_steps
                        if (step > 0 or self.init_steps is None)
                        else self.init_steps
                    )
                else:
                    z0 = prior_latents(n, zd, like=fd, seed_gen=seed_gen)
                    steps = 600 if self.init_steps is None else self.init_steps
                z_star = invert_latent(
                    enc, gen, fd, z0, steps=steps, lr=self.inner_lr, momentum=self.inner_momentum
                )
                z_prev = z_star
                if self.warm_start and self.warm_offset and amor is not None:
                    with torch.no_grad():
                        offset = z_star - z_amor
                # 2-3. the critic D' between G(z_r) and G(z*), L_p and the hypergradient dL_p/dF
                critic, critic_opt, d_prior, d_star, x, grad_p = self._privacy_round(
                    critic,
                    critic_opt,
                    fd,
                    z_star,
                    image_size,
                    seed_gen=seed_gen,
                    gp_gen=gp_gen,
                    solver=self.solver,
                    neumann_alpha=self.neumann_alpha,
                    neumann_iters=self.neumann_iters,
                    cg_iters=self.cg_iters,
                    cg_tol=self.cg_tol,
                    damping=self.damping,
                )
                with torch.no_grad():
                    inv = (enc(x) - fd).flatten(1).pow(2).mean(dim=1).mean()
                # 4. utility and the Adam step on F
                l_u = self._utility_loss(feat, f0, targets)
                (grad_u,) = torch.autograd.grad(l_u, feat)
                feat.grad = self.loss_scale * (grad_p + self.beta * grad_u)
                opt.step()
                opt.zero_grad(set_to_none=True)
                self._record_step(
                    call,
                    step,
                    self.outer_steps,
                    d_prior,
                    d_star,
                    l_u,
                    progress=progress,
                    desc="crafter",
                    inversion=float(inv),
                )
        return feat.detach()

    def _utility_loss(
        self, feat: torch.Tensor, f0: torch.Tensor, targets: Optional[torch.Tensor]
    ) -> torch.Tensor:
        if self.utility == "feature":
            return (feat - f0).flatten(1).pow(2).mean(dim=1).mean()
        assert self.head is not None and targets is not None
        return nnf.binary_cross_entropy_with_logits(self.head(feat), targets)


register_defense("crafter", Crafter)


#: The fast Crafter step of ``facecraft bench craft`` (small profile, docs/BENCHMARKS.md, session 6):
#: a critic pre-trained once on public faces and fine-tuned 2 steps per outer step, the inner solve
#: from ``Amor(F)`` plus the previous correction with 5 iterations, one Gauss-Newton CG iteration,
#: the small demo's Adam step and a utility weight of 5.
FAST_STEP: Dict[str, Any] = {
    "critic_pretrain_steps": 200,
    "critic_pretrain_faces": 256,
    "critic_steps": 2,
    "critic_width": 16,
    "warm_start": True,
    "warm_offset": True,
    "inner_steps": 5,
    "init_steps": 40,
    "solver": "gn-cg",
    "cg_iters": 1,
    "lr": 0.1,
    "beta": 5.0,
    "outer_steps": 10,
}


class FastCrafter(Crafter):
    """Crafter with :data:`FAST_STEP` as its defaults: the fast configuration of issue 5, registered as ``crafter-fast``.

    Same algorithm and arguments as :class:`Crafter` (any of them overrides the
    preset); :meth:`fit` must run on public faces first (it trains the critic).
    """

    relative_cost = 6

    def __init__(
        self, encoder: nn.Module, head: Optional[nn.Module], generator: nn.Module, **kwargs: Any
    ) -> None:
        super().__init__(encoder, head, generator, **{**FAST_STEP, **kwargs})

    @classmethod
    def name(cls) -> str:
        return "crafter-fast"


register_defense("crafter-fast", FastCrafter)
