"""Checkpoint files: round trip, kind and key checks, corruption, atomic JSON."""

from pathlib import Path

import pytest
import torch

from facecraft._io import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    read_json,
    save_checkpoint,
)


def test_round_trip_exact(tmp_path: Path) -> None:
    t = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_checkpoint(tmp_path / "m", t, kind="generator", meta={"step": 7})
    back, meta = load_checkpoint(tmp_path / "m", kind="generator", keys={"w", "b"})
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["b"], t["b"])
    assert meta["step"] == 7 and meta["kind"] == "generator" and meta["keys"] == ["b", "w"]


def test_wrong_kind_and_keys_raise(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", {"w": torch.zeros(1)}, kind="critic")
    with pytest.raises(CheckpointError, match="holds a 'critic', expected a 'generator'"):
        load_checkpoint(tmp_path / "m", kind="generator")
    with pytest.raises(CheckpointError, match="key mismatch"):
        load_checkpoint(tmp_path / "m", keys={"w", "v"})


def test_corrupted_weights_raise(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", {"w": torch.zeros(10)}, kind="x")
    p = tmp_path / "m.safetensors"
    p.write_bytes(p.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(CheckpointError, match="do not match the hash"):
        load_checkpoint(tmp_path / "m")


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")


def test_atomic_json_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert read_json(tmp_path / "a.json") == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")
