"""One-release workflows behind ``facecraft craft`` and ``facecraft attack``.

:func:`craft_release` protects one split's faces with a defence setting of a
profile and writes the release (features plus identities, safetensors and JSON);
:func:`attack_release` inverts any release of the target's encoder with a
white-box, black-box or hybrid attack and judges the faces with the dlib oracle
(CRAFTER.md section 5: Eval Acc with its intervals). Both reuse the run
directory's trained models, training what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from facecraft._io import load_checkpoint, save_checkpoint
from facecraft._torchutils import query_in_batches
from facecraft._validation import check_number, check_output_stem, validate_features
from facecraft.defenses import create_defense, get_defense_class
from facecraft.experiments.config import RunConfig
from facecraft.experiments.grid import UNPROTECTED, profile_setting
from facecraft.experiments.runner import StudyRunner
from facecraft.experiments.study import Study
from facecraft.metrics.identity import topk_hits
from facecraft.metrics.stats import accuracy_summary
from facecraft.models import build_target, feature_shape

__all__ = [
    "ATTACKABLE",
    "SPLITS",
    "attack_release",
    "check_release",
    "config_feature_shape",
    "craft_release",
]

ProgressFn = Callable[[int, int, str], None]

#: splits a release can be crafted from
SPLITS = ("eval_test", "eval_train", "public")
#: attacks that need nothing but the release (the adaptive ones also need the defence)
ATTACKABLE = ("whitebox", "blackbox", "hybrid")


def craft_release(
    cfg: RunConfig,
    run_dir: Path,
    defense: str,
    output: Path,
    *,
    param: Optional[float] = None,
    split: str = "eval_test",
    limit: Optional[int] = None,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
) -> Tuple[Path, int]:
    """Protect the first ``limit`` faces of ``split`` with ``defense`` at the profile's ``param``
    and write the release to ``output`` (``.safetensors`` + ``.json``: features, identities, the
    setting).

    Returns:
        ``(path of the .safetensors file, number of faces)``.

    Raises:
        ValueError: an unknown defence or split, a bad ``param``/``limit``, or an ``output`` that
            would replace a run file.
    """
    get_defense_class(defense)  # an unknown name is refused before any work
    check_number("--param", param, optional=True)
    check_number("--limit", limit, low=1, integer=True, optional=True)
    setting = profile_setting(cfg, defense, param)
    if split not in SPLITS:
        raise ValueError(f"--split must be eval_test, eval_train or public, got {split!r}")
    stem = output.with_suffix("")
    check_output_stem(
        stem,
        (".safetensors", ".json"),
        run_dir=run_dir,
        option="--output",
        kind="released-features",
    )
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    d = StudyRunner(study, progress).build_defense(setting)
    faces = getattr(study.data, split)
    n = len(faces) if limit is None else min(limit, len(faces))
    images = faces.float_images(slice(0, n))
    feats = query_in_batches(d, images, torch.device("cpu"), 64, progress, f"protect ({defense})")
    meta = {
        "defense": defense,
        "param": setting.param,
        "split": split,
        "profile": cfg.profile,
        "kwargs": setting.kwargs,
    }
    tensors = {"features": feats, "identities": faces.identities[:n]}
    save_checkpoint(stem, tensors, kind="released-features", meta=meta)
    return stem.with_suffix(".safetensors"), n


def attack_release(
    cfg: RunConfig,
    run_dir: Path,
    features: Path,
    attack: str = "whitebox",
    *,
    output: Optional[Path] = None,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
) -> Dict[str, Any]:
    """Reconstruct faces from the release ``features`` (a file of :func:`craft_release`'s format)
    with ``attack`` through the target's encoder; when the file holds identities, judge the faces
    with the dlib oracle (gallery: ``eval_train``).

    Returns:
        ``attack``, ``features``, ``defense``, ``param``, ``n`` and, with identities,
        ``eval_acc_top{1,5}_dlib`` with ``_ci95`` (bootstrap over identities) and ``_wilson95`` (per
        face), and ``identities_exposed_dlib``.

    Raises:
        ValueError: an attack that needs the defence, a malformed release, or a bad ``output``.
    """
    if attack not in ATTACKABLE:
        raise ValueError(
            f"--attack must be whitebox, blackbox or hybrid (the adaptive ones need the defence: "
            f"use `facecraft evaluate`), got {attack!r}"
        )
    if output:
        check_output_stem(
            output.with_suffix(""),
            (".safetensors", ".json"),
            run_dir=run_dir,
            option="--output",
            kind="reconstructions",
        )
    tensors, meta = load_checkpoint(features.with_suffix(""), kind="released-features")
    check_release(features.with_suffix(".safetensors"), tensors, config_feature_shape(cfg))
    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    runner = StudyRunner(study, progress)
    target = study.target()
    release = create_defense(UNPROTECTED.name, encoder=target.encoder, head=target.head)
    atk = runner.attacker.make_attack(attack, UNPROTECTED, release)
    recon = atk(tensors["features"].to(study.device), progress=progress)
    result: Dict[str, Any] = {
        "attack": attack,
        "features": str(features),
        "defense": meta.get("defense"),
        "param": meta.get("param"),
        "n": int(recon.shape[0]),
    }
    if "identities" in tensors:
        scores = study.dlib_oracle().scores(recon.cpu(), progress=progress)
        result.update(_dlib_accuracy(scores, tensors["identities"]))
    if output:
        save_checkpoint(
            output.with_suffix(""),
            {"images": recon.cpu()},
            kind="reconstructions",
            meta={"attack": attack, "features": str(features)},
        )
    return result


def _dlib_accuracy(scores: torch.Tensor, identities: torch.Tensor) -> Dict[str, Any]:
    """Top-1 and top-5 Eval Acc under dlib with their intervals and the identities exposed."""
    out: Dict[str, Any] = {}
    for k in (1, 5):
        summ = accuracy_summary(topk_hits(scores, identities, k=k), identities)
        out[f"eval_acc_top{k}_dlib"] = summ["acc"]
        out[f"eval_acc_top{k}_dlib_ci95"] = summ["ci95"]
        out[f"eval_acc_top{k}_dlib_wilson95"] = summ["wilson95"]
        if k == 1:
            out["identities_exposed_dlib"] = summ["exposed"]
    return out


def config_feature_shape(cfg: RunConfig) -> Tuple[int, ...]:
    """The feature shape ``F`` of the encoder ``cfg`` describes (built untrained on the CPU; nothing
    is read)."""
    m = cfg.model
    return tuple(
        feature_shape(
            build_target(m.target_arch, num_outputs=1, width=m.target_width).encoder,
            cfg.data.image_size,
        )
    )


def check_release(path: Path, tensors: Dict[str, Any], shape: Tuple[int, ...]) -> None:
    """A release file's tensors: a non-empty finite float32 ``features`` tensor of the encoder's
    ``shape``, and identities (when present) one integer per feature vector; else ``ValueError``."""
    if "features" not in tensors:
        raise ValueError(f"{path}: holds no 'features' tensor (keys: {sorted(tensors) or 'none'})")
    validate_features(tensors["features"], shape=shape, name=str(path))
    ids = tensors.get("identities")
    if ids is not None and (
        ids.dim() != 1
        or ids.shape[0] != tensors["features"].shape[0]
        or ids.is_floating_point()
        or ids.is_complex()
    ):
        raise ValueError(
            f"{path}: 'identities' must be one integer per feature vector "
            f"({tensors['features'].shape[0]}), got {ids.dtype} of shape {tuple(ids.shape)}"
        )
