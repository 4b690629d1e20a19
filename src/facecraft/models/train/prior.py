"""Training the attacker's face prior as a WGAN-GP on public images (CRAFTER.md section 2).

References:
    Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017,
    https://arxiv.org/abs/1704.00028.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from facecraft._io import checkpoint_exists
from facecraft._torchutils import eval_mode, frozen, make_generator
from facecraft.models.gan import gradient_penalty
from facecraft.models.train._loop import (
    PathLike,
    ProgressFn,
    check_images,
    finish,
    load_partial,
    load_weights,
    random_flip,
    save_partial,
    to_float,
)

__all__ = ["train_wgan_gp"]


def train_wgan_gp(
    generator: nn.Module,
    critic: nn.Module,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    n_critic: int = 5,
    gp_weight: float = 10.0,
    lr: float = 1e-4,
    betas=(0.5, 0.9),
    sample_every: int = 1000,
    device: torch.device,
    seed: int = 0,
    checkpoint_stem: PathLike,
    progress: Optional[ProgressFn] = None,
    meta: Optional[Dict[str, Any]] = None,
    on_sample: Optional[Callable[[torch.Tensor, int], None]] = None,
) -> Dict[str, Any]:
    """Train the attacker's face prior as a WGAN-GP on public images (CRAFTER.md section 2).

    ``n_critic`` critic steps (Adam, gradient penalty ``gp_weight``, Gulrajani
    et al. eq. 3) per generator step. Generator and critic are saved together
    (keys ``generator.*`` and ``critic.*``); a partial checkpoint every
    ``sample_every`` generator steps, when ``on_sample(samples, step)`` is also
    called with 64 images from a fixed latent batch.

    Returns:
        The final checkpoint's metadata, with the last critic EMD estimate.
    """
    check_images(images)
    stem = Path(checkpoint_stem)
    generator.to(device)
    critic.to(device)
    pair = _Pair(generator, critic)
    if checkpoint_exists(stem):
        return load_weights(pair, stem, kind="prior", device=device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=tuple(betas))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=tuple(betas))
    rng = make_generator(seed)
    fixed_z = torch.randn(64, generator.latent_dim, generator=make_generator(seed + 1)).to(device)
    modules = {"generator": generator, "critic": critic}
    opts = {"g": opt_g, "d": opt_d}
    state = load_partial(stem, modules, opts, rng, "prior", device)
    start = state["step"] if state else 0
    t0 = time.time()
    emd = float("nan")
    pair.train()  # generator and critic
    for step in range(start, steps):
        for _ in range(n_critic):
            emd = _critic_step(generator, critic, opt_d, images, rng, batch_size, gp_weight, device)
        _generator_step(generator, critic, opt_g, rng, batch_size, device)
        if progress:
            progress(step + 1, steps, f"prior (EMD {emd:.3f})")
        if (step + 1) % sample_every == 0 or step + 1 == steps:
            if on_sample:
                with eval_mode(generator), torch.no_grad():
                    on_sample(generator(fixed_z).cpu(), step + 1)
            if step + 1 < steps:
                save_partial(stem, modules, opts, rng, step + 1, "prior", {"emd": emd})
    pair.eval()
    record = {
        "step": steps,
        "train_seconds": time.time() - t0,
        "metrics": {"critic_emd": emd},
        "latent_dim": generator.latent_dim,
        **(meta or {}),
    }
    finish(stem, pair, "prior", record)
    return record


def _critic_step(
    generator: nn.Module,
    critic: nn.Module,
    opt_d: torch.optim.Optimizer,
    images: torch.Tensor,
    rng: torch.Generator,
    batch_size: int,
    gp_weight: float,
    device: torch.device,
) -> float:
    """One critic step on a flipped real batch and a generated one; returns the EMD estimate."""
    idx = torch.randint(0, images.shape[0], (batch_size,), generator=rng)
    real = to_float(random_flip(images[idx], rng), device)
    z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
    with torch.no_grad():
        fake = generator(z)
    d_real, d_fake = critic(real).mean(), critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, rng)
    loss_d = d_fake - d_real + gp_weight * gp
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return (d_real - d_fake).item()


def _generator_step(
    generator: nn.Module,
    critic: nn.Module,
    opt_g: torch.optim.Optimizer,
    rng: torch.Generator,
    batch_size: int,
    device: torch.device,
) -> None:
    """One generator step against the frozen critic (kept in training mode, as in its steps)."""
    z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
    with frozen(critic):
        critic.train()
        loss_g = -critic(generator(z)).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


class _Pair(nn.Module):
    """Generator and critic saved as one checkpoint."""

    def __init__(self, generator: nn.Module, critic: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.critic = critic
