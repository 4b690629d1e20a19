"""Fixtures for the attack tests (helpers live in ``_attack_helpers``)."""

from __future__ import annotations

from typing import Tuple

import pytest
import torch
from torch import nn

from ._attack_helpers import LATENT, calibrated_pair


@pytest.fixture()
def enc_gen() -> Tuple[nn.Module, nn.Module]:
    return calibrated_pair(0)


@pytest.fixture()
def public_images(enc_gen) -> torch.Tensor:
    """32 'public faces': generator samples with a little pixel noise, in [0, 1]."""
    _, gen = enc_gen
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        x = gen(torch.randn(32, LATENT, generator=g))
    return (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
