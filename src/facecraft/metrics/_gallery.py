"""Identity scores of query embeddings against a labelled gallery of embeddings.

Used by :class:`~facecraft.metrics.dlib_oracle.DlibOracle`. A query's score for
an identity is the maximum similarity to that identity's gallery embeddings
(``scoring="max"``), the mean (``"mean"``), or the similarity to the identity's
mean embedding (``"centroid"``). The similarity is the cosine
(``"cosine"``) or the negative Euclidean distance (``"euclidean"``).
Identities without gallery embeddings score ``-inf``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SCORINGS", "SIMILARITIES", "check_labels", "gallery_scores"]

SCORINGS = ("max", "mean", "centroid")
SIMILARITIES = ("cosine", "euclidean")


def gallery_scores(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    labels: torch.Tensor,
    num_identities: int,
    *,
    scoring: str,
    similarity: str,
) -> torch.Tensor:
    """Scores ``(N, K)`` of queries ``(N, D)`` against a gallery ``(M, D)`` with labels ``(M,)``.

    Computed on the gallery's device (the queries are moved there, as float)
    and returned on the queries' device.

    Args:
        queries: query embeddings ``(N, D)``.
        gallery: gallery embeddings ``(M, D)``, float.
        labels: 0-based identities ``(M,)`` (long, on the gallery's device).
        num_identities: ``K``, the number of score columns.
        scoring: one of :data:`SCORINGS`.
        similarity: one of :data:`SIMILARITIES`.
    """
    q = queries.detach().float().to(gallery.device)
    k = num_identities
    if scoring == "centroid":
        dim = gallery.shape[1]
        sums = torch.zeros(k, dim, dtype=gallery.dtype, device=gallery.device).index_add_(
            0, labels, _prep(gallery, similarity)
        )
        counts = torch.bincount(labels, minlength=k).to(gallery.dtype)
        present = counts > 0
        centroids = sums / counts.clamp_min(1).unsqueeze(1)
        if similarity == "cosine":
            centroids = F.normalize(centroids, dim=1)
        sim = _similarity(q, centroids, similarity)
        return sim.masked_fill(~present.unsqueeze(0), float("-inf")).to(queries.device)
    sim = _similarity(q, _prep(gallery, similarity), similarity)  # (N, M)
    idx = labels.unsqueeze(0).expand_as(sim)
    init = torch.full((q.shape[0], k), float("-inf"), dtype=sim.dtype, device=sim.device)
    if scoring == "max":
        out = init.scatter_reduce(1, idx, sim, reduce="amax", include_self=True)
    else:
        out = init.scatter_reduce(1, idx, sim, reduce="mean", include_self=False)
        counts = torch.bincount(labels, minlength=k)
        out = out.masked_fill((counts == 0).unsqueeze(0), float("-inf"))
    return out.to(queries.device)


def check_labels(labels: torch.Tensor, n: int) -> None:
    """Accept ``(n,)`` 0-based integer labels, ``n >= 1``.

    Raises:
        TypeError: not a tensor, or not integers.
        ValueError: wrong shape, no label, or a negative one.
    """
    if not torch.is_tensor(labels):
        raise TypeError(f"expected labels as a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"expected integer labels, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"expected labels of shape ({n},), got {tuple(labels.shape)}")
    if n == 0:
        raise ValueError("expected at least one labelled image, got none")
    if int(labels.min()) < 0:
        raise ValueError(f"expected 0-based labels >= 0, got minimum {int(labels.min())}")


def _prep(g: torch.Tensor, similarity: str) -> torch.Tensor:
    return F.normalize(g, dim=1) if similarity == "cosine" else g


def _similarity(q: torch.Tensor, g: torch.Tensor, similarity: str) -> torch.Tensor:
    if similarity == "cosine":
        return F.normalize(q, dim=1) @ g.T
    return -torch.cdist(q, g)
