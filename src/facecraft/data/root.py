"""Finding a dataset on disk from ``--data-root`` or ``FACECRAFT_DATA``.

The data root may be the dataset folder itself or a parent holding the usual
folder names (``celeba-chips/``, ``img_align_celeba/``,
``lfw/lfw-deepfunneled/`` or ``lfw-deepfunneled/``). When nothing is found the
:class:`~facecraft.data.errors.DataError` says where each dataset should go.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

from facecraft.data.errors import DataError
from facecraft.data.records import IMAGE_EXTENSIONS

__all__ = ["DATA_ENV_VAR", "resolve_dataset_root", "data_layout_help"]

logger = logging.getLogger(__name__)

#: Environment variable naming the data root when ``--data-root`` is not given.
DATA_ENV_VAR = "FACECRAFT_DATA"


def data_layout_help(base: str = "<data-root>") -> str:
    """Where each dataset should be put under ``base`` (used in error messages)."""
    return (
        "Expected layouts:\n"
        f"  CelebA chips:    {base}/celeba-chips/images/NNNNNN.jpg with identity_CelebA.txt and"
        " list_attr_celeba.txt in celeba-chips/\n"
        f"  CelebA official: {base}/img_align_celeba/NNNNNN.jpg with identity_CelebA.txt and"
        f" list_attr_celeba.txt in {base}/ or {base}/Anno/\n"
        f"  LFW:             {base}/lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg"
        f" (or {base}/lfw-deepfunneled/);"
        f" run `facecraft data fetch lfw --data-root {base}` to download it\n"
        f"  any other set:   {base}/<identity>/<image>.jpg|png (dataset 'folder')\n"
        f"Pass the folder with --data-root or set {DATA_ENV_VAR}."
    )


def resolve_dataset_root(dataset: str, data_root: Optional[str] = None) -> Path:
    """The folder holding ``dataset``, from ``data_root`` or ``$FACECRAFT_DATA``.

    Args:
        dataset: ``celeba``, ``celeba-official``, ``lfw`` or ``folder``.
        data_root: the dataset folder or a parent of it; ``None`` reads
            ``FACECRAFT_DATA``.

    Returns:
        For ``celeba`` the folder holding ``images/`` and the label files; for
        ``celeba-official`` the folder holding ``img_align_celeba/``; for
        ``lfw`` the ``lfw-deepfunneled`` folder; for ``folder`` the given folder.

    Raises:
        ValueError: ``dataset`` is unknown or ``synthetic`` (which needs no root).
        DataError: no root given, or the dataset is not found there; the
            message lists where to put CelebA or LFW and how to fetch LFW.
    """
    if dataset == "synthetic":
        raise ValueError("the synthetic dataset is generated and needs no data root")
    if dataset not in _FINDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(_FINDERS)}")
    source = "--data-root"
    if data_root is None or str(data_root) == "":
        data_root = os.environ.get(DATA_ENV_VAR) or None
        source = DATA_ENV_VAR
    if data_root is None:
        raise DataError(
            f"no data root for dataset {dataset!r}: pass --data-root or set {DATA_ENV_VAR}.\n"
            + data_layout_help()
        )
    base = Path(data_root).expanduser()
    if not base.is_dir():
        raise DataError(
            f"data root {base} (from {source}) is not a folder.\n" + data_layout_help(str(base))
        )
    looked: List[Path] = []
    found = _FINDERS[dataset](base, looked)
    if found is None:
        where = ", ".join(str(p) for p in dict.fromkeys(looked))
        raise DataError(
            f"dataset {dataset!r} not found under {base} (from {source}); looked in: {where}.\n"
            + data_layout_help(str(base))
        )
    logger.debug("dataset %s resolved to %s", dataset, found)
    return found


def _find_celeba(base: Path, looked: List[Path]) -> Optional[Path]:
    for c in (base, base / "celeba-chips"):
        looked.append(c)
        if (c / "identity_CelebA.txt").is_file() and (c / "images").is_dir():
            return c
    return None


def _find_celeba_official(base: Path, looked: List[Path]) -> Optional[Path]:
    if base.name == "img_align_celeba":
        looked.append(base)
        return base.parent
    for c in (base, base / "celeba", base / "CelebA"):
        looked.append(c)
        if (c / "img_align_celeba").is_dir():
            return c
    return None


def _find_lfw(base: Path, looked: List[Path]) -> Optional[Path]:
    for c in (base / "lfw" / "lfw-deepfunneled", base / "lfw-deepfunneled"):
        looked.append(c)
        if c.is_dir():
            return c
    looked.append(base)
    if base.name == "lfw-deepfunneled" or _has_identity_folders(base):
        return base
    return None


def _find_folder(base: Path, looked: List[Path]) -> Optional[Path]:
    looked.append(base)
    return base if _has_identity_folders(base) else None


def _has_identity_folders(base: Path, probe: int = 20) -> bool:
    """Whether some of the first ``probe`` sub-folders of ``base`` hold images."""
    try:
        subs = [e for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    for sub in sorted(subs, key=lambda e: e.name)[:probe]:
        try:
            if any(
                f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)
                for f in os.scandir(sub.path)
            ):
                return True
        except OSError:
            continue
    return False


_FINDERS = {
    "celeba": _find_celeba,
    "celeba-official": _find_celeba_official,
    "lfw": _find_lfw,
    "folder": _find_folder,
}
