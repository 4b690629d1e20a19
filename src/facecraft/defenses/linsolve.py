r"""Matrix-free solvers of ``H x = v`` for a batch of independent problems (CRAFTER.md section 3).

The inverse-Hessian-vector products (IHVPs) behind Crafter's hypergradient
(:mod:`facecraft.defenses.hypergrad`), using only products ``v -> H v`` that
act on each sample of a batch separately (a block-diagonal ``H``): the
paper's truncated Neumann series (:func:`neumann_ihvp`), conjugate gradient
(:func:`cg_ihvp`), and power iteration for the extreme eigenvalues that tell
whether, and how fast, each converges (:func:`extreme_eigenvalues`).

Example:
    >>> import torch
    >>> A = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]])           # one sample, H = A
    >>> hvp = lambda v: torch.einsum("nij,nj->ni", A, v)
    >>> x = neumann_ihvp(hvp, torch.tensor([[1.0, -1.0]]), alpha=0.4, iters=200)
    >>> bool(torch.allclose(x, torch.linalg.solve(A[0], torch.tensor([1.0, -1.0]))[None]))
    True

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4, the Neumann approximation). Lorraine, Vicol, Duvenaud, "Optimizing
    Millions of Hyperparameters by Implicit Differentiation", AISTATS 2020,
    https://arxiv.org/abs/1911.02590 (the Neumann IHVP). Hestenes & Stiefel,
    "Methods of conjugate gradients for solving linear systems", J. Res. NBS
    49(6), 1952, https://doi.org/10.6028/jres.049.044.
"""

from __future__ import annotations

import warnings
from typing import Callable, Tuple

import torch

__all__ = ["MatVec", "cg_ihvp", "extreme_eigenvalues", "neumann_ihvp"]

#: a batched, per-sample symmetric matrix-vector product ``v (N, ...) -> H v (N, ...)``.
MatVec = Callable[[torch.Tensor], torch.Tensor]


def neumann_ihvp(
    hvp: MatVec, v: torch.Tensor, *, alpha: float = 1e-3, iters: int = 120
) -> torch.Tensor:
    r"""Truncated Neumann series ``H^{-1} v ~ alpha * sum_{j=0..i} (I - alpha H)^j v``.

    Uses ``iters`` products with ``H`` (terms ``j = 0..iters``). The series
    converges to ``H^{-1} v`` when ``0 < alpha * lambda < 2`` for every
    eigenvalue ``lambda`` of ``H``; the truncation error of a component along
    eigenvalue ``lambda`` is ``(1 - alpha lambda)^(iters + 1)``. A
    ``RuntimeWarning`` is issued when the last term is larger than ``v``
    (the series is diverging: ``alpha`` too large or ``H`` indefinite).

    Args:
        hvp: ``v -> H v``, batched per sample (block-diagonal ``H``).
        v: right-hand side ``(N, ...)``.
        alpha: step ``alpha`` (Default: 1e-3, the paper's).
        iters: number of Hessian-vector products ``i`` (Default: 120, the paper's).

    Returns:
        The approximation of ``H^{-1} v``, same shape as ``v``.

    References:
        arXiv 2401.07205, section 4 (``i = 120``, ``alpha = 1e-3``);
        Lorraine et al., AISTATS 2020, algorithm 3.
    """
    if alpha <= 0:
        raise ValueError(f"neumann_ihvp: alpha must be > 0, got {alpha}")
    if iters < 0:
        raise ValueError(f"neumann_ihvp: iters must be >= 0, got {iters}")
    term = v
    acc = v.clone()
    for _ in range(iters):
        term = term - alpha * hvp(term)
        acc = acc + term
    if iters > 0:
        grow = _norms(term) > _norms(v) * (1 + 1e-6)
        if bool(grow.any()):
            warnings.warn(
                "neumann_ihvp: the Neumann series is diverging (alpha * lambda_max(H) >= 2 or H is "
                "indefinite at z*); lower alpha or use solver='cg' / 'gn-cg'",
                RuntimeWarning,
                stacklevel=2,
            )
    return alpha * acc


