"""The paper-claim checker on hand-made results (issue 4)."""

from __future__ import annotations

import pytest

from facecraft.experiments.claims import check_claim


def _row(defense, param, attack, acc, auc):
    return {"defense": defense, "param": param, "attack": attack, "mean_auc": auc,
            "eval_acc_top1": {"dlib": acc}}


def _results(crafter_accs, crafter_auc=0.88, noise_acc=0.05, noise_auc=0.875):
    rows = [_row("none", None, "whitebox", 0.30, 0.90), _row("none", None, "blackbox", 0.15, 0.90)]
    for attack, acc in crafter_accs.items():
        rows.append(_row("crafter", 1.0, attack, acc, crafter_auc))
    for attack in ("adaptive-whitebox", "adaptive-blackbox"):
        rows.append(_row("noise", 1.0, attack, noise_acc, noise_auc))
    return {"rows": rows}


GOOD = {"whitebox": 0.05, "blackbox": 0.04, "adaptive-whitebox": 0.06, "adaptive-blackbox": 0.03}


def test_claim_holds_when_every_ratio_and_baseline_comparison_passes() -> None:
    out = check_claim(_results(GOOD, noise_acc=0.08))
    st = out["settings"][0]
    assert out["holds"] is True and st["eligible"] and st["auc_drop"] == pytest.approx(0.02)
    adaptive = {c["attack"]: c for c in st["attacks"]}["adaptive-blackbox"]
    assert adaptive["none"] == 0.15 and adaptive["ratio"] == pytest.approx(0.2)
    assert adaptive["best_baseline"] == "noise 1.0" and adaptive["beats_baseline"] is True


def test_claim_fails_on_one_ratio_or_one_baseline() -> None:
    assert check_claim(_results({**GOOD, "blackbox": 0.06}, noise_acc=0.08))["holds"] is False  # 0.4 of none
    assert check_claim(_results(GOOD, noise_acc=0.05))["holds"] is False  # noise beats it on adaptive-whitebox


def test_claim_not_tested_beyond_the_utility_budget_or_without_a_matched_baseline() -> None:
    out = check_claim(_results(GOOD, crafter_auc=0.84))
    assert out["settings"][0]["eligible"] is False and out["holds"] is None
    out = check_claim(_results(GOOD, noise_acc=0.01, noise_auc=0.70))  # the only baseline has far less utility
    c = {c["attack"]: c for c in out["settings"][0]["attacks"]}["adaptive-whitebox"]
    assert c["best_baseline"] is None and c["beats_baseline"] is None and out["holds"] is None


def test_claim_needs_the_unprotected_reference() -> None:
    with pytest.raises(ValueError, match="'none'"):
        check_claim({"rows": [_row("crafter", 1.0, "whitebox", 0.1, 0.9)]})
