"""Tests of facecraft.metrics.pii (epsilon-PII with a WGAN-GP critic, exact EMD with POT)."""

from __future__ import annotations

import pytest
import torch

from facecraft.metrics import epsilon_pii, exact_emd

FAST = {"critic_width": 8, "steps": 100, "batch_size": 32, "lr": 2e-3}
HALF = (16 * 16 // 2) * 3  # pixels in the left half of a 3x16x16 image


def _images(gen: torch.Generator, n: int, shift: float = 0.0) -> torch.Tensor:
    """Random images in [0.3, 0.5], their left half brightened by ``shift`` (no clamping needed).

    Adding a fixed pattern ``t`` translates the distribution, so the true EMD is
    ``||t|| = shift * sqrt(HALF)``. (A spatially uniform brightness shift would
    be a poor probe: the critic's instance norms remove per-channel means.)
    """
    x = 0.3 + 0.2 * torch.rand(n, 3, 16, 16, generator=gen)
    x[..., :, :8] += shift
    return x


def test_epsilon_pii_same_vs_shifted() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = _images(g, 128), _images(g, 128)
    small, large = _images(g, 128, 0.1), _images(g, 128, 0.3)
    same = epsilon_pii(a, b, generator=torch.Generator().manual_seed(1), **FAST)
    eps_small = epsilon_pii(small, b, generator=torch.Generator().manual_seed(1), **FAST)
    eps_large = epsilon_pii(large, b, generator=torch.Generator().manual_seed(1), **FAST)
    assert torch.is_tensor(same) and same.shape == ()
    # true EMDs: 0, 0.1 * sqrt(384) ~ 1.96 and 0.3 * sqrt(384) ~ 5.88
    assert abs(float(same)) < 0.3
    assert float(eps_small) > 0.8
    assert float(eps_large) > float(eps_small) + 2.0
    assert (
        float(eps_large) < 0.3 * HALF**0.5 * 1.1
    )  # a (softly) 1-Lipschitz critic stays below the EMD


def test_epsilon_pii_deterministic_and_progress() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = _images(g, 16), _images(g, 16, 0.2)
    calls = []
    kw = {"critic_width": 8, "steps": 5, "batch_size": 8}
    v1 = epsilon_pii(
        a, b, generator=torch.Generator().manual_seed(3), progress=lambda *c: calls.append(c), **kw
    )
    v2 = epsilon_pii(a, b, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(v1, v2)
    assert len(calls) == 5 and calls[-1][:2] == (5, 5)
    v3 = epsilon_pii(a, b, holdout=False, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.isfinite(v3)


def test_epsilon_pii_validation() -> None:
    a = torch.rand(4, 3, 16, 16)
    with pytest.raises(ValueError, match="same image shape"):
        epsilon_pii(a, torch.rand(4, 3, 32, 32), steps=1)
    with pytest.raises(ValueError, match="at least 2"):
        epsilon_pii(a[:1], a, steps=1)
    with pytest.raises(ValueError, match="steps"):
        epsilon_pii(a, a, steps=0)
    with pytest.raises(ValueError, match="image size must be"):
        epsilon_pii(torch.rand(4, 3, 12, 12), torch.rand(4, 3, 12, 12), steps=1)


def test_exact_emd_identical_and_translated(gen: torch.Generator) -> None:
    a = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    assert float(exact_emd(a, a)) == pytest.approx(0.0, abs=1e-9)
    t = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5], dtype=torch.float64)
    b = (a + t)[torch.randperm(20, generator=gen)]
    assert float(exact_emd(a, b)) == pytest.approx(float(t.norm()), rel=1e-9)
    assert float(exact_emd(b, a)) == pytest.approx(float(t.norm()), rel=1e-9)


def test_exact_emd_hand_case_and_dtype() -> None:
    a = torch.tensor([[0.0], [1.0]])
    b = torch.tensor([[0.0], [0.0], [3.0], [3.0]])  # mass 1/2 at 0 and 1/2 at 3
    # optimal: 0 -> 0 (cost 0), 1 -> 3 (cost 2), each weight 1/2 -> 1.0
    v = exact_emd(a, b)
    assert v.dtype == torch.float32 and float(v) == pytest.approx(1.0, abs=1e-6)
    imgs = torch.rand(3, 3, 4, 4)
    assert float(exact_emd(imgs, imgs)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same point shape"):
        exact_emd(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="same dtype"):
        exact_emd(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))


def test_exact_emd_gradient() -> None:
    a = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.ones(4, 2, dtype=torch.float64)
    exact_emd(a, b).backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())