def cg_ihvp(
    hvp: MatVec,
    v: torch.Tensor,
    *,
    iters: int = 20,
    tol: float = 1e-6,
    damping: float = 0.0,
) -> torch.Tensor:
    r"""Conjugate gradient for ``(H + damping I) x = v``, run independently for each sample.

    Each sample has its own step sizes and stops when its residual norm falls
    below ``tol * ||v_n||``. A sample that meets non-positive curvature
    (``p^T H p <= 0``, possible with the exact Hessian at an inexact ``z*``)
    takes one last step with the curvature's absolute value and stops, as in
    truncated-Newton methods; with a positive-definite ``H`` (e.g. the
    Gauss-Newton matrix plus damping) this never happens.

    Args:
        hvp: ``v -> H v``, batched per sample; ``H`` symmetric.
        v: right-hand side ``(N, ...)``.
        iters: maximum iterations (each one ``hvp`` call) (Default: 20).
        tol: relative residual tolerance (Default: 1e-6).
        damping: Tikhonov damping added to ``H`` (Default: 0).

    Returns:
        ``x ~ (H + damping I)^{-1} v``, same shape as ``v``.

    References:
        Hestenes & Stiefel 1952; Nocedal & Wright, "Numerical Optimization",
        2nd ed., algorithm 5.2 (CG) and 7.1 (negative curvature in truncated Newton).
    """
    if iters < 1:
        raise ValueError(f"cg_ihvp: iters must be >= 1, got {iters}")
    if tol < 0 or damping < 0:
        raise ValueError(f"cg_ihvp: tol and damping must be >= 0, got tol={tol}, damping={damping}")
    n = v.shape[0]
    shape = (n,) + (1,) * (v.dim() - 1)
    x = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rs = _dots(r, r)
    stop = rs.sqrt() <= tol * _norms(v)
    for _ in range(iters):
        if bool(stop.all()):
            break
        ap = hvp(p)
        if damping:
            ap = ap + damping * p
        pap = _dots(p, ap)
        neg = pap <= 0
        step = torch.where(
            stop, torch.zeros_like(rs), rs / torch.where(neg, pap.abs(), pap).clamp_min(1e-300)
        )
        step = torch.where(pap == 0, torch.zeros_like(step), step)
        x = x + step.view(shape) * p
        r = r - step.view(shape) * ap
        rs_new = _dots(r, r)
        stop = stop | neg | (rs_new.sqrt() <= tol * _norms(v))
        beta = torch.where(stop, torch.zeros_like(rs), rs_new / rs.clamp_min(1e-300))
        p = r + beta.view(shape) * p
        rs = rs_new
    return x


def extreme_eigenvalues(
    matvec: MatVec, like: torch.Tensor, *, iters: int = 40, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-sample ``(lambda_max, lambda_min)`` of a symmetric ``matvec`` by power iteration.

    ``lambda_max`` from ``iters`` power iterations on ``H``, ``lambda_min`` from
    as many on the shifted ``1.01 * lambda_max * I - H``; both are Rayleigh
    quotients, so ``lambda_max`` is a lower bound and ``lambda_min`` an upper
    bound, tight once the iterations converge. It tells whether the Neumann
    series converges (``alpha * lambda_max < 2``) and how fast (its error along
    ``lambda_min`` shrinks as ``(1 - alpha * lambda_min)^i``), and the
    condition number that CG's cost grows with (its square root).

    Args:
        matvec: ``v (N, ...) -> H v``, batched per sample.
        like: a tensor of the vectors' shape ``(N, ...)`` (dtype, device).
        iters: power iterations for each end (Default: 40).
        seed: seed of the start vectors (Default: 0).

    Returns:
        ``(lambda_max, lambda_min)``, each of shape ``(N,)``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    gen = torch.Generator().manual_seed(seed)

    def rayleigh(op: MatVec) -> torch.Tensor:
        v = torch.randn(like.shape, generator=gen).to(like)
        lam = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
        for _ in range(iters):
            v = v / _norms(v).clamp_min(1e-30).view(-1, *([1] * (v.dim() - 1)))
            hv = op(v)
            lam = _dots(v, hv)
            v = hv
        return lam

    lam_max = rayleigh(matvec)
    shift = 1.01 * lam_max.view(-1, *([1] * (like.dim() - 1)))
    lam_min = 1.01 * lam_max - rayleigh(lambda v: shift * v - matvec(v))
    return lam_max, lam_min


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(dim=1)


def _norms(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).norm(dim=1)
