"""The study report's tables as rows of cell strings: (d) every cell's measured figures, the
strongest attack per defence setting, (e) the paper's claim checked by
:mod:`facecraft.experiments.claims` and (f) the stage times; and the one-line :func:`headline` a
demo ends with. :mod:`facecraft.experiments.report` lays them out as markdown and HTML.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from facecraft.experiments.claims import check_claim, claim_defenses, defense_trait
from facecraft.experiments.plots import _ci

__all__ = ["Table", "report_tables", "headline", "percent"]


class Table(NamedTuple):
    """One table of the report: its heading (level 2 or 3), a note above it (may be empty), the
    column names and the rows of cell strings."""

    level: int
    heading: str
    note: str
    header: Sequence[str]
    rows: List[List[str]]


def report_tables(results: Dict[str, Any], stages: Dict[str, Any]) -> Dict[str, Table]:
    """The report's tables in page order: ``results`` (d), ``worst``, ``claim`` (e; left out when
    the results cannot test it) and ``stages`` (f)."""
    tables = {
        "results": Table(2, "(d) Results", "", _HEADER, _table_rows(results)),
        "worst": Table(
            3, "Strongest attack per setting", _WORST_NOTE, _WORST_HEADER, _worst_rows(results)
        ),
    }
    claim = _claim_rows(results)
    if claim:
        tables["claim"] = Table(2, "(e) The paper's claim", _CLAIM_NOTE, _CLAIM_HEADER, claim)
    tables["stages"] = Table(
        2, "(f) Stages and machine", "", _STAGE_HEADER, _time_rows(results, stages)
    )
    return tables


def headline(results: Dict[str, Any]) -> str:
    """One line for the end of a demo: per defence setting, the share of faces (dlib top-1) its
    strongest attack identified, e.g. ``faces identified under the strongest attack: none 45.3%
    (blackbox), ...``."""
    parts = [
        f"{d}{'' if p == '–' else ' ' + p} {acc} ({attack})"
        for d, p, _auc, attack, _n, acc, *_ in _worst_rows(results)
    ]
    chance = results.get("chance")
    tail = f"; chance {percent(chance)}" if chance else ""
    return "faces identified under the strongest attack (dlib top-1): " + ", ".join(parts) + tail


_HEADER = [
    "defence",
    "param",
    "attack",
    "faces",
    "Eval Acc top-1 (dlib)",
    "95% interval (identities)",
    "identities exposed",
    "top-5 (dlib)",
    "top-1 (Eval-net)",
    "FSIM",
    "SSIM",
    "PSNR",
    "ε-PII",
    "mean AUC",
    "mean AUC (training scenario)",
]
_WORST_HEADER = [
    "defence",
    "param",
    "mean AUC",
    "strongest attack",
    "faces",
    "Eval Acc top-1 (dlib)",
    "95% interval (identities)",
    "identities exposed",
]
_WORST_NOTE = (
    "A defence is only as good as the strongest attack measured against it: per setting, the "
    "attack that identified the largest share of faces (dlib top-1), with its interval over "
    "identities and the share of people identified at least once."
)
_CLAIM_NOTE = (
    "Claim: at a mean-AUC drop of at most 0.05 from no protection, Eval Acc (dlib top-1) under "
    "every attack is at most a third of the no-protection value (an adaptive attack is compared "
    "with its plain counterpart on unprotected features), and under the adaptive attacks lower "
    "than each baseline at the same mean AUC. Each check reads meets, fails or undecided: the "
    "ratio by the 95% interval over identities, a baseline by an exact McNemar test (p < 0.05) on "
    "the same faces against its setting just below the AUC (meets) or just above it (fails); a "
    "difference the test does not support is undecided. 'at equal AUC' is the baseline's curve "
    "interpolated at the setting's AUC, with the paired bootstrap interval of the difference."
)
_CLAIM_HEADER = [
    "defence",
    "param",
    "AUC drop",
    "attack",
    "Eval Acc (95% interval)",
    "none",
    "ratio (≤ 0.33)",
    "baseline at equal AUC",
    "difference (95% interval)",
    "McNemar vs the settings below / above the AUC",
    "this row",
    "claim for the setting",
]
_STAGE_HEADER = ["stage (longest first)", "seconds", "minutes"]


def _table_rows(results: Dict[str, Any]) -> List[List[str]]:
    """Table (d): one row per cell (defence setting, attack) with every measured figure."""
    out = []
    for r in results["rows"]:
        exposed = (r.get("exposed_identities") or {}).get("dlib")
        out.append(
            [
                r["defense"],
                "–" if r.get("param") is None else str(r["param"]),
                r["attack"],
                _faces(r, results),
                percent(r["eval_acc_top1"].get("dlib")),
                _interval(_ci(r, "dlib")),
                percent(exposed),
                percent(r["eval_acc_top5"].get("dlib")),
                percent(r["eval_acc_top1"].get("evalnet")),
                _num(r.get("fsim")),
                _num(r.get("ssim")),
                _num(r.get("psnr"), ".1f"),
                _num(r.get("epsilon_pii")),
                _num(r.get("mean_auc")),
                _num(r.get("mean_auc_train_scenario")),
            ]
        )
    return out


def _time_rows(results: Dict[str, Any], stages: Dict[str, Any]) -> List[List[str]]:
    """Stage times, then the sums over defence releases and attack cells, then the total."""
    rows = [
        [k, f"{v.get('seconds', 0):.1f}", "cached" if v.get("cached") else ""]
        for k, v in sorted(
            stages.get("stages", {}).items(), key=lambda kv: -kv[1].get("seconds", 0)
        )
    ]
    releases = {
        (r["defense"], r.get("param")): r.get("protect_seconds", 0.0) for r in results["rows"]
    }
    scenario = {
        (r["defense"], r.get("param")): r.get("train_scenario_seconds", 0.0)
        for r in results["rows"]
    }
    attacks = sum(r.get("attack_seconds", 0.0) for r in results["rows"])
    extra = [
        ["defence releases (sum)", sum(releases.values())],
        ["training scenario (sum)", sum(scenario.values())],
        ["attack cells (sum)", attacks],
    ]
    rows += [[k, f"{v:.1f}", ""] for k, v in extra]
    total = sum(float(r[1]) for r in rows)
    rows.append(["total (process time, summed over parallel workers)", f"{total:.1f}", ""])
    wall = results.get("wall_seconds")
    if wall is not None:
        rows.append(["wall clock of the last invocation", f"{wall:.1f}", ""])
    return [
        [name, secs, f"{float(secs) / 60:.1f}" + (f" ({note})" if note else "")]
        for name, secs, note in rows
    ]


def _worst_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per defence setting: its strongest attack (highest dlib top-1 Eval Acc)."""
    best: Dict[Any, Dict[str, Any]] = {}
    for r in results["rows"]:
        key = (r["defense"], r.get("param"))
        acc = r["eval_acc_top1"].get("dlib")
        if acc is not None and (key not in best or acc > best[key]["eval_acc_top1"]["dlib"]):
            best[key] = r
    out = []
    for (d, p), r in best.items():
        out.append(
            [
                d,
                "–" if p is None else str(p),
                _num(r.get("mean_auc")),
                r["attack"],
                _faces(r, results),
                percent(r["eval_acc_top1"]["dlib"]),
                _interval(_ci(r, "dlib")),
                percent((r.get("exposed_identities") or {}).get("dlib")),
            ]
        )
    return out


