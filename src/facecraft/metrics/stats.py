"""Uncertainty of Eval Acc and paired comparisons of defences (CRAFTER.md section 6).

An attack's Eval Acc is the share of attacked faces whose identity the oracle
recovers. Faces of one person are not independent (an attack that works on one
photo of a person tends to work on the others), so the interval that the study
reports resamples *identities*, not faces: a cluster (identity-level)
percentile bootstrap. The per-face Wilson score interval is given beside it as
a reference; it is too narrow when hits cluster by person.

Two defences attacked on the same faces are compared on the paired hits: the
exact McNemar test (a two-sided binomial test on the discordant faces, those
identified under one defence only) and a paired identity-level bootstrap of the
difference in Eval Acc. A difference that neither supports is *undecided*.

Hits are given as 0/1 per face (bool, int or float tensors, arrays or lists, or
the ``"0101..."`` strings stored in ``results.json``); ``groups`` holds each
face's identity.

References:
    Wilson, "Probable inference, the law of succession, and statistical
    inference", JASA 22(158), 1927, https://doi.org/10.1080/01621459.1927.10502953.
    McNemar, "Note on the sampling error of the difference between correlated
    proportions or percentages", Psychometrika 12(2), 1947,
    https://doi.org/10.1007/BF02295996.
    Field and Welsh, "Bootstrapping clustered data", JRSS B 69(3), 2007,
    https://doi.org/10.1111/j.1467-9868.2007.00593.x.

Example:
    >>> wilson_interval(5, 10)  # doctest: +ELLIPSIS
    (0.2365..., 0.7634...)
    >>> round(mcnemar_exact([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]), 4)
    0.0312
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from scipy.stats import binomtest, norm

__all__ = [
    "HitsLike",
    "as_hits",
    "hits_to_str",
    "wilson_interval",
    "identity_bootstrap_interval",
    "exposed_identities",
    "mcnemar_exact",
    "paired_bootstrap",
    "compare_paired",
    "accuracy_summary",
]

HitsLike = Union[str, Sequence[Any], np.ndarray, Any]


def as_hits(hits: HitsLike) -> np.ndarray:
    """0/1 hits as a float array ``(N,)``; takes a ``"0101"`` string, a list, an array or a tensor.

    Raises:
        ValueError: a value other than 0 or 1, or a string with other characters.
    """
    if isinstance(hits, str):
        if set(hits) - {"0", "1"}:
            raise ValueError("a hits string may hold only '0' and '1'")
        return np.frombuffer(hits.encode(), dtype=np.uint8).astype(np.float64) - ord("0")
    if hasattr(hits, "detach"):  # a torch tensor
        hits = hits.detach().cpu().numpy()
    arr = np.asarray(hits, dtype=np.float64).reshape(-1)
    if arr.size and not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError("hits must be 0 or 1 per face")
    return arr


def hits_to_str(hits: HitsLike) -> str:
    """The compact ``"0101..."`` form stored in ``results.json``."""
    return "".join("1" if h else "0" for h in as_hits(hits))


def _groups(groups: Any, n: int) -> np.ndarray:
    if hasattr(groups, "detach"):
        groups = groups.detach().cpu().numpy()
    g = np.asarray(groups).reshape(-1)
    if g.shape[0] != n:
        raise ValueError(f"need one identity per face: {g.shape[0]} identities for {n} hits")
    return np.unique(g, return_inverse=True)[1]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    r"""Wilson score interval of a proportion ``k / n`` (Wilson, 1927).

    :math:`\frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}`.

    Args:
        k: successes (identified faces), ``0 <= k <= n``.
        n: trials (attacked faces), ``n >= 1``.
        confidence: two-sided level (Default: 0.95).
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _cluster_sums(hits: np.ndarray, inv: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    k = int(inv.max()) + 1 if inv.size else 0
    return np.bincount(inv, weights=hits, minlength=k), np.bincount(inv, minlength=k).astype(
        np.float64
    )


def _resampled_ids(n_ids: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_ids)`` counts: how often each identity is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot).astype(np.float64)


