"""The shared real data: celeba-chips split counts at the paper defaults, LFW scan (slow)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from facecraft.data import load_prepared, plan_split, scan_lfw
from facecraft.experiments.config import DataConfig

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

CELEBA_IMAGES = 15_028
PRIVATE_IDS = 213
PRIVATE_IMAGES = 5_156


def test_celeba_chips_counts(real_celeba64) -> None:
    data, seconds, _ = real_celeba64
    logger.info("celeba-chips prepared at 64x64 in %.1fs", seconds)
    assert data.eval_train.identity_names == data.eval_test.identity_names
    assert len(data.eval_train.identity_names) == PRIVATE_IDS
    assert len(data.eval_train) + len(data.eval_test) == PRIVATE_IMAGES
    assert len(data.public) == CELEBA_IMAGES - PRIVATE_IMAGES
    assert data.public.num_identities == 5_517 - PRIVATE_IDS
    m = data.manifest
    assert (
        m["counts"]["eval_train"]["identities"]
        == m["counts"]["eval_test"]["identities"]
        == PRIVATE_IDS
    )
    assert m["source_images"] == CELEBA_IMAGES


def test_celeba_chips_split_is_identity_disjoint(real_celeba64) -> None:
    data, _, _ = real_celeba64
    assert set(data.public.identity_names).isdisjoint(data.eval_train.identity_names)
    assert not set(data.public.files) & (set(data.eval_train.files) | set(data.eval_test.files))
    assert not set(data.eval_train.files) & set(data.eval_test.files)
    for fs in (data.eval_train, data.eval_test):
        assert torch.equal(fs.identities.unique(), torch.arange(PRIVATE_IDS))
    # each private identity has 10-30 images; 30% (rounded) go to eval_test
    counts_test = torch.bincount(data.eval_test.identities, minlength=PRIVATE_IDS)
    counts_train = torch.bincount(data.eval_train.identities, minlength=PRIVATE_IDS)
    total = counts_test + counts_train
    assert int(total.min()) >= 10
    assert torch.equal(counts_test, torch.round(total.double() * 0.3).long())


def test_celeba_chips_images_and_attributes(real_celeba64) -> None:
    data, _, _ = real_celeba64
    assert data.image_size == 64 and data.has_attributes and len(data.attribute_names) == 40
    assert data.public.attributes.shape == (len(data.public), 40)
    smiling = data.attribute_names.index("Smiling")
    assert 0.3 < float(data.public.attributes[:, smiling].mean()) < 0.7
    assert 60 < float(data.public.images.float().mean()) < 200


def test_celeba_cache_reloads(real_celeba64, shared_data: Path) -> None:
    data, _, cache = real_celeba64
    assert data.manifest["root"] == str((shared_data / "celeba-chips").resolve())
    again = load_prepared(cache)
    assert torch.equal(again.eval_test.images, data.eval_test.images)
    assert again.manifest == data.manifest


def test_lfw_scan_and_split_plan(shared_data: Path) -> None:
    scan = scan_lfw(shared_data / "lfw")
    assert len(scan) == 12_780 and len({r.identity for r in scan.records}) == 5_724
    plan = plan_split(
        [r.identity for r in scan.records],
        [r.file for r in scan.records],
        min_private_images=10,
        eval_test_fraction=0.3,
        seed=0,
    )
    assert len(plan.private_identities) == 133
    cfg = DataConfig(dataset="lfw")
    assert cfg.min_private_images == 10
