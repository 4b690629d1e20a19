"""Shared fixtures: devices, seeded generators, tiny models and the shared data root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from facecraft.models import Critic, Generator, build_target

REPO = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path:
    env = os.environ.get("FACECRAFT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the whole suite (restored afterwards).

    The test models are tiny, and on a 2-core machine shared with other jobs two
    OpenMP threads ran small convolutions with double backward 25-40x slower than one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$FACECRAFT_DATA``); skips when the real data is absent."""
    root = _shared_data_root()
    if not (root / "celeba-chips" / "identity_CelebA.txt").exists():
        pytest.skip(f"real face data not found under {root}")
    return root


@pytest.fixture(scope="module", params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture()
def gen() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(0)
    return g


@pytest.fixture()
def tiny_target() -> torch.nn.Module:
    """A split ResNet-18 at quarter width for 32x32 images (feature 16x8x8), 4 outputs."""
    torch.manual_seed(0)
    return build_target("resnet18", num_outputs=4, width=0.25).eval()


@pytest.fixture()
def tiny_gan() -> tuple:
    """A WGAN-GP generator (latent 16) and critic for 32x32 images, width 8."""
    torch.manual_seed(0)
    return Generator(16, 32, width=8).eval(), Critic(32, width=8).eval()
