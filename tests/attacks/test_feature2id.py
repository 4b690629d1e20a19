"""Feature-to-ID: beats chance on a separable toy problem; state round trip."""

from __future__ import annotations

import pytest
import torch

from facecraft._io import CheckpointError
from facecraft.attacks import Feature2IDAttack, IdentityAttack, create_attack


def _toy(n_per: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, 4, 4, 4, generator=torch.Generator().manual_seed(99))
    y = torch.arange(k).repeat_interleave(n_per)
    x = centers[y] + 0.5 * torch.randn(len(y), 4, 4, 4, generator=g)
    return x, y


def test_beats_chance_on_separable_problem() -> None:
    k = 4
    x_tr, y_tr = _toy(12, k, 0)
    x_te, y_te = _toy(6, k, 1)
    atk = Feature2IDAttack(epochs=15, batch_size=16, width=8, lr=3e-3)
    assert isinstance(atk, IdentityAttack)
    atk.fit(x_tr, y_tr)
    scores = atk(x_te)
    assert scores.shape == (len(y_te), k)
    acc = (scores.argmax(1) == y_te).float().mean()
    assert acc > 0.75  # chance is 0.25
    assert atk.history[-1]["loss"] < atk.history[0]["loss"]
    assert all(p.grad is None for p in atk.classifier.parameters())


def test_save_load_round_trip(tmp_path) -> None:
    x, y = _toy(4, 3, 0)
    atk = create_attack("feature2id", epochs=2, width=4, batch_size=6)
    atk.fit(x, y)
    atk.save(tmp_path / "f2id")
    back = Feature2IDAttack().load(tmp_path / "f2id")
    assert torch.allclose(back(x), atk(x))
    (tmp_path / "other.json").write_text('{"kind": "decoder-attack"}')
    with pytest.raises(CheckpointError):
        Feature2IDAttack().load(tmp_path / "other")


def test_input_checks() -> None:
    atk = Feature2IDAttack(epochs=1, width=4)
    with pytest.raises(RuntimeError):
        atk(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError):
        atk.fit(torch.randn(4, 4, 4, 4), torch.tensor([0, 1, -1, 0]))
    with pytest.raises(ValueError):
        atk.fit(torch.randn(4, 4, 4, 4), torch.tensor([0, 1]))
