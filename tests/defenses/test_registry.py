"""Tests for facecraft.defenses.registry and a smoke test over every registered defence."""

from __future__ import annotations

import pytest
import torch

from facecraft import defenses
from facecraft.defenses import (
    FeatureDefense,
    NoDefense,
    available_defenses,
    create_defense,
    get_defense_class,
    register_defense,
)
from facecraft.defenses.registry import DEFENSES


class _Dummy(NoDefense):
    @classmethod
    def name(cls) -> str:
        return "dummy"


def test_register_create_duplicate_force_unknown(tiny_target):
    try:
        register_defense("dummy", _Dummy)
        assert "dummy" in available_defenses()
        assert isinstance(create_defense("dummy", encoder=tiny_target.encoder), _Dummy)
        with pytest.raises(ValueError, match="already registered"):
            register_defense("dummy", NoDefense)
        register_defense("dummy", NoDefense, force=True)
        assert get_defense_class("dummy") is NoDefense
    finally:
        DEFENSES.unregister("dummy")
    assert "dummy" not in available_defenses()
    with pytest.raises(ValueError, match="unknown defense 'dummy'; registered: advlearn"):
        create_defense("dummy")


def test_every_class_is_registered_under_its_name():
    for name in available_defenses():
        cls = get_defense_class(name)
        assert issubclass(cls, FeatureDefense) and cls.name() == name


def test_package_exports():
    assert set(defenses.__all__) <= set(dir(defenses))
    assert {"none", "noise", "advlearn", "disco", "crafter", "crafter-z"} <= set(
        available_defenses()
    )


def _kwargs(name, tiny_target, tiny_gan):
    base = {"encoder": tiny_target.encoder, "head": tiny_target.head}
    G = tiny_gan[0]
    one_step = {
        "none": {},
        "noise": {"sigma": 0.1},
        "advlearn": {"epochs": 1, "batch_size": 4, "decoder_width": 8},
        "disco": {
            "image_size": 32,
            "epochs": 1,
            "batch_size": 4,
            "decoder_width": 8,
            "pruner_width": 8,
        },
        "crafter": {
            "generator": G,
            "outer_steps": 1,
            "inner_steps": 1,
            "init_steps": 1,
            "critic_steps": 1,
            "critic_width": 8,
            "solver": "cg",
            "cg_iters": 1,
        },
        "crafter-fast": {
            "generator": G,
            "outer_steps": 1,
            "init_steps": 1,
            "critic_width": 8,
            "critic_pretrain_steps": 1,
            "critic_pretrain_faces": 4,
        },
        "amortized-crafter": {
            "generator": G,
            "steps": 1,
            "batch_size": 4,
            "width": 8,
            "inner_steps": 1,
            "critic_steps": 1,
            "critic_width": 8,
            "cg_iters": 1,
        },
        "crafter-z": {
            "generator": G,
            "steps": 1,
            "init_steps": 1,
            "critic_steps": 1,
            "critic_width": 8,
        },
        "distilled-crafter": {"epochs": 1, "batch_size": 2, "width": 8, "val_fraction": 0.25},
    }
    if name not in one_step:
        pytest.fail(f"defence {name!r} has no one-step configuration in this smoke test; add one")
    return {**base, **one_step[name]}


@pytest.mark.parametrize("name", available_defenses())
def test_smoke_every_registered_defense(name, tiny_target, tiny_gan):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    d = create_defense(name, **_kwargs(name, tiny_target, tiny_gan))
    # a distilled defence regresses on a teacher's releases of the same faces (issue 16)
    teacher = (
        {"teacher_features": tiny_target.encoder(x).detach() + 0.1}
        if d.fits_on == "teacher"
        else {}
    )
    d.fit(x, torch.randint(0, 2, (4, 4), generator=g).float(), **teacher)
    out = d(x)
    assert out.shape == tiny_target.encoder(x).shape and torch.isfinite(out).all()
    assert name in repr(d) or type(d).__name__ in repr(d)
    assert isinstance(d.get_config(), dict)
