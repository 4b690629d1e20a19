"""The paper's headline claim, checked on a results file (issue 4; CRAFTER.md section 5).

Claim, as the issue states it: at a mean-AUC drop of at most ``max_auc_drop``
from no protection, Crafter's Eval Acc under every attack (adaptive ones
included) is at most ``max_ratio`` of the no-protection value, and under the
adaptive attacks it is lower than the best baseline at matched utility.

Conventions:

* the no-protection value of an adaptive attack is that of its non-adaptive
  counterpart on ``none`` (``adaptive-whitebox`` -> ``whitebox``,
  ``adaptive-blackbox`` -> ``blackbox``), since adapting to "no defence" is
  the plain attack;
* "matched utility" means a baseline setting whose mean AUC is at least the
  Crafter setting's minus ``auc_match``; the best baseline is the one with the
  lowest Eval Acc among those; when no baseline setting matches, the
  comparison is reported as not testable rather than passed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["BASELINES", "check_claim"]

#: defences the claim compares Crafter against
BASELINES = ("noise", "advlearn", "disco")
_PLAIN = {"adaptive-whitebox": "whitebox", "adaptive-blackbox": "blackbox"}


def _acc(row: Dict[str, Any], oracle: str) -> Optional[float]:
    return row.get("eval_acc_top1", {}).get(oracle)


def check_claim(results: Dict[str, Any], *, defense: str = "crafter", oracle: str = "dlib",
                max_auc_drop: float = 0.05, max_ratio: float = 1 / 3, auc_match: float = 0.01) -> Dict[str, Any]:
    """Test the claim for every setting of ``defense`` in ``results`` (the ``results.json`` schema).

    Returns:
        ``{"reference_auc", "settings": [{"param", "mean_auc", "auc_drop", "eligible", "attacks":
        [{"attack", "eval_acc", "none", "ratio", "ratio_ok", "best_baseline", "baseline_acc",
        "beats_baseline"}], "holds"}], "holds"}``; ``holds`` is True, False or None (nothing testable).
    """
    rows = results["rows"]
    none = {r["attack"]: r for r in rows if r["defense"] == "none"}
    if not none:
        raise ValueError("the results hold no 'none' rows: the claim needs the unprotected reference")
    ref_auc = next(iter(none.values())).get("mean_auc")
    if ref_auc is None:
        raise ValueError("the results hold no mean AUC: the claim needs utility")
    settings: List[Dict[str, Any]] = []
    for param in dict.fromkeys(r["param"] for r in rows if r["defense"] == defense):
        mine = [r for r in rows if r["defense"] == defense and r["param"] == param]
        auc = mine[0]["mean_auc"]
        drop = ref_auc - auc
        checks = []
        for r in mine:
            base = none.get(_PLAIN.get(r["attack"], r["attack"]))
            acc = _acc(r, oracle)
            ref = None if base is None else _acc(base, oracle)
            entry: Dict[str, Any] = {"attack": r["attack"], "eval_acc": acc, "none": ref,
                                     "ratio": None if not ref else acc / ref}
            entry["ratio_ok"] = None if ref is None else acc <= max_ratio * ref
            if r["attack"] in _PLAIN:
                matched = [b for b in rows if b["defense"] in BASELINES and b["attack"] == r["attack"]
                           and b.get("mean_auc") is not None and b["mean_auc"] >= auc - auc_match]
                best = min(matched, key=lambda b: _acc(b, oracle), default=None)
                entry["best_baseline"] = None if best is None else f"{best['defense']} {best['param']}"
                entry["baseline_acc"] = None if best is None else _acc(best, oracle)
                entry["beats_baseline"] = None if best is None else acc < _acc(best, oracle)
            checks.append(entry)
        verdicts = [c["ratio_ok"] for c in checks] + [c.get("beats_baseline") for c in checks if c["attack"] in _PLAIN]
        eligible = drop <= max_auc_drop
        # any failed check refutes the claim; a check that could not be made leaves it untested
        holds: Optional[bool] = None
        if eligible:
            holds = False if False in verdicts else (None if None in verdicts else True)
        settings.append({"param": param, "mean_auc": auc, "auc_drop": drop, "eligible": eligible,
                         "attacks": checks, "holds": holds})
    tested = [s["holds"] for s in settings if s["holds"] is not None]
    return {"defense": defense, "oracle": oracle, "reference_auc": ref_auc, "max_auc_drop": max_auc_drop,
            "max_ratio": max_ratio, "settings": settings, "holds": any(tested) if tested else None}
