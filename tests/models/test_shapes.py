"""Shapes through every model at 64x64 and 128x128 inputs (CRAFTER.md section 4)."""

import pytest
import torch

from facecraft.models import Amortizer, Critic, Decoder, Generator, build_target, feature_shape


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("arch,channels", [("resnet18", 64), ("vgg16", 128)])
def test_split_target_feature_shape(arch: str, channels: int, size: int) -> None:
    net = build_target(arch, num_outputs=40, width=1.0).eval()
    fs = feature_shape(net.encoder, size)
    assert fs == (channels, size // 4, size // 4)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert net(x).shape == (2, 40)
        assert torch.allclose(net.head(net.encoder(x)), net(x))


def test_width_scales_channels() -> None:
    net = build_target("resnet18", num_outputs=3, width=0.5)
    assert feature_shape(net.encoder, 64) == (32, 16, 16)


def test_unknown_arch_raises() -> None:
    with pytest.raises(ValueError, match="unknown target architecture"):
        build_target("alexnet", num_outputs=2)


@pytest.mark.parametrize("size", [64, 128])
def test_gan_decoder_amortizer_shapes(size: int) -> None:
    zd = 20
    g, d = Generator(zd, size, width=8).eval(), Critic(size, width=8)
    with torch.no_grad():
        x = g(torch.randn(3, zd))
    assert x.shape == (3, 3, size, size)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert d(x).shape == (3,)
    fs = (16, size // 4, size // 4)
    assert Decoder(fs, size, width=16).eval()(torch.randn(2, *fs)).shape == (2, 3, size, size)
    assert Amortizer(fs, zd, width=4).eval()(torch.randn(2, *fs)).shape == (2, zd)


def test_published_generator_shape_at_64() -> None:
    g = Generator(500, 64, width=64)
    assert g.fc[0].out_features == 256 * 8 * 8
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 3 and all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError):
        Generator(10, 60)
    with pytest.raises(ValueError):
        Decoder((16, 16, 16), 60)
    with pytest.raises(ValueError):
        Amortizer((16, 3, 3), 10)
