"""Face data: dataset adapters, identity-disjoint splits and the uint8 cache (CRAFTER.md section 1).

- :mod:`~facecraft.data.sources`: scanners for CelebA chips, official CelebA
  (:mod:`~facecraft.data.celeba`), LFW and folder-per-identity sets
  (:mod:`~facecraft.data.folders`), returning :mod:`~facecraft.data.records`.
- :mod:`~facecraft.data.split`: the seeded identity-disjoint split.
- :mod:`~facecraft.data.decode`: decode, crop and resize once.
- :mod:`~facecraft.data.cache`: the safetensors cache and its manifest.
- :mod:`~facecraft.data.prepare`: :func:`prepare_data` ties them together.
- :mod:`~facecraft.data.synthetic`: procedural faces for smoke tests.
- :mod:`~facecraft.data.root`: finding a dataset from ``--data-root`` / ``FACECRAFT_DATA``.
- :mod:`~facecraft.data.fetch`: downloading LFW.
"""

from facecraft.data.cache import load_prepared
from facecraft.data.decode import decode_images, load_image
from facecraft.data.errors import DataError
from facecraft.data.fetch import LFW_DEEPFUNNELED_MD5, LFW_DEEPFUNNELED_URL, fetch_lfw, safe_extract
from facecraft.data.prepare import prepare_data, synthetic_sizes
from facecraft.data.root import DATA_ENV_VAR, data_layout_help, resolve_dataset_root
from facecraft.data.sources import (
    CELEBA_OFFICIAL_CROP,
    DEFAULT_CROP_FRACTION,
    LFW_CROP_FRACTION,
    ImageRecord,
    SourceScan,
    centre_square_box,
    scan_celeba_chips,
    scan_celeba_official,
    scan_dataset,
    scan_folder,
    scan_lfw,
)
from facecraft.data.split import SPLITS, SplitPlan, plan_split, validate_split
from facecraft.data.synthetic import SYNTHETIC_ATTRIBUTES, make_synthetic, render_synthetic_pool
from facecraft.data.types import FaceSet, PreparedData, ProgressFn

__all__ = [
    "FaceSet",
    "PreparedData",
    "ProgressFn",
    "DataError",
    # sources
    "ImageRecord",
    "SourceScan",
    "CELEBA_OFFICIAL_CROP",
    "LFW_CROP_FRACTION",
    "DEFAULT_CROP_FRACTION",
    "centre_square_box",
    "scan_celeba_chips",
    "scan_celeba_official",
    "scan_lfw",
    "scan_folder",
    "scan_dataset",
    # split, decode, cache, prepare
    "SPLITS",
    "SplitPlan",
    "plan_split",
    "validate_split",
    "load_image",
    "decode_images",
    "prepare_data",
    "load_prepared",
    "synthetic_sizes",
    # synthetic
    "SYNTHETIC_ATTRIBUTES",
    "make_synthetic",
    "render_synthetic_pool",
    # roots and downloads
    "DATA_ENV_VAR",
    "resolve_dataset_root",
    "data_layout_help",
    "LFW_DEEPFUNNELED_URL",
    "LFW_DEEPFUNNELED_MD5",
    "fetch_lfw",
    "safe_extract",
]
