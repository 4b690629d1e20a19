"""Tests for facecraft.defenses.distilled: a Crafter's releases regressed into one network (#16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facecraft._io import CheckpointError
from facecraft.defenses import (
    DistilledCrafter,
    FeatureCrafter,
    Protector,
    create_defense,
    load_protector,
)

FAST = dict(width=16, epochs=40, batch_size=16, lr=1e-2, val_fraction=0.25, patience=40)


@pytest.fixture()
def faces() -> torch.Tensor:
    """64 'public' and 16 unseen 32x32 images."""
    return torch.rand(80, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def teacher(tiny_target):
    """A teacher whose change is a function of Enc(X) that C can represent:
    ``F* = Enc(X) + T(Enc(X))``."""
    torch.manual_seed(1)
    t = FeatureCrafter(16, width=16)
    torch.nn.init.normal_(t.net[-1].weight, std=3.0)
    t.eval()

    def release(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f0 = tiny_target.encoder(x)
            return f0 + t(f0)

    return release


def _fit(tiny_target, images, teacher_features, **kw) -> DistilledCrafter:
    d = DistilledCrafter(tiny_target.encoder, tiny_target.head, **{**FAST, **kw})
    return d.fit(images, teacher_features=teacher_features)


def test_regression_learns_a_representable_teacher_on_unseen_faces(
    tiny_target, faces, teacher
) -> None:
    public, unseen = faces[:64], faces[64:]
    d = _fit(tiny_target, public, teacher(public))
    first, best = d.history[0], d.history[d.best_epoch]
    assert best["val"] < 0.2 * first["val_identity"]  # C = 0 is the identity baseline
    assert best["train"] < d.history[0]["train"]
    f0 = tiny_target.encoder(unseen).detach()
    err = (d(unseen) - teacher(unseen)).pow(2).mean()
    assert float(err) < 0.2 * float((f0 - teacher(unseen)).pow(2).mean())


def test_keeps_the_best_held_out_epoch(tiny_target, faces, teacher) -> None:
    d = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=12, lr=5e-2)
    vals = [h["val"] for h in d.history]
    assert d.best_epoch == vals.index(min(vals))


def test_early_stopping_ends_the_fit(tiny_target, faces) -> None:
    x = faces[:64]
    noise = torch.randn(64, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    # an unpredictable target: the held-out loss stops improving, so training stops well before
    # 200 epochs
    d = _fit(
        tiny_target, x, tiny_target.encoder(x).detach() + noise, epochs=200, patience=3, lr=5e-2
    )
    assert len(d.history) < 200 and len(d.history) == d.best_epoch + 1 + 3


def test_same_seed_same_release(tiny_target, faces, teacher) -> None:
    a = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=3)
    b = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=3)
    assert torch.equal(a(faces[64:]), b(faces[64:]))


def test_input_noise_is_seeded_and_changes_training(tiny_target, faces, teacher) -> None:
    a = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=2, input_noise=0.5)
    b = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=2, input_noise=0.5)
    c = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=2)
    assert torch.equal(a(faces[64:]), b(faces[64:]))
    assert not torch.equal(a(faces[64:]), c(faces[64:]))


class _Kill(Exception):
    pass


def test_fit_resumes_after_a_kill_exactly(tiny_target, faces, teacher, tmp_path: Path) -> None:
    x, t = faces[:64], teacher(faces[:64])
    whole = _fit(tiny_target, x, t, epochs=6, input_noise=0.1)

    def kill_at_3(done: int, total: int, desc: str) -> None:
        if done == 3:
            raise _Kill

    stem = tmp_path / "fit"
    d = DistilledCrafter(
        tiny_target.encoder, tiny_target.head, **{**FAST, "epochs": 6, "input_noise": 0.1}
    )
    with pytest.raises(_Kill):
        d.fit(x, teacher_features=t, progress=kill_at_3, checkpoint_stem=stem)
    resumed = DistilledCrafter(
        tiny_target.encoder, tiny_target.head, **{**FAST, "epochs": 6, "input_noise": 0.1}
    )
    resumed.fit(x, teacher_features=t, checkpoint_stem=stem)
    assert resumed.fit_trained and resumed.history == whole.history
    assert torch.equal(resumed(faces[64:]), whole(faces[64:]))
    # a finished fit is loaded, not retrained
    again = DistilledCrafter(
        tiny_target.encoder, tiny_target.head, **{**FAST, "epochs": 6, "input_noise": 0.1}
    )
    again.fit(x, teacher_features=t, checkpoint_stem=stem)
    assert not again.fit_trained and torch.equal(again(faces[64:]), whole(faces[64:]))
    # other hyperparameters never read that checkpoint
    other = DistilledCrafter(
        tiny_target.encoder, tiny_target.head, **{**FAST, "epochs": 6, "width": 8}
    )
    with pytest.raises(CheckpointError, match="config"):
        other.fit(x, teacher_features=t, checkpoint_stem=stem)


def test_protector_round_trip(tiny_target, faces, teacher, tmp_path: Path) -> None:
    d = _fit(tiny_target, faces[:64], teacher(faces[:64]), epochs=3)
    p = Protector(d, image_size=32, arch="resnet18", width=0.25)
    p.save(tmp_path / "protector")
    loaded = load_protector(tmp_path / "protector")
    assert isinstance(loaded.defense, DistilledCrafter)
    assert loaded.defense.get_config() == d.get_config()
    assert torch.equal(loaded(faces[64:]), p(faces[64:]))


def test_teacher_setting_names_the_stored_release() -> None:
    d = create_defense(
        "distilled-crafter",
        encoder=torch.nn.Conv2d(3, 4, 1),
        beta=0.1,
        teacher_kwargs={"outer_steps": 30},
    )
    assert d.teacher_setting() == ("crafter-fast", 0.1, {"outer_steps": 30, "beta": 0.1})
    assert DistilledCrafter.exportable


def test_clear_errors(tiny_target, faces) -> None:
    d = DistilledCrafter(tiny_target.encoder, tiny_target.head, **FAST)
    with pytest.raises(RuntimeError, match="not trained"):
        d(faces[:2])
    with pytest.raises(ValueError, match="teacher_features"):
        d.fit(faces[:8])
    with pytest.raises(ValueError, match="teacher_features: expected shape"):
        d.fit(faces[:8], teacher_features=torch.zeros(7, 16, 8, 8))
    with pytest.raises(ValueError, match="val_fraction"):
        DistilledCrafter(tiny_target.encoder, val_fraction=1.0)
    with pytest.raises(ValueError, match="width"):
        DistilledCrafter(tiny_target.encoder, width=0)
