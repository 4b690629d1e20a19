"""``bench_protector_latency`` (issue 16): a defence's call and its exportable network, timed
against the encoder.

A benchmark is a script, not a timed test: nothing here asserts a speed.
"""

from __future__ import annotations

import math

import torch

from facecraft.defenses import DistilledCrafter, create_defense
from facecraft.experiments.bench import bench_protector_latency


def _ratios_ok(by_batch: dict) -> None:
    assert set(by_batch) == {"1", "4"}
    for row in by_batch.values():
        assert row["encoder_ms_per_image"] > 0 and row["defense_ms_per_image"] > 0
        assert math.isclose(row["ratio"], row["defense_ms_per_image"] / row["encoder_ms_per_image"])


def test_exportable_defence_also_times_its_edge_module(tiny_target) -> None:
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    d = DistilledCrafter(
        tiny_target.encoder, tiny_target.head, width=8, epochs=1, batch_size=4, val_fraction=0.25
    )
    d.fit(x, teacher_features=tiny_target.encoder(x).detach())
    out = bench_protector_latency(
        tiny_target.encoder, d, x, batch_sizes=(1, 4), repeats=2, num_threads=1
    )
    _ratios_ok(out["by_batch"])
    _ratios_ok(out["edge_module"])
    assert out["threads"] == 1


def test_defences_without_an_edge_module_get_the_call_only(tiny_target) -> None:
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    d = create_defense("noise", encoder=tiny_target.encoder, head=tiny_target.head, sigma=0.5)
    out = bench_protector_latency(
        tiny_target.encoder, d, x, batch_sizes=(1, 4), repeats=2, num_threads=1
    )
    _ratios_ok(out["by_batch"])
    assert "edge_module" not in out
