"""Atomic files and safetensors checkpoints with JSON metadata (STYLE.md rule 9).

Every write goes to a temporary file in the same folder and is then renamed
over the target, so a crash never leaves a half-written file. Weights are
stored as safetensors (tensors only) and everything else as JSON beside them;
nothing is ever unpickled. :func:`save_state` and :func:`load_state` bundle the
modules, optimizers, ``torch.Generator`` and extra tensors of a resumable
training run into one such checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_exists",
    "optimizer_to_tensors",
    "optimizer_from_tensors",
    "save_state",
    "load_state",
    "sha256_file",
    "config_hash",
    "config_to_dict",
]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or not the kind that was asked for."""


log = logging.getLogger(__name__)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename), usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-able dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def read_json(path: PathLike) -> Any:
    """Read a JSON file, raising ``CheckpointError`` naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (used to key caches by config)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _paths(stem: PathLike) -> Tuple[Path, Path]:
    stem = Path(stem)
    return stem.parent / (stem.name + ".safetensors"), stem.parent / (stem.name + ".json")


def checkpoint_exists(stem: PathLike) -> bool:
    """Whether both files of the checkpoint ``stem`` exist."""
    a, b = _paths(stem)
    return a.exists() and b.exists()


def save_checkpoint(
    stem: PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    meta: Optional[Mapping[str, Any]] = None,
) -> None:
    """Save ``tensors`` to ``<stem>.safetensors`` and ``meta`` to ``<stem>.json``.

    The JSON records ``kind`` (what the file holds), the facecraft version and
    the tensor key set, which :func:`load_checkpoint` checks. The JSON is
    written last, so a checkpoint is complete exactly when its JSON exists and
    names the safetensors file's hash.

    Args:
        stem: path without suffix.
        tensors: name -> tensor (made contiguous and moved to CPU).
        kind: what the checkpoint holds, e.g. ``"generator"``.
        meta: JSON-able extras (config, data manifest hash, step, metrics).
    """
    from facecraft import __version__

    st_path, js_path = _paths(stem)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=st_path.parent, prefix=f".{st_path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        save_file(flat, tmp)
        os.replace(tmp, st_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    record = {
        "kind": kind,
        "facecraft_version": __version__,
        "keys": sorted(flat),
        "sha256": sha256_file(st_path),
        **dict(meta or {}),
    }
    atomic_write_json(js_path, record)


def load_checkpoint(
    stem: PathLike,
    *,
    kind: Optional[str] = None,
    keys: Optional[set] = None,
    device: Union[str, torch.device] = "cpu",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        stem: path without suffix.
        kind: if given, the JSON's ``kind`` must equal it.
        keys: if given, the stored key set must equal it.
        device: where to put the tensors.

    Returns:
        ``(tensors, meta)``.

    Raises:
        CheckpointError: a file is missing, the hash, kind or key set does not match.
    """
    st_path, js_path = _paths(stem)
    if not js_path.exists() or not st_path.exists():
        raise CheckpointError(
            f"no checkpoint at {Path(stem)} (need {st_path.name} and {js_path.name})"
        )
    meta = read_json(js_path)
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{js_path}: expected a JSON object with 'kind' and 'keys', got {type(meta).__name__}"
        )
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{js_path}: holds a {meta.get('kind')!r}, expected a {kind!r}")
    if meta.get("sha256") and meta["sha256"] != sha256_file(st_path):
        raise CheckpointError(f"{st_path}: contents do not match the hash in {js_path.name}")
    try:
        tensors = load_file(str(st_path), device=str(device))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{st_path}: cannot read safetensors ({e})") from e
    if set(tensors) != set(meta.get("keys", tensors)):
        raise CheckpointError(f"{st_path}: key set differs from the one recorded in {js_path.name}")
    if keys is not None and set(tensors) != set(keys):
        missing, extra = sorted(set(keys) - set(tensors)), sorted(set(tensors) - set(keys))
        raise CheckpointError(
            f"{st_path}: key mismatch; missing {missing[:5]}, unexpected {extra[:5]}"
        )
    return tensors, meta


def optimizer_to_tensors(
    opt: torch.optim.Optimizer, prefix: str
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Split an optimizer's state dict into tensors (for safetensors) and JSON-able groups."""
    sd = opt.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            name = f"{prefix}.{pid}.{k}"
            if torch.is_tensor(v):
                tensors[name] = v
            else:
                scalars[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    opt: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    groups: Mapping[str, Any],
    prefix: str,
) -> None:
    """Inverse of :func:`optimizer_to_tensors`: load the state into ``opt``."""
    state: Dict[int, Dict[str, Any]] = {}
    for name, v in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        pid, k = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for name, v in groups.get("scalars", {}).items():
        pid, k = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_state(
    stem: PathLike,
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    rng: Optional[torch.Generator] = None,
    extra: Optional[Mapping[str, torch.Tensor]] = None,
    meta: Optional[Mapping[str, Any]] = None,
) -> None:
    """Save a resumable training state as one checkpoint (nothing pickled).

    Module weights go under ``<name>.<key>``, optimizer tensors under
    ``opt.<name>.*`` (their groups and scalars in the JSON, under
    ``"optimizers"``), the RNG state under ``rng`` and ``extra`` tensors under
    ``extra.<key>``; ``meta`` (epoch, config, history) goes to the JSON.
    """
    tensors: Dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"{name}.{k}"] = v
    groups: Dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, g = optimizer_to_tensors(opt, f"opt.{name}")
        tensors.update(t)
        groups[name] = g
    if rng is not None:
        tensors["rng"] = rng.get_state()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v
    save_checkpoint(stem, tensors, kind=kind, meta={**dict(meta or {}), "optimizers": groups})


def load_state(
    stem: PathLike,
    *,
    kind: str,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    rng: Optional[torch.Generator] = None,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Inverse of :func:`save_state`: loads in place and returns ``(extra tensors, meta)``.

    Tensors are loaded onto the device of the first module's parameters.

    Raises:
        CheckpointError: wrong kind, missing files or a key mismatch.
    """
    device = next(iter(modules.values())).parameters().__next__().device if modules else "cpu"
    tensors, meta = load_checkpoint(stem, kind=kind, device=device)
    for name, m in modules.items():
        pre = f"{name}."
        sd = {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}
        m.load_state_dict(sd, strict=True)
    for name, opt in optimizers.items():
        optimizer_from_tensors(opt, tensors, meta["optimizers"][name], f"opt.{name}")
    if rng is not None and "rng" in tensors:
        rng.set_state(tensors["rng"].to("cpu"))
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return extra, meta
