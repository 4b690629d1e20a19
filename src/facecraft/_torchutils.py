"""Small torch helpers shared by every layer: devices, eval mode, batching, seeding."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch
from torch import nn

__all__ = [
    "machine_info",
    "as_float_images",
    "query_in_batches",
    "resolve_device",
    "eval_mode",
    "frozen",
    "batched_apply",
    "make_generator",
    "derive_seed",
    "modules_device",
    "seeded",
    "torch_threads",
]


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS if available, else CPU; anything else as given."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device: {device!r} is not a device (auto, cpu, cuda, cuda:1, mps ...): {e}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {device!r} asked for CUDA, but this torch build or machine has none "
                "(use --device cpu or auto)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} asked for CUDA device {dev.index}, but only "
                f"{torch.cuda.device_count()} are visible"
            )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device: {device!r} asked for MPS, which this machine does not have")
    return dev


@contextlib.contextmanager
def eval_mode(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Put modules in eval mode and restore each one's training flag afterwards."""
    mods = [m for m in modules if m is not None]
    flags = [m.training for m in mods]
    try:
        for m in mods:
            m.eval()
        yield
    finally:
        for m, f in zip(mods, flags):
            m.train(f)


@contextlib.contextmanager
def frozen(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Eval mode plus ``requires_grad=False`` on all parameters, both restored afterwards.

    Optimising an input through a frozen network then never touches the
    network's ``.grad`` fields.
    """
    mods = [m for m in modules if m is not None]
    saved = [[p.requires_grad for p in m.parameters()] for m in mods]
    with eval_mode(*mods):
        try:
            for m in mods:
                for p in m.parameters():
                    p.requires_grad_(False)
            yield
        finally:
            for m, flags in zip(mods, saved):
                for p, f in zip(m.parameters(), flags):
                    p.requires_grad_(f)


def batched_apply(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in chunks of ``batch_size`` rows and concatenate."""
    if x.shape[0] == 0:
        raise ValueError("batched_apply: empty input")
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def as_float_images(
    x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A batch as float in [0, 1] on ``device`` (uint8 is divided by 255)."""
    if x.dtype == torch.uint8:
        return x.to(device).to(dtype) / 255.0
    return x.to(device, dtype)


def query_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    progress: Optional[Callable[[int, int, str], None]] = None,
    desc: str = "querying",
) -> torch.Tensor:
    """``fn`` on float batches of ``images``; results concatenated and kept on ``device``.

    Each batch goes through :func:`as_float_images` and ``fn`` without gradients;
    ``progress(done, total, desc)`` is called after each one.
    """
    out = []
    n = images.shape[0]
    for i in range(0, n, batch_size):
        with torch.no_grad():
            out.append(fn(as_float_images(images[i : i + batch_size], device)).detach())
        if progress is not None:
            progress(min(i + batch_size, n), n, desc)
    return torch.cat(out)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global CPU RNG seeded by ``seed``, restoring its state afterwards.

    A model's initialisation then depends on its seed, not on what ran before it in the process.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_generator(seed: int, device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, the previous count restored after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def derive_seed(seed: int, key: str) -> int:
    """A 63-bit seed determined by ``seed`` and ``key`` alone.

    It comes from SHA-256, so it is stable across processes and runs. A random stream that a
    stored result depends on is seeded from the study seed and the item's own key, never from what
    the process computed before, so a resumed or parallel run draws the same numbers (issue 20).

    >>> derive_seed(0, "public-features") == derive_seed(0, "public-features")
    True
    >>> derive_seed(0, "features") != derive_seed(1, "features")
    True
    """
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def modules_device(modules) -> torch.device:
    """The device of the first parameter among ``modules`` (CPU when none has parameters)."""
    for m in modules:
        for p in m.parameters():
            return p.device
    return torch.device("cpu")


def machine_info(device: torch.device) -> Dict[str, Any]:
    """What the run ran on: CPU, cores, torch version, device (and GPU name)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "facecraft": _version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _version() -> str:
    from facecraft import __version__

    return __version__
