"""Resumable training loops for the target network, the WGAN-GP prior and the amortizer.

Every loop keeps its progress in a *partial* checkpoint (weights, optimizer
state, RNG state and step) written atomically at regular points, and writes
the final checkpoint (weights + JSON metadata with metrics) when done. Run
again after a kill, a loop continues from its last partial checkpoint; run
again after it finished, it just loads the result. With the same seed an
interrupted-and-resumed run gives the same weights as an uninterrupted one.

References:
    CRAFTER.md sections 1-2 and 4; Gulrajani et al., "Improved Training of
    Wasserstein GANs", NeurIPS 2017, https://arxiv.org/abs/1704.00028.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from facecraft._io import (
    checkpoint_exists,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from facecraft._torchutils import eval_mode, frozen, make_generator

__all__ = [
    "train_target",
    "train_wgan_gp",
    "train_amortizer",
    "train_head",
    "load_weights",
    "predict_logits",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
PathLike = Union[str, Path]


def load_weights(
    module: nn.Module, stem: PathLike, *, kind: str, device: Union[str, torch.device] = "cpu"
) -> Dict[str, Any]:
    """Load a final checkpoint written by a loop here into ``module``; returns its metadata."""
    tensors, meta = load_checkpoint(stem, kind=kind, keys=set(module.state_dict()), device=device)
    module.load_state_dict(tensors)
    return meta


def _partial(stem: Path) -> Path:
    return stem.with_name(stem.name + ".partial")


def _save_partial(
    stem: Path,
    modules: Mapping[str, nn.Module],
    opts: Mapping[str, torch.optim.Optimizer],
    rng: torch.Generator,
    step: int,
    kind: str,
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    tensors: Dict[str, torch.Tensor] = {}
    groups: Dict[str, Any] = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    for name, o in opts.items():
        t, g = optimizer_to_tensors(o, f"opt_{name}")
        tensors.update(t)
        groups[name] = g
    tensors["rng_state"] = rng.get_state()
    save_checkpoint(
        _partial(stem),
        tensors,
        kind=kind + "-partial",
        meta={"step": step, "optimizers": groups, **(extra or {})},
    )


def _load_partial(
    stem: Path,
    modules: Mapping[str, nn.Module],
    opts: Mapping[str, torch.optim.Optimizer],
    rng: torch.Generator,
    kind: str,
    device: torch.device,
) -> Optional[Dict[str, Any]]:
    p = _partial(stem)
    if not checkpoint_exists(p):
        return None
    tensors, meta = load_checkpoint(p, kind=kind + "-partial", device=device)
    for name, m in modules.items():
        prefix = name + "."
        m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, o in opts.items():
        optimizer_from_tensors(o, tensors, meta["optimizers"][name], f"opt_{name}")
    rng.set_state(tensors["rng_state"].cpu())
    log.info("resuming %s from step %d", stem, meta["step"])
    return meta


def _finish(stem: Path, module: nn.Module, kind: str, meta: Dict[str, Any]) -> None:
    save_checkpoint(stem, module.state_dict(), kind=kind, meta=meta)
    for suffix in (".safetensors", ".json"):
        (stem.parent / (_partial(stem).name + suffix)).unlink(missing_ok=True)


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, S, S), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("no training images")


def _to_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch.to(device, non_blocking=True).float().div_(255.0)


def _flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=rng) < 0.5
    x = x.clone()
    x[mask] = x[mask].flip(-1)
    return x


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """``model`` applied to uint8 images in eval mode, in batches; logits on the CPU."""
    outs = []
    with eval_mode(model):
        for i in range(0, images.shape[0], batch_size):
            outs.append(model(_to_float(images[i : i + batch_size], device)).float().cpu())
    return torch.cat(outs)


def train_target(
    model: nn.Module,
    images: torch.Tensor,
    attributes: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    augment_flip: bool = True,
    device: torch.device,
    seed: int = 0,
    checkpoint_stem: PathLike,
    progress: Optional[ProgressFn] = None,
    meta: Optional[Dict[str, Any]] = None,
    evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
) -> Dict[str, Any]:
    """Train the split target network on public images with BCE over attributes (CRAFTER.md section 1).

    AdamW with a cosine learning-rate schedule; a partial checkpoint after
    every epoch.

    Args:
        model: the :class:`~facecraft.models.SplitNetwork` (trained in place).
        images: uint8 ``(N, 3, S, S)`` public images.
        attributes: ``(N, A)`` targets in {0, 1}.
        epochs, batch_size, lr, weight_decay, augment_flip: optimisation settings.
        device: where to train.
        seed: seeds batch order and augmentation.
        checkpoint_stem: final checkpoint path without suffix.
        progress: ``progress(done, total, desc)``.
        meta: extra JSON metadata (config, data manifest hash).
        evaluate: called with the trained model; its metrics go into the metadata.

    Returns:
        The final checkpoint's metadata (``metrics`` included).
    """
    _check_images(images)
    if attributes.shape[0] != images.shape[0]:
        raise ValueError(f"{attributes.shape[0]} attribute rows for {images.shape[0]} images")
    stem = Path(checkpoint_stem)
    model.to(device)
    if checkpoint_exists(stem):
        return load_weights(model, stem, kind="target", device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    state = _load_partial(stem, {"model": model}, {"model": opt}, rng, "target", device)
    start = state["step"] if state else 0
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    t0 = time.time()
    targets = attributes.float()
    model.train()
    for epoch in range(start, epochs):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        perm = torch.randperm(n, generator=rng)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = images[idx]
            if augment_flip:
                x = _flip(x, rng)
            logits = model(_to_float(x, device))
            loss = F.binary_cross_entropy_with_logits(logits, targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            if progress:
                progress(
                    epoch * steps_per_epoch + b + 1, total, f"target epoch {epoch + 1}/{epochs}"
                )
        log.info("target epoch %d: loss %.4f", epoch + 1, running / steps_per_epoch)
        _save_partial(
            stem,
            {"model": model},
            {"model": opt},
            rng,
            epoch + 1,
            "target",
            {"last_loss": running / steps_per_epoch},
        )
    model.eval()
    metrics = dict(evaluate(model)) if evaluate else {}
    record = {
        "arch": getattr(model, "arch", None),
        "step": epochs,
        "train_seconds": time.time() - t0,
        "metrics": metrics,
        **(meta or {}),
    }
    _finish(stem, model, "target", record)
    return record


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
    from facecraft.models.gan import gradient_penalty

    _check_images(images)
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
    state = _load_partial(
        stem,
        {"generator": generator, "critic": critic},
        {"g": opt_g, "d": opt_d},
        rng,
        "prior",
        device,
    )
    start = state["step"] if state else 0
    n = images.shape[0]
    t0 = time.time()
    emd = float("nan")
    generator.train()
    critic.train()
    for step in range(start, steps):
        for _ in range(n_critic):
            idx = torch.randint(0, n, (batch_size,), generator=rng)
            real = _to_float(_flip(images[idx], rng), device)
            z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
            with torch.no_grad():
                fake = generator(z)
            d_real, d_fake = critic(real).mean(), critic(fake).mean()
            gp = gradient_penalty(critic, real, fake, rng)
            loss_d = d_fake - d_real + gp_weight * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            emd = (d_real - d_fake).item()
        z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
        with frozen(critic):
            critic.train()
            loss_g = -critic(generator(z)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if progress:
            progress(step + 1, steps, f"prior (EMD {emd:.3f})")
        if (step + 1) % sample_every == 0 or step + 1 == steps:
            if on_sample:
                with eval_mode(generator), torch.no_grad():
                    on_sample(generator(fixed_z).cpu(), step + 1)
            if step + 1 < steps:
                _save_partial(
                    stem,
                    {"generator": generator, "critic": critic},
                    {"g": opt_g, "d": opt_d},
                    rng,
                    step + 1,
                    "prior",
                    {"emd": emd},
                )
    generator.eval()
    critic.eval()
    record = {
        "step": steps,
        "train_seconds": time.time() - t0,
        "metrics": {"critic_emd": emd},
        "latent_dim": generator.latent_dim,
        **(meta or {}),
    }
    _finish(stem, pair, "prior", record)
    return record


class _Pair(nn.Module):
    """Generator and critic saved as one checkpoint."""

    def __init__(self, generator: nn.Module, critic: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.critic = critic


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
    state = _load_partial(
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
                _save_partial(
                    stem, {"amortizer": amortizer}, {"amortizer": opt}, rng, step + 1, "amortizer"
                )
    amortizer.eval()
    record = {
        "step": steps,
        "train_seconds": time.time() - t0,
        "metrics": {"latent_mse": loss_v},
        **(meta or {}),
    }
    _finish(stem, amortizer, "amortizer", record)
    return record


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()  # type: ignore[operator]


def train_head(
    head: nn.Module,
    features: torch.Tensor,
    attributes: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: torch.device,
    seed: int = 0,
) -> nn.Module:
    """The training scenario (CRAFTER.md section 1): a cloud head trained on released features only.

    The encoder stays fixed; a copy of ``head`` is re-initialised (same
    architecture, fresh weights from ``seed``) and trained with BCE over the
    attributes on ``features`` (e.g. a defence's release of the private
    training images), AdamW with a cosine schedule. Short enough to need no
    checkpoints.

    Args:
        head: the cloud head whose architecture is copied (left unchanged).
        features: released features ``(N, *F)``.
        attributes: ``(N, A)`` targets in {0, 1}.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        device: where to train.
        seed: seeds the initialisation and the batch order.

    Returns:
        The trained copy, in eval mode.
    """
    if features.shape[0] != attributes.shape[0] or features.shape[0] == 0:
        raise ValueError(
            f"train_head needs one attribute row per feature, got {features.shape[0]} features "
            f"and {attributes.shape[0]} rows"
        )
    if epochs <= 0 or batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    model = copy.deepcopy(head).to(device)
    _reset(model)
    for q in model.parameters():
        q.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = make_generator(seed)
    n = features.shape[0]
    targets = attributes.float()
    model.train()
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        perm = torch.randperm(n, generator=rng)
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            if idx.numel() < 2 and n >= 2:  # a batch of one breaks batch norm
                continue
            loss = F.binary_cross_entropy_with_logits(
                model(features[idx].to(device)), targets[idx].to(device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
