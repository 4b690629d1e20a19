"""Registry: register, create, duplicate, unknown name and force (cleanup in finally)."""

from __future__ import annotations

import pytest
import torch

import facecraft.attacks as A
from facecraft.attacks import (
    InversionAttack,
    available_attacks,
    create_attack,
    get_attack_class,
    register_attack,
)
from facecraft.attacks.registry import ATTACKS

EXPECTED = {
    "whitebox",
    "blackbox",
    "hybrid",
    "feature2id",
    "adaptive-whitebox",
    "adaptive-blackbox",
    "alt-prior",
    "average",
}


class _Dummy(InversionAttack):
    def __init__(self, value: int = 0) -> None:
        super().__init__()
        self.value = value

    @classmethod
    def name(cls) -> str:
        return "dummy-test"

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        return torch.zeros(features.shape[0], 3, 4, 4)


class _Other(_Dummy):
    pass


def test_all_attacks_registered_on_import() -> None:
    assert EXPECTED <= set(available_attacks())


def test_registered_names_match_classes() -> None:
    for name in available_attacks():
        assert get_attack_class(name).name() == name


def test_exports_are_listed() -> None:
    for name in A.__all__:
        assert hasattr(A, name), name


def test_register_create_duplicate_force() -> None:
    try:
        register_attack("dummy-test", _Dummy)
        atk = create_attack("dummy-test", value=3)
        assert isinstance(atk, _Dummy) and atk.value == 3
        assert "dummy-test" in available_attacks()
        with pytest.raises(ValueError, match="already registered"):
            register_attack("dummy-test", _Other)
        register_attack("dummy-test", _Other, force=True)
        assert type(create_attack("dummy-test")) is _Other
    finally:
        ATTACKS.unregister("dummy-test")
    assert "dummy-test" not in available_attacks()


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(ValueError) as info:
        create_attack("no-such-attack")
    msg = str(info.value)
    assert "no-such-attack" in msg and "whitebox" in msg and "blackbox" in msg
