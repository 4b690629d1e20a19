"""Data-layer fixtures: tiny fake datasets in every supported layout; the real data once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

from facecraft.data import PreparedData, prepare_data
from facecraft.experiments.config import DataConfig

ATTR_NAMES = ["Smiling", "Male", "Young"]


def write_image(path: Path, seed: int, size: Tuple[int, int] = (24, 24), mode: str = "RGB") -> None:
    """A random-noise image (``size`` is width, height) saved by extension (JPEG or PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=90)
    else:
        img.save(path)


def id_counts() -> Dict[str, int]:
    """Identity label -> image count: 4 private-sized identities (>= 5) and 6 public ones (1-3)."""
    return {"7": 6, "12": 5, "3": 8, "40": 5, "100": 1, "101": 2, "2": 3, "55": 1, "9": 2, "31": 3}


def make_celeba_chips(
    root: Path,
    counts: Optional[Dict[str, int]] = None,
    *,
    with_attributes: bool = True,
    size: int = 24,
) -> List[Tuple[str, str]]:
    """A celeba-chips tree; returns the ``(file name, identity)`` lines written."""
    counts = counts or id_counts()
    lines: List[Tuple[str, str]] = []
    k = 1
    for ident, n in counts.items():
        for _ in range(n):
            lines.append((f"{k:06d}.jpg", ident))
            k += 1
    for j, (name, _) in enumerate(lines):
        write_image(root / "images" / name, j, (size, size))
    (root / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in lines))
    if with_attributes:
        write_attr_file(root / "list_attr_celeba.txt", [f for f, _ in lines])
    return lines


def attr_row(j: int) -> List[int]:
    return [1 if (j >> b) & 1 else -1 for b in range(len(ATTR_NAMES))]


def write_attr_file(path: Path, names: Sequence[str], count: Optional[int] = None) -> None:
    body = "".join(
        f"{f} " + " ".join(f"{v:2d}" for v in attr_row(j)) + "\n" for j, f in enumerate(names)
    )
    path.write_text(
        f"{len(names) if count is None else count}\n" + " ".join(ATTR_NAMES) + "\n" + body
    )


def make_folder_tree(
    root: Path,
    counts: Dict[str, int],
    ext: str = ".jpg",
    size: Tuple[int, int] = (30, 30),
    name_style: str = "lfw",
) -> None:
    """``root/<identity>/<identity>_NNNN<ext>`` (LFW naming) or ``root/<identity>/img<k><ext>``."""
    s = 0
    for ident, n in counts.items():
        for k in range(1, n + 1):
            fname = f"{ident}_{k:04d}{ext}" if name_style == "lfw" else f"img{k}{ext}"
            write_image(root / ident / fname, s, size)
            s += 1


@pytest.fixture()
def celeba_chips(tmp_path: Path) -> Path:
    root = tmp_path / "celeba-chips"
    make_celeba_chips(root)
    return root


@pytest.fixture()
def tiny_cfg(celeba_chips: Path) -> DataConfig:
    return DataConfig(
        dataset="celeba",
        root=str(celeba_chips),
        image_size=16,
        min_private_images=5,
        eval_test_fraction=0.3,
        seed=0,
    )


@pytest.fixture(scope="session")
def real_celeba64(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Tuple[PreparedData, float, Path]:
    """Real celeba-chips prepared once at 64x64 (default split): (data, seconds, cache folder)."""
    cache = tmp_path_factory.mktemp("celeba64")
    start = time.perf_counter()
    data = prepare_data(DataConfig(dataset="celeba", root=str(shared_data), image_size=64), cache)
    return data, time.perf_counter() - start, cache


ProgressLog = List[Tuple[int, int, str]]


@pytest.fixture()
def progress_log() -> Tuple[ProgressLog, Callable[[int, int, str], None]]:
    log: ProgressLog = []

    def cb(done: int, total: int, desc: str) -> None:
        log.append((done, total, desc))

    return log, cb
