"""``facecraft bench latency``: a defence's per-image latency, in multiples of the encoder's.

For the one-pass protectors (issues 5 and 16): the defence's call through the Python API and,
for an exportable defence, the bare network ``facecraft export`` writes, both against the
encoder on the same images in the same process.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from facecraft.experiments.bench._shared import threads

__all__ = ["bench_latency", "bench_protector_latency"]


def bench_latency(
    encoder: torch.nn.Module,
    defense: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    batch_sizes: Tuple[int, ...] = (1, 64),
    repeats: int = 20,
    num_threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Per-image latency of ``defense(images)`` as a multiple of the encoder's own forward (issues
    5 and 16).

    Both are timed in this process, interleaved (encoder, defence, encoder, ...)
    so that a noisy machine slows both alike; each figure is the median over
    ``repeats`` calls, after one warm-up call each. ``defense`` is any callable
    images -> features: a trained defence (its input checks included) or an
    exported protector. ``images`` needs at least ``max(batch_sizes)`` rows.

    Returns:
        ``{"threads", "by_batch": {b: {"encoder_ms_per_image", "defense_ms_per_image",
        "ratio"}}}``.
    """
    if images.shape[0] < max(batch_sizes):
        raise ValueError(
            f"bench_latency needs {max(batch_sizes)} images for batch {max(batch_sizes)}, "
            f"got {images.shape[0]}"
        )
    with threads(num_threads):
        out: Dict[str, Any] = {"threads": torch.get_num_threads(), "by_batch": {}}
        for b in batch_sizes:
            enc_s, def_s = _median_times(encoder, defense, images[:b], repeats)
            e, d = enc_s / b, def_s / b
            out["by_batch"][str(b)] = {
                "encoder_ms_per_image": 1e3 * e,
                "defense_ms_per_image": 1e3 * d,
                "ratio": d / e,
            }
    return out


def _median_times(
    encoder: torch.nn.Module,
    defense: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    repeats: int,
) -> Tuple[float, float]:
    """Median seconds of ``encoder(x)`` and ``defense(x)`` over ``repeats`` interleaved calls,
    after one warm-up call each."""
    with torch.no_grad():
        encoder(x), defense(x)
    enc_t, def_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            encoder(x)
        enc_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        defense(x)
        def_t.append(time.perf_counter() - t0)
    return statistics.median(enc_t), statistics.median(def_t)


def bench_protector_latency(
    encoder: torch.nn.Module,
    defense: Any,
    images: torch.Tensor,
    *,
    batch_sizes: Tuple[int, ...] = (1, 64),
    repeats: int = 20,
    num_threads: Optional[int] = None,
) -> Dict[str, Any]:
    """:func:`bench_latency` of a defence's call, plus, for an exportable defence (its
    ``edge_module()``, issue 16), of that bare network (what ``facecraft export`` writes and a
    device runs, without the Python API's input and output checks) under ``"edge_module"``."""
    out = bench_latency(
        encoder, defense, images, batch_sizes=batch_sizes, repeats=repeats, num_threads=num_threads
    )
    if defense.exportable:
        module = defense.edge_module()
        with torch.no_grad():
            edge = bench_latency(
                encoder,
                module,
                images,
                batch_sizes=batch_sizes,
                repeats=repeats,
                num_threads=num_threads,
            )
        out["edge_module"] = edge["by_batch"]
    return out
