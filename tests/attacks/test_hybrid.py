"""Hybrid attack: image-space refinement lowers the feature distance of the decoder's output."""

from __future__ import annotations

import torch

from facecraft.attacks import DecoderAttack, HybridAttack

from ._attack_helpers import SIZE, grads_are_none


def _feat_dist(enc, x, f):
    with torch.no_grad():
        return (enc(x) - f).flatten(1).pow(2).mean(1)


def test_refinement_lowers_feature_distance(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    dec = DecoderAttack(enc, epochs=1, batch_size=16, width=8, image_size=SIZE).fit(public_images)
    with torch.no_grad():
        f = enc(public_images[:4])
    hyb = HybridAttack(enc, dec, steps=30)
    x_dec = dec(f)
    x_hyb = hyb(f)
    d0, d1 = _feat_dist(enc, x_dec, f), _feat_dist(enc, x_hyb, f)
    assert torch.all(d1 <= d0)
    assert d1.mean() < 0.8 * d0.mean()
    assert x_hyb.shape == (4, 3, SIZE, SIZE) and x_hyb.min() >= 0 and x_hyb.max() <= 1
    assert grads_are_none(enc, dec.decoder)


def test_tv_term_and_zero_steps(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    dec = DecoderAttack(enc, epochs=0, width=8, image_size=SIZE)
    with torch.no_grad():
        f = enc(public_images[:2])
    assert torch.allclose(HybridAttack(enc, dec, steps=0)(f), dec(f))
    out = HybridAttack(enc, dec, steps=3, tv_weight=0.1)(f)
    assert out.shape == (2, 3, SIZE, SIZE)
