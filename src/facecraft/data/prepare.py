"""Prepare a dataset once: scan, split by identity, decode, cache (CRAFTER.md section 1).

:func:`prepare_data` turns a :class:`~facecraft.data.config.DataConfig`
into :class:`~facecraft.data.types.PreparedData`: it scans the dataset's labels
(:mod:`facecraft.data.sources`), plans the seeded identity-disjoint split
(:mod:`facecraft.data.split`), decodes only the chosen images once
(:mod:`facecraft.data.decode`) and writes the uint8 cache with its manifest
(:mod:`facecraft.data.cache`). A later call with the same config, root and crop
reuses the cache; anything else rebuilds it. The synthetic dataset
(:mod:`facecraft.data.synthetic`) goes through the same split and cache.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from facecraft._io import config_to_dict
from facecraft.data.cache import (
    CACHE_FORMAT,
    build_manifest,
    load_prepared,
    read_manifest,
    save_prepared,
)
from facecraft.data.config import DataConfig
from facecraft.data.decode import decode_images
from facecraft.data.errors import DataError
from facecraft.data.records import DEFAULT_CROP_FRACTION, SourceScan, centre_square_box
from facecraft.data.root import resolve_dataset_root
from facecraft.data.sources import scan_dataset
from facecraft.data.split import SPLITS, SplitPlan, facesets_from_plan, plan_split
from facecraft.data.synthetic import make_synthetic
from facecraft.data.types import PreparedData, ProgressFn

__all__ = ["prepare_data", "load_prepared", "root_listing", "synthetic_sizes"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def prepare_data(
    cfg: DataConfig,
    cache_dir: PathLike,
    *,
    progress: Optional[ProgressFn] = None,
    force: bool = False,
    crop_fraction: Optional[float] = None,
    num_workers: Optional[int] = None,
) -> PreparedData:
    """Split, decode and cache ``cfg``'s dataset, or reuse the cache in ``cache_dir``.

    The split follows CRAFTER.md section 1 (see
    :func:`~facecraft.data.split.plan_split`): identities with at least
    ``cfg.min_private_images`` images are private (capped by
    ``cfg.max_private_identities``, chosen by ``cfg.seed``) and split by image
    into ``eval_train`` / ``eval_test``; all other identities are public
    (capped at ``cfg.max_public`` images). Images are decoded once, converted
    to RGB, centre-cropped and resized (LANCZOS) to ``cfg.image_size``.

    Args:
        cfg: what to prepare. ``cfg.root`` may be the dataset folder or a parent
            of it; ``None`` reads ``FACECRAFT_DATA`` (not needed for ``synthetic``).
        cache_dir: folder for the cache (``manifest.json`` and one
            ``<split>.safetensors`` per split); one config per folder.
        progress: called as ``progress(done, total, description)`` while decoding.
        force: rebuild even when the cache matches.
        crop_fraction: override the dataset's default centred crop (see
            :data:`~facecraft.data.records.DEFAULT_CROP_FRACTION`).
        num_workers: decoding threads (default ``min(4, cpu_count)``).

    Returns:
        The prepared data; ``manifest`` is what was written to ``manifest.json``.

    Raises:
        DataError: the dataset is missing or malformed, an image cannot be
            decoded (the message names the file), or the split would be empty
            or leak identities.

    Note:
        Reuse compares the manifest's config, resolved root, crop, cache
        format and the root's file listing (:func:`root_listing`: names,
        sizes and modification times, not contents) with the request; a
        changed listing rebuilds with a warning. Pass ``force=True`` after an
        edit that keeps a file's size and modification time.
    """
    cache_dir = Path(cache_dir)
    if cfg.dataset == "synthetic":
        root: Optional[Path] = None
        crop = 1.0
    else:
        root = resolve_dataset_root(cfg.dataset, cfg.root)
        crop = DEFAULT_CROP_FRACTION[cfg.dataset] if crop_fraction is None else float(crop_fraction)
        centre_square_box(2, 2, crop)  # validates the fraction
    root_str = None if root is None else str(root.resolve())
    key = {
        "format": CACHE_FORMAT,
        "config": config_to_dict(cfg),
        "root": root_str,
        "crop_fraction": crop,
        "root_listing": None if root is None else root_listing(root),
    }
    if not force:
        cached = _reuse(cache_dir, key)
        if cached is not None:
            return cached
    start = time.perf_counter()
    if cfg.dataset == "synthetic":
        data = _prepare_synthetic(cfg)
    else:
        assert root is not None
        data = _prepare_real(cfg, root, crop, root_str, progress, num_workers)
        data.manifest["root_listing"] = key["root_listing"]
    save_prepared(data, cache_dir)
    logger.info(
        "prepared %s (%d public, %d eval_train, %d eval_test images at %dpx) in %.1fs into %s",
        cfg.dataset,
        len(data.public),
        len(data.eval_train),
        len(data.eval_test),
        cfg.image_size,
        time.perf_counter() - start,
        cache_dir,
    )
    return data


def _reuse(cache_dir: Path, key: Dict[str, Any]) -> Optional[PreparedData]:
    manifest = read_manifest(cache_dir)
    if manifest is None:
        return None
    stored = {k: manifest.get(k) for k in key}
    if stored != key:
        changed = sorted(k for k in key if stored[k] != key[k])
        if changed == ["root_listing"]:
            was, now = stored["root_listing"] or {}, key["root_listing"] or {}
            logger.warning(
                "the data root %s changed since its split was prepared in %s (%s files, now %d; "
                "listing hash %s, now %s): preparing the split again",
                key["root"],
                cache_dir,
                was.get("count", "?"),
                now.get("count", 0),
                str(was.get("sha256", "?"))[:12],
                str(now.get("sha256", ""))[:12],
            )
            return None
        logger.info(
            "cache in %s was built with a different %s; rebuilding", cache_dir, ", ".join(changed)
        )
        return None
    try:
        data = load_prepared(cache_dir)
    except DataError as e:
        logger.warning("cache in %s is unusable (%s); rebuilding", cache_dir, e)
        return None
    logger.info("reusing prepared data in %s", cache_dir)
    return data


def _prepare_real(
    cfg: DataConfig,
    root: Path,
    crop: float,
    root_str: Optional[str],
    progress: Optional[ProgressFn],
    num_workers: Optional[int],
) -> PreparedData:
    scan = scan_dataset(cfg.dataset, root, crop_fraction=crop)
    identities = [r.identity for r in scan.records]
    files = [r.file for r in scan.records]
    plan = plan_split(
        identities,
        files,
        min_private_images=cfg.min_private_images,
        eval_test_fraction=cfg.eval_test_fraction,
        max_public=cfg.max_public,
        max_private_identities=cfg.max_private_identities,
        seed=cfg.seed,
    )
    parts, converted = _decode_splits(scan, plan, cfg.image_size, crop, num_workers, progress)
    attrs = None
    if scan.has_attributes:
        attrs = torch.tensor([r.attributes for r in scan.records], dtype=torch.float32)
    sets = facesets_from_plan(plan, identities, files, parts, attrs)
    manifest = build_manifest(
        sets,
        dataset=cfg.dataset,
        root=root_str,
        config=config_to_dict(cfg),
        attribute_names=scan.attribute_names if attrs is not None else [],
        sources_sha256=scan.sources_sha256(),
        crop_fraction=crop,
        synthetic=False,
        extra={
            "converted_to_rgb": converted,
            "source_images": len(scan.records),
            "source_identities": len(set(identities)),
        },
    )
    return PreparedData(
        sets["public"],
        sets["eval_train"],
        sets["eval_test"],
        list(manifest["attribute_names"]),
        manifest,
        synthetic=False,
    )


def _decode_splits(
    scan: SourceScan,
    plan: SplitPlan,
    image_size: int,
    crop: float,
    num_workers: Optional[int],
    progress: Optional[ProgressFn],
) -> Tuple[Dict[str, torch.Tensor], int]:
    """Decode the images ``plan`` keeps, once, split by split.

    Returns:
        ``(split name -> uint8 images in the plan's order, images converted to RGB)``.
    """
    order = [i for s in SPLITS for i in plan.indices(s)]
    images, converted = decode_images(
        [scan.root / scan.records[i].file for i in order],
        image_size,
        crop_fraction=crop,
        num_workers=num_workers,
        progress=progress,
    )
    parts: Dict[str, torch.Tensor] = {}
    start = 0
    for s in SPLITS:
        n = len(plan.indices(s))
        parts[s] = images[start : start + n]
        start += n
    return parts, converted


def root_listing(root: Path) -> Dict[str, Any]:
    """Count and SHA-256 of a data root's file list: relative name, size, mtime (ns) of each file.

    Keys a prepared split to the files it was made from, so that adding, removing,
    replacing or touching a file invalidates the split. File contents are not read
    (a full content hash of a 200k-image CelebA would take minutes); an edit that
    keeps a file's size and modification time is not detected. Hidden entries
    (``.*``) are skipped; symlinked folders are listed by their target, not walked.
    """
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                link = f"{(base / d).relative_to(root).as_posix()}\t{os.readlink(base / d)}"
                h.update(f"L\t{link}\n".encode())
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = base / name
            try:
                st = path.stat()
            except OSError:  # a dangling link: listed by name
                h.update(f"X\t{path.relative_to(root).as_posix()}\n".encode())
                continue
            h.update(
                f"F\t{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode()
            )
            count += 1
    return {"count": count, "sha256": h.hexdigest()}


def synthetic_sizes(cfg: DataConfig) -> Dict[str, int]:
    """The synthetic set drawn for ``cfg`` (``make_synthetic`` arguments).

    ``cfg.max_private_identities`` private identities (default 12) with
    ``cfg.min_private_images + 4`` images each, and public identities with
    ``min(4, cfg.min_private_images - 1)`` images each (at least 1), enough to
    give ``cfg.max_public`` public images (default 360). For the ``tiny``
    profile that is 120 private and 360 public 32x32 images.
    """
    threshold = max(2, cfg.min_private_images)
    per_public = max(1, min(4, threshold - 1))
    n_public = cfg.max_public if cfg.max_public is not None else 360
    return {
        "n_identities": cfg.max_private_identities or 12,
        "images_per_identity": threshold + 4,
        "n_public_identities": max(1, math.ceil(n_public / per_public)),
        "public_images_per_identity": per_public,
    }


def _prepare_synthetic(cfg: DataConfig) -> PreparedData:
    return make_synthetic(
        image_size=cfg.image_size,
        seed=cfg.seed,
        eval_test_fraction=cfg.eval_test_fraction,
        max_public=cfg.max_public,
        config=config_to_dict(cfg),
        **synthetic_sizes(cfg),
    )
