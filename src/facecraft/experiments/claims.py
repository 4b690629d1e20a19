"""The paper's headline claim, checked on a results file with intervals and paired tests (CRAFTER.md
sections 5-6).

Claim: at a mean-AUC drop of at most ``max_auc_drop`` from no protection, a
Crafter setting's Eval Acc under every attack is at most ``max_ratio`` of the
no-protection value, and under the adaptive attacks lower than every baseline
at the same utility.

Each check says *meets*, *fails* or *undecided*; a difference the data do not
support is never a verdict:

* **ratio**: meets when the upper end of the setting's 95% identity-bootstrap
  interval (``ci95``) is at most ``max_ratio`` times the no-protection Eval Acc,
  fails when its lower end is above it, else undecided. The no-protection value
  of an adaptive attack is that of its plain counterpart (``adaptive-whitebox``
  -> ``whitebox``, ``adaptive-blackbox`` -> ``blackbox``, ``adaptive-embedding``
  -> ``embedding``): adapting to "no defence" is the plain attack.
* **baseline at the same utility**: a baseline's settings form a curve of
  Eval Acc against mean AUC. Its value at the Crafter setting's AUC lies
  between the neighbour just below that AUC (more private, less useful) and the
  neighbour just above it (``auc_match`` of slack on either side). Crafter
  *meets* against the baseline when it is lower than the neighbour below, and
  *fails* when it is higher than the neighbour above, each by an exact McNemar
  test on the same faces (``p < alpha``); otherwise undecided. The linear
  interpolation between the two neighbours is reported with a paired
  identity-level bootstrap interval of the difference. A baseline with no
  neighbour on the deciding side cannot decide.
* a setting meets the claim when every check meets, fails when one fails, else
  is undecided; beyond ``max_auc_drop`` it is not eligible.

Rows without per-face ``hits`` (results written before intervals existed)
leave their checks undecided.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from facecraft.defenses import get_defense_class
from facecraft.metrics.stats import as_hits, compare_paired, paired_bootstrap

__all__ = [
    "BASELINES",
    "PLAIN_COUNTERPART",
    "check_claim",
    "claim_defenses",
    "defense_trait",
    "matched_baseline",
]

#: defences the claim compares Crafter against
BASELINES = ("noise", "advlearn", "disco")
#: the attack an adaptive attack reduces to against unprotected features
PLAIN_COUNTERPART = {
    "adaptive-whitebox": "whitebox",
    "adaptive-blackbox": "blackbox",
    "adaptive-embedding": "embedding",
}


def defense_trait(name: str, trait: str) -> bool:
    """Whether the defence class registered as ``name`` sets the trait ``trait`` (an attribute of
    :class:`~facecraft.defenses.FeatureDefense` such as ``raw_release`` or ``crafts_features``);
    ``False`` for a name that is not registered (results written elsewhere)."""
    try:
        cls = get_defense_class(name)
    except ValueError:
        return False
    return bool(getattr(cls, trait))


def claim_defenses(results: Dict[str, Any]) -> List[str]:
    """The feature-crafting defences (trait ``crafts_features``) in ``results``: the subjects of the
    claim, the costliest first (``relative_cost``: the paper's full optimisation before its cheaper
    approximations), equal costs in the order of the rows. Unregistered names are left out."""
    names = dict.fromkeys(r["defense"] for r in results["rows"])
    crafters = [d for d in names if defense_trait(d, "crafts_features")]
    return sorted(crafters, key=lambda d: -get_defense_class(d).relative_cost)


def _acc(row: Dict[str, Any], oracle: str) -> Optional[float]:
    return row.get("eval_acc_top1", {}).get(oracle)


def _hits(row: Dict[str, Any], oracle: str) -> Optional[np.ndarray]:
    h = row.get("hits", {}).get(f"{oracle}_top1")
    return None if h is None else as_hits(h)


def _row_groups(results: Dict[str, Any], row: Dict[str, Any], oracle: str) -> np.ndarray:
    """The identities of the faces ``row`` was measured on (``results["labels"]``, at the row's
    ``faces`` positions when its attack ran on a subset); without labels each face is its own
    group."""
    labels = results.get("labels")
    if labels is None:
        h = _hits(row, oracle)
        return np.arange(0 if h is None else h.size)
    labels = np.asarray(labels)
    return labels if row.get("faces") is None else labels[np.asarray(row["faces"], dtype=int)]


def _combine(verdicts: List[str]) -> str:
    if "fails" in verdicts:
        return "fails"
    return "meets" if verdicts and all(v == "meets" for v in verdicts) else "undecided"


def _neighbour(cell: Optional[Dict[str, Any]], oracle: str) -> Optional[Dict[str, Any]]:
    """A baseline neighbour's summary in :func:`matched_baseline`'s result (``None`` when
    absent)."""
    if cell is None:
        return None
    return {"param": cell["param"], "mean_auc": cell["mean_auc"], "eval_acc": _acc(cell, oracle)}


def matched_baseline(
    row: Dict[str, Any],
    candidates: List[Dict[str, Any]],
    groups: Any,
    *,
    oracle: str = "dlib",
    auc_match: float = 0.01,
    alpha: float = 0.05,
    seed: int = 0,
) -> Dict[str, Any]:
    """Compare ``row`` (a Crafter cell) with one baseline's cells ``candidates`` (same attack) at
    the same mean AUC, as the module docstring describes.

    Returns:
        ``{"below", "above"}`` (the neighbours' labels and Eval Acc), ``"interpolated"`` (the
        baseline's Eval Acc at ``row``'s AUC, when both neighbours exist), ``"bootstrap"`` (paired
        difference row minus interpolated baseline), ``"mcnemar_p"`` of the deciding comparison
        (``None`` when none decides; each neighbour's own test is in ``below`` / ``above`` as
        ``"test"`` and ``"mcnemar_p"``) and ``"verdict"``: ``"meets"``, ``"fails"``,
        ``"undecided"`` or ``"not testable"``.
    """
    auc = row["mean_auc"]
    below, above = _neighbours(candidates, auc, oracle, auc_match)
    out: Dict[str, Any] = {
        "below": _neighbour(below, oracle),
        "above": _neighbour(above, oracle),
        "interpolated": None,
        "bootstrap": None,
        "mcnemar_p": None,
        "verdict": "not testable",
    }
    if below is None and above is None:
        return out
    mine = _hits(row, oracle)
    if below is not None and above is not None:
        out["interpolated"], out["bootstrap"] = _interpolate(
            mine, below, above, auc, groups, oracle, seed
        )
    out["verdict"] = "undecided"
    if mine is None:
        return out
    for name, side, wanted, verdict in (
        ("below", below, "lower", "meets"),
        ("above", above, "higher", "fails"),
    ):
        other = None if side is None else _hits(side, oracle)
        if other is None or other.shape != mine.shape:
            continue
        cmp = compare_paired(mine, other, groups, alpha=alpha, seed=seed)
        # each neighbour's test, as "row lower / higher / undecided than it, p"
        out[name]["mcnemar_p"], out[name]["test"] = cmp["mcnemar_p"], cmp["verdict"]
        if cmp["verdict"] == wanted and out["verdict"] == "undecided":
            out["verdict"], out["mcnemar_p"] = verdict, cmp["mcnemar_p"]
    return out


def _neighbours(
    candidates: List[Dict[str, Any]], auc: float, oracle: str, auc_match: float
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """A baseline's cells just below and just above ``auc`` (``auc_match`` of slack on either side)
    among those with a mean AUC and an Eval Acc; ``None`` where there is none."""
    usable = [
        c for c in candidates if c.get("mean_auc") is not None and _acc(c, oracle) is not None
    ]
    below = max(
        (c for c in usable if c["mean_auc"] <= auc + auc_match),
        key=lambda c: c["mean_auc"],
        default=None,
    )
    above = min(
        (c for c in usable if c["mean_auc"] >= auc - auc_match),
        key=lambda c: c["mean_auc"],
        default=None,
    )
    return below, above


def _interpolate(
    mine: Optional[np.ndarray],
    below: Dict[str, Any],
    above: Dict[str, Any],
    auc: float,
    groups: Any,
    oracle: str,
    seed: int,
) -> Tuple[float, Optional[Dict[str, Any]]]:
    """The baseline's Eval Acc at ``auc``, linear between its two neighbours, and the paired
    bootstrap of the difference (the row's hits ``mine`` minus the same mix of the neighbours';
    ``None`` without per-face hits of matching shape)."""
    span = above["mean_auc"] - below["mean_auc"]
    w = 0.5 if span <= 0 else min(1.0, max(0.0, (auc - below["mean_auc"]) / span))
    interpolated = (1 - w) * _acc(below, oracle) + w * _acc(above, oracle)
    hb, ha = _hits(below, oracle), _hits(above, oracle)
    if (
        mine is not None
        and hb is not None
        and ha is not None
        and hb.shape == ha.shape == mine.shape
    ):
        return interpolated, paired_bootstrap(mine, (1 - w) * hb + w * ha, groups, seed=seed)
    return interpolated, None


def _ratio_check(
    row: Dict[str, Any], ref: Optional[float], oracle: str, max_ratio: float
) -> Dict[str, Any]:
    acc = _acc(row, oracle)
    ci = row.get("ci95", {}).get("eval_acc_top1", {}).get(oracle)
    out: Dict[str, Any] = {
        "eval_acc": acc,
        "ci95": ci,
        "none": ref,
        "ratio": None if not ref or acc is None else acc / ref,
        "ratio_verdict": "not testable",
    }
    if ref is None or acc is None:
        return out
    limit = max_ratio * ref
    out["ratio_verdict"] = (
        "undecided"
        if ci is None
        else "meets"
        if ci[1] <= limit
        else "fails"
        if ci[0] > limit
        else "undecided"
    )
    return out


def check_claim(
    results: Dict[str, Any],
    *,
    defense: str = "crafter",
    oracle: str = "dlib",
    max_auc_drop: float = 0.05,
    max_ratio: float = 1 / 3,
    auc_match: float = 0.01,
    alpha: float = 0.05,
) -> Dict[str, Any]:
    """Test the claim for every setting of ``defense`` in ``results`` (the ``results.json`` schema).

    ``results["labels"]`` (the attacked faces' identities; a row's ``faces``
    picks its subset) groups faces for the bootstraps; without it every face is
    its own group. The unprotected reference is the rows of the defence whose
    class sets ``raw_release`` (``"none"``).

    Returns:
        ``{"reference_auc", "settings": [{"param", "mean_auc", "auc_drop", "eligible", "attacks":
        [{"attack", "eval_acc", "ci95", "none", "ratio", "ratio_verdict", "baselines": {name:
        matched_baseline(...)}, "baseline_verdict", "verdict"}], "verdict"}], "verdict"}``; a
        verdict is ``"meets"``, ``"fails"``, ``"undecided"`` or (a setting) ``"not eligible"``. The
        claim's overall verdict is ``"meets"`` when some eligible setting meets it.
    """
    rows = results["rows"]
    none, ref_auc = _reference(rows)
    settings: List[Dict[str, Any]] = []
    for param in dict.fromkeys(r["param"] for r in rows if r["defense"] == defense):
        mine = [r for r in rows if r["defense"] == defense and r["param"] == param]
        auc = mine[0]["mean_auc"]
        checks = [
            _check_attack(
                results,
                r,
                none,
                oracle=oracle,
                max_ratio=max_ratio,
                auc_match=auc_match,
                alpha=alpha,
            )
            for r in mine
        ]
        eligible = ref_auc - auc <= max_auc_drop
        settings.append(
            {
                "param": param,
                "mean_auc": auc,
                "auc_drop": ref_auc - auc,
                "eligible": eligible,
                "attacks": checks,
                "verdict": _combine([c["verdict"] for c in checks]) if eligible else "not eligible",
            }
        )
    return {
        "defense": defense,
        "oracle": oracle,
        "reference_auc": ref_auc,
        "max_auc_drop": max_auc_drop,
        "max_ratio": max_ratio,
        "alpha": alpha,
        "settings": settings,
        "verdict": _overall([s["verdict"] for s in settings if s["eligible"]]),
    }


def _reference(rows: List[Dict[str, Any]]) -> Tuple[Dict[str, Dict[str, Any]], float]:
    """The unprotected rows by attack and their mean AUC; raises ``ValueError`` without either."""
    none = {r["attack"]: r for r in rows if defense_trait(r["defense"], "raw_release")}
    if not none:
        raise ValueError(
            "the results hold no 'none' rows: the claim needs the unprotected reference"
        )
    ref_auc = next(iter(none.values())).get("mean_auc")
    if ref_auc is None:
        raise ValueError("the results hold no mean AUC: the claim needs utility")
    return none, ref_auc


def _check_attack(
    results: Dict[str, Any],
    row: Dict[str, Any],
    none: Dict[str, Dict[str, Any]],
    *,
    oracle: str,
    max_ratio: float,
    auc_match: float,
    alpha: float,
) -> Dict[str, Any]:
    """One attack's checks on a setting: the ratio to no protection and, for an adaptive attack,
    each baseline at the same mean AUC."""
    base = none.get(PLAIN_COUNTERPART.get(row["attack"], row["attack"]))
    entry: Dict[str, Any] = {
        "attack": row["attack"],
        **_ratio_check(row, None if base is None else _acc(base, oracle), oracle, max_ratio),
    }
    verdicts = [entry["ratio_verdict"]]
    if row["attack"] in PLAIN_COUNTERPART:
        entry["baselines"] = _baseline_checks(
            results, row, oracle=oracle, auc_match=auc_match, alpha=alpha
        )
        tested = [
            m["verdict"] for m in entry["baselines"].values() if m["verdict"] != "not testable"
        ]
        entry["baseline_verdict"] = _combine(tested) if tested else "not testable"
        verdicts.append(entry["baseline_verdict"])
    entry["verdict"] = _combine(verdicts)
    return entry


def _baseline_checks(
    results: Dict[str, Any], row: Dict[str, Any], *, oracle: str, auc_match: float, alpha: float
) -> Dict[str, Dict[str, Any]]:
    """:func:`matched_baseline` against each of :data:`BASELINES` measured under ``row``'s
    attack."""
    rows = results["rows"]
    groups = _row_groups(results, row, oracle)
    return {
        b: matched_baseline(
            row,
            [c for c in rows if c["defense"] == b and c["attack"] == row["attack"]],
            groups,
            oracle=oracle,
            auc_match=auc_match,
            alpha=alpha,
        )
        for b in BASELINES
        if any(c["defense"] == b and c["attack"] == row["attack"] for c in rows)
    }


def _overall(eligible: List[str]) -> str:
    """The claim's verdict from its eligible settings' verdicts: meets when one meets, fails when
    every one fails, else undecided."""
    return (
        "meets"
        if "meets" in eligible
        else "fails"
        if eligible and all(v == "fails" for v in eligible)
        else "undecided"
    )
