r"""Implicit (hyper)gradients through the attacker's latent inversion (CRAFTER.md section 3).

Pure functions, kept apart from any defence state (as opacus keeps its
privacy analysis in ``accountants/analysis/``). Crafter needs the gradient
of a loss on the attacker's best response ``z*(F) = argmin_z L_inv(F, z)``
with respect to the released feature ``F``. By the implicit function
theorem, with ``H = d^2 L_inv / dz^2`` at ``z*``,

.. code-block:: text

    dL/dF = dL/dF|direct - (dL/dz*) H^{-1} (d^2 L_inv / dz dF)        (Crafter, section 4)

This module supplies the inverse-Hessian-vector product (IHVP) ``H^{-1} v``
three ways, all using only matrix-vector products and all working per
sample on a batch (the inner problems of different samples are independent,
so ``H`` is block diagonal and every product is one batched call):

* ``"neumann"``: the paper's truncated Neumann series
  ``H^{-1} v ~ alpha * sum_{j=0..i} (I - alpha H)^j v`` (:func:`neumann_ihvp`);
* ``"cg"``: conjugate gradient on the exact Hessian (:func:`cg_ihvp`);
* ``"gn-cg"``: conjugate gradient on the Gauss-Newton matrix ``2 J^T J`` of the
  least-squares inner problem, which is positive semi-definite and equals
  ``H`` when the inversion residual is zero.

Example:
    >>> import torch
    >>> A = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]])           # one sample, H = A
    >>> hvp = lambda v: torch.einsum("nij,nj->ni", A, v)
    >>> v = torch.tensor([[1.0, -1.0]])
    >>> x = cg_ihvp(hvp, v, iters=10, tol=1e-10)
    >>> bool(torch.allclose(x, torch.linalg.solve(A[0], v[0])[None], atol=1e-5))
    True

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205
    (section 4, the hypergradient and its Neumann approximation; CRAFTER.md
    section 3). Lorraine, Vicol, Duvenaud, "Optimizing Millions of
    Hyperparameters by Implicit Differentiation", AISTATS 2020,
    https://arxiv.org/abs/1911.02590 (the Neumann IHVP). Hestenes & Stiefel,
    "Methods of conjugate gradients for solving linear systems", J. Res. NBS
    49(6), 1952, https://doi.org/10.6028/jres.049.044.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft.attacks.whitebox import inversion_loss

__all__ = [
    "SOLVERS",
    "MatVec",
    "cg_ihvp",
    "extreme_eigenvalues",
    "feature_jvp",
    "gauss_newton_vp",
    "ihvp",
    "implicit_feature_grad",
    "inversion_hvp",
    "neumann_ihvp",
]

#: the IHVP solvers :func:`implicit_feature_grad` accepts.
SOLVERS = ("neumann", "cg", "gn-cg")

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


def inversion_hvp(
    encoder: nn.Module, generator: nn.Module, features: torch.Tensor, z: torch.Tensor
) -> MatVec:
    r"""Exact Hessian-vector products of ``L_inv(F, z) = ||F - Enc(G(z))||^2`` in ``z``, per sample.

    The gradient graph is built once (double backward) and reused by every
    call. The models must be frozen and in eval mode (so samples do not
    interact, e.g. through batch norm), as :func:`implicit_feature_grad`
    arranges.

    Args:
        encoder: ``Enc``.
        generator: ``G``.
        features: ``F``, shape ``(N, *F)``.
        z: the expansion point ``(N, zd)`` (usually ``z*``).

    Returns:
        ``v (N, zd) -> H v (N, zd)``.
    """
    z = z.detach().requires_grad_(True)
    d = _feature_dim(features)
    with torch.enable_grad():
        loss = inversion_loss(encoder, generator, features.detach(), z).sum() * d
        (g,) = torch.autograd.grad(loss, z, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(g, z, grad_outputs=v, retain_graph=True)
        return hv.detach()

    return hvp


def gauss_newton_vp(encoder: nn.Module, generator: nn.Module, z: torch.Tensor) -> MatVec:
    r"""Gauss-Newton products ``v -> 2 J^T J v`` with ``J = d Enc(G(z)) / dz``, per sample.

    For the residual ``r(z) = Enc(G(z)) - F`` of ``L_inv = ||r||^2`` this is
    ``H`` without the ``2 sum_k r_k d^2 r_k / dz^2`` term: positive
    semi-definite always, and equal to ``H`` where the residual vanishes.
    ``J v`` is a forward-mode JVP, ``J^T u`` a VJP.

    Args:
        encoder: ``Enc`` (frozen, eval mode).
        generator: ``G`` (frozen, eval mode).
        z: the expansion point ``(N, zd)``.

    Returns:
        ``v (N, zd) -> 2 J^T J v (N, zd)``.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        out = encoder(generator(z))

    def gnvp(v: torch.Tensor) -> torch.Tensor:
        jv = feature_jvp(encoder, generator, z, v)
        (jtjv,) = torch.autograd.grad(out, z, grad_outputs=jv, retain_graph=True)
        return 2.0 * jtjv.detach()

    return gnvp


