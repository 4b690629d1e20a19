"""The on-disk cache of prepared data: uint8 safetensors plus ``manifest.json``.

A cache folder holds ``public.safetensors``, ``eval_train.safetensors`` and
``eval_test.safetensors`` (keys ``images`` uint8 ``(N, 3, S, S)``,
``identities`` int64 ``(N,)`` and, when the dataset has them, ``attributes``
float32 ``(N, A)``) and ``manifest.json``, written last, so a cache is complete
exactly when its manifest exists. The manifest records the dataset, root and
config, the counts and identity labels of each split (CRAFTER.md section 1),
the files of each split, a SHA-256 over the sorted ``(file, identity)`` list of
the source, a SHA-256 over the cached arrays of each split that
:func:`load_prepared` checks, and ``content_hash``, a short hash of what the
cache holds (arrays, files, identities, attributes) for naming downstream
artefacts. Every file is written atomically (STYLE.md rule 9); nothing is pickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from facecraft._io import CheckpointError, atomic_write_json, config_hash, read_json
from facecraft.data.errors import DataError
from facecraft.data.split import SPLITS
from facecraft.data.types import FaceSet, PreparedData

__all__ = [
    "MANIFEST_NAME",
    "CACHE_FORMAT",
    "arrays_sha256",
    "build_manifest",
    "save_prepared",
    "load_prepared",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_NAME = "manifest.json"
#: Bumped whenever the cache layout or the preprocessing changes.
CACHE_FORMAT = 1
_KIND = "facecraft.prepared_data"
_CONTENT_KEYS = ("dataset", "synthetic", "attribute_names", "identities", "files", "arrays_sha256")


def arrays_sha256(faceset: FaceSet) -> str:
    """SHA-256 over a face set's arrays (name, dtype, shape and bytes of each, in key order)."""
    h = hashlib.sha256()
    for name, t in sorted(_tensors(faceset).items()):
        arr = t.contiguous().numpy()
        h.update(f"{name}|{arr.dtype.str}|{tuple(arr.shape)}\n".encode("utf-8"))
        h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _tensors(faceset: FaceSet) -> Dict[str, torch.Tensor]:
    out = {"images": faceset.images, "identities": faceset.identities}
    if faceset.attributes is not None:
        out["attributes"] = faceset.attributes
    return out


