"""The report's tables read the intervals and verdicts of a results file."""

from __future__ import annotations

from facecraft.experiments.report import headline
from facecraft.experiments.tables import _claim_rows, _worst_rows

from .test_claims import GOOD, LEAKY_NOISE, _hits, _results


def test_strongest_attack_per_setting_is_the_most_identifying_one() -> None:
    res = {**_results({**GOOD, "blackbox": _hits(9)}, noise=LEAKY_NOISE), "n_images": 60}
    rows = {(r[0], r[1]): r for r in _worst_rows(res)}
    assert rows[("crafter", "1.0")][3] == "blackbox" and rows[("crafter", "1.0")][5] == "15.0%"
    assert rows[("none", "–")][3] in ("whitebox", "blackbox") and rows[("none", "–")][5] == "75.0%"
    lo, hi = (float(v) for v in rows[("crafter", "1.0")][6].rstrip("%").split("–"))
    assert lo <= 15.0 <= hi and rows[("crafter", "1.0")][4] == "60"


def test_claim_table_shows_each_verdict_with_its_test() -> None:
    rows = _claim_rows(_results(GOOD, noise=LEAKY_NOISE))
    by_attack = {r[3]: r for r in rows}
    adaptive = by_attack["adaptive-blackbox"]
    assert adaptive[-2] == "meets" and "noise" in adaptive[7] and "(meets)" in adaptive[7]
    # the McNemar test against the noise setting just below Crafter's AUC: Crafter lower, p < 0.05
    assert (
        adaptive[9].startswith("noise below 0.87: lower p=")
        and float(adaptive[9].split("p=")[1].split(";")[0]) < 0.05
    )
    assert rows[0][-1] == "meets" and all(
        r[-1] == "" for r in rows[1:]
    )  # the setting's verdict once
    close = [(0.87, {"adaptive-whitebox": _hits(3), "adaptive-blackbox": _hits(2)})]
    assert {
        r[-2] for r in _claim_rows(_results(GOOD, noise=close)) if r[3].startswith("adaptive")
    } == {"undecided"}


def test_headline_names_each_setting_with_its_strongest_attack() -> None:
    res = {
        **_results({**GOOD, "blackbox": _hits(9)}, noise=LEAKY_NOISE),
        "n_images": 60,
        "chance": 0.01,
    }
    line = headline(res)
    assert line.startswith("faces identified under the strongest attack (dlib top-1): ")
    assert "crafter 1.0 15.0% (blackbox)" in line and line.endswith("; chance 1.0%")
    assert "\n" not in line and line.count("(") == len(_worst_rows(res)) + 1


def test_claim_table_lists_the_crafter_family_by_trait_the_paper_method_first() -> None:
    res = _results(GOOD, noise=LEAKY_NOISE)
    others = [
        {**r, "defense": d}
        for d in ("crafter-z", "from-elsewhere")
        for r in res["rows"]
        if r["defense"] == "crafter"
    ]
    res["rows"] = res["rows"][:2] + others + res["rows"][2:]  # crafter-z's rows before crafter's
    table = _claim_rows(res)
    assert list(dict.fromkeys(r[0] for r in table)) == ["crafter", "crafter-z"]
