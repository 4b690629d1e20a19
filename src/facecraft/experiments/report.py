"""The study report: ``report.html`` (self-contained) and ``report.md`` with PNGs beside them.

(a) a grid like the paper's Figure 2 (rows: raw images and each defence;
columns: each attack's reconstructions), (b) the privacy-utility plot (Eval Acc
vs mean AUC per defence and attack, chance and oracle ceiling as lines), (c)
Eval Acc over the adaptive attacker's training epochs, (d) the tables, (e) the
wall time of every stage and the machine. The figures are drawn by
:mod:`facecraft.experiments.plots` and the tables built by
:mod:`facecraft.experiments.tables` (both re-exported here); this module gathers
them from a run directory (:func:`build_report`), lays them out and writes both pages.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from facecraft._io import (
    atomic_write_bytes,
    atomic_write_text,
    checkpoint_exists,
    load_checkpoint,
    read_json,
)
from facecraft.experiments.plots import plot_adaptive, plot_grid, plot_tradeoff
from facecraft.experiments.tables import Table, headline, percent, report_tables

__all__ = [
    "build_report",
    "write_report",
    "plot_tradeoff",
    "plot_adaptive",
    "plot_grid",
    "headline",
]

#: the most settings the report's grid shows one row each; a larger grid (a sweep) gets one row per
#: defence
_GRID_ROWS = 10

#: the figures in page order, with their captions
_FIGURES = {
    "grid": "(a) Raw private faces and each defence's release reconstructed by each attack.",
    "tradeoff": "(b) Privacy-utility trade-off: Eval Acc (dlib, top-1) against mean AUC.",
    "adaptive": "(c) Eval Acc over the adaptive attacker's training epochs.",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:3px 7px;text-align:right}td:nth-child(-n+3),th{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;"
    "font-weight:bold}figcaption{color:#555;margin:.3em 0 1.5em}"
)


def write_report(run_dir: Path, *, figures: Dict[str, bytes]) -> Dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the figure PNGs into ``run_dir``.

    Args:
        run_dir: holds ``results.json`` and ``stages.json``.
        figures: name -> PNG bytes (``grid``, ``tradeoff``, ``adaptive``), written as
            ``<name>.png``.

    Returns:
        Paths of the written files.
    """
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    stages_path = run_dir / results.get("run_dir", ".") / "stages.json"
    stages = read_json(stages_path) if stages_path.exists() else {"stages": {}}
    for name, png in figures.items():
        atomic_write_bytes(run_dir / f"{name}.png", png)
    tables = report_tables(results, stages)
    atomic_write_text(run_dir / "report.md", _markdown(results, stages, tables, figures))
    atomic_write_text(run_dir / "report.html", _html(results, stages, tables, figures))
    return {"html": run_dir / "report.html", "md": run_dir / "report.md"}


def _title(results: Dict[str, Any]) -> str:
    return f"facecraft study — {results.get('dataset')} ({results.get('profile')} profile)"


def _warning(results: Dict[str, Any]) -> str:
    """The banner of a run on synthetic faces, and the results' own ``note`` (empty otherwise)."""
    parts = [results["note"]] if results.get("note") else []
    if results.get("synthetic", False):
        parts.insert(
            0,
            "**SYNTHETIC DATA** — procedurally generated faces for a smoke test; no figure here is "
            "a result.",
        )
    return " ".join(parts)


def _summary(results: Dict[str, Any]) -> str:
    ceil = results.get("oracle_ceiling", {})
    return (
        f"{results.get('n_images')} private test faces of {results.get('n_identities')} "
        f"identities. Chance: {percent(results.get('chance'))}. Oracle top-1 on the real faces "
        f"(ceiling): dlib {percent(ceil.get('dlib'))}, Eval-net {percent(ceil.get('evalnet'))}. "
        "Lower Eval Acc / FSIM / SSIM means more privacy; higher mean AUC means more utility."
    )


def _reference_line(results: Dict[str, Any], *, ceiling: str) -> str:
    """Chance and the oracle's ceiling, under the results table (``ceiling``: what to call it)."""
    ceil = results.get("oracle_ceiling", {})
    return (
        f"Chance {percent(results.get('chance'))}; {ceiling} dlib {percent(ceil.get('dlib'))}, "
        f"Eval-net {percent(ceil.get('evalnet'))}."
    )


def _markdown(
    results: Dict[str, Any],
    stages: Dict[str, Any],
    tables: Dict[str, Table],
    figures: Dict[str, bytes],
) -> str:
    """``report.md``: title, summary, the figures (as links to the PNGs), the tables and the
    machine."""
    md = [f"# {_title(results)}", ""]
    warn = _warning(results)
    if warn:
        md += [warn, ""]
    md += [_summary(results), ""]
    for name, caption in _FIGURES.items():
        if name in figures:
            md += [caption, "", f"![{name}]({name}.png)", ""]
    md += _md_table(tables["results"]) + ["", _reference_line(results, ceiling="ceiling"), ""]
    for key in ("worst", "claim"):
        if key in tables:
            md += _md_table(tables[key]) + [""]
    machine = stages.get("machine", {})
    md += _md_table(tables["stages"])
    md += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    return "\n".join(md)


