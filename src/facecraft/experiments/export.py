"""``facecraft export``: the edge protector as one file a device runs without facecraft (issue 16).

A defence whose release is one forward pass of fixed networks (it says so with
the class attribute ``exportable = True`` and builds the module with
``edge_module()``, e.g. :class:`~facecraft.defenses.distilled.DistilledCrafter`)
is written as a single model, images ``(N, 3, S, S)`` float32 RGB in [0, 1] ->
released features ``(N, *F)``, in ONNX (opset 18, dynamic batch) or TorchScript,
with a JSON sidecar ``<FILE>.json``: input size and layout, normalisation, feature
shape, the defence's name and configuration, and the study's measured privacy
for that setting when its cells exist. A defence that optimises per image
(Crafter, Crafter-z) or draws noise refuses, naming the defences that can be
exported.

A device needs three lines (onnxruntime)::

    sess = onnxruntime.InferenceSession("protector.onnx")
    feats = sess.run(None, {"images": images})[0]   # images: float32 (N, 3, S, S) in [0, 1]
    # send feats (N, *F) to the cloud

References:
    ONNX, https://onnx.ai/onnx/; onnxruntime, https://onnxruntime.ai/docs/api/python/;
    TorchScript, https://docs.pytorch.org/docs/stable/jit.html.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from facecraft._io import atomic_write_json
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.registry import available_defenses, get_defense_class

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "check_exportable",
    "export_module",
    "export_study_defense",
    "exportable_defenses",
    "privacy_summary",
    "sidecar_path",
]

log = logging.getLogger(__name__)

#: the file formats ``facecraft export`` writes
FORMATS = ("onnx", "torchscript")
#: input and output names of the ONNX graph
INPUT_NAME, OUTPUT_NAME = "images", "features"
_OPSET = 18


def exportable_defenses() -> List[str]:
    """Registered defences whose class declares ``exportable = True``."""
    return sorted(
        n for n in available_defenses() if getattr(get_defense_class(n), "exportable", False)
    )


def check_exportable(name: str) -> None:
    """Raise ``ValueError`` (one line, naming the exportable defences) unless defence ``name`` can
    be exported.

    Asks the defence's class (``exportable``), so it needs nothing built or fitted.
    """
    if not getattr(get_defense_class(name), "exportable", False):
        raise ValueError(
            f"defence {name!r} cannot be exported: its release is not one forward pass of fixed "
            f"networks (per-image optimisation or random noise); exportable: "
            f"{', '.join(exportable_defenses()) or 'none'}"
        )


def sidecar_path(path: Union[str, Path]) -> Path:
    """``<path>.json`` beside the exported model (``protector.onnx`` -> ``protector.onnx.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_module(
    module: nn.Module,
    path: Union[str, Path],
    *,
    fmt: str,
    image_size: int,
    sidecar: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Write ``module`` (images in [0, 1] -> features) to ``path`` as ONNX or TorchScript, plus its
    sidecar.

    A copy of the module is traced on CPU in float32 with a batch of 2 random
    images; the batch dimension stays dynamic in both formats. ONNX goes through
    the TorchScript-based exporter (``dynamo=False``: works offline, no onnxscript
    rewrite; the dynamo exporter matched PyTorch within 1e-6 as well on a test model).

    Args:
        module: maps ``(N, 3, S, S)`` float32 in [0, 1] to ``(N, *F)``; deterministic.
        path: the model file to write.
        fmt: ``"onnx"`` or ``"torchscript"``.
        image_size: ``S``.
        sidecar: extra JSON-able fields for ``<path>.json`` (defence name, config, privacy).

    Returns:
        The sidecar's contents (also written to :func:`sidecar_path`).

    Raises:
        ValueError: an unknown ``fmt``.
        ImportError: ONNX export without the ``onnx`` / ``onnxscript`` packages (``pip install -e
            '.[edge]'``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = (
        copy.deepcopy(module).to("cpu").float().eval()
    )  # the caller's networks stay where they are
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feature_shape = list(module(example).shape[1:])
    if fmt == "onnx":
        _write_onnx(module, example, path)
    else:
        _write_torchscript(module, example, path)
    record = {
        "format": fmt,
        "file": path.name,
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, image_size, image_size],
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
            "range": [0.0, 1.0],
        },
        "normalisation": "none before the model: pass RGB in [0, 1] "
        "(the encoder maps it to [-1, 1] itself)",
        "output": {"name": OUTPUT_NAME, "shape": ["N", *feature_shape], "dtype": "float32"},
        "feature_shape": feature_shape,
        **dict(sidecar or {}),
    }
    if fmt == "onnx":
        record["opset"] = _OPSET
    atomic_write_json(sidecar_path(path), record)
    return record


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ImportError("ONNX export needs the 'onnx' package: pip install -e '.[edge]'") from e
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the exporter's deprecation notes; the legacy path is stable offline
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=_OPSET,
            dynamo=False,
        )


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,))
    traced.save(str(path))


def privacy_summary(
    rows: Sequence[Mapping[str, Any]], cells: Optional[Union[str, Path]] = None
) -> Dict[str, Any]:
    """The study's privacy rows of one setting, per attack: dlib top-1 Eval Acc with its intervals,
    mean AUC.

    Args:
        rows: finished cells of the setting
            (:meth:`facecraft.experiments.runner.StudyRunner.finished_rows`).
        cells: where they were read (recorded).
    """
    out: Dict[str, Any] = {
        "oracle": "dlib",
        "metric": "eval_acc_top1",
        "cells": None if cells is None else str(cells),
        "attacks": {},
    }
    for r in rows:
        out["attacks"][r["attack"]] = {
            "eval_acc_top1": r["eval_acc_top1"]["dlib"],
            "ci95_identities": r.get("ci95", {}).get("eval_acc_top1", {}).get("dlib"),
            "wilson95": r.get("wilson95", {}).get("eval_acc_top1", {}).get("dlib"),
            "exposed_identities": r.get("exposed_identities", {}).get("dlib"),
            "n_faces": r.get("n_faces"),
            "public_faces": r.get("public_faces"),
        }
        out["mean_auc"] = r.get("mean_auc")
    return out


def export_study_defense(
    runner: Any, setting: Any, path: Union[str, Path], *, fmt: str, attacks: Sequence[str]
) -> Dict[str, Any]:
    """Build (or load) ``setting``'s defence in ``runner``'s study and export it with the study's
    privacy.

    Args:
        runner: a :class:`~facecraft.experiments.runner.StudyRunner`.
        setting: a :class:`~facecraft.experiments.grid.Setting` of an exportable defence.
        path: the model file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        attacks: attacks whose finished cells are summarised in the sidecar.

    Returns:
        The sidecar's contents.

    Raises:
        ValueError: the defence cannot be exported (checked before anything is built).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    check_exportable(setting.name)
    defense: FeatureDefense = runner.build_defense(setting)
    rows = runner.finished_rows(setting, list(attacks))
    study = runner.study
    sidecar = {
        "defense": defense.name(),
        "param": setting.param,
        "config": defense.get_config(),
        "setting": runner.stem(setting),
        "profile": study.cfg.profile,
        "target": {"arch": study.cfg.model.target_arch, "width": study.cfg.model.target_width},
        "privacy": privacy_summary(rows, runner.cells) if rows else None,
    }
    if not rows:
        log.warning(
            "no finished study cells for %s in %s: the sidecar records no privacy",
            setting.label,
            runner.cells,
        )
    return export_module(
        defense.edge_module(), path, fmt=fmt, image_size=study.data.image_size, sidecar=sidecar
    )