def feature_jvp(
    encoder: nn.Module, generator: nn.Module, z: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """``J(z) u = d Enc(G(z)) / dz . u``, shape ``(N, *F)``.

    Forward mode (``torch.func.jvp``) where every operation supports it, else
    the double-backward trick (a VJP of a VJP).
    """
    z = z.detach()
    u = u.detach()

    def fn(zz: torch.Tensor) -> torch.Tensor:
        return encoder(generator(zz))

    try:
        with warnings.catch_warnings():
            # torch's forward-AD set-up scripts decompositions with the deprecated torch.jit.script
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
            )
            return torch.func.jvp(fn, (z,), (u,))[1].detach()
    except (NotImplementedError, RuntimeError):  # an op without a forward-mode formula
        zz = z.clone().requires_grad_(True)
        with torch.enable_grad():
            out = fn(zz)
            w = torch.zeros_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, zz, grad_outputs=w, create_graph=True)
            (ju,) = torch.autograd.grad(g, w, grad_outputs=u)
        return ju.detach()


def ihvp(
    solver: str,
    v: torch.Tensor,
    *,
    hvp: Optional[MatVec] = None,
    gnvp: Optional[MatVec] = None,
    neumann_alpha: float = 1e-3,
    neumann_iters: int = 120,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    damping: float = 0.0,
) -> torch.Tensor:
    """Dispatch ``H^{-1} v`` to one of :data:`SOLVERS`.

    Args:
        solver: ``"neumann"`` or ``"cg"`` (use ``hvp``), ``"gn-cg"`` (uses ``gnvp``).
        v: right-hand side ``(N, ...)``.
        hvp: exact Hessian products (``"neumann"``, ``"cg"``).
        gnvp: Gauss-Newton products (``"gn-cg"``).
        neumann_alpha: see :func:`neumann_ihvp` (Default: 1e-3).
        neumann_iters: see :func:`neumann_ihvp` (Default: 120).
        cg_iters: see :func:`cg_ihvp` (Default: 20).
        cg_tol: see :func:`cg_ihvp` (Default: 1e-6).
        damping: added to ``H`` by the CG solvers; ignored by Neumann (Default: 0).

    Raises:
        ValueError: unknown solver or missing product.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown IHVP solver {solver!r}; choose one of {SOLVERS}")
    if solver == "gn-cg":
        if gnvp is None:
            raise ValueError("solver 'gn-cg' needs gnvp")
        return cg_ihvp(gnvp, v, iters=cg_iters, tol=cg_tol, damping=damping)
    if hvp is None:
        raise ValueError(f"solver {solver!r} needs hvp")
    if solver == "neumann":
        return neumann_ihvp(hvp, v, alpha=neumann_alpha, iters=neumann_iters)
    return cg_ihvp(hvp, v, iters=cg_iters, tol=cg_tol, damping=damping)


def implicit_feature_grad(
    encoder: nn.Module,
    generator: nn.Module,
    features: torch.Tensor,
    z_star: torch.Tensor,
    grad_z: torch.Tensor,
    *,
    solver: str = "neumann",
    neumann_alpha: float = 1e-3,
    neumann_iters: int = 120,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    damping: float = 0.0,
) -> torch.Tensor:
    r"""Hypergradient ``dL/dF`` of a loss ``L(z*(F))`` through the attacker's inversion.

    Derivation. Take the paper's ``L_inv(F, z) = ||F - Enc(G(z))||^2`` and
    write ``r(z) = Enc(G(z)) - F`` and ``J(z) = dEnc(G(z))/dz`` (``d x zd``,
    ``d = dim(F)``). Then

    .. code-block:: text

        dL_inv/dz         = 2 J^T r
        H = d2L_inv/dz2   = 2 (J^T J + sum_k r_k d2r_k/dz2)
        d2L_inv/dz dF     = -2 J^T                  (zd x d: d/dF of 2 J^T (Enc(G(z)) - F))

    At ``z*``, ``dL_inv/dz = 0`` for every ``F`` nearby, so
    ``dz*/dF = -H^{-1} d2L_inv/dz dF = 2 H^{-1} J^T`` and, for
    ``g = dL/dz*`` (shape ``(N, zd)``),

    .. code-block:: text

        dL/dF = -(d2L_inv/dz dF)^T H^{-1} g = 2 J(z*) H^{-1} g

    i.e. one IHVP ``u = H^{-1} g`` followed by one Jacobian-vector product
    ``J u`` (forward mode). Everything is per sample: ``H`` is block diagonal
    over the batch. A direct term ``dL/dF|direct`` (e.g. the utility loss) is
    the caller's to add.

    Args:
        encoder: ``Enc`` (frozen and put in eval mode during the call).
        generator: ``G`` (frozen and put in eval mode during the call).
        features: ``F`` at which ``z*`` was solved, ``(N, *F)``.
        z_star: the inner solution ``z*(F)``, ``(N, zd)``.
        grad_z: ``dL/dz*``, ``(N, zd)``.
        solver: one of ``"neumann"``, ``"cg"``, ``"gn-cg"`` (Default: ``"neumann"``, the paper's).
        neumann_alpha: Neumann step ``alpha`` (Default: 1e-3, the paper's).
        neumann_iters: Neumann terms ``i`` (Default: 120, the paper's).
        cg_iters: CG iterations (Default: 20).
        cg_tol: CG relative residual tolerance (Default: 1e-6).
        damping: Tikhonov damping for the CG solvers, in the units of ``H`` (Default: 0).

    Returns:
        ``dL/dF`` of shape ``(N, *F)``, detached.

    Shape:
        - features: ``(N, *F)``; z_star, grad_z: ``(N, zd)``; output: ``(N, *F)``.

    References:
        arXiv 2401.07205, section 4 (implicit function theorem and Neumann IHVP);
        CRAFTER.md section 3.

    Note:
        ``H`` and the mixed term use the paper's un-normalised
        ``||F - Enc(G(z))||^2``, not :func:`facecraft.attacks.whitebox.inversion_loss`
        (which divides by ``dim(F)``). Both have the same minimiser and the exact
        hypergradient is the same; only the Neumann series depends on the scale,
        and on this scale ``alpha = 1e-3`` means what the paper means. (The
        authors' released code instead scales the per-dimension loss by 2000,
        i.e. an ``alpha`` ``dim(F) / 2000`` times smaller than the paper's.)
    """
    if features.shape[0] != z_star.shape[0] or z_star.shape != grad_z.shape:
        raise ValueError(
            "implicit_feature_grad: expected features (N, *F), z_star and grad_z (N, zd) "
            "with the same N; "
            f"got {tuple(features.shape)}, {tuple(z_star.shape)}, {tuple(grad_z.shape)}"
        )
    if solver not in SOLVERS:
        raise ValueError(f"unknown IHVP solver {solver!r}; choose one of {SOLVERS}")
    with frozen(encoder, generator):
        if solver == "gn-cg":
            u = ihvp(
                solver,
                grad_z.detach(),
                gnvp=gauss_newton_vp(encoder, generator, z_star),
                cg_iters=cg_iters,
                cg_tol=cg_tol,
                damping=damping,
            )
        else:
            u = ihvp(
                solver,
                grad_z.detach(),
                hvp=inversion_hvp(encoder, generator, features, z_star),
                neumann_alpha=neumann_alpha,
                neumann_iters=neumann_iters,
                cg_iters=cg_iters,
                cg_tol=cg_tol,
                damping=damping,
            )
        return 2.0 * feature_jvp(encoder, generator, z_star, u)


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(dim=1)


def _norms(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).norm(dim=1)


def _feature_dim(features: torch.Tensor) -> int:
    return math.prod(features.shape[1:])