def build_manifest(
    splits: Mapping[str, FaceSet],
    *,
    dataset: str,
    root: Optional[str],
    config: Mapping[str, Any],
    attribute_names: List[str],
    sources_sha256: str,
    crop_fraction: float,
    synthetic: bool,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The manifest of a prepared split.

    Args:
        splits: split name -> face set, for each name in ``SPLITS``.
        dataset: dataset name (``DataConfig.dataset``).
        root: the resolved dataset root (``None`` for synthetic data).
        config: ``config_to_dict(DataConfig)``.
        attribute_names: attribute column names.
        sources_sha256: hash of the sorted ``(file, identity)`` list of the source.
        crop_fraction: the centred square crop applied before resizing.
        synthetic: whether the faces are procedurally generated.
        extra: further JSON-able entries (e.g. the number of images converted to RGB).

    Returns:
        A JSON-able dict (see the module docstring).
    """
    from facecraft import __version__

    manifest: Dict[str, Any] = {
        "kind": _KIND,
        "format": CACHE_FORMAT,
        "facecraft_version": __version__,
        "dataset": dataset,
        "root": root,
        "synthetic": synthetic,
        "config": dict(config),
        "crop_fraction": crop_fraction,
        "image_size": splits["public"].image_size,
        "attribute_names": list(attribute_names),
        "counts": {
            s: {"images": len(splits[s]), "identities": int(splits[s].identities.unique().numel())}
            for s in SPLITS
        },
        "identities": {s: list(splits[s].identity_names) for s in SPLITS},
        "files": {s: list(splits[s].files) for s in SPLITS},
        "sources_sha256": sources_sha256,
        "arrays_sha256": {s: arrays_sha256(splits[s]) for s in SPLITS},
    }
    manifest["content_hash"] = config_hash({k: manifest[k] for k in _CONTENT_KEYS})
    manifest.update(dict(extra or {}))
    return manifest


def save_prepared(data: PreparedData, cache_dir: PathLike) -> None:
    """Write ``data`` to ``cache_dir`` (arrays first, manifest last, each atomically).

    Args:
        data: prepared data whose ``manifest`` came from :func:`build_manifest`.
        cache_dir: the cache folder (created if needed).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST_NAME
    if manifest_path.exists():
        manifest_path.unlink()  # the old arrays are about to be replaced
    for split in SPLITS:
        _atomic_save_file(_tensors(getattr(data, split)), cache_dir / f"{split}.safetensors")
    atomic_write_json(manifest_path, data.manifest)


def _atomic_save_file(tensors: Dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_manifest(cache_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The manifest in ``cache_dir``, or ``None`` when there is none or it is unreadable."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except CheckpointError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == _KIND else None


def load_prepared(cache_dir: PathLike, *, verify: bool = True) -> PreparedData:
    """Load prepared data written by :func:`facecraft.data.prepare.prepare_data`.

    Args:
        cache_dir: the cache folder.
        verify: recompute the arrays' SHA-256 and compare it with the manifest's.

    Returns:
        The prepared data, with its manifest.

    Raises:
        DataError: the manifest or an array file is missing, unreadable, of
            another format, or does not match the manifest.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: no prepared data here (run prepare_data or `facecraft data prepare` first)"
        )
    try:
        manifest = read_json(path)
    except CheckpointError as e:
        raise DataError(str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("kind") != _KIND:
        raise DataError(f"{path}: not a facecraft prepared-data manifest")
    if manifest.get("format") != CACHE_FORMAT:
        raise DataError(
            f"{path}: cache format {manifest.get('format')} is not {CACHE_FORMAT};"
            " prepare the data again"
        )
    names = list(manifest.get("attribute_names", []))
    splits: Dict[str, FaceSet] = {}
    for split in SPLITS:
        splits[split] = _load_split(cache_dir, split, manifest, names, verify)
    return PreparedData(
        public=splits["public"],
        eval_train=splits["eval_train"],
        eval_test=splits["eval_test"],
        attribute_names=names,
        manifest=manifest,
        synthetic=bool(manifest.get("synthetic", False)),
    )


def _load_split(
    cache_dir: Path, split: str, manifest: Dict[str, Any], names: List[str], verify: bool
) -> FaceSet:
    st = cache_dir / f"{split}.safetensors"
    if not st.is_file():
        raise DataError(f"{st}: missing; prepare the data again")
    try:
        tensors = load_file(str(st))
    except Exception as e:  # safetensors raises its own error types
        raise DataError(f"{st}: cannot read safetensors ({e}); prepare the data again") from e
    expected = {"images", "identities"} | ({"attributes"} if names else set())
    if set(tensors) != expected:
        raise DataError(f"{st}: holds {sorted(tensors)}, expected {sorted(expected)}")
    try:
        count = int(manifest["counts"][split]["images"])
        id_names = list(manifest["identities"][split])
        files = list(manifest["files"][split])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{cache_dir / MANIFEST_NAME}: incomplete entry for {split} ({e})") from e
    try:
        fs = FaceSet(
            images=tensors["images"],
            identities=tensors["identities"],
            identity_names=id_names,
            attributes=tensors.get("attributes"),
            files=files,
        )
    except ValueError as e:
        raise DataError(f"{st}: {e}") from e
    if len(fs) != count:
        raise DataError(f"{st}: has {len(fs)} images, the manifest says {count}")
    if len(fs) and (int(fs.identities.min()) < 0 or int(fs.identities.max()) >= len(id_names)):
        raise DataError(
            f"{st}: identity indices fall outside the {len(id_names)} listed identities"
        )
    if fs.attributes is not None and fs.attributes.shape[1] != len(names):
        raise DataError(
            f"{st}: {fs.attributes.shape[1]} attribute columns, the manifest names {len(names)}"
        )
    if verify and arrays_sha256(fs) != manifest.get("arrays_sha256", {}).get(split):
        raise DataError(
            f"{st}: contents do not match the hash in {MANIFEST_NAME}; prepare the data again"
        )
    return fs
