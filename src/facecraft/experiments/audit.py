"""``facecraft audit``: how much identity a user's own split network leaks, and what Crafter cuts.

The user brings an edge encoder, a feature release with identities and a gallery of labelled faces
(:mod:`facecraft.experiments.audit_inputs`). The attacker's side is trained on the study's public
faces through that encoder, as CRAFTER.md section 2 describes it for the target's: a decoder (the
black-box and hybrid attacks), an amortizer with the study's WGAN-GP prior (the white-box attack)
and an embedding regressor (the feature-to-embedding attack). Each attack's faces are judged by the
dlib oracle with the user's gallery (Eval Acc with its intervals, FSIM, SSIM where the released
faces are known), and the report of a study is written. With a defence (``crafter-fast``), the
released faces are also crafted through the user's encoder and attacked, so the report holds the
before and after.

The attacker works at the study's image size; an encoder that takes another size is queried
through a bilinear resize (:class:`~facecraft.experiments.audit_inputs.ResizedEncoder`). No cloud
head comes with the encoder, so utility (mean AUC) is not measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from facecraft._io import atomic_write_json, checkpoint_exists, config_hash, save_checkpoint
from facecraft._locks import holds_run_dir
from facecraft._torchutils import query_in_batches
from facecraft._validation import check_path_name
from facecraft.defenses import get_defense_class
from facecraft.experiments.audit_attacker import AuditAttacker
from facecraft.experiments.audit_inputs import (
    ResizedEncoder,
    check_gallery,
    encoder_feature_shape,
    load_encoder,
    load_face_folder,
    load_release,
    resize_square,
)
from facecraft.experiments.config import RunConfig, config_to_dict
from facecraft.experiments.context import prior_samples
from facecraft.experiments.evaluate import (
    EvalContext,
    embedding_privacy_metrics,
    oracle_ceiling,
    privacy_metrics,
)
from facecraft.experiments.grid import EMBEDDING_ATTACKS, profile_setting
from facecraft.experiments.report import build_report
from facecraft.experiments.results import GRID_FACES, STATISTICS, peak_rss_mb
from facecraft.experiments.runner import study_defense
from facecraft.experiments.study import Study

__all__ = ["AUDIT_ATTACKS", "AuditRequest", "run_audit"]

ProgressFn = Callable[[int, int, str], None]

#: the attacks an audit runs by default (the adaptive ones need the defence's own public release)
AUDIT_ATTACKS = ("whitebox", "blackbox", "hybrid", "embedding")


@dataclass(frozen=True)
class AuditRequest:
    """What to audit.

    Attributes:
        encoder: TorchScript file or ``module:function`` (:func:`~facecraft.experiments.
            audit_inputs.load_encoder`).
        features: the release: ``.safetensors`` or a folder of faces.
        gallery: labelled faces, one folder per identity.
        image_size: the side of the images the encoder takes (``None``: the study's).
        defense: a registered defence to also craft the release with (needs the released faces).
        attacks: attack names (default :data:`AUDIT_ATTACKS`).
        name: sub-folder of ``RUN_DIR/audits`` for the results and report (default: a hash).
    """

    encoder: str
    features: Path
    gallery: Path
    image_size: Optional[int] = None
    defense: Optional[str] = None
    attacks: Sequence[str] = AUDIT_ATTACKS
    name: Optional[str] = None


def run_audit(
    cfg: RunConfig,
    run_dir: Path,
    request: AuditRequest,
    *,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
) -> Path:
    """Audit ``request`` with the attacker of ``cfg``'s profile, models stored in ``run_dir``;
    returns the report's path (``run_dir/audits/<name>/report.html``). Every input is checked
    before anything is written."""
    t0 = time.time()
    inputs = _read_inputs(cfg, request)
    if request.name is not None:
        check_path_name(request.name, "--name")
    return _run(cfg, run_dir, request, inputs, t0, data_root=data_root, progress=progress)


@holds_run_dir
def _run(
    cfg: RunConfig,
    run_dir: Path,
    request: AuditRequest,
    inputs: Dict[str, Any],
    t0: float,
    *,
    data_root: Optional[str],
    progress: Optional[ProgressFn],
) -> Path:
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    side = AuditAttacker(study, inputs["encoder"], inputs["key"], inputs["shape"], progress)
    ctx = _context(study, side, inputs)
    out = run_dir / "audits" / (request.name or inputs["key"][:12])
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    releases = [("none", None, inputs["release"].features)]
    if request.defense:
        releases.append(_crafted(cfg, side, request.defense, inputs, progress))
    rows = []
    for name, param, feats in releases:
        for attack in request.attacks:
            rows.append(_cell(side, name, param, attack, feats, ctx, cells))
    _write_results(study, request, inputs, ctx, rows, out, time.time() - t0)
    return build_report(out)


def _read_inputs(cfg: RunConfig, request: AuditRequest) -> Dict[str, Any]:
    """Load and check every user input before any training."""
    unknown = set(request.attacks) - set(AUDIT_ATTACKS)
    if unknown:
        raise ValueError(f"--attack {sorted(unknown)}: an audit runs {', '.join(AUDIT_ATTACKS)}")
    if request.defense is not None:
        _check_defense(request.defense)
    user, key = load_encoder(request.encoder)
    size = int(request.image_size or cfg.data.image_size)
    shape = encoder_feature_shape(user, size)
    gallery = load_face_folder(Path(request.gallery), size, what="--gallery")
    check_gallery(gallery, Path(request.gallery))
    encoder = ResizedEncoder(user, size).eval()
    release = load_release(
        Path(request.features), encoder, shape, size, gallery, torch.device("cpu")
    )
    if request.defense and release.images is None:
        raise ValueError(
            f"--defense {request.defense} crafts the released faces: give --features as a folder "
            "of faces (or a .safetensors file with an 'images' tensor)"
        )
    return {
        "encoder": encoder,
        "key": config_hash([key, size, sorted(request.attacks)]),
        "size": size,
        "shape": shape,
        "gallery": gallery,
        "release": release,
    }


def _check_defense(name: str) -> None:
    cls = get_defense_class(name)
    if not cls.keeps_encoder or cls.fits_on in ("attributes", "teacher"):
        raise ValueError(
            f"--defense {name}: an audit crafts through your encoder as it is; {name} retrains the "
            "network or learns from another defence's release (try crafter-fast or noise)"
        )


def _context(study: Study, side: AuditAttacker, inputs: Dict[str, Any]) -> EvalContext:
    """The release's faces judged by dlib with the user's gallery (at the study's image size)."""
    from facecraft.metrics.dlib_oracle import DlibOracle

    gallery, release = inputs["gallery"], inputs["release"]
    stem = side.stem("dlib-gallery", study.dlib_crop)
    dl = DlibOracle(crop_fraction=study.dlib_crop)
    if checkpoint_exists(stem):
        dl = DlibOracle.load(stem, crop_fraction=study.dlib_crop)
    else:
        dl.fit(gallery.images, gallery.labels, num_identities=len(gallery.names))
        dl.save(stem)
    originals = None if release.images is None else _resize(release.images, study)
    return EvalContext(
        originals=originals,
        labels=release.labels,
        attributes=None,
        dlib=dl,
        evalnet=None,
        prior_samples=prior_samples(study, release.labels.shape[0]),
        original_embeddings=None if originals is None else dl.embed(originals),
        pii_steps=int(study.cfg.eval.get("pii_steps", 300)),
        pii_width=int(study.cfg.eval.get("pii_width", 32)),
        seed=study.cfg.seed,
    )


def _resize(images: torch.Tensor, study: Study) -> torch.Tensor:
    """``images`` at the study's image size (antialiased, clamped to [0, 1])."""
    return resize_square(images, study.data.image_size, antialias=True, clamp=True)


def _crafted(
    cfg: RunConfig,
    side: AuditAttacker,
    name: str,
    inputs: Dict[str, Any],
    progress: Optional[ProgressFn],
) -> Tuple[str, Optional[float], torch.Tensor]:
    """``(name, param, features)``: the release's faces protected by the profile's setting of
    ``name`` through the user's encoder."""
    setting = profile_setting(cfg, name)
    study = side.study
    d = study_defense(
        study, name, side.amortizer, encoder=side.encoder, head=None, **setting.kwargs
    )
    if d.fits_on == "prior":
        fit_name, fit_cfg = d.fit_key() or (name, setting.kwargs)
        stem = side.stem(f"fit-{fit_name}", fit_cfg, config_to_dict(cfg.prior))
        d.fit(study.data.public.images, progress=progress, checkpoint_stem=stem)
    d.reseed("audit")
    images = inputs["release"].images
    feats = query_in_batches(d, images, torch.device("cpu"), 64, progress, f"protect ({name})")
    return name, setting.param, feats


def _cell(
    side: AuditAttacker,
    defense: str,
    param: Optional[float],
    attack: str,
    feats: torch.Tensor,
    ctx: EvalContext,
    cells: Path,
) -> Dict[str, Any]:
    """One (release, attack) row of the report's schema."""
    atk = side.attack(attack)
    t0 = time.time()
    setting = defense if param is None else f"{defense}_{param}"
    if attack in EMBEDDING_ATTACKS:
        measured = embedding_privacy_metrics(atk(feats), ctx)
    else:
        recon = atk(feats.to(side.study.device), progress=side.progress).cpu()
        measured = privacy_metrics(recon, ctx)
        stem = cells / f"{setting}--{attack}-recon"
        save_checkpoint(stem, {"images": recon[:GRID_FACES]}, kind="reconstructions")
    return {
        "defense": defense,
        "param": param,
        "setting": setting,
        "attack": attack,
        **measured,
        "mean_auc": None,
        "n_faces": int(ctx.labels.shape[0]),
        "attack_seconds": time.time() - t0,
    }


def _write_results(
    study: Study,
    request: AuditRequest,
    inputs: Dict[str, Any],
    ctx: EvalContext,
    rows: List[Dict[str, Any]],
    out: Path,
    seconds: float,
) -> None:
    """``results.json`` in the study's schema (read by the report), with the audit's inputs."""
    gallery, release = inputs["gallery"], inputs["release"]
    k = len(gallery.names)
    shown = ctx.originals
    if shown is None:  # the grid's first row: a gallery face of each attacked person
        first = {int(lab): i for i, lab in reversed(list(enumerate(gallery.labels.tolist())))}
        picks = [first[int(lab)] for lab in release.labels[:GRID_FACES]]
        shown = _resize(gallery.images[picks], study)
    save_checkpoint(out / "cells" / "originals", {"images": shown[:GRID_FACES]}, kind="originals")
    results = {
        "dataset": f"audit of {request.encoder}",
        "profile": study.cfg.profile,
        "synthetic": bool(study.data.synthetic),
        "n_identities": k,
        "n_images": int(ctx.labels.shape[0]),
        "n_identities_attacked": int(ctx.labels.unique().numel()),
        "labels": ctx.labels.tolist(),
        "chance": 1.0 / k,
        "oracle_ceiling": {} if ctx.originals is None else oracle_ceiling(ctx)["top1"],
        "statistics": STATISTICS,
        "rows": rows,
        "adaptive_curves": [],
        "audit": {
            "encoder": request.encoder,
            "features": str(request.features),
            "gallery": str(request.gallery),
            "image_size": inputs["size"],
            "feature_shape": list(inputs["shape"]),
            "study_image_size": study.data.image_size,
            "released_faces_known": release.images is not None,
            "gallery_images": int(gallery.labels.shape[0]),
            "utility": "not measured: no cloud head comes with the encoder",
        },
        "config": config_to_dict(study.cfg),
        "grid_raw_label": "raw" if ctx.originals is not None else "gallery face",
        "note": "Audit of a user's encoder: the attacker trained on the study's public faces "
        "through it; utility (mean AUC) is not measured (no cloud head)."
        + (
            ""
            if ctx.originals is not None
            else " The release holds no faces: Eval Acc only; the "
            "grid's first row shows a gallery face of each attacked person."
        ),
        "cells": "cells",
        "run_dir": "../..",
        "wall_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    atomic_write_json(out / "results.json", results)
