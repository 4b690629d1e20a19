"""Privacy and utility of one (defence, attack) cell, in the results schema (CRAFTER.md section 5).

A row holds Eval Acc (top-1/top-5) under the third-party dlib oracle and the
trained Eval-network, FSIM (cosine of dlib embeddings of reconstruction and
original), SSIM, PSNR, epsilon-PII (critic-estimated EMD between the
reconstructions and samples of the attacker's prior) and the utility mean AUC
of the released features through the cloud head.

Every Eval Acc carries its uncertainty (:mod:`facecraft.metrics.stats`): ``ci95``
(a bootstrap over identities), ``wilson95`` (per face, for reference),
``exposed_identities`` (the share of people identified at least once, top-1)
and the per-face ``hits`` as ``"0101..."`` strings, so that two defences can be
compared on the same faces with a paired test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from facecraft.metrics.identity import feature_cosine, topk_hits
from facecraft.metrics.image import psnr, ssim
from facecraft.metrics.pii import epsilon_pii
from facecraft.metrics.stats import accuracy_summary, hits_to_str
from facecraft.metrics.utility import mean_auc

__all__ = [
    "EvalContext",
    "privacy_metrics",
    "embedding_privacy_metrics",
    "utility_metrics",
    "oracle_ceiling",
    "spread_over_identities",
]

ProgressFn = Callable[[int, int, str], None]


@dataclass
class EvalContext:
    """What every cell is judged against: the private images, their identities, the oracles.

    Attributes:
        originals: ``eval_test`` images ``(N, 3, S, S)`` in [0, 1] that were protected and attacked,
            or ``None`` when only their release is known (an audited release of features): then
            only Eval Acc is measured.
        labels: their 0-based identities ``(N,)``.
        attributes: their attributes ``(N, A)`` in {0, 1}, or ``None``.
        dlib: a fitted :class:`~facecraft.metrics.dlib_oracle.DlibOracle`.
        evalnet: a trained :class:`~facecraft.metrics.evalnet.EvalNet`, or ``None`` to report only
            dlib.
        prior_samples: ``G(z_r)`` images for epsilon-PII.
        original_embeddings: dlib embeddings of ``originals`` (computed once).
        pii_steps: critic steps of the epsilon-PII estimate.
    """

    originals: Optional[torch.Tensor]
    labels: torch.Tensor
    attributes: Optional[torch.Tensor]
    dlib: Any
    evalnet: Any
    prior_samples: torch.Tensor
    original_embeddings: Optional[torch.Tensor]
    pii_steps: int = 300
    pii_width: int = 32
    seed: int = 0

    def select(self, positions: torch.Tensor) -> "EvalContext":
        """The same context restricted to the faces at ``positions`` (the oracles' galleries are
        unchanged)."""
        p = positions.long()
        return dataclasses.replace(
            self,
            originals=_rows(self.originals, p),
            labels=self.labels[p],
            attributes=_rows(self.attributes, p),
            original_embeddings=_rows(self.original_embeddings, p),
        )

    def subset(self, n: int) -> "EvalContext":
        """The same context restricted to the first ``n`` faces (the oracles' galleries are
        unchanged)."""
        if not 0 < n <= self.labels.shape[0]:
            raise ValueError(f"subset size must be in [1, {self.labels.shape[0]}], got {n}")
        return self.select(torch.arange(n))


def _rows(t: Optional[torch.Tensor], rows: torch.Tensor) -> Optional[torch.Tensor]:
    return None if t is None else t[rows]


def _accuracies(
    dlib_scores: torch.Tensor,
    images: Optional[torch.Tensor],
    ctx: EvalContext,
    keep_hits: bool = True,
) -> Dict[str, Any]:
    """Top-1/top-5 Eval Acc of both oracles (the Eval-network needs ``images``), their intervals,
    the exposed identities and, with ``keep_hits``, the per-face hits."""
    scores = {"dlib": dlib_scores}
    if ctx.evalnet is not None and images is not None:
        scores["evalnet"] = ctx.evalnet.scores(images.to(ctx.evalnet.device)).cpu()
    out: Dict[str, Any] = {
        "eval_acc_top1": {},
        "eval_acc_top5": {},
        "ci95": {},
        "wilson95": {},
        "exposed_identities": {},
        "hits": {},
    }
    for k in (1, 5):
        key = f"eval_acc_top{k}"
        for ci in ("ci95", "wilson95"):
            out[ci][key] = {}
        for oracle in ("dlib", "evalnet"):
            if oracle not in scores:
                out[key][oracle] = None
                continue
            hits = topk_hits(scores[oracle], ctx.labels, k=k)
            out[key][oracle] = float(hits.float().mean())
            summ = accuracy_summary(hits, ctx.labels, seed=ctx.seed)
            out["ci95"][key][oracle] = summ["ci95"]
            out["wilson95"][key][oracle] = summ["wilson95"]
            if k == 1:
                out["exposed_identities"][oracle] = summ["exposed"]
            if keep_hits:
                out["hits"][f"{oracle}_top{k}"] = hits_to_str(hits)
    if not keep_hits:
        del out["hits"]
    return out


def oracle_ceiling(ctx: EvalContext) -> Dict[str, Dict[str, Any]]:
    """Each oracle's top-1/top-5 on the *real* images: the ceiling of every Eval Acc."""
    acc = _accuracies(
        ctx.dlib.scores_from_embeddings(ctx.original_embeddings), ctx.originals, ctx, False
    )
    return {"top1": acc["eval_acc_top1"], "top5": acc["eval_acc_top5"]}