def _html(
    results: Dict[str, Any],
    stages: Dict[str, Any],
    tables: Dict[str, Table],
    figures: Dict[str, bytes],
) -> str:
    """``report.html``: the same page as :func:`_markdown`, the figures embedded as base64 PNGs."""
    esc = html.escape
    title = esc(_title(results))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    warn = _warning(results)
    if warn:
        parts.append(f"<p class='warn'>{esc(warn.replace('**', ''))}</p>")
    parts.append(f"<p>{esc(_summary(results))}</p>")
    for name, caption in _FIGURES.items():
        if name in figures:
            b64 = base64.b64encode(figures[name]).decode()
            parts.append(
                f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'>"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    parts += _html_table(tables["results"])
    parts.append(f"</table><p>{_reference_line(results, ceiling='oracle ceiling')}</p>")
    for key in ("worst", "claim"):
        if key in tables:
            parts += _html_table(tables[key]) + ["</table>"]
    machine = stages.get("machine", {})
    parts += _html_table(tables["stages"])
    parts.append(
        "</table><p>"
        + esc(", ".join(f"{k}: {v}" for k, v in machine.items()))
        + "</p></body></html>"
    )
    return "\n".join(parts)


def _md_table(t: Table) -> List[str]:
    """A table's markdown lines: heading, note, header, rows."""
    out = ["#" * t.level + " " + t.heading, ""] + ([t.note, ""] if t.note else [])
    out += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    return out + ["| " + " | ".join(r) + " |" for r in t.rows]


def _html_table(t: Table) -> List[str]:
    """A table's HTML lines: heading, note and header in one, then one per row (the caller closes
    the ``<table>``, with whatever follows it)."""
    esc = html.escape
    note = f"<p>{esc(t.note)}</p>" if t.note else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in t.header)
    first = f"<h{t.level}>{t.heading}</h{t.level}>{note}<table><tr>{head}</tr>"
    return [first] + ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in t.rows]


def build_report(run_dir: Path) -> Path:
    """Draw the figures from ``run_dir``'s results and cells and write ``report.html`` /
    ``report.md``."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").exists():
        raise ValueError(
            f"{run_dir} holds no results.json; run `facecraft demo` or `facecraft evaluate` first"
        )
    results = read_json(run_dir / "results.json")
    if not (
        isinstance(results, dict)
        and isinstance(results.get("rows"), list)
        and isinstance(results.get("cells"), str)
    ):
        raise ValueError(
            f"{run_dir / 'results.json'} is not a facecraft results file (it needs a list of "
            "'rows' and the 'cells' folder); `facecraft demo`, `sweep` and `evaluate` write one"
        )
    cells = run_dir / results["cells"]
    if not checkpoint_exists(cells / "originals"):
        raise ValueError(
            f"{run_dir / 'results.json'} names the cells folder {cells}, which holds no originals; "
            "was the run directory moved without its cells?"
        )
    originals = load_checkpoint(cells / "originals", kind="originals")[0]["images"]
    figures = {}
    if any(r.get("mean_auc") is not None for r in results["rows"]):  # an audit has no utility
        figures["tradeoff"] = plot_tradeoff(results)
    adaptive = plot_adaptive(results)
    if adaptive:
        figures["adaptive"] = adaptive
    attacks: List[str] = list(dict.fromkeys(r["attack"] for r in results["rows"]))
    recon = _grid_reconstructions(results["rows"], cells, attacks)
    # embedding attacks draw no face
    drawn = [a for a in attacks if any(a in per for per in recon.values())]
    if recon and drawn:
        figures["grid"] = plot_grid(
            originals, recon, drawn, raw_label=results.get("grid_raw_label", "raw")
        )
    return write_report(run_dir, figures=figures)["html"]


def _grid_reconstructions(
    rows: List[Dict[str, Any]], cells: Path, attacks: List[str]
) -> Dict[str, Dict[str, torch.Tensor]]:
    """The stored reconstructions the grid shows, by row label and attack: a row per setting (a
    demo's grid); over ``_GRID_ROWS`` settings (a sweep), one per defence, the setting with the
    median parameter, so the grid stays readable."""
    chosen: Dict[str, List[Any]] = {}
    stems: Dict[Tuple[str, Any], str] = {}
    for r in rows:
        if r["param"] not in chosen.setdefault(r["defense"], []):
            chosen[r["defense"]].append(r["param"])
        stems[(r["defense"], r["param"])] = r.get("setting", f"{r['defense']}_{r['param']}")
    every = sum(len(ps) for ps in chosen.values()) <= _GRID_ROWS
    recon: Dict[str, Dict[str, torch.Tensor]] = {}
    for d, params in chosen.items():
        ps = sorted(params, key=lambda p: (p is None, p))
        for p in ps if every else [ps[len(ps) // 2]]:
            label = d if p is None else f"{d} {p:g}"
            recon[label] = {}
            for a in attacks:
                stem = cells / f"{stems[(d, p)]}--{a}-recon"
                if checkpoint_exists(stem):
                    recon[label][a] = load_checkpoint(stem, kind="reconstructions")[0]["images"]
    return recon
