"""Every registered attack builds from tiny models and runs one short step.

As torchattacks does over ``__all__``.
"""

from __future__ import annotations

from typing import Callable, Dict

import pytest
import torch

from facecraft.attacks import (
    EmbeddingAttack,
    IdentityAttack,
    InversionAttack,
    available_attacks,
    create_attack,
)
from facecraft.models import Amortizer, Critic, feature_shape
from facecraft.models.resgan import ResGenerator

from ._attack_helpers import LATENT, SIZE, grads_are_none


def _blackbox(enc, **kw):
    return create_attack(
        "blackbox", encoder=enc, epochs=1, batch_size=8, width=8, image_size=SIZE, **kw
    )


def _factories(enc, gen) -> Dict[str, Callable[[], object]]:
    defense = lambda x: enc(x) + 0.1 * torch.randn_like(enc(x))  # noqa: E731
    amor = Amortizer(feature_shape(enc, SIZE), LATENT, width=4).eval()
    return {
        "whitebox": lambda: create_attack(
            "whitebox",
            encoder=enc,
            generator=gen,
            amortizer=amor,
            critic=Critic(SIZE, width=4),
            prior_weight=0.1,
            steps=1,
        ),
        "blackbox": lambda: _blackbox(enc),
        "hybrid": lambda: create_attack(
            "hybrid", encoder=enc, decoder_attack=_blackbox(enc), steps=1
        ),
        "adaptive-whitebox": lambda: create_attack(
            "adaptive-whitebox",
            encoder=enc,
            generator=gen,
            defense=defense,
            amortizer=amor,
            epochs=1,
            batch_size=8,
            inner_steps=1,
            steps=1,
        ),
        "adaptive-blackbox": lambda: create_attack(
            "adaptive-blackbox",
            decoder_attack=_blackbox(enc),
            defense=defense,
            epochs=1,
            batch_size=8,
        ),
        "alt-prior": lambda: create_attack(
            "alt-prior", encoder=enc, generator=ResGenerator(10, SIZE, width=4), steps=1, restarts=2
        ),
        "average": lambda: create_attack(
            "average", base_attack=_blackbox(enc), defense=defense, n_queries=2
        ),
        "feature2id": lambda: create_attack("feature2id", epochs=1, width=4, batch_size=4),
        "embedding": lambda: create_attack("embedding", epochs=1, width=4, batch_size=4),
        "adaptive-embedding": lambda: create_attack(
            "adaptive-embedding", epochs=1, width=4, batch_size=4
        ),
    }


def test_every_registered_name_has_a_smoke_factory(enc_gen) -> None:
    assert set(_factories(*enc_gen)) == set(available_attacks())


@pytest.mark.parametrize("name", available_attacks())
def test_smoke(name: str, enc_gen, public_images) -> None:
    enc, gen = enc_gen
    atk = _factories(enc, gen)[name]()
    images = public_images[:8]
    with torch.no_grad():
        f = enc(images)
    assert type(atk).name() == name
    if isinstance(atk, IdentityAttack):
        labels = torch.arange(8) % 3
        atk.fit(f, labels)
        scores = atk(f)
        assert scores.shape == (8, 3) and torch.isfinite(scores).all()
        return
    if isinstance(atk, EmbeddingAttack):  # features -> a face-recognition embedding
        atk.fit(f, torch.randn(8, 5))
        emb = atk(f)
        assert emb.shape == (8, 5) and torch.isfinite(emb).all()
        return
    assert isinstance(atk, InversionAttack)
    if name == "adaptive-blackbox":
        atk.decoder_attack.fit(images)
    atk.fit(images)
    out = atk(f[:2])
    assert out.shape == (2, 3, SIZE, SIZE)
    assert out.min() >= 0 and out.max() <= 1 and not out.requires_grad
    assert grads_are_none(enc, gen)
    if name == "average":
        assert atk.reconstruct_images(images[:2]).shape == (2, 3, SIZE, SIZE)
