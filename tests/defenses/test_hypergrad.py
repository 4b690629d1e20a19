"""Tests for facecraft.defenses.hypergrad: IHVP solvers and the implicit feature gradient."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from facecraft.defenses.hypergrad import (
    SOLVERS,
    IHVPSolver,
    cg_ihvp,
    extreme_eigenvalues,
    gauss_newton_vp,
    ihvp,
    implicit_feature_grad,
    inversion_hvp,
    neumann_ihvp,
)

# --------------------------------------------------------------------------- helpers

ZD, XD, FD = 3, 8, 5  # latent, "image" and feature sizes of the toy inversion problem


def _spd_batch(n: int, k: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, k, k, generator=g, dtype=torch.float64))
    ev = torch.logspace(0, math.log10(cond), k, dtype=torch.float64).expand(n, k)
    return q @ torch.diag_embed(ev) @ q.transpose(1, 2)


def _matvec(a: torch.Tensor):
    return lambda v: torch.einsum("nij,nj->ni", a, v)


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    gen = nn.Sequential(nn.Linear(ZD, XD), nn.Tanh(), nn.Linear(XD, XD)).double().eval()
    gen.latent_dim = ZD
    enc = nn.Sequential(nn.Linear(XD, FD), nn.Tanh()).double().eval()
    return enc, gen


def _dense_hessian(enc, gen, f, z):
    """Per-sample Hessian of ||F - Enc(G(z))||^2 in z, shape (N, zd, zd)."""
    out = []
    for n in range(z.shape[0]):
        fn = lambda zz, fn_=f[n : n + 1]: (enc(gen(zz[None])) - fn_).pow(2).sum()  # noqa: E731
        out.append(torch.autograd.functional.hessian(fn, z[n]))
    return torch.stack(out)


def _solve_z(enc, gen, f, z0, iters: int = 40):
    """z*(F) to machine precision by per-sample Newton steps from z0."""
    z = z0.clone()
    for _ in range(iters):
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((enc(gen(zz)) - f).pow(2).sum(), zz)
        h = _dense_hessian(enc, gen, f, z)
        z = z - torch.linalg.solve(h, g[..., None])[..., 0]
    return z


def _critic_loss(gen, z, w):
    """A fixed smooth 'privacy loss' of the reconstructions: sum_n w . tanh(G(z_n))."""
    return (torch.tanh(gen(z)) * w).sum()


def _fd_and_hypergrad(realisable: bool, solver: str, **kw):
    enc, gen = _toy()
    g = torch.Generator().manual_seed(1)
    z_true = torch.randn(2, ZD, generator=g, dtype=torch.float64)
    with torch.no_grad():
        f = enc(gen(z_true))
    if not realisable:
        f = f + 0.05 * torch.randn(f.shape, generator=g, dtype=torch.float64)
    w = torch.randn(XD, generator=g, dtype=torch.float64)
    z_star = _solve_z(enc, gen, f, z_true)
    zs = z_star.clone().requires_grad_(True)
    (grad_z,) = torch.autograd.grad(_critic_loss(gen, zs, w), zs)
    if solver == "neumann":
        lam = torch.linalg.eigvalsh(_dense_hessian(enc, gen, f, z_star))
        assert bool((lam > 0).all())
        alpha = 1.0 / float(lam.max())
        kappa = float(lam.max() / lam.min())
        kw = dict(
            neumann_alpha=alpha,
            neumann_iters=int(min(40000, math.ceil(math.log(1e-12) / math.log1p(-1 / kappa)))),
        )
    hyper = implicit_feature_grad(enc, gen, f, z_star, grad_z, solver=IHVPSolver(solver, **kw))
    h = 1e-5
    fd = torch.zeros_like(f)
    for idx in range(f.numel()):
        e = torch.zeros(f.numel(), dtype=f.dtype)
        e[idx] = h
        e = e.view_as(f)
        lp = _critic_loss(gen, _solve_z(enc, gen, f + e, z_star, iters=8), w)
        lm = _critic_loss(gen, _solve_z(enc, gen, f - e, z_star, iters=8), w)
        fd.view(-1)[idx] = (lp - lm) / (2 * h)
    return hyper, fd, (enc, gen, f, z_star)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --------------------------------------------------------------------------- solvers vs dense solve


def test_cg_matches_dense_solve_per_sample():
    a = _spd_batch(3, 6, cond=50.0, seed=0)
    v = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = cg_ihvp(_matvec(a), v, iters=50, tol=1e-12)
    ref = torch.linalg.solve(a, v[..., None])[..., 0]
    assert _rel(x, ref) < 1e-9


def test_cg_damping_solves_damped_system():
    a = _spd_batch(2, 5, cond=10.0, seed=2)
    v = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = cg_ihvp(_matvec(a), v, iters=50, tol=1e-12, damping=0.7)
    ref = torch.linalg.solve(a + 0.7 * torch.eye(5, dtype=a.dtype), v[..., None])[..., 0]
    assert _rel(x, ref) < 1e-9


def test_neumann_matches_dense_solve():
    a = _spd_batch(3, 6, cond=10.0, seed=4)
    v = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = neumann_ihvp(_matvec(a), v, alpha=0.09, iters=600)  # alpha * lambda_max = 0.9
    ref = torch.linalg.solve(a, v[..., None])[..., 0]
    assert _rel(x, ref) < 1e-8


def test_neumann_truncation_follows_formula():
    # alpha * sum_{j<=i} (1 - alpha lam)^j on a diagonal matrix, term by term.
    lam = torch.tensor([[0.5, 2.0, 8.0]], dtype=torch.float64)
    v = torch.ones(1, 3, dtype=torch.float64)
    alpha, i = 0.1, 7
    x = neumann_ihvp(lambda u: lam * u, v, alpha=alpha, iters=i)
    ref = alpha * sum((1 - alpha * lam) ** j for j in range(i + 1))
    assert torch.allclose(x, ref, rtol=1e-12)


def test_neumann_warns_when_diverging():
    a = _spd_batch(1, 4, cond=10.0, seed=6)
    v = torch.ones(1, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="diverging"):
        neumann_ihvp(_matvec(a), v, alpha=1.0, iters=20)  # alpha * lambda_max = 10


def test_neumann_does_not_warn_when_converging():
    a = _spd_batch(1, 4, cond=10.0, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neumann_ihvp(_matvec(a), torch.ones(1, 4, dtype=torch.float64), alpha=0.05, iters=20)


def test_extreme_eigenvalues_match_dense_spectrum_per_sample():
    a = _spd_batch(3, 5, cond=20.0, seed=7)  # eigenvalues 1 .. 20 (log-spaced) in every sample
    a[1] *= 3.0  # a different scale per sample: 3 .. 60
    lam_max, lam_min = extreme_eigenvalues(
        _matvec(a), torch.zeros(3, 5, dtype=torch.float64), iters=300
    )
    ev = torch.linalg.eigvalsh(a)
    assert torch.allclose(lam_max, ev[:, -1], rtol=1e-6)
    assert torch.allclose(lam_min, ev[:, 0], rtol=1e-4)
    # the Neumann step these bound: alpha = 1.9 / lambda_max converges, 2.1 / lambda_max does not
    v = torch.ones(3, 5, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neumann_ihvp(_matvec(a[:1]), v[:1], alpha=float(1.9 / lam_max[0]), iters=200)
    with pytest.warns(RuntimeWarning, match="diverging"):
        neumann_ihvp(_matvec(a[:1]), v[:1], alpha=float(2.1 / lam_max[0]), iters=200)
    with pytest.raises(ValueError, match="iters"):
        extreme_eigenvalues(_matvec(a), v, iters=0)


def test_cg_negative_curvature_stops_with_finite_result():
    a = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))[None]
    x = cg_ihvp(_matvec(a), torch.ones(1, 3, dtype=torch.float64), iters=10)
    assert torch.isfinite(x).all()


def test_ihvp_rejects_unknown_solver_and_missing_products():
    v = torch.ones(1, 2)
    with pytest.raises(ValueError, match="unknown IHVP solver"):
        IHVPSolver("lbfgs")
    with pytest.raises(ValueError, match="needs gnvp"):
        ihvp(IHVPSolver("gn-cg"), v, hvp=lambda u: u)
    with pytest.raises(ValueError, match="needs hvp"):
        ihvp(IHVPSolver("cg"), v)
    with pytest.raises(TypeError, match="expected an IHVPSolver"):
        ihvp("cg", v, hvp=lambda u: u)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the solver config


def test_ihvp_solver_defaults_are_the_papers():
    s = IHVPSolver()
    assert (s.kind, s.neumann_alpha, s.neumann_iters) == ("neumann", 1e-3, 120)
    assert (s.cg_iters, s.cg_tol, s.damping) == (20, 1e-6, 0.0)
    assert s == IHVPSolver("neumann", 1e-3, 120, 20, 1e-6, 0.0) and hash(s) == hash(IHVPSolver())


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(cg_iters=-1), ValueError, "cg_iters must be >= 0, got -1"),
        (dict(neumann_iters=-3), ValueError, "neumann_iters must be >= 0, got -3"),
        (dict(neumann_alpha=0.0), ValueError, "neumann_alpha"),
        (dict(neumann_alpha=float("nan")), ValueError, "neumann_alpha"),
        (dict(cg_tol=-1e-3), ValueError, "cg_tol"),
        (dict(damping=-0.1), ValueError, "damping"),
        (dict(damping="0.1"), TypeError, "damping"),
        (dict(kind="lbfgs"), ValueError, "unknown IHVP solver 'lbfgs'"),
    ],
)
def test_ihvp_solver_rejects_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        IHVPSolver(**kwargs)


def test_ihvp_solver_is_frozen():
    s = IHVPSolver("cg", cg_iters=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cg_iters = 5  # type: ignore[misc]
    assert dataclasses.replace(s, cg_iters=5) == IHVPSolver("cg", cg_iters=5)


def test_ihvp_dispatches_with_the_solvers_settings():
    a = _spd_batch(2, 4, cond=10.0, seed=9)
    v = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    hvp = _matvec(a)
    solver = IHVPSolver("neumann", neumann_alpha=0.05, neumann_iters=7)
    assert torch.equal(ihvp(solver, v, hvp=hvp), neumann_ihvp(hvp, v, alpha=0.05, iters=7))
    solver = IHVPSolver("cg", cg_iters=3, cg_tol=1e-3, damping=0.2)
    assert torch.equal(ihvp(solver, v, hvp=hvp), cg_ihvp(hvp, v, iters=3, tol=1e-3, damping=0.2))
    assert torch.equal(
        ihvp(dataclasses.replace(solver, kind="gn-cg"), v, gnvp=hvp),
        cg_ihvp(hvp, v, iters=3, tol=1e-3, damping=0.2),
    )


# --------------------------------------------------------------------------- Hessian products


def test_inversion_hvp_and_gauss_newton_match_dense():
    enc, gen = _toy()
    g = torch.Generator().manual_seed(7)
    z = torch.randn(2, ZD, generator=g, dtype=torch.float64)
    f = torch.randn(2, FD, generator=g, dtype=torch.float64)
    v = torch.randn(2, ZD, generator=g, dtype=torch.float64)
    h = _dense_hessian(enc, gen, f, z)
    assert _rel(inversion_hvp(enc, gen, f, z)(v), torch.einsum("nij,nj->ni", h, v)) < 1e-10
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda zz: enc(gen(zz[None]))[0], z[n])
            for n in range(2)
        ]
    )
    gn = 2 * jac.transpose(1, 2) @ jac
    assert _rel(gauss_newton_vp(enc, gen, z)(v), torch.einsum("nij,nj->ni", gn, v)) < 1e-10


# ------------------------------------------------------------ hypergradient vs finite differences


@pytest.mark.parametrize(
    "solver,realisable,kw,tol",
    [
        ("cg", False, dict(cg_iters=50, cg_tol=1e-12), 1e-6),
        ("neumann", False, {}, 1e-6),
        ("gn-cg", True, dict(cg_iters=50, cg_tol=1e-12), 1e-6),
    ],
)
def test_implicit_feature_grad_matches_finite_differences(solver, realisable, kw, tol):
    hyper, fd, _ = _fd_and_hypergrad(realisable, solver, **kw)
    assert hyper.shape == fd.shape
    assert _rel(hyper, fd) < tol, (solver, _rel(hyper, fd))


def test_gauss_newton_is_approximate_with_a_residual():
    # With a nonzero inversion residual H != 2 J^T J, so gn-cg is only an approximation.
    hyper, fd, _ = _fd_and_hypergrad(False, "gn-cg", cg_iters=50, cg_tol=1e-12)
    assert _rel(hyper, fd) > 1e-4


def test_implicit_feature_grad_linear_closed_form():
    # Enc(G(z)) = A z: z* = (A^T A)^-1 A^T F, so dL/dF = A (A^T A)^-1 g exactly.
    torch.manual_seed(3)
    gen = nn.Linear(ZD, XD, bias=False).double().eval()
    enc = nn.Linear(XD, FD, bias=False).double().eval()
    a = (enc.weight @ gen.weight).detach()
    g = torch.Generator().manual_seed(8)
    f = torch.randn(4, FD, generator=g, dtype=torch.float64)
    z_star = torch.linalg.lstsq(a, f.T).solution.T
    grad_z = torch.randn(4, ZD, generator=g, dtype=torch.float64)
    ref = grad_z @ torch.linalg.inv(a.T @ a) @ a.T
    lam = torch.linalg.eigvalsh(2 * a.T @ a)
    iters = math.ceil(math.log(1e-12) / math.log1p(-float(lam.min() / lam.max())))
    for solver in SOLVERS:
        kw = dict(neumann_alpha=1.0 / float(lam.max()), neumann_iters=iters)
        out = implicit_feature_grad(
            enc, gen, f, z_star, grad_z, solver=IHVPSolver(solver, cg_iters=20, cg_tol=1e-13, **kw)
        )
        assert _rel(out, ref) < 1e-8, solver


def test_implicit_feature_grad_leaves_model_grads_and_flags():
    enc, gen = _toy()
    enc.train()
    z = torch.randn(2, ZD, dtype=torch.float64)
    f = torch.randn(2, FD, dtype=torch.float64)
    grad_z = torch.randn(2, ZD, dtype=torch.float64)
    implicit_feature_grad(enc, gen, f, z, grad_z, solver=IHVPSolver("cg"))
    assert enc.training and not gen.training
    assert all(
        p.grad is None and p.requires_grad for p in list(enc.parameters()) + list(gen.parameters())
    )


def test_implicit_feature_grad_checks_shapes_and_solver():
    enc, gen = _toy()
    z = torch.zeros(2, ZD, dtype=torch.float64)
    with pytest.raises(TypeError, match="expected an IHVPSolver"):
        implicit_feature_grad(enc, gen, torch.zeros(2, FD, dtype=torch.float64), z, z, solver="cg")
    with pytest.raises(ValueError, match="same N"):
        implicit_feature_grad(
            enc,
            gen,
            torch.zeros(2, FD, dtype=torch.float64),
            torch.zeros(3, ZD, dtype=torch.float64),
            torch.zeros(3, ZD, dtype=torch.float64),
        )
