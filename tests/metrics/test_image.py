"""Tests of facecraft.metrics.image (SSIM, PSNR)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from facecraft.metrics import psnr, ssim


@pytest.fixture()
def xy(gen: torch.Generator) -> tuple:
    x = torch.rand(3, 3, 32, 32, generator=gen)
    y = torch.rand(3, 3, 32, 32, generator=gen)
    return x, y


# ---------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one(xy: tuple, device: torch.device) -> None:
    x = xy[0].to(device)
    assert torch.allclose(ssim(x, x), torch.tensor(1.0, device=device), atol=1e-5)


def test_ssim_symmetric_and_bounded(xy: tuple) -> None:
    x, y = xy
    a, b = ssim(x, y, reduction="none"), ssim(y, x, reduction="none")
    assert a.shape == (3,)
    assert torch.allclose(a, b, atol=1e-6)
    assert bool((a <= 1).all()) and bool((a >= -1).all())
    assert float(a.max()) < 0.5  # independent noise is dissimilar


def test_ssim_decreases_with_noise(gen: torch.Generator) -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen)
    small = (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    large = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert float(ssim(x, small)) > float(ssim(x, large))


@pytest.mark.parametrize("size", [3, 4, 7, 10, 16])
def test_ssim_small_images(size: int, gen: torch.Generator) -> None:
    x = torch.rand(2, 3, size, size, generator=gen)
    assert torch.allclose(ssim(x, x), torch.tensor(1.0), atol=1e-5)
    y = torch.rand(2, 3, size, size, generator=gen)
    assert float(ssim(x, y)) < 1.0


def test_ssim_too_small_raises() -> None:
    x = torch.rand(1, 3, 2, 2)
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim(x, x)


def test_ssim_reductions(xy: tuple) -> None:
    x, y = xy
    per = ssim(x, y, reduction="none")
    assert torch.allclose(ssim(x, y, reduction="mean"), per.mean())
    assert torch.allclose(ssim(x, y, reduction="sum"), per.sum())
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, y, reduction="max")


def test_ssim_data_range_rescaling(xy: tuple) -> None:
    x, y = xy
    assert torch.allclose(ssim(x, y), ssim(x * 255, y * 255, data_range=255.0), atol=1e-5)
    with pytest.raises(ValueError, match=r"values in \[0.0, 1.0\]"):
        ssim(x * 255, y * 255)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(dtype: torch.dtype, xy: tuple) -> None:
    x, y = (t.to(dtype) for t in xy)
    assert ssim(x, y).dtype == dtype
    assert psnr(x, y).dtype == dtype


@pytest.mark.parametrize(
    "shape_x, shape_y",
    [
        s
        for s in itertools.product(
            [(2, 3, 16, 16), (2, 3, 16, 8), (1, 3, 16, 16), (2, 1, 16, 16)], repeat=2
        )
        if s[0] != s[1]
    ],
)
def test_shape_mismatch_raises(shape_x: tuple, shape_y: tuple) -> None:
    with pytest.raises(ValueError, match="expected shape"):
        ssim(torch.rand(shape_x), torch.rand(shape_y))
    with pytest.raises(ValueError, match="expected shape"):
        psnr(torch.rand(shape_x), torch.rand(shape_y))


def test_bad_inputs_raise() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ssim(x.numpy(), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimensions"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0.0)


def test_ssim_gradient_finite(xy: tuple) -> None:
    x, y = xy
    x = x.clone().requires_grad_(True)
    (1 - ssim(x, y)).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


# ---------------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf(xy: tuple) -> None:
    x = xy[0]
    assert math.isinf(float(psnr(x, x)))


def test_psnr_hand_computed() -> None:
    x = torch.zeros(2, 1, 4, 4)
    y = torch.zeros(2, 1, 4, 4)
    y[0] = 0.1  # MSE 0.01 -> 20 dB
    y[1, 0, 0, :] = 0.5  # MSE 4 * 0.25 / 16 = 0.0625 -> 10 log10(16) dB
    values = psnr(x, y, reduction="none")
    assert torch.allclose(values, torch.tensor([20.0, 10 * math.log10(16.0)]), atol=1e-4)
    assert torch.allclose(
        psnr(x * 255, y * 255, data_range=255.0, reduction="none"), values, atol=1e-3
    )
    assert torch.allclose(psnr(x, y, reduction="sum"), values.sum(), atol=1e-4)
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, y, reduction="avg")


def test_psnr_symmetric(xy: tuple) -> None:
    x, y = xy
    assert torch.allclose(psnr(x, y), psnr(y, x))
