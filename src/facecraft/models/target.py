"""The split target network: an edge encoder and a cloud head (CRAFTER.md section 4).

``Enc`` runs on the device and releases ``F = Enc(X)``; the head ``f`` runs in
the cloud. ResNet-18 is split after ``layer1`` (feature 64 x H/4 x W/4) and
VGG16 after its second conv block (128 x H/4 x W/4).

Note:
    Written from the architecture descriptions in He et al., "Deep Residual
    Learning for Image Recognition", CVPR 2016, and Simonyan & Zisserman,
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015. Inputs are images in [0, 1]; the encoder normalises them to
    [-1, 1] itself, so every caller passes the same range. VGG16 gets batch
    norm (trainable from scratch); ``width`` scales every channel count
    (1.0 is the published network).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

__all__ = ["SplitNetwork", "build_target", "feature_shape", "TARGET_ARCHS"]

TARGET_ARCHS = ("resnet18", "vgg16")


def _ch(c: int, width: float) -> int:
    return max(8, int(round(c * width)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1))


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0


class SplitNetwork(nn.Module):
    """An encoder ``Enc`` (edge) followed by a head ``f`` (cloud): ``f(Enc(x))``.

    Args:
        encoder: maps images ``(N, 3, H, W)`` in [0, 1] to features ``(N, *F)``.
        head: maps features to ``num_outputs`` logits.
        arch: architecture name, recorded in checkpoints.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, arch: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _resnet18(num_outputs: int, width: float) -> Tuple[nn.Module, nn.Module]:
    c = [_ch(v, width) for v in (64, 128, 256, 512)]
    encoder = nn.Sequential(
        _Normalize(),
        nn.Conv2d(3, c[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(c[0]),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        _layer(c[0], c[0], 1),
    )
    head = nn.Sequential(
        _layer(c[0], c[1], 2),
        _layer(c[1], c[2], 2),
        _layer(c[2], c[3], 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c[3], num_outputs),
    )
    return encoder, head


def _vgg_block(cin: int, cout: int, n: int) -> List[nn.Module]:
    mods: List[nn.Module] = []
    for i in range(n):
        mods += [
            nn.Conv2d(cin if i == 0 else cout, cout, 3, 1, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    mods.append(nn.MaxPool2d(2))
    return mods


def _vgg16(num_outputs: int, width: float) -> Tuple[nn.Module, nn.Module]:
    c = [_ch(v, width) for v in (64, 128, 256, 512, 512)]
    encoder = nn.Sequential(_Normalize(), *_vgg_block(3, c[0], 2), *_vgg_block(c[0], c[1], 2))
    head = nn.Sequential(
        *_vgg_block(c[1], c[2], 3),
        *_vgg_block(c[2], c[3], 3),
        *_vgg_block(c[3], c[4], 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c[4], _ch(512, width)),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(_ch(512, width), num_outputs),
    )
    return encoder, head


def build_target(arch: str, *, num_outputs: int, width: float = 1.0) -> SplitNetwork:
    """Build the split target network.

    Args:
        arch: ``"resnet18"`` (split after ``layer1``) or ``"vgg16"`` (after block 2).
        num_outputs: logits of the head (40 for CelebA attributes).
        width: channel multiplier (1.0 = published widths).

    Returns:
        A :class:`SplitNetwork`; any square input size divisible by 32 works.
    """
    if arch == "resnet18":
        enc, head = _resnet18(num_outputs, width)
    elif arch == "vgg16":
        enc, head = _vgg16(num_outputs, width)
    else:
        raise ValueError(f"unknown target architecture {arch!r}; choose one of {TARGET_ARCHS}")
    return SplitNetwork(enc, head, arch)


@torch.no_grad()
def feature_shape(encoder: nn.Module, image_size: int) -> Tuple[int, ...]:
    """The feature shape ``F`` (without batch) that ``encoder`` gives for square images."""
    p = next(encoder.parameters())
    was = encoder.training
    encoder.eval()
    out = encoder(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    encoder.train(was)
    return tuple(out.shape[1:])
