"""The identity-disjoint split: disjointness, shared private indexing, caps, determinism, errors."""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest

from facecraft.data import DataError, SplitPlan, plan_split, validate_split
from facecraft.data.split import sort_labels


def _pool(counts: Dict[str, int]) -> Tuple[List[str], List[str]]:
    ids, files = [], []
    for ident, n in counts.items():
        for k in range(n):
            ids.append(ident)
            files.append(f"{ident}/{k:03d}.jpg")
    return ids, files


COUNTS = {
    f"{i}": (12 if i % 3 == 0 else 1 + i % 4) for i in range(60)
}  # 20 private-sized identities


def _plan(seed: int = 0, **kw) -> SplitPlan:
    ids, files = _pool(COUNTS)
    args = {"min_private_images": 10, "eval_test_fraction": 0.3, "seed": seed}
    args.update(kw)
    return plan_split(ids, files, **args)


def test_identity_disjoint_and_shared_private_identities() -> None:
    ids, _ = _pool(COUNTS)
    plan = _plan()
    pub = {ids[i] for i in plan.public}
    train = {ids[i] for i in plan.eval_train}
    test = {ids[i] for i in plan.eval_test}
    assert pub.isdisjoint(train | test)
    assert train == test == set(plan.private_identities)
    assert len(plan.private_identities) == 20
    assert len(plan.public) + len(plan.eval_train) + len(plan.eval_test) == len(ids)
    assert not set(plan.public) & set(plan.eval_train) and not set(plan.eval_train) & set(
        plan.eval_test
    )


def test_private_indexing_sorted_and_fraction() -> None:
    ids, _ = _pool(COUNTS)
    plan = _plan()
    assert plan.private_identities == sorted(plan.private_identities, key=int)
    assert plan.public_identities == sorted(plan.public_identities, key=int)
    for lab in plan.private_identities:
        n_test = sum(1 for i in plan.eval_test if ids[i] == lab)
        n_train = sum(1 for i in plan.eval_train if ids[i] == lab)
        assert (n_train, n_test) == (8, 4)  # round(12 * 0.3) = 4


def test_at_least_one_image_each_side() -> None:
    ids, files = _pool({"a": 2, "b": 3, "c": 1})
    for frac in (0.01, 0.99):
        plan = plan_split(ids, files, min_private_images=2, eval_test_fraction=frac)
        for lab in plan.private_identities:
            assert sum(ids[i] == lab for i in plan.eval_train) >= 1
            assert sum(ids[i] == lab for i in plan.eval_test) >= 1


def test_same_seed_same_plan_different_seed_different_plan() -> None:
    a, b = (
        _plan(seed=3, max_private_identities=8, max_public=30),
        _plan(seed=3, max_private_identities=8, max_public=30),
    )
    assert a == b
    c = _plan(seed=4, max_private_identities=8, max_public=30)
    assert (a.private_identities, a.eval_test, a.public) != (
        c.private_identities,
        c.eval_test,
        c.public,
    )


def test_different_seed_changes_image_split() -> None:
    assert _plan(seed=0).eval_test != _plan(seed=1).eval_test


def test_caps() -> None:
    ids, _ = _pool(COUNTS)
    plan = _plan(max_private_identities=5, max_public=17)
    assert len(plan.private_identities) == 5
    assert len(plan.public) == 17
    assert set(plan.public_identities) == {ids[i] for i in plan.public}
    # identities eligible but not chosen become public
    uncapped = _plan(max_private_identities=5)
    assert sum(COUNTS[lab] >= 10 for lab in uncapped.public_identities) == 15


def test_no_private_identity_raises() -> None:
    ids, files = _pool({"a": 2, "b": 3})
    with pytest.raises(DataError, match="no identity has min_private_images=5"):
        plan_split(ids, files, min_private_images=5, eval_test_fraction=0.3)


def test_no_public_left_raises() -> None:
    ids, files = _pool({"a": 5, "b": 6})
    with pytest.raises(DataError, match="no public images"):
        plan_split(ids, files, min_private_images=5, eval_test_fraction=0.3)


def test_validate_split_catches_leaks() -> None:
    ids, _ = _pool(COUNTS)
    plan = _plan()
    validate_split(plan, ids)
    leaked = SplitPlan(
        plan.public + plan.eval_test[:1],
        plan.eval_train,
        plan.eval_test[1:],
        plan.public_identities,
        plan.private_identities,
    )
    with pytest.raises(DataError, match="leak"):
        validate_split(leaked, ids)
    lab = ids[plan.eval_train[0]]
    only_train = [i for i in plan.eval_test if ids[i] != lab]
    moved = [i for i in plan.eval_test if ids[i] == lab]
    unbalanced = SplitPlan(
        plan.public,
        plan.eval_train + moved,
        only_train,
        plan.public_identities,
        plan.private_identities,
    )
    with pytest.raises(DataError, match="same private identities"):
        validate_split(unbalanced, ids)


def test_sort_labels() -> None:
    assert sort_labels(["10", "9", "100", "9"]) == ["9", "10", "100"]
    assert sort_labels(["bob", "Al", "10"]) == ["10", "Al", "bob"]