def _claim_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per (Crafter-family setting, attack) of
    :func:`~facecraft.experiments.claims.check_claim`; the Crafter family is
    :func:`~facecraft.experiments.claims.claim_defenses` (trait ``crafts_features``). Empty without
    unprotected rows (trait ``raw_release``) or without mean AUC."""
    rows = results["rows"]
    if (
        not any(defense_trait(r["defense"], "raw_release") for r in rows)
        or not rows
        or rows[0].get("mean_auc") is None
    ):
        return []
    out = []
    for d in claim_defenses(results):
        for st in check_claim(results, defense=d)["settings"]:
            verdict = "not eligible (AUC drop > 0.05)" if not st["eligible"] else st["verdict"]
            for i, c in enumerate(st["attacks"]):
                ci = c.get("ci95")
                acc = percent(c["eval_acc"]) + ("" if ci is None else f" ({_interval(tuple(ci))})")
                out.append(
                    [
                        d,
                        _num(st["param"], "g"),
                        _num(st["auc_drop"]),
                        c["attack"],
                        acc,
                        percent(c["none"]),
                        f"{_num(c['ratio'], '.2f')} ({c['ratio_verdict']})",
                        *_baseline_cells(c),
                        c["verdict"],
                        verdict if i == 0 else "",
                    ]
                )
    return out


def _baseline_cells(c: Dict[str, Any]) -> List[str]:
    """The baseline columns of one claim row: each baseline's interpolated value, the paired
    difference and the deciding McNemar p."""
    if "baselines" not in c:
        return ["–", "–", "–"]
    if not c["baselines"]:
        return ["no baseline run", "–", "–"]
    vals, diffs, ps = [], [], []
    for name, m in c["baselines"].items():
        near = (
            m["interpolated"]
            if m["interpolated"] is not None
            else (m["below"] or m["above"] or {}).get("eval_acc")
        )
        vals.append(f"{name} {percent(near)} ({m['verdict']})")
        b = m.get("bootstrap")
        diffs.append(
            "–"
            if b is None
            else f"{name} {100 * b['diff']:+.1f} ({100 * b['ci'][0]:+.1f}, {100 * b['ci'][1]:+.1f})"
        )
        tests = [
            f"{side} {_num(m[side]['param'], 'g')}: {m[side]['test']} p={m[side]['mcnemar_p']:.2g}"
            for side in ("below", "above")
            if m.get(side) and "test" in m[side]
        ]
        ps.append(f"{name} " + ("; ".join(tests) if tests else "–"))
    return ["; ".join(vals), "; ".join(diffs), "; ".join(ps)]


def percent(v: Optional[float]) -> str:
    """A share as a percentage, two decimals below 1% (``–`` for ``None``)."""
    if v is None:
        return "–"
    return f"{100 * v:.2f}%" if 0 < abs(v) < 0.01 else f"{100 * v:.1f}%"


def _faces(row: Dict[str, Any], results: Dict[str, Any]) -> str:
    n = row.get("n_faces", results.get("n_images"))
    return "–" if n is None else str(n)


def _interval(ci: Tuple[float, float]) -> str:
    return "–" if not np.isfinite(ci).all() else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _num(v: Optional[float], fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)
