"""Frozen dataclass configs of a run (STYLE.md rule 6).

Every config validates itself and round-trips through JSON. The profiles
(:data:`PROFILE_NAMES`) that fill them in are built in
:mod:`facecraft.experiments.profiles` (``profile_config``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple, Type, TypeVar

from facecraft._io import config_to_dict
from facecraft.data.config import DataConfig, positive

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TargetTrainConfig",
    "PriorTrainConfig",
    "AmortizerTrainConfig",
    "RunConfig",
    "PROFILE_NAMES",
    "config_to_dict",
    "config_from_dict",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    """Architectures and widths (CRAFTER.md section 4)."""

    target_arch: str = "resnet18"
    target_width: float = 1.0
    latent_dim: int = 500
    generator_width: int = 64
    critic_width: int = 64
    decoder_width: int = 128
    amortizer_width: int = 64

    def __post_init__(self) -> None:
        if self.target_arch not in ("resnet18", "vgg16"):
            raise ValueError(
                f"ModelConfig.target_arch must be resnet18 or vgg16, got {self.target_arch!r}"
            )
        positive(
            self,
            "target_width",
            "latent_dim",
            "generator_width",
            "critic_width",
            "decoder_width",
            "amortizer_width",
        )


@dataclass(frozen=True)
class TargetTrainConfig:
    """Attribute classifier on public images (BCE over the attributes)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment_flip: bool = True

    def __post_init__(self) -> None:
        positive(self, "epochs", "batch_size", "lr")


@dataclass(frozen=True)
class PriorTrainConfig:
    """WGAN-GP on public images (Gulrajani et al. 2017; CRAFTER.md section 2)."""

    steps: int = 50_000
    batch_size: int = 64
    n_critic: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: Tuple[float, float] = (0.5, 0.9)
    sample_every: int = 1000

    def __post_init__(self) -> None:
        positive(self, "steps", "batch_size", "n_critic", "lr", "sample_every")


@dataclass(frozen=True)
class AmortizerTrainConfig:
    """``Amor(Enc(G(z))) -> z`` on random latents (CRAFTER.md section 2)."""

    steps: int = 20_000
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        positive(self, "steps", "batch_size", "lr")


#: the profiles :mod:`facecraft.experiments.profiles` builds (a config may also say ``custom``)
PROFILE_NAMES = ("tiny", "small", "paper")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written beside its outputs as ``config.json``.

    ``attacks`` and ``defenses`` map registered names to constructor keyword
    arguments, so a profile can set e.g. the white-box step count without the
    algorithms knowing about profiles.
    """

    profile: str = "small"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    target: TargetTrainConfig = field(default_factory=TargetTrainConfig)
    prior: PriorTrainConfig = field(default_factory=PriorTrainConfig)
    amortizer: AmortizerTrainConfig = field(default_factory=AmortizerTrainConfig)
    attacks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    defenses: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    eval: Dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_NAMES and self.profile != "custom":
            raise ValueError(
                f"RunConfig.profile must be one of {sorted(PROFILE_NAMES)} or 'custom', "
                f"got {self.profile!r}"
            )


def config_from_dict(cls: Type[T], d: Dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from :func:`config_to_dict` output; unknown keys
    raise."""
    hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - set(hints)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs: Dict[str, Any] = {}
    for name, f in hints.items():
        if name not in d:
            continue
        v = d[name]
        sub = _DATACLASS_FIELDS.get((cls.__name__, name))
        if sub is not None and isinstance(v, dict):
            v = config_from_dict(sub, v)
        elif isinstance(v, list) and name == "betas":
            v = tuple(v)
        kwargs[name] = v
    return cls(**kwargs)


_DATACLASS_FIELDS: Dict[Tuple[str, str], type] = {
    ("RunConfig", "data"): DataConfig,
    ("RunConfig", "model"): ModelConfig,
    ("RunConfig", "target"): TargetTrainConfig,
    ("RunConfig", "prior"): PriorTrainConfig,
    ("RunConfig", "amortizer"): AmortizerTrainConfig,
}
