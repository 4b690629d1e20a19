"""Training the amortizer ``Amor(Enc(G(z))) -> z`` on random latents (CRAFTER.md section 2)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from facecraft._io import checkpoint_exists
from facecraft._torchutils import frozen, make_generator
from facecraft.models.train._loop import (
    PathLike,
    ProgressFn,
    finish,
    load_partial,
    load_weights,
    save_partial,
)

__all__ = ["train_amortizer"]


def train_amortizer(
    amortizer: nn.Module,
    encoder: nn.Module,
    generator: nn.Module,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    device: torch.device,
    seed: int = 0,
    checkpoint_stem: PathLike,
    progress: Optional[ProgressFn] = None,
    meta: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train ``Amor(Enc(G(z))) -> z`` on random latents (CRAFTER.md section 2).

    Encoder and generator are frozen; the loss is latent MSE. Partial
    checkpoints every 10% of the steps.
    """
    stem = Path(checkpoint_stem)
    amortizer.to(device)
    if checkpoint_exists(stem):
        return load_weights(amortizer, stem, kind="amortizer", device=device)
    opt = torch.optim.Adam(amortizer.parameters(), lr=lr)
    rng = make_generator(seed)
    state = load_partial(
        stem, {"amortizer": amortizer}, {"amortizer": opt}, rng, "amortizer", device
    )
    start = state["step"] if state else 0
    every = max(1, steps // 10)
    t0 = time.time()
    loss_v = float("nan")
    amortizer.train()
    with frozen(encoder, generator):
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
            with torch.no_grad():
                feats = encoder(generator(z))
            loss = F.mse_loss(amortizer(feats), z)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = loss.item()
            if progress:
                progress(step + 1, steps, f"amortizer (loss {loss_v:.3f})")
            if (step + 1) % every == 0 and step + 1 < steps:
                save_partial(
                    stem, {"amortizer": amortizer}, {"amortizer": opt}, rng, step + 1, "amortizer"
                )
    amortizer.eval()
    record = {
        "step": steps,
        "train_seconds": time.time() - t0,
        "metrics": {"latent_mse": loss_v},
        **(meta or {}),
    }
    finish(stem, amortizer, "amortizer", record)
    return record
