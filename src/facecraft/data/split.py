"""The seeded, identity-disjoint public / eval_train / eval_test split (CRAFTER.md section 1).

Public faces (attacker and provider have them) and private faces (the users')
never share an identity; private faces are split *by image* into
``eval_train`` (builds the identity oracle) and ``eval_test`` (protected and
attacked), which therefore share identities and identity indexing.

The split is planned on labels alone (:func:`plan_split`), so only the chosen
images are decoded; :func:`validate_split` re-checks disjointness and raises
:class:`~facecraft.data.errors.DataError` if identities would leak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch

from facecraft.data.errors import DataError
from facecraft.data.types import FaceSet

__all__ = [
    "SPLITS",
    "SplitPlan",
    "plan_split",
    "validate_split",
    "sort_labels",
    "facesets_from_plan",
]

logger = logging.getLogger(__name__)

#: The split names, in the order they are stored.
SPLITS: Tuple[str, str, str] = ("public", "eval_train", "eval_test")


@dataclass
class SplitPlan:
    """Which records go where, by index into the scanned record list.

    Attributes:
        public: record indices of public images, sorted by (identity index, file).
        eval_train: record indices of private images used to train the oracle.
        eval_test: record indices of private images that are protected and attacked.
        public_identities: public identity labels; position = 0-based public index.
        private_identities: private identity labels; position = 0-based index shared
            by ``eval_train`` and ``eval_test``.
    """

    public: List[int]
    eval_train: List[int]
    eval_test: List[int]
    public_identities: List[str]
    private_identities: List[str]

    def indices(self, split: str) -> List[int]:
        """The record indices of ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return getattr(self, split)

    def identity_names(self, split: str) -> List[str]:
        """The identity labels indexed by ``split``'s identity tensor."""
        return self.public_identities if split == "public" else self.private_identities


def sort_labels(labels: Sequence[str]) -> List[str]:
    """Identity labels in index order: numerically if all are digits (CelebA), else as strings."""
    uniq = set(labels)
    if all(s.isdigit() for s in uniq):
        return sorted(uniq, key=lambda s: (int(s), s))
    return sorted(uniq)


def plan_split(
    identities: Sequence[str],
    files: Sequence[str],
    *,
    min_private_images: int,
    eval_test_fraction: float,
    max_public: Optional[int] = None,
    max_private_identities: Optional[int] = None,
    seed: int = 0,
) -> SplitPlan:
    """Plan the identity-disjoint split of CRAFTER.md section 1.

    Private identities are those with at least ``min_private_images`` images
    (at least 2, so both private splits get one), optionally capped at
    ``max_private_identities`` chosen at random. Each private identity's images
    are shuffled and ``round(n * eval_test_fraction)`` of them, clamped to
    ``[1, n - 1]``, go to ``eval_test``; the rest to ``eval_train``. Every
    other identity is public; at most ``max_public`` public images are kept,
    chosen at random. All randomness comes from one ``torch.Generator`` seeded
    with ``seed``, so the plan is a function of the labels and the seed.

    Args:
        identities: identity label of each record.
        files: file of each record (used only to order images before shuffling).
        min_private_images: private threshold on images per identity.
        eval_test_fraction: share of each private identity in ``eval_test``, in (0, 1).
        max_public: cap on public images (``None`` = all).
        max_private_identities: cap on private identities (``None`` = all).
        seed: seed of the split.

    Returns:
        The plan; identities are indexed in :func:`sort_labels` order.

    Raises:
        DataError: no identity qualifies as private, or no public image is left.
    """
    if len(identities) != len(files):
        raise ValueError(
            f"identities and files differ in length: {len(identities)} vs {len(files)}"
        )
    if not 0.0 < eval_test_fraction < 1.0:
        raise ValueError(f"eval_test_fraction must be in (0, 1), got {eval_test_fraction}")
    threshold = max(2, min_private_images)
    if threshold != min_private_images:
        logger.warning(
            "min_private_images=%d raised to 2: a private identity needs an image in "
            "eval_train and one in eval_test",
            min_private_images,
        )
    g = torch.Generator()
    g.manual_seed(int(seed))
    by_id = _records_by_identity(identities, files)
    labels = sort_labels(list(by_id))
    private = _private_identities(
        labels, by_id, threshold, min_private_images, max_private_identities, g
    )
    eval_train, eval_test = _split_private(private, by_id, files, eval_test_fraction, g)
    public_pool = _public_pool(labels, set(private), by_id, max_public, threshold, g)
    public_labels = sort_labels([identities[i] for i in public_pool])
    plan = SplitPlan(public_pool, eval_train, eval_test, public_labels, private)
    validate_split(plan, identities)
    return plan


def _records_by_identity(identities: Sequence[str], files: Sequence[str]) -> Dict[str, List[int]]:
    """Record indices of each identity, each list ordered by file."""
    by_id: Dict[str, List[int]] = {}
    for i, ident in enumerate(identities):
        by_id.setdefault(ident, []).append(i)
    for idx in by_id.values():
        idx.sort(key=lambda i: files[i])
    return by_id


