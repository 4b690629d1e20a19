"""Adaptive A1 attacks: they train copies (originals untouched) and record one history entry per epoch."""

from __future__ import annotations

import torch
from ._attack_helpers import SIZE, grads_are_none

from facecraft.attacks import AdaptiveBlackBoxAttack, AdaptiveWhiteBoxAttack, DecoderAttack


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _defense(enc):
    """A deterministic 'defence' that distorts the features."""

    def protect(x):
        with torch.no_grad():
            return enc(x) * 0.5 + 0.2

    return protect


def test_adaptive_whitebox_updates_copy_only(enc_gen, public_images) -> None:
    enc, gen = enc_gen
    original = _state(gen)
    images = public_images[:16]
    calls = []
    atk = AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), epochs=3, batch_size=8, inner_steps=3, init_steps=6,
                                 steps=5, lr=1e-3)
    atk.fit(images, on_epoch=lambda e, a: calls.append(e) or {"probe": float(e) * 2},
            progress=lambda d, t, s: None)
    assert _same(original, _state(gen))  # the shared prior is untouched
    assert not _same(original, _state(atk.generator))
    assert calls == [0, 1, 2]
    assert [h["epoch"] for h in atk.history] == [0, 1, 2]
    assert [h["probe"] for h in atk.history] == [0.0, 2.0, 4.0]
    assert atk.history[-1]["loss"] < atk.history[0]["loss"]
    assert grads_are_none(enc, gen, atk.generator)
    out = atk(_defense(enc)(images[:2]))
    assert out.shape == (2, 3, SIZE, SIZE) and out.min() >= 0 and out.max() <= 1


def test_adaptive_whitebox_resumes(enc_gen, public_images, tmp_path) -> None:
    enc, gen = enc_gen
    images = public_images[:8]
    kw = dict(batch_size=8, inner_steps=2, init_steps=3, steps=2)
    a = AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), epochs=1, **kw).fit(images, checkpoint_stem=tmp_path / "g")
    b = AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), epochs=2, **kw).fit(images, checkpoint_stem=tmp_path / "g")
    assert a.epochs_done == 1 and b.epochs_done == 2 and len(b.history) == 2


def test_adaptive_blackbox_updates_copy_only(enc_gen, public_images, tmp_path) -> None:
    enc, _ = enc_gen
    dec = DecoderAttack(enc, epochs=1, batch_size=16, width=8, image_size=SIZE).fit(public_images)
    original = _state(dec.decoder)
    defense = _defense(enc)
    atk = AdaptiveBlackBoxAttack(dec, defense, epochs=3, batch_size=8, lr=3e-3)
    feats = defense(public_images)
    with torch.no_grad():
        before = float((atk(feats) - public_images).pow(2).mean())
    atk.fit(public_images, on_epoch=lambda e, a: {"probe": e}, checkpoint_stem=tmp_path / "ab")
    with torch.no_grad():
        after = float((atk(feats) - public_images).pow(2).mean())
    assert _same(original, _state(dec.decoder))
    assert not _same(original, _state(atk.decoder))
    assert [h["probe"] for h in atk.history] == [0, 1, 2]
    assert after < before
    assert grads_are_none(enc, dec.decoder, atk.decoder)
    again = AdaptiveBlackBoxAttack(dec, defense, epochs=3, batch_size=8).fit(public_images,
                                                                           checkpoint_stem=tmp_path / "ab")
    assert again.epochs_done == 3 and len(again.history) == 3
    assert _same(_state(atk.decoder), _state(again.decoder))


def test_adaptive_blackbox_requery_and_precomputed(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    dec = DecoderAttack(enc, epochs=0, width=8, image_size=SIZE)
    defense = _defense(enc)
    a = AdaptiveBlackBoxAttack(dec, defense, epochs=1, batch_size=16, requery=True, seed=0).fit(public_images)
    b = AdaptiveBlackBoxAttack(dec, defense, epochs=1, batch_size=16, seed=0)
    b.fit(public_images, protected=defense(public_images))
    # a deterministic defence gives the same pairs either way
    for x, y in zip(_state(a.decoder).values(), _state(b.decoder).values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-5)
    assert len(a.history) == len(b.history) == 1
