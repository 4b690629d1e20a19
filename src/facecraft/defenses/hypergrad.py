r"""Implicit (hyper)gradients through the attacker's latent inversion (CRAFTER.md section 3).

Pure functions, kept apart from any defence state (as opacus keeps its
privacy analysis in ``accountants/analysis/``). Crafter needs the gradient
of a loss on the attacker's best response ``z*(F) = argmin_z L_inv(F, z)``
with respect to the released feature ``F``. By the implicit function
theorem, with ``H = d^2 L_inv / dz^2`` at ``z*``,

.. code-block:: text

    dL/dF = dL/dF|direct - (dL/dz*) H^{-1} (d^2 L_inv / dz dF)        (Crafter, section 4)

This module supplies the products with ``H`` and the Jacobian of the
inversion, and solves the inverse-Hessian-vector product (IHVP) ``H^{-1} v``
one of three ways (:class:`IHVPSolver`), all using only matrix-vector
products and all working per sample on a batch (the inner problems of
different samples are independent, so ``H`` is block diagonal and every
product is one batched call; the solvers are in :mod:`facecraft.defenses.linsolve`):

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
    >>> y = ihvp(IHVPSolver("cg", cg_iters=10, cg_tol=1e-10), v, hvp=hvp)
    >>> bool(torch.equal(x, y))
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
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from facecraft._torchutils import frozen
from facecraft._validation import check_number
from facecraft.attacks.whitebox import inversion_loss
from facecraft.defenses.linsolve import MatVec, cg_ihvp, extreme_eigenvalues, neumann_ihvp

__all__ = [
    "SOLVERS",
    "IHVPSolver",
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

#: the IHVP solvers :class:`IHVPSolver` accepts.
SOLVERS = ("neumann", "cg", "gn-cg")


@dataclass(frozen=True)
class IHVPSolver:
    """How :func:`implicit_feature_grad` solves ``H^{-1} v``: the solver and its settings.

    Validated on construction; the defences build one from their flat
    keyword arguments (``solver``, ``neumann_alpha``, ...), so the messages
    name those arguments.

    Attributes:
        kind: ``"neumann"``, ``"cg"`` (both use exact Hessian products) or
            ``"gn-cg"`` (Gauss-Newton products) (Default: ``"neumann"``, the paper's).
        neumann_alpha: Neumann step ``alpha``, > 0 (Default: 1e-3, the paper's).
        neumann_iters: Neumann terms ``i``, >= 0 (Default: 120, the paper's).
        cg_iters: CG iterations, >= 0 (Default: 20; the CG solvers need >= 1).
        cg_tol: CG relative residual tolerance, >= 0 (Default: 1e-6).
        damping: Tikhonov damping added to ``H`` by the CG solvers, in the units
            of ``H``, >= 0; ignored by Neumann (Default: 0).

    Raises:
        ValueError: an unknown ``kind`` or a value out of range.
        TypeError: a value that is not a number.

    Example:
        >>> IHVPSolver("gn-cg", cg_iters=1).cg_iters
        1
        >>> IHVPSolver(cg_iters=-1)
        Traceback (most recent call last):
        ...
        ValueError: cg_iters must be >= 0, got -1
    """

    kind: str = "neumann"
    neumann_alpha: float = 1e-3
    neumann_iters: int = 120
    cg_iters: int = 20
    cg_tol: float = 1e-6
    damping: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SOLVERS:
            raise ValueError(f"unknown IHVP solver {self.kind!r}; choose one of {SOLVERS}")
        for name, value in (("neumann_iters", self.neumann_iters), ("cg_iters", self.cg_iters)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        check_number("neumann_alpha", self.neumann_alpha, low=0.0, low_open=True)
        check_number("cg_tol", self.cg_tol, low=0.0)
        check_number("damping", self.damping, low=0.0)


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
    solver: IHVPSolver,
    v: torch.Tensor,
    *,
    hvp: Optional[MatVec] = None,
    gnvp: Optional[MatVec] = None,
) -> torch.Tensor:
    """Dispatch ``H^{-1} v`` to the solver ``solver.kind`` with its settings.

    Args:
        solver: the :class:`IHVPSolver`; ``"neumann"`` and ``"cg"`` use ``hvp``,
            ``"gn-cg"`` uses ``gnvp``.
        v: right-hand side ``(N, ...)``.
        hvp: exact Hessian products (``"neumann"``, ``"cg"``).
        gnvp: Gauss-Newton products (``"gn-cg"``).

    Raises:
        TypeError: ``solver`` is not an :class:`IHVPSolver`.
        ValueError: the product the solver needs is missing.
    """
    _check_solver(solver)
    if solver.kind == "gn-cg":
        if gnvp is None:
            raise ValueError("solver 'gn-cg' needs gnvp")
        return cg_ihvp(gnvp, v, iters=solver.cg_iters, tol=solver.cg_tol, damping=solver.damping)
    if hvp is None:
        raise ValueError(f"solver {solver.kind!r} needs hvp")
    if solver.kind == "neumann":
        return neumann_ihvp(hvp, v, alpha=solver.neumann_alpha, iters=solver.neumann_iters)
    return cg_ihvp(hvp, v, iters=solver.cg_iters, tol=solver.cg_tol, damping=solver.damping)


def implicit_feature_grad(
    encoder: nn.Module,
    generator: nn.Module,
    features: torch.Tensor,
    z_star: torch.Tensor,
    grad_z: torch.Tensor,
    *,
    solver: IHVPSolver = IHVPSolver(),
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
        solver: the IHVP solver and its settings (Default: ``IHVPSolver()``: the
            paper's 120-term Neumann series with ``alpha = 1e-3``).

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
    _check_solver(solver)
    with frozen(encoder, generator):
        if solver.kind == "gn-cg":
            u = ihvp(solver, grad_z.detach(), gnvp=gauss_newton_vp(encoder, generator, z_star))
        else:
            u = ihvp(
                solver, grad_z.detach(), hvp=inversion_hvp(encoder, generator, features, z_star)
            )
        return 2.0 * feature_jvp(encoder, generator, z_star, u)


def _check_solver(solver: object) -> None:
    if not isinstance(solver, IHVPSolver):
        raise TypeError(
            f"solver: expected an IHVPSolver (e.g. IHVPSolver({solver!r})), got {solver!r}"
        )


def _feature_dim(features: torch.Tensor) -> int:
    return math.prod(features.shape[1:])
