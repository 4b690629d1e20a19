"""The study report: ``report.html`` (self-contained) and ``report.md`` with PNGs beside them.

(a) a grid like the paper's Figure 2 (rows: raw images and each defence;
columns: each attack's reconstructions), (b) the privacy-utility plot (Eval Acc
vs mean AUC per defence and attack, chance and oracle ceiling as lines), (c)
Eval Acc over the adaptive attacker's training epochs, (d) the tables, (e) the
wall time of every stage and the machine.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from facecraft._io import atomic_write_bytes, atomic_write_text, read_json  # noqa: E402

__all__ = ["write_report", "plot_tradeoff", "plot_adaptive", "plot_grid", "headline"]

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label(row: Dict[str, Any]) -> str:
    p = row.get("param")
    return (
        row["defense"]
        if p is None
        else f"{row['defense']} {p:g}"
        if isinstance(p, (int, float))
        else f"{row['defense']} {p}"
    )


def _ci(row: Dict[str, Any], oracle: str, key: str = "eval_acc_top1") -> Tuple[float, float]:
    """The row's 95% identity-bootstrap interval of ``key`` (NaNs where it has none)."""
    ci = (row.get("ci95") or {}).get(key, {}).get(oracle)
    return (float("nan"), float("nan")) if ci is None else (float(ci[0]), float(ci[1]))