def privacy_metrics(
    recon: torch.Tensor,
    ctx: EvalContext,
    *,
    full: bool = True,
    progress: Optional[ProgressFn] = None,
) -> Dict[str, Any]:
    """Eval Acc (both oracles) and FSIM of reconstructions of ``ctx.originals``; with ``full``, also
    SSIM, PSNR and epsilon-PII (the per-epoch curves of adaptive attacks skip those). Without
    originals (``ctx.originals is None``) only Eval Acc: the others compare with the real face."""
    recon = recon.detach().float().cpu().clamp(0, 1)
    emb = ctx.dlib.embed(recon, progress=progress)
    out: Dict[str, Any] = {
        **_accuracies(ctx.dlib.scores_from_embeddings(emb), recon, ctx, keep_hits=full),
        "fsim": _fsim(emb, ctx),
    }
    if full and ctx.originals is None:
        out.update(ssim=None, psnr=None, epsilon_pii=None)
    elif full:
        g = torch.Generator().manual_seed(ctx.seed + 101)
        out["ssim"] = float(ssim(recon, ctx.originals))
        out["psnr"] = float(psnr(recon, ctx.originals))
        out["epsilon_pii"] = float(
            epsilon_pii(
                recon,
                ctx.prior_samples,
                steps=ctx.pii_steps,
                critic_width=ctx.pii_width,
                generator=g,
            )
        )
    return out


def embedding_privacy_metrics(embeddings: torch.Tensor, ctx: EvalContext) -> Dict[str, Any]:
    """Eval Acc (dlib's gallery) and FSIM of face-recognition embeddings predicted straight from the
    release (the embedding attack): no image, so no Eval-network, SSIM, PSNR or epsilon-PII."""
    emb = embeddings.detach().float().cpu()
    return {
        **_accuracies(ctx.dlib.scores_from_embeddings(emb), None, ctx),
        "fsim": _fsim(emb, ctx),
        "ssim": None,
        "psnr": None,
        "epsilon_pii": None,
    }


def _fsim(embeddings: torch.Tensor, ctx: EvalContext) -> Optional[float]:
    """Mean cosine of dlib embeddings to the originals' (``None`` without originals)."""
    if ctx.original_embeddings is None:
        return None
    return float(feature_cosine(embeddings, ctx.original_embeddings))


def utility_metrics(
    features: torch.Tensor, head: torch.nn.Module, ctx: EvalContext
) -> Dict[str, Any]:
    """Mean AUC over attributes of the cloud head applied to the released features."""
    if ctx.attributes is None:
        return {"mean_auc": None}
    dev = next(head.parameters()).device
    was = head.training
    head.eval()
    with torch.no_grad():
        logits = torch.cat(
            [head(features[i : i + 256].to(dev)).cpu() for i in range(0, features.shape[0], 256)]
        )
    head.train(was)
    return {"mean_auc": float(mean_auc(logits, ctx.attributes))}


def spread_over_identities(identities: torch.Tensor, n: Optional[int], seed: int) -> torch.Tensor:
    """Sorted positions of ``n`` of the faces (all when ``n`` is None), taken round-robin over the
    identities in a seeded order, so that every identity is represented before any has two."""
    n_all = identities.shape[0]
    n = n_all if n is None else min(int(n), n_all)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_all, generator=g)
    rank = torch.zeros_like(identities)
    seen: Dict[int, int] = {}
    for i in order.tolist():
        k = int(identities[i])
        rank[i] = seen.get(k, 0)
        seen[k] = rank[i].item() + 1
    key = rank.double() * (n_all + 1) + torch.argsort(order).double()
    return torch.sort(torch.argsort(key)[:n]).values
