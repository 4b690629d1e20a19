"""What ``facecraft audit`` reads from a user: their edge encoder, a feature release and a gallery.

Every input is checked before any training, with one-line errors: an encoder that does not load or
whose output is not a tensor of a feature-map shape, a release whose features do not have the
encoder's shape or whose identities are not in the gallery, a gallery with a single image per
identity, images of another size than the encoder takes.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from facecraft._torchutils import query_in_batches
from facecraft._validation import validate_features
from facecraft.data import DataError
from facecraft.data.decode import load_image
from facecraft.data.folders import scan_folder

__all__ = [
    "FaceFolder",
    "Release",
    "ResizedEncoder",
    "encoder_feature_shape",
    "load_encoder",
    "load_face_folder",
    "load_release",
    "resize_square",
]


class ResizedEncoder(nn.Module):
    """The user's encoder behind a bilinear resize to the ``size`` it takes (a no-op at that size),
    so the attacker's models, which work at the study's image size, can query it."""

    def __init__(self, encoder: nn.Module, size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(resize_square(x, self.size))


def resize_square(
    x: torch.Tensor, size: int, *, antialias: Optional[bool] = None, clamp: bool = False
) -> torch.Tensor:
    """Images ``(N, C, H, W)`` bilinearly resized to ``size`` x ``size`` (``x`` itself at that
    size).

    Args:
        x: the images.
        size: the side of the result.
        antialias: antialias the resize (``None``: only when it shrinks the width).
        clamp: clamp a resized result to [0, 1].
    """
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    aa = x.shape[-1] > size if antialias is None else antialias
    out = nnf.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=aa)
    return out.clamp(0, 1) if clamp else out


def load_encoder(spec: str) -> Tuple[nn.Module, str]:
    """The user's encoder and a key naming it (hash of the file, or of the spec and weights).

    Args:
        spec: a TorchScript file (``torch.jit.save``), or ``package.module:function`` returning an
            ``nn.Module`` (imported from the Python path).

    Raises:
        ValueError: the file does not load as TorchScript, the function is missing, or what it
            returns is not an ``nn.Module``.
    """
    path = Path(spec)
    if path.is_file():
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"--encoder {spec}: not a TorchScript file ({first})") from None
        return module.eval(), hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if ":" not in spec:
        raise ValueError(
            f"--encoder {spec}: no such file, and not MODULE:FUNCTION (e.g. mypkg.nets:edge)"
        )
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--encoder {spec}: cannot import it ({e})") from None
    module = fn()
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"--encoder {spec}: {fn_name}() returned {type(module).__name__}, not a torch nn.Module"
        )
    h = hashlib.sha256(spec.encode())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return module.eval(), h.hexdigest()[:16]


def encoder_feature_shape(encoder: nn.Module, size: int) -> Tuple[int, ...]:
    """The feature shape ``(C, h, w)`` the encoder gives for images ``(N, 3, size, size)``.

    Raises:
        ValueError: the forward pass fails at that size, returns something other than one float
            tensor with the batch first, or not a square feature map (the attacker's decoder,
            amortizer and embedding regressor read ``(C, h, w)`` maps).
    """
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = encoder(x)
    except Exception as e:  # a user's network may raise anything on a wrong input size
        raise ValueError(
            f"the encoder fails on images of {size}x{size} ({type(e).__name__}: {e}); give the "
            "size it takes with --image-size"
        ) from None
    if not torch.is_tensor(out):
        raise ValueError(
            f"the encoder's output is a {type(out).__name__}, not a tensor: export a module whose "
            "forward returns the released feature tensor only"
        )
    if out.shape[0] != 2 or not out.is_floating_point() or out.dim() != 4:
        raise ValueError(
            f"the encoder's output is {out.dtype} of shape {tuple(out.shape)} for 2 images; the "
            "audit needs float feature maps (N, C, h, w)"
        )
    if out.shape[2] != out.shape[3]:
        raise ValueError(f"the encoder's feature maps are not square: {tuple(out.shape[1:])}")
    return tuple(int(v) for v in out.shape[1:])


@dataclass(frozen=True)
class FaceFolder:
    """Labelled faces read from ``<root>/<identity>/<image>``: ``images`` ``(N, 3, S, S)`` float in
    [0, 1], ``labels`` ``(N,)`` indices into ``names`` (sorted identity folder names)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: List[str]