def plot_tradeoff(results: Dict[str, Any], *, oracle: str = "dlib") -> bytes:
    """Eval Acc (top-1, ``oracle``) against mean AUC, one panel per attack, one line per defence."""
    rows = [r for r in results["rows"] if r.get("mean_auc") is not None]
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    n = max(1, len(attacks))
    ncol = min(3, n)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    chance = results.get("chance")
    ceiling = results.get("oracle_ceiling", {}).get(oracle)
    for ax, attack in zip(axes.flat, attacks):
        for j, d in enumerate(defenses):
            pts = sorted(
                (r["mean_auc"], r["eval_acc_top1"][oracle], *_ci(r, oracle))
                for r in rows
                if r["attack"] == attack and r["defense"] == d
            )
            if pts:
                x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
                color = _COLORS[j % len(_COLORS)]
                ax.plot(x, y, "o-", color=color, label=d, ms=4)
                if np.isfinite(
                    lo
                ).all():  # the 95% interval over identities: a bar per point, a band per curve
                    ax.errorbar(
                        x,
                        y,
                        yerr=[y - lo, hi - y],
                        fmt="none",
                        ecolor=color,
                        elinewidth=1,
                        capsize=2,
                    )
                    if len(x) > 1:
                        ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        top = max(
            [
                max(r["eval_acc_top1"][oracle], _ci(r, oracle)[1] if r.get("ci95") else 0.0)
                for r in rows
                if r["attack"] == attack
            ]
            + [chance or 0.0]
        )
        if ceiling is not None and ceiling <= 2.5 * top:
            ax.axhline(ceiling, color="black", ls="--", lw=1, label="oracle on real faces")
        elif ceiling is not None:  # far above the data: say it rather than squash the points
            ax.set_ylim(0, 1.25 * top + 1e-3)
            ax.plot(
                [],
                [],
                color="black",
                ls="--",
                lw=1,
                label=f"oracle on real faces: {100 * ceiling:.0f}% (off scale)",
            )
        ax.set_title(attack)
        ax.set_xlabel("utility: mean AUC (higher is better)")
        ax.set_ylabel(f"Eval Acc top-1, {oracle} (lower is better)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(6, len(labels)),
        bbox_to_anchor=(0.5, -0.04),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _fig_png(fig)


def plot_adaptive(results: Dict[str, Any], *, oracle: str = "dlib") -> Optional[bytes]:
    """Eval Acc over the adaptive attacker's training epochs, one line per (defence, attack)."""
    curves = results.get("adaptive_curves", [])
    # curves that tracked Eval Acc per epoch (the embedding attacks record only their losses)
    curves = [c for c in curves if c.get("history") and "eval_acc_top1" in c["history"][0]]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    # one colour per defence setting, the line style tells the attack (solid: white-box, dashed: black-box)
    settings = list(dict.fromkeys(_label(c) for c in curves))
    for c in curves:
        ep = [h["epoch"] for h in c["history"]]
        acc = [h["eval_acc_top1"][oracle] for h in c["history"]]
        color = _COLORS[settings.index(_label(c)) % len(_COLORS)]
        ax.plot(
            ep,
            acc,
            "o-" if c["attack"].endswith("whitebox") else "s--",
            ms=3,
            color=color,
            label=f"{_label(c)} / {c['attack']}",
        )
        band = np.array([_ci(h, oracle) for h in c["history"]])
        if len(ep) > 1 and np.isfinite(band).all():
            ax.fill_between(ep, band[:, 0], band[:, 1], color=color, alpha=0.1, lw=0)
    if results.get("chance") is not None:
        ax.axhline(results["chance"], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("attacker's training epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"Eval Acc top-1, {oracle}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _fig_png(fig)


def plot_grid(
    originals: torch.Tensor, recon: Dict[str, Dict[str, torch.Tensor]], attacks: Sequence[str]
) -> bytes:
    """Figure-2-style grid: first row raw faces; then one row per defence, one column per attack.

    Args:
        originals: ``(k, 3, S, S)`` raw faces.
        recon: ``recon[defence_label][attack]`` -> ``(k, 3, S, S)`` reconstructions.
        attacks: column order.
    """
    k = max(1, originals.shape[0])
    rows = (
        2 if k >= 4 else 1
    )  # faces of a cell in two rows: on a page-wide figure each face stays large
    cols = -(-k // rows)

    def tile(x: torch.Tensor) -> np.ndarray:
        x = x.detach().float().clamp(0, 1).cpu()
        s = x.shape[-1]
        canvas = torch.ones(3, rows * (s + 2), cols * (s + 2))
        for i, xi in enumerate(x[: rows * cols]):
            r, c = divmod(i, cols)
            canvas[:, r * (s + 2) : r * (s + 2) + s, c * (s + 2) : c * (s + 2) + s] = xi
        return canvas.permute(1, 2, 0).numpy()

    defs = list(recon)
    # each cell is a block of rows x cols square faces: size the figure so blocks keep their aspect ratio
    fig, axes = plt.subplots(
        len(defs) + 1,
        len(attacks),
        figsize=(0.75 * cols * len(attacks) + 1.4, 0.78 * rows * (len(defs) + 1) + 0.5),
        squeeze=False,
    )
    for j, a in enumerate(attacks):
        axes[0, j].imshow(tile(originals))
        axes[0, j].set_title(a, fontsize=9)
    axes[0, 0].set_ylabel("raw", rotation=0, ha="right", va="center", fontsize=9)
    for i, d in enumerate(defs, start=1):
        axes[i, 0].set_ylabel(d, rotation=0, ha="right", va="center", fontsize=9)
        for j, a in enumerate(attacks):
            if a in recon[d]:
                axes[i, j].imshow(tile(recon[d][a]))
            else:
                axes[i, j].text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _fig_png(fig)


def _pct(v: Optional[float]) -> str:
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


def _table_rows(results: Dict[str, Any]) -> List[List[str]]:
    out = []
    for r in results["rows"]:
        exposed = (r.get("exposed_identities") or {}).get("dlib")
        out.append(
            [
                r["defense"],
                "–" if r.get("param") is None else str(r["param"]),
                r["attack"],
                _faces(r, results),
                _pct(r["eval_acc_top1"].get("dlib")),
                _interval(_ci(r, "dlib")),
                _pct(exposed),
                _pct(r["eval_acc_top5"].get("dlib")),
                _pct(r["eval_acc_top1"].get("evalnet")),
                _num(r.get("fsim")),
                _num(r.get("ssim")),
                _num(r.get("psnr"), ".1f"),
                _num(r.get("epsilon_pii")),
                _num(r.get("mean_auc")),
                _num(r.get("mean_auc_train_scenario")),
            ]
        )
    return out


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
    "A defence is only as good as the strongest attack measured against it: per setting, the attack that "
    "identified the largest share of faces (dlib top-1), with its interval over identities and the share "
    "of people identified at least once."
)


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
                _pct(r["eval_acc_top1"]["dlib"]),
                _interval(_ci(r, "dlib")),
                _pct((r.get("exposed_identities") or {}).get("dlib")),
            ]
        )
    return out


def headline(results: Dict[str, Any]) -> str:
    """One line for the end of a demo: per defence setting, the share of faces (dlib top-1) its strongest
    attack identified, e.g. ``faces identified under the strongest attack: none 45.3% (blackbox), ...``."""
    parts = [
        f"{d}{'' if p == '–' else ' ' + p} {acc} ({attack})"
        for d, p, _auc, attack, _n, acc, *_ in _worst_rows(results)
    ]
    chance = results.get("chance")
    tail = f"; chance {_pct(chance)}" if chance else ""
    return "faces identified under the strongest attack (dlib top-1): " + ", ".join(parts) + tail


_CLAIM_NOTE = (
    "Claim: at a mean-AUC drop of at most 0.05 from no protection, Eval Acc (dlib top-1) under every "
    "attack is at most a third of the no-protection value (an adaptive attack is compared with its plain "
    "counterpart on unprotected features), and under the adaptive attacks lower than each baseline at "
    "the same mean AUC. Each check reads meets, fails or undecided: the ratio by the 95% interval over "
    "identities, a baseline by an exact McNemar test (p < 0.05) on the same faces against its setting "
    "just below the AUC (meets) or just above it (fails); a difference the test does not support is "
    "undecided. 'at equal AUC' is the baseline's curve interpolated at the setting's AUC, with the "
    "paired bootstrap interval of the difference."
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


def _baseline_cells(c: Dict[str, Any]) -> List[str]:
    """The baseline columns of one claim row: each baseline's interpolated value, the paired difference and
    the deciding McNemar p."""
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
        vals.append(f"{name} {_pct(near)} ({m['verdict']})")
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


def _claim_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per (Crafter-family setting, attack) of :func:`~facecraft.experiments.claims.check_claim`."""
    from facecraft.experiments.claims import check_claim

    if (
        not any(r["defense"] == "none" for r in results["rows"])
        or not results["rows"]
        or results["rows"][0].get("mean_auc") is None
    ):
        return []
    out = []
    for d in ("crafter", "crafter-fast", "crafter-z", "amortized-crafter"):
        if not any(r["defense"] == d for r in results["rows"]):
            continue
        for st in check_claim(results, defense=d)["settings"]:
            verdict = "not eligible (AUC drop > 0.05)" if not st["eligible"] else st["verdict"]
            for i, c in enumerate(st["attacks"]):
                ci = c.get("ci95")
                acc = _pct(c["eval_acc"]) + ("" if ci is None else f" ({_interval(tuple(ci))})")
                out.append(
                    [
                        d,
                        _num(st["param"], "g"),
                        _num(st["auc_drop"]),
                        c["attack"],
                        acc,
                        _pct(c["none"]),
                        f"{_num(c['ratio'], '.2f')} ({c['ratio_verdict']})",
                        *_baseline_cells(c),
                        c["verdict"],
                        verdict if i == 0 else "",
                    ]
                )
    return out


def write_report(run_dir: Path, *, figures: Dict[str, bytes]) -> Dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the figure PNGs into ``run_dir``.

    Args:
        run_dir: holds ``results.json`` and ``stages.json``.
        figures: name -> PNG bytes (``grid``, ``tradeoff``, ``adaptive``), written as ``<name>.png``.

    Returns:
        Paths of the written files.
    """
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    stages_path = run_dir / results.get("run_dir", ".") / "stages.json"
    stages = read_json(stages_path) if stages_path.exists() else {"stages": {}}
    for name, png in figures.items():
        atomic_write_bytes(run_dir / f"{name}.png", png)
    title = f"facecraft study — {results.get('dataset')} ({results.get('profile')} profile)"
    synthetic = results.get("synthetic", False)
    chance, ceil = results.get("chance"), results.get("oracle_ceiling", {})
    summary = (
        f"{results.get('n_images')} private test faces of {results.get('n_identities')} identities. "
        f"Chance: {_pct(chance)}. Oracle top-1 on the real faces (ceiling): dlib {_pct(ceil.get('dlib'))}, "
        f"Eval-net {_pct(ceil.get('evalnet'))}. Lower Eval Acc / FSIM / SSIM means more privacy; "
        f"higher mean AUC means more utility."
    )
    warn = (
        "**SYNTHETIC DATA** — procedurally generated faces for a smoke test; no figure here is a result."
        if synthetic
        else ""
    )
    stage_rows = _time_rows(results, stages)
    machine = stages.get("machine", {})
    captions = {
        "grid": "(a) Raw private faces and each defence's release reconstructed by each attack.",
        "tradeoff": "(b) Privacy-utility trade-off: Eval Acc (dlib, top-1) against mean AUC.",
        "adaptive": "(c) Eval Acc over the adaptive attacker's training epochs.",
    }
    # markdown
    md = [f"# {title}", ""]
    if warn:
        md += [warn, ""]
    md += [summary, ""]
    for name in ("grid", "tradeoff", "adaptive"):
        if name in figures:
            md += [captions[name], "", f"![{name}]({name}.png)", ""]
    md += ["## (d) Results", "", "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in _table_rows(results)]
    md += [
        "",
        f"Chance {_pct(chance)}; ceiling dlib {_pct(ceil.get('dlib'))}, Eval-net {_pct(ceil.get('evalnet'))}.",
        "",
    ]
    worst = _worst_rows(results)
    md += [
        "### Strongest attack per setting",
        "",
        _WORST_NOTE,
        "",
        "| " + " | ".join(_WORST_HEADER) + " |",
        "|" + "---|" * len(_WORST_HEADER),
    ]
    md += ["| " + " | ".join(r) + " |" for r in worst] + [""]
    claim = _claim_rows(results)
    if claim:
        md += [
            "## (e) The paper's claim",
            "",
            _CLAIM_NOTE,
            "",
            "| " + " | ".join(_CLAIM_HEADER) + " |",
            "|" + "---|" * len(_CLAIM_HEADER),
        ]
        md += ["| " + " | ".join(r) + " |" for r in claim]
        md += [""]
    md += [
        "## (f) Stages and machine",
        "",
        "| stage (longest first) | seconds | minutes |",
        "|---|---|---|",
    ]
    md += ["| " + " | ".join(r) + " |" for r in stage_rows]
    md += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    # html
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:nth-child(-n+3),th{text-align:left}th{background:#f3f3f3}img{max-width:100%}"
        ".warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;font-weight:bold}"
        "figcaption{color:#555;margin:.3em 0 1.5em}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if warn:
        parts.append(f"<p class='warn'>{esc(warn.replace('**', ''))}</p>")
    parts.append(f"<p>{esc(summary)}</p>")
    for name in ("grid", "tradeoff", "adaptive"):
        if name in figures:
            b64 = base64.b64encode(figures[name]).decode()
            parts.append(
                f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'>"
                f"<figcaption>{esc(captions[name])}</figcaption></figure>"
            )
    parts.append(
        "<h2>(d) Results</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _HEADER) + "</tr>"
    )
    for r in _table_rows(results):
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append(
        f"</table><p>Chance {_pct(chance)}; oracle ceiling dlib {_pct(ceil.get('dlib'))}, "
        f"Eval-net {_pct(ceil.get('evalnet'))}.</p>"
    )
    parts.append(
        f"<h3>Strongest attack per setting</h3><p>{esc(_WORST_NOTE)}</p><table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in _WORST_HEADER)
        + "</tr>"
    )
    for r in worst:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    if claim:
        parts.append(
            f"<h2>(e) The paper's claim</h2><p>{esc(_CLAIM_NOTE)}</p><table><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in _CLAIM_HEADER)
            + "</tr>"
        )
        for r in claim:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
    parts.append(
        "<h2>(f) Stages and machine</h2><table><tr><th>stage (longest first)</th><th>seconds</th><th>minutes</th></tr>"
    )
    for r in stage_rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append(
        "</table><p>"
        + esc(", ".join(f"{k}: {v}" for k, v in machine.items()))
        + "</p></body></html>"
    )
    atomic_write_text(run_dir / "report.html", "\n".join(parts))
    return {"html": run_dir / "report.html", "md": run_dir / "report.md"}
