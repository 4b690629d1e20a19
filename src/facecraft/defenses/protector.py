"""The edge API: one object that turns face images into protected features.

A :class:`Protector` wraps a defence (and so its encoder) for deployment on
the edge device: it validates inputs, processes them in chunks on the
model's device, returns features on the caller's device, and saves itself
as ``<path>.safetensors`` (all weights) plus ``<path>.json`` (defence name,
hyperparameters, image size, feature shape, and the architecture of every
network) so that :func:`load_protector` can rebuild it anywhere.

Example:
    >>> import torch
    >>> from facecraft.models import build_target
    >>> from facecraft.defenses import NoDefense, Protector
    >>> target = build_target("resnet18", num_outputs=4, width=0.25).eval()
    >>> defense = NoDefense(target.encoder, target.head)
    >>> protector = Protector(defense, image_size=32, arch="resnet18", width=0.25)
    >>> protector(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from facecraft._io import CheckpointError, load_checkpoint, save_checkpoint
from facecraft._validation import MAX_WIDTH, MAX_WIDTH_MULTIPLIER, check_number
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.feature_crafter import FeatureCrafter
from facecraft.defenses.registry import get_defense_class
from facecraft.models import (
    TARGET_ARCHS,
    Amortizer,
    Critic,
    Generator,
    SplitNetwork,
    build_target,
    feature_shape,
)

__all__ = ["Protector", "load_protector"]

_KIND = "protector"


class Protector:
    """Images in, protected features out: the deployable edge component.

    Args:
        defense: a :class:`~facecraft.defenses.base.FeatureDefense` (fitted if it learns).
        image_size: the side ``S`` of the square images the encoder expects.
        arch: target architecture of ``defense.encoder`` (``"resnet18"`` or
            ``"vgg16"``, as in :func:`facecraft.models.build_target`); needed by :meth:`save`.
        width: the target's channel multiplier (Default: 1.0).
        num_outputs: logits of the head; ``None`` reads it from the head's last linear layer.
        batch_size: images per chunk passed to the defence (Default: 64). For
            Crafter this is also the batch its critic sees.

    Shape:
        - images: ``(N, 3, S, S)``, float in [0, 1]; output: ``(N, *F)`` on the images' device.

    Raises:
        TypeError, ValueError: from :meth:`protect`, naming expected and actual input.
    """

    def __init__(
        self,
        defense: FeatureDefense,
        *,
        image_size: int,
        arch: Optional[str] = None,
        width: float = 1.0,
        num_outputs: Optional[int] = None,
        batch_size: int = 64,
    ) -> None:
        if not isinstance(defense, FeatureDefense):
            raise TypeError(f"expected a FeatureDefense, got {type(defense).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.defense = defense
        self.image_size = int(image_size)
        self.arch = arch
        self.width = float(width)
        self.num_outputs = num_outputs if num_outputs is not None else _head_outputs(defense.head)
        self.batch_size = batch_size
        self.feature_shape: Tuple[int, ...] = feature_shape(defense.encoder, self.image_size)

    @property
    def encoder(self) -> nn.Module:
        """The encoder whose features are released (the defence's)."""
        return self.defense.encoder

    @property
    def device(self) -> torch.device:
        return self.defense.device

    def protect(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Protected features for a batch of images.

        Args:
            images: ``(N, 3, S, S)`` floating-point tensor in [0, 1] on any device.
            **kwargs: passed to the defence's ``protect`` (e.g. ``progress``, or
                Crafter's ``attributes``); tensors with one row per image are
                chunked along with the images.

        Returns:
            ``(N, *F)`` features on ``images.device``, in the encoder's dtype
            (inputs are cast to it).

        Raises:
            TypeError: not a floating-point tensor.
            ValueError: wrong shape, size, or values outside [0, 1].
        """
        self._validate(images)
        dtype = next(self.encoder.parameters()).dtype
        n = images.shape[0]
        outs = []
        for i in range(0, images.shape[0], self.batch_size):
            chunk = images[i : i + self.batch_size].to(device=self.device, dtype=dtype)
            extra = {
                k: (v[i : i + self.batch_size].to(self.device) if _per_image(v, n) else v)
                for k, v in kwargs.items()
            }
            outs.append(self.defense(chunk, **extra).to(images.device))
        return torch.cat(outs)

    __call__ = protect

    def _validate(self, images: Any) -> None:
        s = self.image_size
        expected = f"(N, 3, {s}, {s})"
        if not torch.is_tensor(images):
            raise TypeError(
                f"Protector: expected images as a float torch.Tensor {expected} in [0, 1], "
                f"got {type(images).__name__}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"Protector: expected float images in [0, 1], got dtype {images.dtype} "
                "(convert uint8 with images.float() / 255)"
            )
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(
                f"Protector: expected images of shape {expected}, got {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError("Protector: expected at least one image, got an empty batch")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"Protector: expected values in [0, 1], got [{lo:.4g}, {hi:.4g}]")

    def save(self, path: Union[str, Path]) -> None:
        """Write ``<path>.safetensors`` and ``<path>.json`` (see :func:`load_protector`).

        Raises:
            ValueError: ``arch`` was not given, or a network cannot be described for rebuilding.
        """
        if self.arch is None:
            raise ValueError(
                "Protector.save needs the target architecture: construct it with arch=..."
            )
        nets = self.defense.networks()
        tensors: Dict[str, torch.Tensor] = {}
        specs: Dict[str, Dict[str, Any]] = {}
        for name, module in nets.items():
            specs[name] = _spec(name, module, self)
            tensors.update({f"net.{name}.{k}": v for k, v in module.state_dict().items()})
        tensors.update({f"extra.{k}": v for k, v in self.defense.extra_state().items()})
        meta = {
            "defense": self.defense.name(),
            "config": self.defense.get_config(),
            "image_size": self.image_size,
            "feature_shape": list(self.feature_shape),
            "batch_size": self.batch_size,
            "networks": specs,
        }
        save_checkpoint(Path(path), tensors, kind=_KIND, meta=meta)

    def __repr__(self) -> str:
        return (
            f"Protector({self.defense!r}, image_size={self.image_size}, arch={self.arch!r}, "
            f"feature_shape={self.feature_shape})"
        )


def load_protector(
    path: Union[str, Path], *, device: Union[str, torch.device] = "cpu"
) -> Protector:
    """Rebuild a :class:`Protector` saved by :meth:`Protector.save`.

    The target is rebuilt with :func:`facecraft.models.build_target` from the
    stored architecture, width and output count, other networks from their
    stored specs; weights are loaded strictly and the defence is recreated by
    its registered name with the stored hyperparameters.

    Args:
        path: the stem given to :meth:`Protector.save`.
        device: where to put the networks (Default: ``"cpu"``).

    Raises:
        CheckpointError: missing/corrupt files, a different kind, unknown network
            kinds, or weights that do not fit the rebuilt networks.
    """
    tensors, meta = load_checkpoint(Path(path), kind=_KIND, device="cpu")
    specs: Dict[str, Dict[str, Any]] = meta.get("networks")  # type: ignore[assignment]
    if not isinstance(specs, dict) or not all(isinstance(s, dict) for s in specs.values()):
        raise CheckpointError(f"{path}: 'networks' must map network names to their specs")
    enc_spec = specs.get("encoder")
    if enc_spec is None:
        raise CheckpointError(f"{path}: no encoder recorded")
    for (
        name,
        spec,
    ) in specs.items():  # before anything is allocated: a tampered size could ask for any amount
        _check_spec(path, name, spec)
    for key in ("image_size", "batch_size"):
        if key in meta:
            _check_size(path, key, meta[key], 1, _MAX_SIZE[key])
    target = build_target(
        enc_spec["arch"], num_outputs=enc_spec["num_outputs"], width=enc_spec["width"]
    )
    nets: Dict[str, nn.Module] = {}
    for name, spec in specs.items():
        nets[name] = _build(name, spec, target)
        prefix = f"net.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            nets[name].load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: weights of {name!r} do not fit the rebuilt network ({e})"
            ) from e
        nets[name].to(device).eval()
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: 'config' must be a JSON object of the defence's arguments")
    try:
        cls = get_defense_class(meta.get("defense"))
        defense = cls(**nets, **meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: cannot rebuild defence {meta.get('defense')!r} ({e})"
        ) from None
    extra = {k[len("extra.") :]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")}
    defense.load_extra_state(extra)
    for m in _extra_modules(defense):
        m.to(device)
    protector = Protector(
        defense,
        image_size=meta["image_size"],
        arch=enc_spec["arch"],
        width=enc_spec["width"],
        num_outputs=enc_spec["num_outputs"],
        batch_size=meta.get("batch_size", 64),
    )
    if list(protector.feature_shape) != list(meta["feature_shape"]):
        raise CheckpointError(
            f"{path}: rebuilt encoder gives features {protector.feature_shape}, "
            f"recorded {tuple(meta['feature_shape'])}"
        )
    return protector


def _per_image(value: Any, n: int) -> bool:
    return torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n


def _head_outputs(head: Optional[nn.Module]) -> Optional[int]:
    if head is None:
        return None
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _spec(name: str, module: nn.Module, protector: Protector) -> Dict[str, Any]:
    if name in ("encoder", "head"):
        outputs = protector.num_outputs
        if outputs is None:
            if protector.defense.head is not None:
                raise ValueError(
                    "Protector.save: cannot tell the head's output count; pass num_outputs=..."
                )
            outputs = 1  # no head: the encoder does not depend on it
        return {
            "type": "target." + name,
            "arch": protector.arch,
            "width": protector.width,
            "num_outputs": outputs,
        }
    if isinstance(module, Generator):
        return {
            "type": "Generator",
            "latent_dim": module.latent_dim,
            "image_size": module.image_size,
            "width": module.c0 // 4,
        }
    if isinstance(module, Critic):
        convs = [m for m in module.net if isinstance(m, nn.Conv2d)]
        return {
            "type": "Critic",
            "image_size": protector.image_size,
            "width": convs[0].out_channels,
        }
    if isinstance(module, Amortizer):
        convs = [m for m in module.net if isinstance(m, nn.Conv2d)]
        return {
            "type": "Amortizer",
            "feature_shape": list(protector.feature_shape),
            "latent_dim": convs[-1].out_channels,
            "width": convs[0].out_channels // 2,
        }
    if isinstance(module, FeatureCrafter):
        return {"type": "FeatureCrafter", "channels": module.channels, "width": module.width}
    raise ValueError(
        f"Protector.save: cannot describe network {name!r} of type {type(module).__name__} "
        "for rebuilding (supported: the target's encoder/head, Generator, Amortizer, Critic, "
        "FeatureCrafter)"
    )


#: the largest value a loaded protector's record may give each size (far above any real network's)
_MAX_SIZE = {
    "image_size": 1024,
    "latent_dim": 4096,
    "num_outputs": 10000,
    "channels": 8192,
    "batch_size": 65536,
}


def _check_size(
    path: Union[str, Path], what: str, value: Any, low: float, high: float, integer: bool = True
) -> None:
    """Raise ``CheckpointError`` unless a recorded size is a finite number in ``[low, high]``."""
    try:
        check_number(what, value, low=low, high=high, integer=integer)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: {e} (refusing the record before allocating anything)"
        ) from None


def _check_spec(path: Union[str, Path], name: str, spec: Dict[str, Any]) -> None:
    """Bounds on every size a network spec gives (widths, image size, latent and output counts)."""
    kind = spec.get("type")
    if kind in ("target.encoder", "target.head"):
        if spec.get("arch") not in TARGET_ARCHS:
            raise CheckpointError(
                f"{path}: networks.{name}.arch must be one of {list(TARGET_ARCHS)}, "
                f"got {spec.get('arch')!r}"
            )
        _check_size(
            path,
            f"networks.{name}.width",
            spec.get("width"),
            1 / 64,
            MAX_WIDTH_MULTIPLIER,
            integer=False,
        )
        _check_size(
            path,
            f"networks.{name}.num_outputs",
            spec.get("num_outputs"),
            1,
            _MAX_SIZE["num_outputs"],
        )
        return
    for key in ("width", "latent_dim", "image_size", "channels"):
        if key in spec:
            _check_size(path, f"networks.{name}.{key}", spec[key], 1, _MAX_SIZE.get(key, MAX_WIDTH))
    for i, v in enumerate(spec.get("feature_shape") or []):
        _check_size(path, f"networks.{name}.feature_shape[{i}]", v, 1, _MAX_SIZE["channels"])


def _build(name: str, spec: Dict[str, Any], target: SplitNetwork) -> nn.Module:
    kind = spec.get("type")
    if kind == "target.encoder":
        return target.encoder
    if kind == "target.head":
        return target.head
    if kind == "Generator":
        return Generator(spec["latent_dim"], spec["image_size"], width=spec["width"])
    if kind == "Critic":
        return Critic(spec["image_size"], width=spec["width"])
    if kind == "Amortizer":
        return Amortizer(spec["feature_shape"], spec["latent_dim"], width=spec["width"])
    if kind == "FeatureCrafter":
        return FeatureCrafter(spec["channels"], width=spec["width"])
    raise CheckpointError(f"unknown network type {kind!r} for {name!r}")


def _extra_modules(defense: FeatureDefense) -> list:
    return [m for m in vars(defense).values() if isinstance(m, nn.Module)]