def _private_identities(
    labels: List[str],
    by_id: Dict[str, List[int]],
    threshold: int,
    min_private_images: int,
    max_private_identities: Optional[int],
    g: torch.Generator,
) -> List[str]:
    """The private identities, in ``labels`` order.

    Those with ``threshold`` images or more; at most ``max_private_identities``
    of them, drawn at random.

    Raises:
        DataError: no identity has enough images.
    """
    eligible = [lab for lab in labels if len(by_id[lab]) >= threshold]
    if not eligible:
        most = max(len(v) for v in by_id.values())
        raise DataError(
            f"no identity has min_private_images={min_private_images} images"
            f" (the most any has is {most});"
            " lower min_private_images or use a dataset with more images per person"
        )
    if max_private_identities is None or max_private_identities >= len(eligible):
        return eligible
    pick = torch.randperm(len(eligible), generator=g)[:max_private_identities].tolist()
    chosen = {eligible[i] for i in pick}
    return [lab for lab in eligible if lab in chosen]


def _split_private(
    private: List[str],
    by_id: Dict[str, List[int]],
    files: Sequence[str],
    eval_test_fraction: float,
    g: torch.Generator,
) -> Tuple[List[int], List[int]]:
    """``(eval_train, eval_test)`` record indices of the private identities.

    Each identity's images are shuffled and ``round(n * eval_test_fraction)``
    of them, clamped to ``[1, n - 1]``, go to ``eval_test``; within an identity
    both parts are ordered by file.
    """
    eval_train: List[int] = []
    eval_test: List[int] = []
    for lab in private:
        idx = by_id[lab]
        n = len(idx)
        n_test = min(max(int(round(n * eval_test_fraction)), 1), n - 1)
        perm = torch.randperm(n, generator=g).tolist()
        test = sorted((idx[j] for j in perm[:n_test]), key=lambda i: files[i])
        train = sorted((idx[j] for j in perm[n_test:]), key=lambda i: files[i])
        eval_test.extend(test)
        eval_train.extend(train)
    return eval_train, eval_test


def _public_pool(
    labels: List[str],
    private: Set[str],
    by_id: Dict[str, List[int]],
    max_public: Optional[int],
    threshold: int,
    g: torch.Generator,
) -> List[int]:
    """The records of every non-private identity, at most ``max_public`` drawn at random.

    Raises:
        DataError: no public image is left.
    """
    public_pool = [i for lab in labels if lab not in private for i in by_id[lab]]
    if max_public is not None and max_public < len(public_pool):
        keep = set(torch.randperm(len(public_pool), generator=g)[:max_public].tolist())
        public_pool = [i for j, i in enumerate(public_pool) if j in keep]
    if not public_pool:
        raise DataError(
            f"no public images left: all {len(labels)} identities have at least {threshold} images;"
            " raise min_private_images or cap max_private_identities"
        )
    return public_pool


def validate_split(plan: SplitPlan, identities: Sequence[str]) -> None:
    """Check that ``plan`` leaks no identity and no image between splits.

    Args:
        plan: the plan to check.
        identities: identity label of each record the plan indexes.

    Raises:
        DataError: a public identity is also private, ``eval_train`` and
            ``eval_test`` do not cover the same identities, an image is in two
            splits, or a split's identity list does not match its images.
    """
    seen: Dict[int, str] = {}
    for split in SPLITS:
        for i in plan.indices(split):
            if i in seen:
                raise DataError(f"split leak: record {i} is in both {seen[i]} and {split}")
            seen[i] = split
    pub = {identities[i] for i in plan.public}
    train = {identities[i] for i in plan.eval_train}
    test = {identities[i] for i in plan.eval_test}
    private = set(plan.private_identities)
    leak = pub & (train | test | private)
    if leak:
        raise DataError(
            f"split leak: {len(leak)} identities are both public and private,"
            f" e.g. {sorted(leak)[:3]}"
        )
    if train != test or train != private:
        raise DataError(
            "split error: eval_train and eval_test must cover the same private identities"
            f" ({len(train)} vs {len(test)} vs {len(private)} listed)"
        )
    if pub != set(plan.public_identities):
        raise DataError("split error: the public identity list does not match the public images")


def facesets_from_plan(
    plan: SplitPlan,
    identities: Sequence[str],
    files: Sequence[str],
    images: Dict[str, torch.Tensor],
    attributes: Optional[torch.Tensor] = None,
) -> Dict[str, FaceSet]:
    """Build the three :class:`FaceSet` objects of a plan.

    Args:
        plan: the split.
        identities: identity label of each record.
        files: file of each record.
        images: split name -> uint8 ``(n_split, 3, S, S)`` in the plan's order.
        attributes: float ``(N_records, A)`` in {0, 1} for all records, or ``None``.

    Returns:
        Split name -> FaceSet, identity indices 0-based in the plan's label order.
    """
    out: Dict[str, FaceSet] = {}
    for split in SPLITS:
        idx = plan.indices(split)
        names = plan.identity_names(split)
        pos = {lab: k for k, lab in enumerate(names)}
        out[split] = FaceSet(
            images=images[split],
            identities=torch.tensor([pos[identities[i]] for i in idx], dtype=torch.long),
            identity_names=list(names),
            attributes=None
            if attributes is None
            else attributes[torch.as_tensor(idx, dtype=torch.long)],
            files=[files[i] for i in idx],
        )
    return out