def load_face_folder(
    root: Path, size: int, *, what: str, names: Optional[Sequence[str]] = None
) -> FaceFolder:
    """Read a folder of faces, every one ``size`` x ``size`` (the encoder's input).

    Args:
        root: one sub-folder per identity.
        size: the side every image must have.
        what: the option it came from, for messages (``--gallery``, ``--features``).
        names: identity names the labels index (the gallery's); default: this folder's, sorted.

    Raises:
        ValueError: no image, an image of another size, a name not in ``names``.
    """
    try:
        scan = scan_folder(root)
    except DataError as e:
        raise ValueError(f"{what}: {e}") from None
    if not scan.records:
        raise ValueError(f"{what} {root}: no images (expected {root}/<identity>/<image>)")
    names = sorted({r.identity for r in scan.records}) if names is None else list(names)
    index: Dict[str, int] = {n: i for i, n in enumerate(names)}
    images, labels = [], []
    for rec in scan.records:
        path = scan.path(rec)
        if rec.identity not in index:
            raise ValueError(f"{what}: identity {rec.identity!r} ({path}) is not in the gallery")
        _check_size(path, size, what)
        pixels, _ = load_image(path, size)
        images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        labels.append(index[rec.identity])
    stacked = torch.stack(images).float() / 255.0
    return FaceFolder(stacked, torch.tensor(labels, dtype=torch.long), names)


def _check_size(path: Path, size: int, what: str) -> None:
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{what}: {path} is not a readable image ({e})") from None
    if (w, h) != (size, size):
        raise ValueError(
            f"{what}: {path} is {w}x{h}, but the encoder takes {size}x{size} images "
            "(--image-size); align and resize the faces as for the encoder first"
        )


def check_gallery(gallery: FaceFolder, root: Path) -> None:
    """A gallery of at least five identities (top-5 Eval Acc is reported), each with at least two
    images (one exemplar per person makes the oracle's identification a coin toss on pose and
    light)."""
    counts = torch.bincount(gallery.labels, minlength=len(gallery.names))
    if len(gallery.names) < 5:
        raise ValueError(
            f"--gallery {root}: needs at least 5 identities (Eval Acc is reported top-1 and "
            f"top-5), got {len(gallery.names)}"
        )
    single = [gallery.names[i] for i in range(len(gallery.names)) if int(counts[i]) < 2]
    if len(single) == len(gallery.names):
        raise ValueError(
            f"--gallery {root}: one image per identity; the oracle needs at least 2 images of "
            "each person"
        )
    if single:
        raise ValueError(
            f"--gallery {root}: {len(single)} identities have a single image (e.g. "
            f"{single[0]!r}); the oracle needs at least 2 images of each person"
        )


@dataclass(frozen=True)
class Release:
    """An audited release: ``features`` ``(N, *F)``, ``labels`` ``(N,)`` (gallery indices) and the
    released faces ``images`` ``(N, 3, S, S)`` when known."""

    features: torch.Tensor
    labels: torch.Tensor
    images: Optional[torch.Tensor]


def load_release(
    path: Path,
    encoder: nn.Module,
    feature_shape: Tuple[int, ...],
    size: int,
    gallery: FaceFolder,
    device: torch.device,
) -> Release:
    """A release: a ``.safetensors`` file (``features``, ``identities`` indexing the gallery's
    sorted identity names, optionally ``images``) or a folder of faces (named like the gallery's
    identities) that ``encoder`` encodes.

    Raises:
        ValueError: a malformed file, features of another shape than the encoder's, identities out
            of the gallery's range, images of another size.
    """
    if path.is_dir():
        faces = load_face_folder(path, size, what="--features", names=gallery.names)
        with torch.no_grad():
            feats = query_in_batches(encoder, faces.images, device, 64).cpu()
        return Release(feats, faces.labels, faces.images)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"--features {path}: not a safetensors file ({e})") from None
    if "features" not in tensors or "identities" not in tensors:
        raise ValueError(
            f"--features {path}: needs 'features' and 'identities' tensors "
            f"(has {sorted(tensors) or 'none'})"
        )
    feats, ids = tensors["features"], tensors["identities"]
    validate_features(feats, shape=feature_shape, name=f"--features {path}")
    k = len(gallery.names)
    if ids.dim() != 1 or ids.shape[0] != feats.shape[0] or ids.is_floating_point():
        raise ValueError(
            f"--features {path}: 'identities' must be one integer per feature vector "
            f"({feats.shape[0]}), got {ids.dtype} of shape {tuple(ids.shape)}"
        )
    if int(ids.min()) < 0 or int(ids.max()) >= k:
        raise ValueError(
            f"--features {path}: identities must index the gallery's {k} identities (sorted "
            f"folder names), got {int(ids.min())}..{int(ids.max())}"
        )
    images = tensors.get("images")
    if images is not None and tuple(images.shape) != (feats.shape[0], 3, size, size):
        raise ValueError(
            f"--features {path}: 'images' must be ({feats.shape[0]}, 3, {size}, {size}), got "
            f"{tuple(images.shape)}"
        )
    return Release(feats, ids.long(), None if images is None else images.float())
