"""``facecraft bench steps``: seconds per optimisation step of a profile's foundation trainings.

The target classifier, the WGAN-GP prior and the amortizer of a
:class:`~facecraft.experiments.config.RunConfig`, each stepped on random data of the profile's
shapes; multiplied by the profile's step counts, a training's wall time on this machine.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as nnf

from facecraft.experiments.bench._shared import threads
from facecraft.models import (
    Amortizer,
    Critic,
    Generator,
    build_target,
    feature_shape,
    gradient_penalty,
)

__all__ = ["bench_train_steps"]


def bench_train_steps(
    cfg: Any,
    *,
    image_size: Optional[int] = None,
    num_outputs: int = 40,
    repeats: int = 5,
    num_threads: Optional[int] = None,
) -> Dict[str, float]:
    """Seconds per optimisation step of the three foundation trainings of ``cfg`` (a RunConfig), on
    random data of the profile's shapes: target (BCE step), prior (``n_critic`` critic steps with
    gradient penalty + one generator step) and amortizer. Mean over ``repeats`` after one warm-up
    step. Multiply by the profile's step counts to predict a training's wall time on this
    machine."""
    with threads(num_threads):
        steps = _TrainSteps(cfg, image_size or cfg.data.image_size, num_outputs)
        out: Dict[str, float] = {"threads": float(torch.get_num_threads())}
        for name, fn in (
            ("target", steps.target),
            ("prior", steps.prior),
            ("amortizer", steps.amortizer),
        ):
            fn()
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            out[f"{name}_s_per_step"] = (time.perf_counter() - t0) / repeats
        return out


class _TrainSteps:
    """The models of ``cfg``'s three foundation trainings (seeded) and one step of each on
    random data of image size ``s``."""

    def __init__(self, cfg: Any, s: int, num_outputs: int) -> None:
        m = cfg.model
        self.cfg, self.s, self.num_outputs, self.latent_dim = cfg, s, num_outputs, m.latent_dim
        torch.manual_seed(0)
        self.net = build_target(m.target_arch, num_outputs=num_outputs, width=m.target_width)
        self.g, self.d = Generator(m.latent_dim, s, m.generator_width), Critic(s, m.critic_width)
        self.amor = Amortizer(feature_shape(self.net.encoder, s), m.latent_dim, m.amortizer_width)
        self.opt_t = torch.optim.Adam(self.net.parameters())
        self.opt_g = torch.optim.Adam(self.g.parameters())
        self.opt_d = torch.optim.Adam(self.d.parameters())
        self.opt_a = torch.optim.Adam(self.amor.parameters())
        self.gp_gen = torch.Generator().manual_seed(0)

    def target(self) -> None:
        """One BCE step of the target on a random batch."""
        tb, s, k = self.cfg.target.batch_size, self.s, self.num_outputs
        x, y = torch.rand(tb, 3, s, s), (torch.rand(tb, k) > 0.5).float()
        loss = nnf.binary_cross_entropy_with_logits(self.net(x), y)
        self.opt_t.zero_grad()
        loss.backward()
        self.opt_t.step()

    def prior(self) -> None:
        """``n_critic`` WGAN-GP critic steps, then one generator step."""
        pb, s, zd, prior = self.cfg.prior.batch_size, self.s, self.latent_dim, self.cfg.prior
        g, d = self.g, self.d
        for _ in range(prior.n_critic):
            real = torch.rand(pb, 3, s, s)
            with torch.no_grad():
                fake = g(torch.randn(pb, zd))
            loss = (
                d(fake).mean()
                - d(real).mean()
                + prior.gp_weight * gradient_penalty(d, real, fake, self.gp_gen)
            )
            self.opt_d.zero_grad()
            loss.backward()
            self.opt_d.step()
        loss = -d(g(torch.randn(pb, zd))).mean()
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()

    def amortizer(self) -> None:
        """One MSE step of ``Amor(Enc(G(z))) -> z`` on random latents."""
        z = torch.randn(self.cfg.amortizer.batch_size, self.latent_dim)
        with torch.no_grad():
            f = self.net.encoder(self.g(z))
        loss = nnf.mse_loss(self.amor(f), z)
        self.opt_a.zero_grad()
        loss.backward()
        self.opt_a.step()
