"""Helpers shared by the attack tests: tiny, well-conditioned models on 32x32 images.

Freshly initialised networks in eval mode use batch-norm statistics of
(0, 1), which makes a random generator's images nearly constant and the
inversion problem degenerate. ``calibrate`` sets each batch-norm layer's
running statistics from one pass over representative inputs, so images and
features have realistic spread and inversion tests mean something.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from facecraft.models import Generator, build_target

LATENT = 16
SIZE = 32


def calibrate(module: nn.Module, inputs: torch.Tensor) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over this one pass
    module.train()
    with torch.no_grad():
        module(inputs)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    module.eval()


def calibrated_pair(seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """``(Enc, G)``: quarter-width split ResNet-18 encoder (feature 16x8x8), width-8 generator."""
    torch.manual_seed(seed)
    enc = build_target("resnet18", num_outputs=4, width=0.25).encoder
    gen = Generator(LATENT, SIZE, width=8)
    calibrate(gen, torch.randn(128, LATENT))
    with torch.no_grad():
        imgs = gen(torch.randn(128, LATENT))
    calibrate(enc, imgs)
    return enc.eval(), gen.eval()


def grads_are_none(*modules: nn.Module) -> bool:
    return all(p.grad is None for m in modules for p in m.parameters())
