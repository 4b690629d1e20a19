"""The attacker's face prior: a WGAN-GP generator and critic (CRAFTER.md section 4).

Generator: ``Linear(zd, 4w*8*8)`` + BN + ReLU, then 5x5 stride-2 transposed
convolutions with BN + ReLU up to the image size, then a sigmoid, so outputs
are images in [0, 1]. Critic: 5x5 stride-2 convolutions (instance norm,
LeakyReLU 0.2) from ``w`` channels doubling to at most ``8w``, down to 4x4,
then a 4x4 convolution to one score.

References:
    Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017,
    https://arxiv.org/abs/1704.00028.

Note:
    With ``width=64`` and 64x64 images these are the published shapes. Larger
    images add one upsampling (generator) or downsampling (critic) stage per
    doubling instead of enlarging the first linear layer.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

__all__ = ["Generator", "Critic", "gradient_penalty"]


def _stages(image_size: int, base: int) -> int:
    n = math.log2(image_size / base)
    if n < 1 or n != int(n):
        raise ValueError(
            f"image size must be {base} times a power of two (>= {2 * base}), got {image_size}"
        )
    return int(n)


class Generator(nn.Module):
    """``G(z)``: latent ``(N, zd)`` -> images ``(N, 3, S, S)`` in [0, 1].

    Args:
        latent_dim: ``zd`` (500 for CelebA in the paper).
        image_size: ``S``, 8 times a power of two.
        width: base channel count ``w`` (64 in the paper).
    """

    def __init__(self, latent_dim: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        n = _stages(image_size, 8)
        c0 = width * 4
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, c0 * 8 * 8, bias=False), nn.BatchNorm1d(c0 * 8 * 8), nn.ReLU(True)
        )
        self.c0 = c0
        mods: List[nn.Module] = []
        c = c0
        for i in range(n - 1):
            cn = max(width, c // 2)
            mods += [
                nn.ConvTranspose2d(c, cn, 5, 2, 2, output_padding=1, bias=False),
                nn.BatchNorm2d(cn),
                nn.ReLU(True),
            ]
            c = cn
        mods += [nn.ConvTranspose2d(c, 3, 5, 2, 2, output_padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], self.c0, 8, 8))


class Critic(nn.Module):
    """``D(x)``: images ``(N, 3, S, S)`` in [0, 1] -> scores ``(N,)``.

    Args:
        image_size: ``S``, 4 times a power of two.
        width: channels of the first convolution (64 in the paper).
    """

    def __init__(self, image_size: int, width: int = 64) -> None:
        super().__init__()
        n = _stages(image_size, 4)
        mods: List[nn.Module] = []
        c_in, c = 3, width
        for i in range(n):
            mods.append(nn.Conv2d(c_in, c, 5, 2, 2))
            if i > 0:
                mods.append(nn.InstanceNorm2d(c, affine=True))
            mods.append(nn.LeakyReLU(0.2, True))
            c_in, c = c, min(c * 2, width * 8)
        mods.append(nn.Conv2d(c_in, 1, 4))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0).view(x.shape[0])


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates.

    Gulrajani et al., eq. 3.

    Args:
        critic: the critic ``D``.
        real: real images ``(N, 3, S, S)``.
        fake: generated images of the same shape (detached by the caller or not).
        generator: optional ``torch.Generator`` for the interpolation weights.

    Returns:
        A scalar tensor, differentiable w.r.t. the critic's parameters.
    """
    if generator is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    else:  # a CPU generator keeps runs reproducible on any device
        eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
