"""Procedural face-like images for smoke tests and the ``tiny`` profile.

Each identity gets a fixed look (skin tone, face shape, eye spacing and
colour, brows, nose, mouth width, hair colour and style, a tendency to wear
glasses); each image adds its own pose (shift, scale, roll), expression
(mouth open, smile), glasses on or off, background, lighting and noise. Five
binary attributes are read off the drawing, so an attribute classifier can
learn them and an identity oracle can tell people apart, which is all the
pipeline of CRAFTER.md sections 1-5 needs to run end to end in seconds. The
faces then go through the same identity-disjoint split as real data
(:mod:`facecraft.data.split`).

Rendering is pure torch: soft-edged ellipses and strokes painted back to
front on a pixel grid, batched over images
(:mod:`facecraft.data._synthetic_render`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from facecraft.data._synthetic_render import render_faces
from facecraft.data.cache import build_manifest
from facecraft.data.records import ImageRecord, SourceScan
from facecraft.data.split import SPLITS, facesets_from_plan, plan_split
from facecraft.data.types import FaceSet, PreparedData

__all__ = ["SYNTHETIC_ATTRIBUTES", "make_synthetic", "render_synthetic_pool"]

logger = logging.getLogger(__name__)

#: Attributes of the synthetic faces, in column order.
SYNTHETIC_ATTRIBUTES: Tuple[str, ...] = (
    "Dark_Hair",
    "Eyeglasses",
    "Mouth_Open",
    "Smiling",
    "Pale_Skin",
)

_PIXELS_PER_BATCH = 1 << 16


def make_synthetic(
    n_identities: int,
    images_per_identity: int,
    n_public_identities: int,
    public_images_per_identity: int,
    image_size: int,
    seed: int,
    *,
    eval_test_fraction: float = 0.3,
    max_public: Optional[int] = None,
    config: Optional[Dict] = None,
) -> PreparedData:
    """Generate and split a synthetic face set.

    Private identities have ``images_per_identity`` images each and public ones
    ``public_images_per_identity`` (which must be smaller, so the
    ``min_private_images`` rule of the split separates them). The split is
    :func:`~facecraft.data.split.plan_split` with
    ``min_private_images = images_per_identity``.

    Args:
        n_identities: private identities (``>= 1``).
        images_per_identity: images per private identity (``>= 2``).
        n_public_identities: public identities (``>= 1``).
        public_images_per_identity: images per public identity, in ``[1, images_per_identity)``.
        image_size: side of the square images (``>= 8``).
        seed: seed of the drawing and of the split.
        eval_test_fraction: share of each private identity in ``eval_test``.
        max_public: keep at most this many public images (chosen by ``seed``).
        config: the ``DataConfig`` dict to record in the manifest (default: one
            describing this call).

    Returns:
        ``PreparedData`` with ``synthetic=True``, attributes
        :data:`SYNTHETIC_ATTRIBUTES`, and a manifest saying ``"synthetic": true``.

    Raises:
        ValueError: a count or size is out of range.

    Example:
        >>> data = make_synthetic(4, 6, 10, 2, 32, seed=0)
        >>> tuple(data.public.images.shape), data.eval_train.num_identities
        ((20, 3, 32, 32), 4)
    """
    sizes = {
        "n_identities": n_identities,
        "images_per_identity": images_per_identity,
        "n_public_identities": n_public_identities,
        "public_images_per_identity": public_images_per_identity,
    }
    _check_sizes(**sizes)
    counts = [images_per_identity] * n_identities + [
        public_images_per_identity
    ] * n_public_identities
    images, labels, attrs = render_synthetic_pool(counts, image_size, seed)
    files = [f"{labels[i]}/{i:06d}.png" for i in range(len(labels))]
    plan = plan_split(
        labels,
        files,
        min_private_images=images_per_identity,
        eval_test_fraction=eval_test_fraction,
        max_public=max_public,
        seed=seed,
    )
    parts = {s: images[torch.as_tensor(plan.indices(s), dtype=torch.long)] for s in SPLITS}
    sets = facesets_from_plan(plan, labels, files, parts, attrs)
    if config is None:
        config = {
            "dataset": "synthetic",
            "root": None,
            "image_size": image_size,
            "min_private_images": images_per_identity,
            "eval_test_fraction": eval_test_fraction,
            "max_public": max_public,
            "max_private_identities": None,
            "seed": seed,
        }
    manifest = _manifest(sets, files, labels, config, sizes)
    return PreparedData(
        sets["public"],
        sets["eval_train"],
        sets["eval_test"],
        list(SYNTHETIC_ATTRIBUTES),
        manifest,
        synthetic=True,
    )


def _check_sizes(
    n_identities: int,
    images_per_identity: int,
    n_public_identities: int,
    public_images_per_identity: int,
) -> None:
    """Raise ``ValueError`` unless the identity and image counts of :func:`make_synthetic` fit."""
    if n_identities < 1 or n_public_identities < 1:
        raise ValueError(
            f"need at least one private and one public identity, got {n_identities}, "
            f"{n_public_identities}"
        )
    if images_per_identity < 2:
        raise ValueError(f"images_per_identity must be >= 2, got {images_per_identity}")
    if not 1 <= public_images_per_identity < images_per_identity:
        raise ValueError(
            f"public_images_per_identity must be in [1, {images_per_identity}),"
            f" got {public_images_per_identity}"
        )


def _manifest(
    sets: Dict[str, FaceSet],
    files: List[str],
    labels: List[str],
    config: Dict,
    sizes: Dict[str, int],
) -> Dict:
    """The cache manifest of a synthetic set (``"synthetic": true``, drawing sizes recorded)."""
    src = SourceScan(
        "synthetic", Path("."), [ImageRecord(f, lab) for f, lab in zip(files, labels, strict=True)]
    )
    return build_manifest(
        sets,
        dataset="synthetic",
        root=None,
        config=config,
        attribute_names=list(SYNTHETIC_ATTRIBUTES),
        sources_sha256=src.sources_sha256(),
        crop_fraction=1.0,
        synthetic=True,
        extra={
            "converted_to_rgb": 0,
            "synthetic_params": dict(sizes),
        },
    )


def render_synthetic_pool(
    images_per_identity: List[int], image_size: int, seed: int
) -> Tuple[torch.Tensor, List[str], torch.Tensor]:
    """Draw ``sum(images_per_identity)`` faces, identity ``k`` labelled ``syn{k:05d}``.

    Args:
        images_per_identity: number of images of each identity.
        image_size: side of the square images (``>= 8``).
        seed: seed of a ``torch.Generator`` that drives every random choice.

    Returns:
        ``(images, labels, attributes)``: uint8 ``(N, 3, S, S)``, the identity
        label of each image, and float32 ``(N, 5)`` in {0, 1} (columns
        :data:`SYNTHETIC_ATTRIBUTES`).

    Note:
        Drawing is hundreds of small elementwise ops; with intra-op threads on
        a busy machine they spend most of their time waiting for each other, so
        torch runs single-threaded while drawing (the caller's thread count is
        restored afterwards). Results do not depend on the thread count.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    n_ids = len(images_per_identity)
    ident = _identity_params(n_ids, g)
    owner = torch.repeat_interleave(
        torch.arange(n_ids), torch.as_tensor(images_per_identity, dtype=torch.long)
    )
    n = int(owner.numel())
    per = _image_params(n, ident["glasses_p"][owner], g)
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    params = {k: v[owner] for k, v in ident.items()}
    params.update(per)
    out = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    ng = torch.Generator()
    ng.manual_seed(noise_seed)
    batch = max(1, _PIXELS_PER_BATCH // (image_size * image_size))
    with _single_thread():
        for start in range(0, n, batch):
            sl = slice(start, min(n, start + batch))
            img = render_faces({k: v[sl] for k, v in params.items()}, image_size)
            img = img + per["noise"][sl, None, None, None] * torch.randn(img.shape, generator=ng)
            out[sl] = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    attrs = torch.stack(
        [params["hair_dark"], per["glasses"], per["mouth_open"], per["smiling"], params["pale"]],
        dim=1,
    ).float()
    labels = [f"syn{k:05d}" for k in owner.tolist()]
    return out, labels, attrs


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch single-threaded for many small ops, restoring the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _lerp3(
    a: Tuple[float, float, float], b: Tuple[float, float, float], t: torch.Tensor
) -> torch.Tensor:
    a_t, b_t = torch.tensor(a), torch.tensor(b)
    return a_t + (b_t - a_t) * t[:, None]


def _identity_params(n: int, g: torch.Generator) -> Dict[str, torch.Tensor]:
    pale = (torch.rand(n, generator=g) < 0.4).float()
    tone = _lerp3((0.86, 0.64, 0.50), (0.42, 0.28, 0.19), torch.rand(n, generator=g))
    skin = torch.where(
        pale[:, None] > 0,
        _lerp3((0.97, 0.86, 0.78), (0.92, 0.78, 0.68), torch.rand(n, generator=g)),
        tone,
    )
    hair_dark = (torch.rand(n, generator=g) < 0.5).float()
    dark = _lerp3((0.05, 0.04, 0.04), (0.28, 0.17, 0.10), torch.rand(n, generator=g))
    light_kind = torch.rand(n, generator=g)
    blond = _lerp3((0.93, 0.80, 0.45), (0.80, 0.62, 0.30), torch.rand(n, generator=g))
    red = _lerp3((0.75, 0.33, 0.15), (0.60, 0.25, 0.10), torch.rand(n, generator=g))
    grey = _lerp3((0.85, 0.85, 0.85), (0.65, 0.65, 0.68), torch.rand(n, generator=g))
    light = torch.where(
        (light_kind < 0.5)[:, None], blond, torch.where((light_kind < 0.75)[:, None], red, grey)
    )
    hair = torch.where(hair_dark[:, None] > 0, dark, light)
    eye_kind = torch.randint(0, 3, (n,), generator=g)
    eye_col = torch.tensor([[0.25, 0.13, 0.06], [0.20, 0.40, 0.70], [0.25, 0.50, 0.30]])[eye_kind]
    return {
        "pale": pale,
        "skin": skin,
        "hair_dark": hair_dark,
        "hair": hair,
        "eye_col": eye_col,
        "face_a": _u(n, 0.46, 0.60, g),
        "face_b": _u(n, 0.60, 0.76, g),
        "eye_dx": _u(n, 0.17, 0.27, g),
        "eye_y": _u(n, -0.14, 0.0, g),
        "eye_r": _u(n, 0.06, 0.09, g),
        "brow_gap": _u(n, 0.10, 0.16, g),
        "brow_th": _u(n, 0.025, 0.05, g),
        "brow_tilt": _u(n, -0.25, 0.25, g),
        "nose_len": _u(n, 0.12, 0.22, g),
        "mouth_y": _u(n, 0.30, 0.42, g),
        "mouth_w": _u(n, 0.15, 0.25, g),
        "hair_top": _u(n, 0.08, 0.26, g),
        "fringe": _u(n, 0.45, 0.78, g),
        "hair_len": _u(n, -0.1, 0.8, g),
        "glasses_p": torch.where(torch.rand(n, generator=g) < 0.4, 0.85, 0.1),
    }


def _image_params(n: int, glasses_p: torch.Tensor, g: torch.Generator) -> Dict[str, torch.Tensor]:
    return {
        "dx": 0.05 * torch.randn(n, generator=g),
        "dy": 0.05 * torch.randn(n, generator=g),
        "scale": _u(n, 0.92, 1.08, g),
        "rot": 0.08 * torch.randn(n, generator=g),
        "mouth_open": (torch.rand(n, generator=g) < 0.35).float(),
        "smiling": (torch.rand(n, generator=g) < 0.5).float(),
        "glasses": (torch.rand(n, generator=g) < glasses_p).float(),
        "bg": torch.rand(n, 3, generator=g) * 0.7 + 0.15,
        "bright": _u(n, 0.82, 1.12, g),
        "light_dir": _u(n, 0.0, 2 * math.pi, g),
        "light_amt": _u(n, 0.0, 0.25, g),
        "noise": _u(n, 0.01, 0.035, g),
    }
