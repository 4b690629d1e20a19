"""Eval Acc intervals and paired tests against values known in closed form."""

import numpy as np
import pytest
import torch

from facecraft.metrics.stats import (
    accuracy_summary,
    as_hits,
    compare_paired,
    exposed_identities,
    hits_to_str,
    identity_bootstrap_interval,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)

# ---------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (5, 10, 0.236593, 0.763407),  # textbook values, z = 1.959964
        (0, 10, 0.0, 0.277533),
    ],
)
def test_wilson_interval_matches_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=2e-6)


@pytest.mark.parametrize("k,n", [(1, 64), (81, 263), (400, 1563)])
def test_wilson_bounds_are_where_the_score_test_is_exactly_significant(k, n):
    # the interval's ends solve |k/n - p| = z * sqrt(p (1 - p) / n), found here by root search
    from scipy.optimize import brentq
    from scipy.stats import norm

    z, phat = norm.ppf(0.975), k / n
    f = lambda p: abs(phat - p) - z * np.sqrt(p * (1 - p) / n)  # noqa: E731
    lo, hi = brentq(f, 1e-12, phat), brentq(f, phat, 1 - 1e-12)
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-9)


def test_wilson_is_symmetric_and_narrows_with_n():
    lo, hi = wilson_interval(3, 20)
    lo2, hi2 = wilson_interval(17, 20)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2))
    assert wilson_interval(30, 200)[1] - wilson_interval(30, 200)[0] < hi - lo


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (0, 0)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(k, n)


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    "only_a,only_b,p",
    [
        (6, 0, 2 * 0.5**6),  # 0.03125
        (6, 1, 2 * (1 + 7) / 2**7),  # 0.125
        (4, 4, 1.0),
        (0, 0, 1.0),
        (10, 2, 2 * (1 + 12 + 66) / 2**12),  # 0.0386
    ],
)
def test_mcnemar_exact_p_is_the_two_sided_binomial_tail(only_a, only_b, p):
    both = 5  # concordant faces do not enter the test
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * 3
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * 3
    assert mcnemar_exact(a, b) == pytest.approx(p, rel=1e-9)
    assert mcnemar_exact(b, a) == pytest.approx(p, rel=1e-9)


def test_mcnemar_rejects_unpaired_hits():
    with pytest.raises(ValueError, match="same faces"):
        mcnemar_exact([1, 0], [1, 0, 1])


# ---------------------------------------------------------------- bootstraps


def test_identity_bootstrap_on_two_opposite_identities():
    # one identity always identified, one never, 5 faces each: a resample draws {A,A}, {A,B} or
    # {B,B} with probabilities 1/4, 1/2, 1/4, so the statistic is 1, 0.5 or 0 and the 95% interval
    # is [0, 1]
    hits = [1] * 5 + [0] * 5
    groups = [0] * 5 + [1] * 5
    assert identity_bootstrap_interval(hits, groups, n_boot=4000) == (0.0, 1.0)
    # the per-face Wilson interval ignores the clustering and is much narrower
    lo, hi = wilson_interval(5, 10)
    assert lo > 0.2 and hi < 0.8


def test_identity_bootstrap_is_wider_when_hits_cluster_by_person():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 8)
    clustered = np.repeat(rng.random(40) < 0.3, 8).astype(int)  # all or none of a person's faces
    spread = (rng.random(320) < clustered.mean()).astype(int)  # same rate, independent faces
    w_c = np.diff(identity_bootstrap_interval(clustered, groups))[0]
    w_s = np.diff(identity_bootstrap_interval(spread, groups))[0]
    assert w_c > 2 * w_s


def test_identity_bootstrap_contains_the_estimate_and_is_seeded():
    hits = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    lo, hi = identity_bootstrap_interval(hits, groups, seed=3)
    assert lo <= 0.4 <= hi
    assert identity_bootstrap_interval(hits, groups, seed=3) == (lo, hi)
    with pytest.raises(ValueError, match="one identity per face"):
        identity_bootstrap_interval(hits, groups[:-1])


def test_paired_bootstrap_of_identical_hits_is_zero():
    hits, groups = [1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 2, 2]
    out = paired_bootstrap(hits, hits, groups)
    assert out["diff"] == 0.0 and out["ci"] == [0.0, 0.0] and out["p"] == 1.0


def test_paired_bootstrap_sees_a_consistent_difference():
    groups = np.repeat(np.arange(30), 4)
    a = np.ones(120)
    b = np.zeros(120)
    b[::4] = 1  # B identifies one face of four, A every face
    out = paired_bootstrap(a, b, groups)
    assert (
        out["diff"] == pytest.approx(0.75)
        and out["ci"] == pytest.approx([0.75, 0.75])
        and out["p"] == 0.0
    )


# ---------------------------------------------------------------- verdicts and summaries


def test_compare_paired_calls_a_difference_only_when_mcnemar_supports_it():
    groups = list(range(20))
    sure = compare_paired(
        [0] * 20, [1] * 8 + [0] * 12, groups
    )  # 8 discordant, all one way: p = 2/256
    assert sure["verdict"] == "lower" and sure["mcnemar_p"] == pytest.approx(2 / 256)
    assert compare_paired([1] * 8 + [0] * 12, [0] * 20, groups)["verdict"] == "higher"
    close = compare_paired(
        [1, 1, 0] + [0] * 17, [1, 0, 1, 1] + [0] * 16, groups
    )  # 1 vs 2 discordant
    assert close["verdict"] == "undecided" and close["mcnemar_p"] == 1.0


def test_exposed_identities_is_the_share_of_people_hit_at_least_once():
    assert exposed_identities([1, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(2 / 3)


def test_hits_string_round_trip_and_summary():
    h = [True, False, True, True]
    s = hits_to_str(h)
    assert s == "1011" and as_hits(s).tolist() == [1, 0, 1, 1]
    summ = accuracy_summary(s, [0, 0, 1, 1])
    assert summ["acc"] == 0.75 and summ["n"] == 4 and summ["exposed"] == 1.0
    assert summ["wilson95"] == pytest.approx(list(wilson_interval(3, 4)))
    with pytest.raises(ValueError, match="only '0' and '1'"):
        as_hits("10x1")
    with pytest.raises(ValueError, match="0 or 1"):
        as_hits([0.5, 1])
