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
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from facecraft._torchutils import frozen, make_generator
from facecraft._validation import MAX_WIDTH, check_number, validate_images
from facecraft.attacks._state import checkpoint_exists, load_state, save_state
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses._critic import CriticDefense, latent_dim_of, new_critic, seeded_init
from facecraft.defenses.hypergrad import SOLVERS
from facecraft.defenses.registry import register_defense

__all__ = ["FeatureCrafter", "AmortizedCrafter"]

ProgressFn = Callable[[int, int, str], None]
_KIND = "amortized-crafter-fit"


class FeatureCrafter(nn.Module):
    """``C``: features ``(N, C, h, w)`` -> a residual of the same shape.

    Two 3x3 convolutions of ``width`` channels (ReLU) and a 1x1 convolution
    back to ``C`` channels, initialised at zero so ``F + C(F) = F`` before
    training.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class AmortizedCrafter(CriticDefense):
    r"""Crafter amortized into a network: ``F' = Enc(X) + C(Enc(X))`` (module docstring).

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (kept for utility measurement).
        generator: the attacker's prior ``G`` used to train ``C`` (not needed to protect).
        amortizer: the attacker's amortizer, the inner solve's start (Default: None:
            a random start with ``inner_steps`` iterations).
        beta: utility weight, ``L_u = ||F' - Enc(X)||^2 / dim(F)`` (Default: 1.0).
        width: channels of ``C`` (Default: 64).
        steps: training steps on public batches (Default: 2000).
        batch_size: public faces per step (Default: 32).
        lr: Adam learning rate of ``C`` (Default: 1e-3, cosine-decayed).
        inner_steps: inversion iterations after ``Amor(F')`` per step (Default: 20).
        inner_lr, inner_momentum: the attacker's inversion step (Default: 5e-3, 0.9).
        critic_steps, critic_width, gp_weight, critic_lr: the persistent critic ``D'``
            (Defaults: 5, 64, 20, 5e-4).
        critic: an initial critic, copied at the start of :meth:`fit` and never modified;
            with ``critic_steps=0`` it stays fixed (Default: None: a fresh critic).
        solver, cg_iters, neumann_alpha, neumann_iters: the inverse-HVP
            (Default: ``"gn-cg"`` with 10 iterations).
        loss_scale: multiplies the surrogate loss before Adam (Default: 100, as Crafter).
        checkpoint_every: steps between resumable checkpoints of :meth:`fit` (Default: 50).
        seed: seeds ``C``'s initialisation, batches, critic and prior samples (Default: 0).
        crafter: an already trained ``C`` (e.g. loaded by the caller) (Default: None).

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

    persistent_critic = True

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
        if solver not in SOLVERS:
            raise ValueError(f"unknown IHVP solver {solver!r}; choose one of {SOLVERS}")
        for name, value in (
            ("steps", steps),
            ("batch_size", batch_size),
            ("width", width),
            ("checkpoint_every", checkpoint_every),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        check_number("beta", beta, low=0.0)
        for name, value in (
            ("lr", lr),
            ("inner_lr", inner_lr),
            ("critic_lr", critic_lr),
            ("neumann_alpha", neumann_alpha),
            ("loss_scale", loss_scale),
        ):
            check_number(name, value, low=0.0, low_open=True)
        check_number("inner_momentum", inner_momentum, low=0.0)
        check_number("gp_weight", gp_weight, low=0.0)
        check_number("width", width, low=1, high=MAX_WIDTH, integer=True)
        check_number("critic_width", critic_width, low=1, high=MAX_WIDTH, integer=True)
        self.generator = generator  # type: ignore[assignment]
        self.amortizer = amortizer
        self.beta = beta
        self.width = width
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_momentum = inner_momentum
        self.critic_steps = critic_steps
        self.critic_width = critic_width
        self.gp_weight = gp_weight
        self.critic_lr = critic_lr
        self.critic = critic
        self.solver = solver
        self.cg_iters = cg_iters
        self.neumann_alpha = neumann_alpha
        self.neumann_iters = neumann_iters
        self.loss_scale = loss_scale
        self.checkpoint_every = checkpoint_every
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

    def _new_crafter(self, channels: int, device: torch.device) -> FeatureCrafter:
        gen = make_generator(self.seed)
        return seeded_init(lambda: FeatureCrafter(channels, self.width), gen).to(device)

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "AmortizedCrafter":
        """Train ``C`` with the Crafter objective on public faces (resumable from ``checkpoint_stem``).

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
        if self.generator is None:
            raise ValueError("amortized-crafter needs the attacker's generator to be fitted")
        if public_images.dim() != 4 or public_images.shape[0] == 0:
            raise ValueError(
                f"expected public images (N, 3, S, S), got {tuple(public_images.shape)}"
            )
        if public_images.dtype != torch.uint8:
            validate_images(public_images)
        enc, gen, amor = self.encoder, self.generator, self.amortizer
        dev = self.device
        with torch.no_grad():
            probe = enc(self._floats(public_images[:1], dev))
        crafter = self._new_crafter(probe.shape[1], dev)
        opt = torch.optim.Adam(crafter.parameters(), lr=self.lr)
        seed_gen, gp_gen, _ = self._begin_call(dev)
        batch_gen = make_generator(self.seed + 1)
        critic: Optional[nn.Module] = None
        critic_opt: Optional[torch.optim.Optimizer] = None
        start = 0
        stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
        if stem is not None and checkpoint_exists(stem):
            # the critic and its optimiser are rebuilt, then loaded with the rest of the state
            critic, critic_opt = new_critic(
                public_images.shape[-1],
                self.critic_width,
                self.critic_lr,
                like=probe,
                seed_gen=seed_gen,
                init=self.critic,
            )
            extra, meta = load_state(
                stem,
                kind=_KIND,
                modules={"crafter": crafter, "critic": critic},
                optimizers={"crafter": opt, "critic": critic_opt},
                rng=batch_gen,
            )
            seed_gen.set_state(extra["seed_gen"].cpu())
            gp_gen.set_state(extra["gp_gen"].cpu())
            start = int(meta["step"])
            self.history = list(meta.get("history", []))
        n = public_images.shape[0]
        image_size = public_images.shape[-1]
        self.fit_trained = start < self.steps
        with frozen(enc, gen, amor):
            for step in range(start, self.steps):
                for g in opt.param_groups:
                    g["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
                idx = torch.randint(0, n, (min(self.batch_size, n),), generator=batch_gen)
                x = self._floats(public_images[idx], dev)
                with torch.no_grad():
                    f0 = enc(x)
                crafter.train()
                feat = f0 + crafter(f0)
                fd = feat.detach()
                with torch.no_grad():
                    z0 = (
                        amor(fd)
                        if amor is not None
                        else torch.randn(fd.shape[0], latent_dim_of(gen), generator=seed_gen).to(fd)
                    )
                z_star = invert_latent(
                    enc,
                    gen,
                    fd,
                    z0,
                    steps=self.inner_steps,
                    lr=self.inner_lr,
                    momentum=self.inner_momentum,
                )
                critic, critic_opt, d_prior, d_star, _, grad_p = self._privacy_round(
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
                )
                l_u = (feat - f0).flatten(1).pow(2).mean(dim=1).mean()
                # d/dtheta of this surrogate is (dL_p/dF')^T dF'/dtheta + beta dL_u/dtheta
                surrogate = (grad_p.detach() * feat).sum() + self.beta * l_u
                opt.zero_grad(set_to_none=True)
                (self.loss_scale * surrogate).backward()
                opt.step()
                self._record_step(
                    0,
                    step,
                    self.steps,
                    d_prior,
                    d_star,
                    l_u,
                    progress=progress,
                    desc="amortized crafter (training C)",
                )
                done = step + 1
                if stem is not None and (done % self.checkpoint_every == 0 or done == self.steps):
                    save_state(
                        stem,
                        kind=_KIND,
                        modules={"crafter": crafter, "critic": critic},
                        optimizers={"crafter": opt, "critic": critic_opt},
                        rng=batch_gen,
                        extra={"seed_gen": seed_gen.get_state(), "gp_gen": gp_gen.get_state()},
                        meta={"step": done, "history": self.history, "config": self.get_config()},
                    )
        self.crafter = crafter.eval()
        return self

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
