"""A third-party identity oracle: dlib's face-recognition ResNet (CRAFTER.md section 5).

The paper judges reconstructions with its own trained Eval-network and, as an
independent check, with a commercial face API. This module plays the second
role with a public, fixed model nobody in the pipeline trained: dlib's
29-layer ResNet (``dlib_face_recognition_resnet_model_v1``, 128-d embeddings,
99.38% on the LFW verification benchmark), shipped in the PyPI package
``face-recognition-models``. The oracle embeds faces, keeps a gallery of
``eval_train`` embeddings with their identities, and scores queries against
each identity, giving Eval Acc (top-k) and FSIM (embedding cosine).

References:
    King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10, 2009,
    https://jmlr.org/papers/v10/king09a.html; the model:
    http://dlib.net/face_recognition.py.html.
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    *Chip geometry.* ``crop_fraction`` is the central part of an input image
    that matches dlib's chip framing: :data:`CELEBA_CROP_FRACTION` for our
    CelebA chips, about :data:`LFW_FULL_FRAME_CROP_FRACTION` of a full LFW
    frame (derivation and measurements in :mod:`facecraft.metrics.dlib_embedding`).

    *Scoring.* A query's score for an identity is the maximum cosine similarity
    to that identity's gallery images (``scoring="max"``), the mean
    (``"mean"``), or the cosine to the identity's mean embedding
    (``"centroid"``); ``similarity="euclidean"`` uses negative Euclidean
    distance instead (dlib's own verification metric, threshold 0.6). The
    default (centroid, cosine) was chosen by the highest top-1 ceiling on real
    private CelebA images, though all rules were within about 1% there (see
    :data:`DEFAULT_SCORING`). Measured ceiling (40 private identities with >= 10
    images, ~70% of each identity's images as gallery, the rest as queries,
    64x64 chips): top-1 0.968 / top-5 0.987 at ``crop_fraction=0.75``; 0.956 at
    0.65 and 0.962 at 0.85, so the geometric value 0.75 is also the best one.

    Embedding runs on the CPU through dlib (about 0.1 s per image on one core)
    whatever device the images are on; the result comes back on the images'
    device.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from facecraft._io import load_checkpoint, save_checkpoint
from facecraft._validation import validate_images, validate_tensors
from facecraft.metrics._common import ProgressFn
from facecraft.metrics._gallery import SCORINGS, SIMILARITIES, check_labels, gallery_scores
from facecraft.metrics.dlib_embedding import (
    CELEBA_CROP_FRACTION,
    DIM,
    LFW_FULL_FRAME_CROP_FRACTION,
    dlib_model_path,
    embed_in_batches,
    face_chips,
)
from facecraft.metrics.identity import feature_cosine, topk_accuracy

__all__ = [
    "CELEBA_CROP_FRACTION",
    "DEFAULT_SCORING",
    "DEFAULT_SIMILARITY",
    "LFW_FULL_FRAME_CROP_FRACTION",
    "SCORINGS",
    "SIMILARITIES",
    "DlibOracle",
    "dlib_model_path",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Gallery scoring rule: measured top-1 ceilings on private CelebA (40 identities, 64x64, 319
#: gallery / 158 query images) at crop 0.75: centroid/cosine 0.968, max/cosine 0.962, mean/cosine
#: 0.949, all euclidean variants 0.962; differences are within one or two queries, centroid is
#: also cheapest.
DEFAULT_SCORING = "centroid"
#: Similarity used by the default scoring rule.
DEFAULT_SIMILARITY = "cosine"
_KIND = "dlib_gallery"


class DlibOracle:
    r"""dlib's face-recognition ResNet as an identity oracle with a gallery.

    Args:
        crop_fraction: central fraction of each input image that corresponds to
            dlib's 150x150 chip framing; 0.75 for our CelebA chips
            (:data:`CELEBA_CROP_FRACTION`), see the module note for LFW.
        scoring: ``"max"``, ``"mean"`` or ``"centroid"`` over each identity's
            gallery embeddings.
        similarity: ``"cosine"`` or ``"euclidean"`` (negative distance).
        batch_size: images per dlib call (and per progress report).
        model_path: the ``.dat`` model; default: :func:`dlib_model_path`.

    Raises:
        ValueError: an option is out of range.
        ImportError: dlib or the model file is missing.

    Example:
        >>> oracle = DlibOracle(crop_fraction=0.75)  # doctest: +SKIP
        >>> oracle.fit(gallery_images, gallery_labels)  # doctest: +SKIP
        >>> eval_acc = oracle.identify(reconstructions, labels, k=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        crop_fraction: float = CELEBA_CROP_FRACTION,
        scoring: str = DEFAULT_SCORING,
        similarity: str = DEFAULT_SIMILARITY,
        batch_size: int = 32,
        model_path: Optional[PathLike] = None,
    ) -> None:
        if not isinstance(crop_fraction, (int, float)) or not 0.0 < float(crop_fraction) <= 1.0:
            raise ValueError(f"expected crop_fraction in (0, 1], got {crop_fraction!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"expected scoring in {SCORINGS}, got {scoring!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"expected similarity in {SIMILARITIES}, got {similarity!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"expected a positive integer batch_size, got {batch_size!r}")
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - dlib is a declared dependency
            raise ImportError(
                "DlibOracle needs dlib; install it with `pip install dlib-bin`"
            ) from e
        self.crop_fraction = float(crop_fraction)
        self.scoring = scoring
        self.similarity = similarity
        self.batch_size = batch_size
        self.model_path = Path(model_path) if model_path is not None else dlib_model_path()
        self._model = dlib.face_recognition_model_v1(str(self.model_path))
        self.gallery_embeddings: Optional[torch.Tensor] = None
        self.gallery_labels: Optional[torch.Tensor] = None
        self.num_identities: int = 0

    def __repr__(self) -> str:
        n_gallery = 0 if self.gallery_labels is None else len(self.gallery_labels)
        return (
            f"DlibOracle(crop_fraction={self.crop_fraction}, scoring={self.scoring!r}, "
            f"similarity={self.similarity!r}, gallery={n_gallery} "
            f"images of {self.num_identities} identities)"
        )

    # ------------------------------------------------------------------ embedding

    def chips(self, images: torch.Tensor) -> np.ndarray:
        """The uint8 RGB 150x150 chips dlib sees: ``(N, 150, 150, 3)``.

        Args:
            images: ``(N, 3, S, S)`` float images in [0, 1].
        """
        return face_chips(images, self.crop_fraction)

    @torch.no_grad()
    def embed(
        self,
        images: torch.Tensor,
        *,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[PathLike] = None,
        checkpoint_every: int = 256,
    ) -> torch.Tensor:
        r"""dlib's 128-d face descriptors of ``images``.

        Args:
            images: ``(N, 3, S, S)`` float images in [0, 1], framed like the
                gallery (see ``crop_fraction``).
            progress: ``progress(done, total, description)`` after each batch.
            checkpoint_stem: where the rows embedded so far are saved every
                ``checkpoint_every`` images (a long embedding, e.g. every public
                face, survives a kill; the same call resumes it and deletes the
                file at the end). The caller keys the stem by the images.

        Returns:
            ``(N, 128)`` float32 embeddings on the images' device (not unit-norm).

        Raises:
            TypeError: non-float images.
            ValueError: wrong shape, channels or range, or an empty batch.
        """
        validate_images(images, channels=3)
        n = images.shape[0]
        if n == 0:
            raise ValueError("expected at least one image, got an empty batch")
        out = embed_in_batches(
            self._model,
            images,
            self.chips,
            self.batch_size,
            progress=progress,
            checkpoint_stem=checkpoint_stem,
            checkpoint_every=checkpoint_every,
        )
        return out.to(images.device)

    # ------------------------------------------------------------------ gallery

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_identities: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[PathLike] = None,
    ) -> "DlibOracle":
        """Embed the ``eval_train`` images and store them as the gallery.

        Args:
            images: ``(M, 3, S, S)`` float images in [0, 1].
            labels: ``(M,)`` 0-based identities.
            num_identities: ``K``, the number of score columns; default ``max(labels) + 1``.
            progress: ``progress(done, total, description)``.
            checkpoint_stem: resumable partial embeddings (see :meth:`embed`).

        Returns:
            ``self``.
        """
        validate_images(images, channels=3)
        check_labels(labels, images.shape[0])
        emb = self.embed(images, progress=progress, checkpoint_stem=checkpoint_stem)
        return self.fit_embeddings(emb, labels.to(emb.device), num_identities=num_identities)

    def fit_embeddings(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_identities: Optional[int] = None,
    ) -> "DlibOracle":
        """Use precomputed gallery embeddings ``(M, 128)`` with labels ``(M,)``; returns self."""
        validate_tensors([embeddings], dim_range=(2, 2))
        if embeddings.shape[1] != DIM or not embeddings.is_floating_point():
            raise ValueError(
                f"expected float embeddings of shape (M, {DIM}), "
                f"got {embeddings.dtype} {tuple(embeddings.shape)}"
            )
        check_labels(labels, embeddings.shape[0])
        k = int(labels.max()) + 1
        if num_identities is not None:
            if num_identities < k:
                raise ValueError(
                    f"expected num_identities >= max(labels) + 1 = {k}, got {num_identities}"
                )
            k = int(num_identities)
        self.gallery_embeddings = embeddings.detach().float()
        self.gallery_labels = labels.detach().to(embeddings.device, torch.long)
        self.num_identities = k
        log.info("dlib gallery: %d images of %d identities", embeddings.shape[0], k)
        return self

    def scores_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        r"""Similarity of query embeddings ``(N, 128)`` to each identity: ``(N, K)``.

        Identities without gallery images score ``-inf``.
        """
        gal, lab = self._gallery()
        validate_tensors([embeddings], dim_range=(2, 2))
        if embeddings.shape[1] != DIM:
            raise ValueError(
                f"expected embeddings of shape (N, {DIM}), got {tuple(embeddings.shape)}"
            )
        return gallery_scores(
            embeddings,
            gal,
            lab,
            self.num_identities,
            scoring=self.scoring,
            similarity=self.similarity,
        )

    def scores(
        self, images: torch.Tensor, *, progress: Optional[ProgressFn] = None
    ) -> torch.Tensor:
        """Embed ``images`` ``(N, 3, S, S)`` and score them against the gallery: ``(N, K)``."""
        self._gallery()
        return self.scores_from_embeddings(self.embed(images, progress=progress))

    def identify(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        k: int = 1,
        progress: Optional[ProgressFn] = None,
    ) -> torch.Tensor:
        """Eval Acc: top-``k`` identity accuracy of the oracle on ``images`` with true ``labels``.

        Args:
            images: ``(N, 3, S, S)`` reconstructions (or originals, for the ceiling) in [0, 1].
            labels: ``(N,)`` 0-based true identities.
            k: top-k.
            progress: ``progress(done, total, description)``.

        Returns:
            A scalar tensor in [0, 1] (see :func:`~facecraft.metrics.topk_accuracy`).
        """
        check_labels(labels, images.shape[0])
        return topk_accuracy(self.scores(images, progress=progress), labels.to(images.device), k=k)

    def feature_similarity(
        self,
        reconstructions: torch.Tensor,
        originals: torch.Tensor,
        *,
        reduction: str = "mean",
        progress: Optional[ProgressFn] = None,
    ) -> torch.Tensor:
        """FSIM: cosine of dlib embeddings of reconstructions and their originals (same shape)."""
        validate_tensors([reconstructions, originals], dim_range=(4, 4))
        n = reconstructions.shape[0]

        def _sub(done: int, total: int, desc: str, offset: int) -> None:
            if progress is not None:
                progress(offset + done, 2 * n, desc)

        a = self.embed(reconstructions, progress=lambda d, t, s: _sub(d, t, s, 0))
        b = self.embed(originals, progress=lambda d, t, s: _sub(d, t, s, n))
        return feature_cosine(a, b, reduction=reduction)

    # ------------------------------------------------------------------ persistence

    def save(self, stem: PathLike, *, meta: Optional[Dict[str, Any]] = None) -> None:
        """Save the gallery to ``<stem>.safetensors`` + ``<stem>.json`` (settings in the JSON)."""
        gal, lab = self._gallery()
        save_checkpoint(
            stem,
            {"embeddings": gal, "labels": lab},
            kind=_KIND,
            meta={
                "crop_fraction": self.crop_fraction,
                "scoring": self.scoring,
                "similarity": self.similarity,
                "num_identities": self.num_identities,
                "model_file": self.model_path.name,
                **dict(meta or {}),
            },
        )

    @classmethod
    def load(
        cls,
        stem: PathLike,
        *,
        crop_fraction: Optional[float] = None,
        batch_size: int = 32,
        model_path: Optional[PathLike] = None,
    ) -> "DlibOracle":
        """Rebuild an oracle with the gallery and settings saved by :meth:`save`.

        Args:
            stem: checkpoint path without suffix.
            crop_fraction: if given, must equal the stored one (embeddings made
                with another framing are not comparable).
            batch_size: images per dlib call.
            model_path: the ``.dat`` model; default: :func:`dlib_model_path`.

        Raises:
            facecraft._io.CheckpointError: missing or mismatched files.
            ValueError: ``crop_fraction`` differs from the stored one.
        """
        tensors, meta = load_checkpoint(stem, kind=_KIND, keys={"embeddings", "labels"})
        stored = float(meta["crop_fraction"])
        if crop_fraction is not None and abs(float(crop_fraction) - stored) > 1e-9:
            raise ValueError(
                f"gallery at {stem} was embedded with crop_fraction={stored}, "
                f"got crop_fraction={crop_fraction}"
            )
        oracle = cls(
            crop_fraction=stored,
            scoring=meta["scoring"],
            similarity=meta["similarity"],
            batch_size=batch_size,
            model_path=model_path,
        )
        return oracle.fit_embeddings(
            tensors["embeddings"], tensors["labels"], num_identities=int(meta["num_identities"])
        )

    # ------------------------------------------------------------------ helpers

    def _gallery(self) -> "tuple[torch.Tensor, torch.Tensor]":
        if self.gallery_embeddings is None or self.gallery_labels is None:
            raise RuntimeError("DlibOracle has no gallery; call fit() or load() first")
        return self.gallery_embeddings, self.gallery_labels
