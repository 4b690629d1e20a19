"""The faces a study attacks and what judges them (CRAFTER.md section 5).

:func:`eval_context` gathers the attacked private test faces with their labels
and attributes, the identity oracles fitted on the private gallery, the faces'
own dlib embeddings (stored once per run directory) and samples of the
attacker's prior (epsilon-PII's reference); :func:`attack_faces` picks the
seeded subset an attack with a smaller budget runs on.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from facecraft._io import checkpoint_exists, load_checkpoint, save_checkpoint
from facecraft.experiments.config import RunConfig
from facecraft.experiments.evaluate import EvalContext, spread_over_identities
from facecraft.experiments.study import Study

__all__ = ["attack_faces", "eval_context", "utility_context"]

ProgressFn = Callable[[int, int, str], None]


def eval_context(
    study: Study, oracles: Sequence[str], progress: Optional[ProgressFn] = None
) -> EvalContext:
    """The attacked private faces of ``study`` (``Study.eval_indices``) with their oracles (dlib,
    and the trained Eval-network when ``oracles`` names ``evalnet``), dlib embeddings and prior
    samples."""
    s = study
    idx = s.eval_indices()
    test = s.private.eval_test
    originals = test.float_images(idx)
    dl = s.dlib_oracle()
    emb_stem = (
        s.run_dir
        / "models"
        / f"dlib-eval-{s.private_key('dlib-eval', idx.tolist(), dl.crop_fraction)}"
    )
    if checkpoint_exists(emb_stem):
        emb = load_checkpoint(emb_stem, kind="embeddings")[0]["embeddings"]
    else:
        emb = dl.embed(originals, progress=progress)
        save_checkpoint(emb_stem, {"embeddings": emb}, kind="embeddings")
    return EvalContext(
        originals=originals,
        labels=test.identities[idx],
        attributes=None if test.attributes is None else test.attributes[idx],
        dlib=dl,
        evalnet=s.evalnet() if "evalnet" in oracles else None,
        prior_samples=prior_samples(s, originals.shape[0]),
        original_embeddings=emb,
        pii_steps=int(s.cfg.eval.get("pii_steps", 300)),
        pii_width=int(s.cfg.eval.get("pii_width", 32)),
        seed=s.cfg.seed,
    )


def prior_samples(study: Study, n: int) -> torch.Tensor:
    """``max(64, n)`` seeded draws of the study's prior (epsilon-PII's reference faces)."""
    g, _ = study.prior()
    gen = torch.Generator().manual_seed(study.cfg.seed + 5)
    z = torch.randn(max(64, n), g.latent_dim, generator=gen).to(study.device)
    with torch.no_grad():
        return torch.cat([g(z[i : i + 128]) for i in range(0, z.shape[0], 128)]).cpu()


def attack_faces(cfg: RunConfig, attack: str, labels: torch.Tensor) -> Optional[torch.Tensor]:
    """Positions among the attacked faces (identities ``labels``) that ``attack`` runs on:
    ``eval.n_images_by_attack[attack]`` of them spread over the identities (seeded, the same for
    every defence, so cells stay paired), or ``None`` for all of them."""
    n = cfg.eval.get("n_images_by_attack", {}).get(attack)
    if n is None or int(n) >= labels.shape[0]:
        return None
    return spread_over_identities(labels, int(n), cfg.seed + 29)


def utility_context(study: Study) -> Optional[EvalContext]:
    """Where utility is measured when the private pool has no attributes: ``eval.utility_faces`` of
    the study's own private test faces (spread over identities, seeded) with their attributes;
    ``None`` when the attacked faces carry attributes themselves (utility is measured on them)."""
    if study.private is study.data or study.data.eval_test.attributes is None:
        return None
    test = study.data.eval_test
    idx = spread_over_identities(
        test.identities, study.cfg.eval.get("utility_faces", 512), study.cfg.seed + 19
    )
    return EvalContext(
        originals=test.float_images(idx),
        labels=test.identities[idx],
        attributes=test.attributes[idx],
        dlib=None,
        evalnet=None,
        prior_samples=torch.empty(0),
        original_embeddings=None,
        seed=study.cfg.seed,
    )
