"""Networks: the split target, the attacker's prior (WGAN-GP), decoder and amortizer."""

from facecraft.models.amortizer import Amortizer
from facecraft.models.decoder import Decoder
from facecraft.models.gan import Critic, Generator, gradient_penalty
from facecraft.models.target import TARGET_ARCHS, SplitNetwork, build_target, feature_shape

__all__ = [
    "Amortizer",
    "Critic",
    "Decoder",
    "Generator",
    "SplitNetwork",
    "TARGET_ARCHS",
    "build_target",
    "feature_shape",
    "gradient_penalty",
]
