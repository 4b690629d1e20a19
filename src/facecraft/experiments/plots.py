"""The study report's figures as PNG bytes: (a) the Figure-2-style grid of reconstructions, (b) the
privacy-utility trade-off (Eval Acc against mean AUC per defence and attack, chance and the oracle's
ceiling as lines) and (c) Eval Acc over the adaptive attacker's training epochs. Rendered with
matplotlib's Agg backend; :mod:`facecraft.experiments.report` writes them beside the tables.
"""

from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["plot_tradeoff", "plot_adaptive", "plot_grid"]

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


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
        cells = [r for r in rows if r["attack"] == attack]
        for j, d in enumerate(defenses):
            color = _COLORS[j % len(_COLORS)]
            _tradeoff_curve(ax, [r for r in cells if r["defense"] == d], d, color, oracle)
        _reference_lines(ax, cells, chance, ceiling, oracle)
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
    # one colour per defence setting, the line style tells the attack (solid: white-box, dashed:
    # black-box)
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
    originals: torch.Tensor,
    recon: Dict[str, Dict[str, torch.Tensor]],
    attacks: Sequence[str],
    *,
    raw_label: str = "raw",
) -> bytes:
    """Figure-2-style grid: first row raw faces; then one row per defence, one column per attack.

    Args:
        originals: ``(k, 3, S, S)`` raw faces.
        recon: ``recon[defence_label][attack]`` -> ``(k, 3, S, S)`` reconstructions.
        attacks: column order.
        raw_label: the first row's label.
    """
    k = max(1, originals.shape[0])
    # faces of a cell in two rows: on a page-wide figure each face stays large
    rows = 2 if k >= 4 else 1
    cols = -(-k // rows)
    defs = list(recon)
    # each cell is a block of rows x cols square faces: size the figure so blocks keep their aspect
    # ratio
    fig, axes = plt.subplots(
        len(defs) + 1,
        len(attacks),
        figsize=(0.75 * cols * len(attacks) + 1.4, 0.78 * rows * (len(defs) + 1) + 0.5),
        squeeze=False,
    )
    for j, a in enumerate(attacks):
        axes[0, j].imshow(_tile(originals, rows, cols))
        axes[0, j].set_title(a, fontsize=9)
    axes[0, 0].set_ylabel(raw_label, rotation=0, ha="right", va="center", fontsize=9)
    for i, d in enumerate(defs, start=1):
        axes[i, 0].set_ylabel(d, rotation=0, ha="right", va="center", fontsize=9)
        for j, a in enumerate(attacks):
            if a in recon[d]:
                axes[i, j].imshow(_tile(recon[d][a], rows, cols))
            else:
                axes[i, j].text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _fig_png(fig)


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label(row: Dict[str, Any]) -> str:
    """``defence`` or ``defence param`` (a number as ``%g``)."""
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


def _tradeoff_curve(ax, cells: List[Dict[str, Any]], label: str, color: str, oracle: str) -> None:
    """One defence's settings in a trade-off panel, by mean AUC; where the rows have intervals, a
    bar per point and a band along the curve (the 95% interval over identities)."""
    pts = sorted((r["mean_auc"], r["eval_acc_top1"][oracle], *_ci(r, oracle)) for r in cells)
    if not pts:
        return
    x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
    ax.plot(x, y, "o-", color=color, label=label, ms=4)
    if np.isfinite(lo).all():
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


def _reference_lines(
    ax,
    cells: List[Dict[str, Any]],
    chance: Optional[float],
    ceiling: Optional[float],
    oracle: str,
) -> None:
    """Chance and the oracle's accuracy on real faces in a trade-off panel (``cells``: its rows);
    a ceiling far above the data is named in the legend rather than drawn, so the points stay
    apart."""
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    top = max(
        [
            max(r["eval_acc_top1"][oracle], _ci(r, oracle)[1] if r.get("ci95") else 0.0)
            for r in cells
        ]
        + [chance or 0.0]
    )
    if ceiling is not None and ceiling <= 2.5 * top:
        ax.axhline(ceiling, color="black", ls="--", lw=1, label="oracle on real faces")
    elif ceiling is not None:
        ax.set_ylim(0, 1.25 * top + 1e-3)
        ax.plot(
            [],
            [],
            color="black",
            ls="--",
            lw=1,
            label=f"oracle on real faces: {100 * ceiling:.0f}% (off scale)",
        )


def _tile(x: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """Faces ``(k, 3, S, S)`` as one ``rows`` x ``cols`` image ``(H, W, 3)``, 2-pixel white
    gaps."""
    x = x.detach().float().clamp(0, 1).cpu()
    s = x.shape[-1]
    canvas = torch.ones(3, rows * (s + 2), cols * (s + 2))
    for i, xi in enumerate(x[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[:, r * (s + 2) : r * (s + 2) + s, c * (s + 2) : c * (s + 2) + s] = xi
    return canvas.permute(1, 2, 0).numpy()