def identity_bootstrap_interval(
    hits: HitsLike, groups: Any, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Tuple[float, float]:
    """Percentile interval of Eval Acc from a bootstrap that resamples identities with replacement.

    Each resample draws as many identities as there are, with replacement, and
    takes all faces of each drawn identity; the statistic is the share of hits
    among the drawn faces (a ratio estimator, as in Field and Welsh, 2007).

    Args:
        hits: 0/1 per face ``(N,)``.
        groups: the identity of each face ``(N,)``.
        confidence: two-sided level (Default: 0.95).
        n_boot: bootstrap resamples (Default: 2000).
        seed: seed of the resampling (Default: 0).
    """
    h = as_hits(hits)
    if h.size == 0:
        raise ValueError("need at least one face")
    inv = _groups(groups, h.size)
    s, c = _cluster_sums(h, inv)
    w = _resampled_ids(s.size, n_boot, seed)
    stat = (w @ s) / (w @ c)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(stat, [a, 1 - a])
    return float(lo), float(hi)


def exposed_identities(hits: HitsLike, groups: Any) -> float:
    """The worst case: the share of identities with at least one face identified."""
    h = as_hits(hits)
    if h.size == 0:
        raise ValueError("need at least one face")
    s, _ = _cluster_sums(h, _groups(groups, h.size))
    return float((s > 0).mean())


def mcnemar_exact(hits_a: HitsLike, hits_b: HitsLike) -> float:
    """Two-sided exact McNemar p-value of paired hits (McNemar, 1947).

    Only the discordant faces count: ``b`` identified under A alone, ``c`` under
    B alone; under the null hypothesis of equal Eval Acc, ``b ~ Binomial(b + c, 1/2)``.
    With no discordant face the p-value is 1.
    """
    a, b = as_hits(hits_a), as_hits(hits_b)
    if a.shape != b.shape:
        raise ValueError(f"paired hits need the same faces: {a.size} vs {b.size}")
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap(
    hits_a: HitsLike,
    hits_b: HitsLike,
    groups: Any,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Dict[str, Any]:
    """Difference in Eval Acc (A minus B) on the same faces, with a paired identity-level bootstrap.

    The same identities are drawn for A and B in each resample. ``hits`` may be
    fractional (e.g. a baseline interpolated between two settings).

    Returns:
        ``{"diff", "ci", "p"}``: the observed difference, its percentile
        interval and a two-sided bootstrap p-value (twice the smaller share of
        resampled differences on either side of 0, at most 1).
    """
    a = np.asarray(as_hits(hits_a) if isinstance(hits_a, str) else _floats(hits_a))
    b = np.asarray(as_hits(hits_b) if isinstance(hits_b, str) else _floats(hits_b))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired hits need the same, non-empty set of faces: {a.size} vs {b.size}")
    inv = _groups(groups, a.size)
    sa, c = _cluster_sums(a, inv)
    sb, _ = _cluster_sums(b, inv)
    w = _resampled_ids(c.size, n_boot, seed)
    d = (w @ (sa - sb)) / (w @ c)
    q = (1 - confidence) / 2
    lo, hi = np.quantile(d, [q, 1 - q])
    p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean())))
    return {"diff": float(a.mean() - b.mean()), "ci": [float(lo), float(hi)], "p": p}


def _floats(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size and ((arr < 0) | (arr > 1) | ~np.isfinite(arr)).any():
        raise ValueError("hits must lie in [0, 1] per face")
    return arr


def compare_paired(
    hits_a: HitsLike, hits_b: HitsLike, groups: Any, *, alpha: float = 0.05, seed: int = 0
) -> Dict[str, Any]:
    """Is A's Eval Acc lower than, higher than or not distinguishable from B's on the same faces?

    The verdict is ``"lower"`` / ``"higher"`` only where the exact McNemar test
    gives ``p < alpha``; otherwise ``"undecided"``. The paired identity-level
    bootstrap is reported beside it (``bootstrap``) for the reader; the
    verdict follows McNemar, the test the issue names.

    Returns:
        ``{"acc_a", "acc_b", "diff", "mcnemar_p", "bootstrap": {...}, "verdict"}``.
    """
    a, b = as_hits(hits_a), as_hits(hits_b)
    p = mcnemar_exact(a, b)
    boot = paired_bootstrap(a, b, groups, seed=seed)
    verdict = "undecided"
    if p < alpha:
        verdict = "lower" if a.mean() < b.mean() else "higher"
    return {
        "acc_a": float(a.mean()),
        "acc_b": float(b.mean()),
        "diff": boot["diff"],
        "mcnemar_p": p,
        "bootstrap": boot,
        "verdict": verdict,
    }


def accuracy_summary(hits: HitsLike, groups: Any, *, seed: int = 0) -> Dict[str, Any]:
    """Eval Acc with its intervals.

    Returns ``{"acc", "n", "ci95" (identity bootstrap), "wilson95", "exposed"}``.
    """
    h = as_hits(hits)
    k, n = int(h.sum()), int(h.size)
    return {
        "acc": k / n,
        "n": n,
        "ci95": list(identity_bootstrap_interval(h, groups, seed=seed)),
        "wilson95": list(wilson_interval(k, n)),
        "exposed": exposed_identities(h, groups),
    }
