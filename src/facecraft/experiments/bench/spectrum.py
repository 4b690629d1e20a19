r"""``facecraft bench spectrum``: the inversion Hessian's extreme eigenvalues at the attacker's z*.

Which Neumann step converges and how many CG iterations the implicit gradient needs (issue 5;
CRAFTER.md section 3, the IHVP of the paper's section 4) follow from the spectrum of the Hessian
of ``||F - Enc(G(z))||^2`` and of its Gauss-Newton matrix on private faces.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from facecraft._torchutils import frozen
from facecraft.attacks.whitebox import invert_latent
from facecraft.defenses.hypergrad import extreme_eigenvalues, gauss_newton_vp, inversion_hvp
from facecraft.experiments.study import Study

__all__ = ["bench_spectrum"]


def bench_spectrum(
    study: Study, *, batch: int = 32, inner_steps: int = 40, iters: int = 40
) -> Dict[str, Any]:
    r"""Spectrum of the inversion Hessian at the attacker's ``z*`` on private faces (issue 5;
    section 4's IHVP).

    On the first ``batch`` of ``study.eval_indices()``: ``z*`` from the amortizer
    plus ``inner_steps`` of the white-box inversion of the undefended features,
    then per sample the extreme eigenvalues of the exact Hessian ``H`` of
    ``||F - Enc(G(z))||^2`` and of its Gauss-Newton matrix
    (:func:`~facecraft.defenses.hypergrad.extreme_eigenvalues`, ``iters`` power
    iterations each). ``neumann_alpha_max = 2 / max lambda_max(H)`` is the
    largest Neumann step that converges on every face, ``neumann_residual_120``
    the fraction of the slowest component a 120-term series leaves at that step's
    0.95x, and ``condition`` the median ``lambda_max / lambda_min`` (CG needs
    about its square root of iterations).

    Returns:
        A JSON-able dict: ``batch``, ``inner_steps``, per-sample lists
        ``hessian_max``, ``hessian_min``, ``gauss_newton_max``,
        ``gauss_newton_min``, and the summaries above.
    """
    idx = study.eval_indices()[:batch]
    images = study.data.eval_test.float_images(idx).to(study.device)
    net, (gen, _), amor = study.target(), study.prior(), study.amortizer()
    with frozen(net.encoder, gen, amor):
        with torch.no_grad():
            feats = net.encoder(images)
            z0 = amor(feats)
        z = invert_latent(net.encoder, gen, feats, z0, steps=inner_steps)
        h_max, h_min = extreme_eigenvalues(
            inversion_hvp(net.encoder, gen, feats, z), z, iters=iters
        )
        g_max, g_min = extreme_eigenvalues(gauss_newton_vp(net.encoder, gen, z), z, iters=iters)
    alpha = 2.0 / float(h_max.max())
    return {
        "batch": int(idx.shape[0]),
        "inner_steps": inner_steps,
        "power_iters": iters,
        "hessian_max": h_max.tolist(),
        "hessian_min": h_min.tolist(),
        "gauss_newton_max": g_max.tolist(),
        "gauss_newton_min": g_min.tolist(),
        "neumann_alpha_max": alpha,
        "neumann_residual_120": float((1 - 0.95 * alpha * h_min.min().clamp_min(0)) ** 121),
        "condition": float((h_max / h_min.clamp_min(1e-12)).median()),
    }
