"""dlib's face descriptor: the model file, the 150x150 chips it reads, resumable batch embedding.

The embedding side of :class:`~facecraft.metrics.dlib_oracle.DlibOracle`.
Embedding runs on the CPU through dlib, a batch at a time; a long embedding can
keep the rows done so far in a checkpoint and resume.

References:
    King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10, 2009,
    https://jmlr.org/papers/v10/king09a.html; the model:
    http://dlib.net/face_recognition.py.html.

Note:
    *Chip geometry.* dlib's recogniser expects chips made by
    ``dlib.get_face_chip(size=150, padding=0.25)``: the aligned face template
    spans ``1 / (1 + 2 * padding)`` of the chip. Our CelebA chips were made with
    ``get_face_chip(size=128, padding=0.5)`` (same alignment; template spans half
    the chip), so dlib's framing is the central ``(1 + 2*0.25) / (1 + 2*0.5) = 0.75``
    of our chip, resized to 150x150: ``crop_fraction=0.75``
    (:data:`CELEBA_CROP_FRACTION`). This holds at any cached resolution (64 or
    128). LFW deep-funneled frames are not dlib-aligned; the face fills roughly the
    central half of the full frame, and dlib's framing is best matched by a
    central crop of about :data:`LFW_FULL_FRAME_CROP_FRACTION` of the *full* frame
    (measured, see the constant). If a cache keeps only a central fraction ``c``
    of the LFW frame, pass ``crop_fraction = LFW_FULL_FRAME_CROP_FRACTION / c``
    (capped at 1).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from facecraft._io import PathLike, checkpoint_exists, load_checkpoint, save_checkpoint
from facecraft._validation import validate_images
from facecraft.metrics._common import ProgressFn

__all__ = [
    "CELEBA_CROP_FRACTION",
    "CHIP",
    "DIM",
    "LFW_FULL_FRAME_CROP_FRACTION",
    "dlib_model_path",
    "embed_in_batches",
    "face_chips",
]

#: Central fraction of a ``get_face_chip(size=S, padding=0.5)`` chip that dlib's recogniser expects.
CELEBA_CROP_FRACTION = 0.75
#: Central fraction of a full LFW deep-funneled frame matching dlib's framing (face ~ central
#: half). Measured top-1 (15 people, 4 gallery + 2 query images each, 125x125, centroid/cosine):
#: 0.4: 26/30, 0.5: 26/30, 0.57: 27/30, 0.65: 25/30, 0.8: 23/30; a plateau over 0.4-0.65, we
#: take its middle.
LFW_FULL_FRAME_CROP_FRACTION = 0.55
#: Side of the chips dlib's recogniser reads.
CHIP = 150
#: Length of its face descriptor.
DIM = 128

_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_PARTIAL_KIND = "dlib-partial"


def dlib_model_path() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` inside ``face-recognition-models``.

    The package is located without importing it (its ``__init__`` needs
    ``pkg_resources``).

    Raises:
        ImportError: the package is not installed or lacks the model file.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ImportError(
            "dlib's face-recognition model needs the package 'face-recognition-models'; "
            "install it with `pip install face-recognition-models dlib-bin`"
        )
    path = Path(spec.origin).parent / "models" / _MODEL_FILE
    if not path.exists():
        raise ImportError(f"face-recognition-models is installed but {path} is missing")
    return path


def face_chips(images: torch.Tensor, crop_fraction: float) -> np.ndarray:
    """The uint8 RGB chips dlib sees: ``(N, 150, 150, 3)``.

    The central ``crop_fraction`` of each image, resized (bilinear, antialiased)
    to 150x150 unless it already is.

    Args:
        images: ``(N, 3, S, S)`` float images in [0, 1].
        crop_fraction: in ``(0, 1]``.
    """
    validate_images(images, channels=3)
    s_h, s_w = images.shape[-2:]
    ch, cw = max(1, round(s_h * crop_fraction)), max(1, round(s_w * crop_fraction))
    top, left = (s_h - ch) // 2, (s_w - cw) // 2
    x = images.detach()[:, :, top : top + ch, left : left + cw].to("cpu", torch.float32)
    if (ch, cw) != (CHIP, CHIP):
        x = F.interpolate(
            x, size=(CHIP, CHIP), mode="bilinear", align_corners=False, antialias=True
        )
    x = x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def embed_in_batches(
    model: Any,
    images: torch.Tensor,
    chips: Callable[[torch.Tensor], np.ndarray],
    batch_size: int,
    *,
    progress: Optional[ProgressFn] = None,
    checkpoint_stem: Optional[PathLike] = None,
    checkpoint_every: int = 256,
) -> torch.Tensor:
    """``model.compute_face_descriptor`` of ``chips(batch)``, ``batch_size`` images at a time.

    With ``checkpoint_stem`` the rows done so far are saved every
    ``checkpoint_every`` images and a later call on as many images resumes
    after them; the file is deleted at the end.

    Args:
        model: a ``dlib.face_recognition_model_v1``.
        images: ``(N, 3, S, S)``, at least one (already checked).
        chips: maps a batch of images to uint8 chips ``(n, 150, 150, 3)``.
        batch_size: images per dlib call.
        progress: ``progress(done, total, description)`` after each batch.
        checkpoint_stem: where the partial embeddings go.
        checkpoint_every: images between saves.

    Returns:
        ``(N, 128)`` float32 embeddings on the CPU.
    """
    n = images.shape[0]
    out, start = [], 0
    if checkpoint_stem is not None and checkpoint_exists(checkpoint_stem):
        tensors, meta = load_checkpoint(checkpoint_stem, kind=_PARTIAL_KIND)
        if meta.get("of") == n:  # else: another image set under the same stem; start over
            out, start = [tensors["embeddings"]], tensors["embeddings"].shape[0]
    last_saved = start
    for i in range(start, n, batch_size):
        batch = chips(images[i : i + batch_size])
        vecs = model.compute_face_descriptor(list(batch))
        out.append(torch.tensor(np.asarray([np.asarray(v) for v in vecs]), dtype=torch.float32))
        end = min(i + batch_size, n)
        if checkpoint_stem is not None and end < n and end - last_saved >= checkpoint_every:
            save_checkpoint(
                checkpoint_stem,
                {"embeddings": torch.cat(out)},
                kind=_PARTIAL_KIND,
                meta={"of": n},
            )
            last_saved = end
        if progress is not None:
            progress(end, n, "dlib embedding")
    if checkpoint_stem is not None:
        for suffix in (".safetensors", ".json"):
            Path(str(checkpoint_stem) + suffix).unlink(missing_ok=True)
    return torch.cat(out)
