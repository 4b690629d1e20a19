r"""Amortized Crafter: one forward pass that crafts features (beyond the paper; issue 5).

Crafter (:mod:`facecraft.defenses.crafter`) optimises every released feature
for hundreds of outer steps. Amortized Crafter trains, once and on public
images only, a small residual network ``C`` so that

.. code-block:: text

    F' = Enc(X) + C(Enc(X))

solves the same nested min-max *on average over faces*:

.. code-block:: text

    min_C  max_D'  E_X[ L_p(D', z*(F')) + beta * L_u(F', Enc(X)) ]
    s.t.   z*(F') = argmin_z ||F' - Enc(G(z))||^2

Each training step takes a batch of public faces, runs the attacker's
amortized inversion on ``F'`` (``Amor(F')`` + ``inner_steps`` iterations),
trains a persistent critic ``D'`` between ``G(z*)`` and ``G(z_r)``, computes the
implicit hypergradient ``dL_p/dF'`` exactly as Crafter does
(:func:`~facecraft.defenses.hypergrad.implicit_feature_grad`) and pushes it,
with ``beta * dL_u/dF'``, back through ``C`` to its weights (Adam). At
deployment :meth:`AmortizedCrafter.protect` is the encoder plus ``C``: no
inversion, no critic, no generator on the edge.

References:
    Wang et al., "Crafter", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4: the objective amortized here); CRAFTER.md section 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from facecraft._io import checkpoint_exists, load_state, save_state
from facecraft._torchutils import frozen, make_generator
from facecraft._validation import MAX_WIDTH, check_number, validate_images
from facecraft.defenses._critic import (
    CriticConfig,
    CriticDefense,
    latent_dim_of,
    new_critic,
    seeded_init,
)
from facecraft.defenses.base import ConfigField
from facecraft.defenses.best_response import InnerInversion
from facecraft.defenses.feature_crafter import FeatureCrafter
from facecraft.defenses.hypergrad import IHVPSolver
from facecraft.defenses.registry import register_defense

__all__ = ["AmortizedTraining", "FeatureCrafter", "AmortizedCrafter"]

ProgressFn = Callable[[int, int, str], None]
_KIND = "amortized-crafter-fit"


@dataclass(frozen=True)
class AmortizedTraining:
    """How :meth:`AmortizedCrafter.fit` trains ``C``; validated on construction.

    The fields are the amortized Crafter's arguments of the same names (see
    :class:`AmortizedCrafter`); ``beta`` and ``loss_scale`` are >= 0 and > 0,
    the others positive.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 64
    beta: float = 1.0
    loss_scale: float = 100.0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name, value in (
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("width", self.width),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        check_number("beta", self.beta, low=0.0)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("loss_scale", self.loss_scale, low=0.0, low_open=True)
        check_number("width", self.width, low=1, high=MAX_WIDTH, integer=True)


@dataclass
class _FitState:
    """What :meth:`AmortizedCrafter.fit` carries from step to step and checkpoints."""

    crafter: FeatureCrafter
    opt: torch.optim.Optimizer
    seed_gen: torch.Generator
    gp_gen: torch.Generator
    batch_gen: torch.Generator
    critic: Optional[nn.Module] = None
    critic_opt: Optional[torch.optim.Optimizer] = None

    def load(self, stem: Path) -> Dict[str, Any]:
        """Restore the state saved at ``stem`` (with the critic rebuilt); returns its meta."""
        extra, meta = load_state(stem, **self._parts())
        self.seed_gen.set_state(extra["seed_gen"].cpu())
        self.gp_gen.set_state(extra["gp_gen"].cpu())
        return meta

    def save(self, stem: Path, meta: Dict[str, Any]) -> None:
        """Save the state to ``stem`` (safetensors + JSON) with ``meta``."""
        extra = {"seed_gen": self.seed_gen.get_state(), "gp_gen": self.gp_gen.get_state()}
        save_state(stem, **self._parts(), extra=extra, meta=meta)

    def _parts(self) -> Dict[str, Any]:
        return {
            "kind": _KIND,
            "modules": {"crafter": self.crafter, "critic": self.critic},
            "optimizers": {"crafter": self.opt, "critic": self.critic_opt},
            "rng": self.batch_gen,
        }


class AmortizedCrafter(CriticDefense):
    r"""Crafter amortized into a network: ``F' = Enc(X) + C(Enc(X))`` (module docstring).

    The flat keyword arguments are grouped into frozen, validated configs, by section.

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (kept for utility measurement).
        generator: the attacker's prior ``G`` used to train ``C`` (not needed to protect).
        amortizer: the attacker's amortizer, the inner solve's start (Default: None:
            a random start with ``inner_steps`` iterations).
        critic: an initial critic, copied at the start of :meth:`fit` and never modified;
            with ``critic_steps=0`` it stays fixed (Default: None: a fresh critic).
        seed: seeds ``C``'s initialisation, batches, critic and prior samples (Default: 0).
        crafter: an already trained ``C`` (e.g. loaded by the caller) (Default: None).

    Training of ``C`` (:attr:`fitting`, an :class:`AmortizedTraining`):
        beta: utility weight, ``L_u = ||F' - Enc(X)||^2 / dim(F)`` (Default: 1.0).
        width: channels of ``C`` (Default: 64).
        steps: training steps on public batches (Default: 2000).
        batch_size: public faces per step (Default: 32).
        lr: Adam learning rate of ``C`` (Default: 1e-3, cosine-decayed).
        loss_scale: multiplies the surrogate loss before Adam (Default: 100, as Crafter).
        checkpoint_every: steps between resumable checkpoints of :meth:`fit` (Default: 50).

    Inner inversion (:attr:`inner`, an :class:`~facecraft.defenses.best_response.InnerInversion`):
        inner_steps: inversion iterations after ``Amor(F')`` per step (Default: 20).
        inner_lr, inner_momentum: the attacker's inversion step (Default: 5e-3, 0.9).

    Critic (:attr:`critic_config`, a :class:`~facecraft.defenses._critic.CriticConfig`):
        critic_steps, critic_width, gp_weight, critic_lr: the persistent critic ``D'``
            (Defaults: 5, 64, 20, 5e-4).

    Hypergradient (:attr:`ihvp`, an :class:`~facecraft.defenses.hypergrad.IHVPSolver`):
        solver, cg_iters, neumann_alpha, neumann_iters: the inverse-HVP
            (Default: ``"gn-cg"`` with 10 iterations).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output ``(N, *F)`` like ``Enc(X)``.

    Attributes:
        history: one dict per training step: ``step``, ``epsilon`` (the critic's EMD
            estimate), ``utility`` (``L_u``).
    """

    crafts_features = True
    study_inputs = ("generator", "amortizer")
    fits_on = "prior"
    relative_cost = 4

    # the flat constructor arguments, read from the configs (get_config, sweeps, repr)
    beta = ConfigField("fitting")
    width = ConfigField("fitting")
    steps = ConfigField("fitting")
    batch_size = ConfigField("fitting")
    lr = ConfigField("fitting")
    loss_scale = ConfigField("fitting")
    checkpoint_every = ConfigField("fitting")
    inner_steps = ConfigField("inner", "steps")
    inner_lr = ConfigField("inner", "lr")
    inner_momentum = ConfigField("inner", "momentum")
    solver = ConfigField("ihvp", "kind")
    cg_iters = ConfigField("ihvp")
    neumann_alpha = ConfigField("ihvp")
    neumann_iters = ConfigField("ihvp")

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module],
        generator: Optional[nn.Module] = None,
        *,
        amortizer: Optional[nn.Module] = None,
        beta: float = 1.0,
        width: int = 64,
        steps: int = 2000,
        batch_size: int = 32,
        lr: float = 1e-3,
        inner_steps: int = 20,
        inner_lr: float = 5e-3,
        inner_momentum: float = 0.9,
        critic_steps: int = 5,
        critic_width: int = 64,
        gp_weight: float = 20.0,
        critic_lr: float = 5e-4,
        critic: Optional[nn.Module] = None,
        solver: str = "gn-cg",
        cg_iters: int = 10,
        neumann_alpha: float = 1e-3,
        neumann_iters: int = 120,
        loss_scale: float = 100.0,
        checkpoint_every: int = 50,
        seed: int = 0,
        crafter: Optional[nn.Module] = None,
    ) -> None:
        super().__init__(encoder, head)
        self.ihvp = IHVPSolver(solver, neumann_alpha, neumann_iters, cg_iters)
        self.fitting = AmortizedTraining(
            steps, batch_size, lr, width, beta, loss_scale, checkpoint_every
        )
        self.inner = InnerInversion(inner_steps, inner_lr, inner_momentum)
        self.critic_config = CriticConfig(
            critic_steps, width=critic_width, gp_weight=gp_weight, lr=critic_lr
        )
        self.generator = generator  # type: ignore[assignment]
        self.amortizer = amortizer
        self.critic = critic
        self.seed = seed
        self.crafter = crafter

    @classmethod
    def name(cls) -> str:
        return "amortized-crafter"

    def networks(self) -> Dict[str, nn.Module]:
        nets = {"encoder": self.encoder}
        if self.head is not None:
            nets["head"] = self.head
        if self.crafter is not None:
            nets["crafter"] = self.crafter
        return nets

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "AmortizedCrafter":
        """Train ``C`` with the Crafter objective on public faces (resumable from a checkpoint).

        Args:
            public_images: ``(N, 3, S, S)`` float in [0, 1] or uint8 (attributes are not needed:
                the utility loss is task-agnostic).
            public_attributes: ignored (accepted for the common ``fit`` signature).
            progress: optional ``progress(step, steps, desc)``.
            checkpoint_stem: saved every ``checkpoint_every`` steps and at the end; a finished
                checkpoint there is loaded instead of training.

        Returns:
            ``self`` with a trained :attr:`crafter`.
        """
        self._check_public(public_images)
        cfg = self.fitting
        state, probe = self._new_state(public_images)
        start = 0
        stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
        if stem is not None and checkpoint_exists(stem):
            start = self._resume(state, stem, public_images.shape[-1], probe)
        self.fit_trained = start < cfg.steps
        with frozen(self.encoder, self.generator, self.amortizer):
            for step in range(start, cfg.steps):
                self._train_step(state, public_images, step, progress)
                done = step + 1
                if stem is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                    meta = {"step": done, "history": self.history, "config": self.get_config()}
                    state.save(stem, meta)
        self.crafter = state.crafter.eval()
        return self

    def _check_public(self, public_images: torch.Tensor) -> None:
        if self.generator is None:
            raise ValueError("amortized-crafter needs the attacker's generator to be fitted")
        if public_images.dim() != 4 or public_images.shape[0] == 0:
            raise ValueError(
                f"expected public images (N, 3, S, S), got {tuple(public_images.shape)}"
            )
        if public_images.dtype != torch.uint8:
            validate_images(public_images)

    def _new_state(self, public_images: torch.Tensor) -> Tuple[_FitState, torch.Tensor]:
        """A new ``C``, its Adam and the seeded generators, and ``Enc`` of the first face."""
        dev = self.device
        with torch.no_grad():
            probe = self.encoder(self._floats(public_images[:1], dev))
        gen = make_generator(self.seed)
        crafter = seeded_init(lambda: FeatureCrafter(probe.shape[1], self.fitting.width), gen)
        crafter = crafter.to(dev)
        opt = torch.optim.Adam(crafter.parameters(), lr=self.fitting.lr)
        seed_gen, gp_gen, _ = self._begin_call(dev)
        batch_gen = make_generator(self.seed + 1)
        return _FitState(crafter, opt, seed_gen, gp_gen, batch_gen), probe

    def _resume(self, state: _FitState, stem: Path, image_size: int, probe: torch.Tensor) -> int:
        """Rebuild the critic, load ``stem`` into ``state`` and :attr:`history`; its step."""
        cfg = self.critic_config
        state.critic, state.critic_opt = new_critic(
            image_size, cfg.width, cfg.lr, like=probe, seed_gen=state.seed_gen, init=self.critic
        )
        meta = state.load(stem)
        self.history = list(meta.get("history", []))
        return int(meta["step"])

    def _train_step(
        self,
        state: _FitState,
        public_images: torch.Tensor,
        step: int,
        progress: Optional[ProgressFn],
    ) -> None:
        """One step: ``F' = F0 + C(F0)`` on a public batch, ``z*(F')``, a privacy round and an
        Adam step on ``C``."""
        cfg, enc, gen = self.fitting, self.encoder, self.generator
        for g in state.opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        n = public_images.shape[0]
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=state.batch_gen)
        x = self._floats(public_images[idx], self.device)
        with torch.no_grad():
            f0 = enc(x)
        state.crafter.train()
        feat = f0 + state.crafter(f0)
        fd = feat.detach()
        with torch.no_grad():
            z0 = (
                self.amortizer(fd)
                if self.amortizer is not None
                else torch.randn(fd.shape[0], latent_dim_of(gen), generator=state.seed_gen).to(fd)
            )
        z_star = self.inner.solve(enc, gen, fd, z0)
        rnd = self._privacy_round(
            state.critic,
            state.critic_opt,
            fd,
            z_star,
            public_images.shape[-1],
            seed_gen=state.seed_gen,
            gp_gen=state.gp_gen,
            solver=self.ihvp,
        )
        state.critic, state.critic_opt = rnd.critic, rnd.critic_opt
        l_u = (feat - f0).flatten(1).pow(2).mean(dim=1).mean()
        # d/dtheta of this surrogate is (dL_p/dF')^T dF'/dtheta + beta dL_u/dtheta
        surrogate = (rnd.grad_p.detach() * feat).sum() + cfg.beta * l_u
        state.opt.zero_grad(set_to_none=True)
        (cfg.loss_scale * surrogate).backward()
        state.opt.step()
        self._record_step(
            0,
            step,
            cfg.steps,
            rnd.d_prior,
            rnd.d_star,
            l_u,
            progress=progress,
            desc="amortized crafter (training C)",
        )

    @staticmethod
    def _floats(x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return x.to(device).float().div(255.0) if x.dtype == torch.uint8 else x.to(device)

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """``Enc(X) + C(Enc(X))``: one forward pass of the encoder and ``C``."""
        if self.crafter is None:
            raise RuntimeError("amortized-crafter is not trained: call fit() first")
        with torch.no_grad(), frozen(self.crafter):
            f0 = self.encoder(images)
            return f0 + self.crafter(f0)

    def get_config(self) -> Dict[str, Any]:
        return {
            k: v
            for k, v in super().get_config().items()
            if k not in ("generator", "amortizer", "crafter", "critic")
        }


register_defense("amortized-crafter", AmortizedCrafter)
