"""Privacy and utility of one (defence, attack) cell, in the results schema (CRAFTER.md section 5).

A row holds Eval Acc (top-1/top-5) under the third-party dlib oracle and the
trained Eval-network, FSIM (cosine of dlib embeddings of reconstruction and
original), SSIM, PSNR, epsilon-PII (critic-estimated EMD between the
reconstructions and samples of the attacker's prior) and the utility mean AUC
of the released features through the cloud head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from facecraft.metrics.identity import feature_cosine, topk_accuracy
from facecraft.metrics.image import psnr, ssim
from facecraft.metrics.pii import epsilon_pii
from facecraft.metrics.utility import mean_auc

__all__ = ["EvalContext", "privacy_metrics", "utility_metrics", "oracle_ceiling"]

ProgressFn = Callable[[int, int, str], None]


@dataclass
class EvalContext:
    """What every cell is judged against: the private images, their identities, the oracles.

    Attributes:
        originals: ``eval_test`` images ``(N, 3, S, S)`` in [0, 1] that were protected and attacked.
        labels: their 0-based identities ``(N,)``.
        attributes: their attributes ``(N, A)`` in {0, 1}, or ``None``.
        dlib: a fitted :class:`~facecraft.metrics.dlib_oracle.DlibOracle`.
        evalnet: a trained :class:`~facecraft.metrics.evalnet.EvalNet`, or ``None`` to report only dlib.
        prior_samples: ``G(z_r)`` images for epsilon-PII.
        original_embeddings: dlib embeddings of ``originals`` (computed once).
        pii_steps: critic steps of the epsilon-PII estimate.
    """

    originals: torch.Tensor
    labels: torch.Tensor
    attributes: Optional[torch.Tensor]
    dlib: Any
    evalnet: Any
    prior_samples: torch.Tensor
    original_embeddings: torch.Tensor
    pii_steps: int = 300
    pii_width: int = 32
    seed: int = 0

    def subset(self, n: int) -> "EvalContext":
        """The same context restricted to the first ``n`` faces (the oracles' galleries are unchanged)."""
        if not 0 < n <= self.originals.shape[0]:
            raise ValueError(f"subset size must be in [1, {self.originals.shape[0]}], got {n}")
        return dataclasses.replace(
            self, originals=self.originals[:n], labels=self.labels[:n],
            attributes=None if self.attributes is None else self.attributes[:n],
            original_embeddings=self.original_embeddings[:n])


def _accuracies(dlib_scores: torch.Tensor, images: torch.Tensor, ctx: EvalContext) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    e = None if ctx.evalnet is None else ctx.evalnet.scores(images.to(ctx.evalnet.device)).cpu()
    for k in (1, 5):
        out[f"top{k}"] = {"dlib": float(topk_accuracy(dlib_scores, ctx.labels, k=k)),
                          "evalnet": None if e is None else float(topk_accuracy(e, ctx.labels, k=k))}
    return out


def oracle_ceiling(ctx: EvalContext) -> Dict[str, Dict[str, Any]]:
    """Each oracle's top-1/top-5 on the *real* images: the ceiling of every Eval Acc."""
    return _accuracies(ctx.dlib.scores_from_embeddings(ctx.original_embeddings), ctx.originals, ctx)


def privacy_metrics(recon: torch.Tensor, ctx: EvalContext, *, full: bool = True,
                    progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Eval Acc (both oracles) and FSIM of reconstructions of ``ctx.originals``; with ``full``, also SSIM,
    PSNR and epsilon-PII (the per-epoch curves of adaptive attacks skip those)."""
    recon = recon.detach().float().cpu().clamp(0, 1)
    emb = ctx.dlib.embed(recon, progress=progress)
    acc = _accuracies(ctx.dlib.scores_from_embeddings(emb), recon, ctx)
    out: Dict[str, Any] = {
        "eval_acc_top1": acc["top1"],
        "eval_acc_top5": acc["top5"],
        "fsim": float(feature_cosine(emb, ctx.original_embeddings)),
    }
    if full:
        g = torch.Generator().manual_seed(ctx.seed + 101)
        out["ssim"] = float(ssim(recon, ctx.originals))
        out["psnr"] = float(psnr(recon, ctx.originals))
        out["epsilon_pii"] = float(epsilon_pii(recon, ctx.prior_samples, steps=ctx.pii_steps,
                                                 critic_width=ctx.pii_width, generator=g))
    return out


def utility_metrics(features: torch.Tensor, head: torch.nn.Module, ctx: EvalContext) -> Dict[str, Any]:
    """Mean AUC over attributes of the cloud head applied to the released features."""
    if ctx.attributes is None:
        return {"mean_auc": None}
    dev = next(head.parameters()).device
    was = head.training
    head.eval()
    with torch.no_grad():
        logits = torch.cat([head(features[i:i + 256].to(dev)).cpu() for i in range(0, features.shape[0], 256)])
    head.train(was)
    return {"mean_auc": float(mean_auc(logits, ctx.attributes))}
