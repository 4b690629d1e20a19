"""Adaptive A1 attacks: they train copies (originals untouched), one history entry per epoch."""

from __future__ import annotations

import copy

import pytest
import torch

from facecraft._torchutils import make_generator
from facecraft.attacks import AdaptiveBlackBoxAttack, AdaptiveWhiteBoxAttack, DecoderAttack
from facecraft.attacks.decoder import train_decoder_epoch

from ._attack_helpers import SIZE, grads_are_none


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
    atk = AdaptiveWhiteBoxAttack(
        enc,
        gen,
        _defense(enc),
        epochs=3,
        batch_size=8,
        inner_steps=3,
        init_steps=6,
        steps=5,
        lr=1e-3,
    )
    atk.fit(
        images,
        on_epoch=lambda e, a: calls.append(e) or {"probe": float(e) * 2},
        progress=lambda d, t, s: None,
    )
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
    a = AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), epochs=1, **kw).fit(
        images, checkpoint_stem=tmp_path / "g"
    )
    b = AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), epochs=2, **kw).fit(
        images, checkpoint_stem=tmp_path / "g"
    )
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
    again = AdaptiveBlackBoxAttack(dec, defense, epochs=3, batch_size=8).fit(
        public_images, checkpoint_stem=tmp_path / "ab"
    )
    assert again.epochs_done == 3 and len(again.history) == 3
    assert _same(_state(atk.decoder), _state(again.decoder))


def test_adaptive_blackbox_requery_and_precomputed(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    dec = DecoderAttack(enc, epochs=0, width=8, image_size=SIZE)
    defense = _defense(enc)
    a = AdaptiveBlackBoxAttack(dec, defense, epochs=1, batch_size=16, requery=True, seed=0).fit(
        public_images
    )
    b = AdaptiveBlackBoxAttack(dec, defense, epochs=1, batch_size=16, seed=0)
    b.fit(public_images, protected=defense(public_images))
    # a deterministic defence gives the same pairs either way
    for x, y in zip(_state(a.decoder).values(), _state(b.decoder).values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-5)
    assert len(a.history) == len(b.history) == 1


# ---------------------------------------------------------------------------
# Held-out split, early stopping and the best epoch (``val_fraction``, ``patience``)
# ---------------------------------------------------------------------------

_WB = dict(batch_size=8, inner_steps=2, init_steps=3, steps=2)


def _decoder_attack(enc, public_images):
    return DecoderAttack(enc, epochs=1, batch_size=16, width=8, image_size=SIZE).fit(public_images)


def _heldout_mse(atk, defense, images) -> float:
    """The held-out loss recomputed through the public path, in float64."""
    val = atk.val_indices
    rec = atk(defense(images[val]))
    return float((rec.double() - images[val].double()).pow(2).mean())


def _check_best(atk, patience: int) -> None:
    """``best_epoch`` is the argmin of ``val_loss``, and early stopping is consistent with it."""
    losses = [h["val_loss"] for h in atk.history]
    assert len(losses) == atk.epochs_done <= atk.epochs
    assert atk.best_epoch == int(torch.tensor(losses).argmin())
    assert atk.best_val_loss == losses[atk.best_epoch] == min(losses)
    if patience > 0 and atk.epochs_done < atk.epochs:  # stopped early, `patience` after the best
        assert atk.epochs_done - 1 - atk.best_epoch == patience
    if patience > 0:  # never `patience` epochs without improvement before the last one
        runs, best = 0, float("inf")
        for v in losses[:-1]:
            runs, best = (0, v) if v < best else (runs + 1, best)
            assert runs < patience


def test_val_fraction_zero_is_the_plain_fit(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    defense = _defense(enc)
    dec = _decoder_attack(enc, public_images)
    atk = AdaptiveBlackBoxAttack(
        dec, defense, epochs=2, batch_size=8, lr=3e-3, val_fraction=0.0, patience=3
    ).fit(public_images)
    # the same epochs by hand: a copy of the decoder, Adam, the seed's shuffling, every image
    ref = copy.deepcopy(dec.decoder)
    for p in ref.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(ref.parameters(), lr=3e-3)
    gen = make_generator(0)
    feats = defense(public_images)
    losses = [
        train_decoder_epoch(ref, opt, public_images, batch_size=8, gen=gen, features=feats)
        for _ in range(2)
    ]
    assert _same(_state(ref), _state(atk.decoder))  # bit-identical
    assert atk.history == [{"epoch": 0, "loss": losses[0]}, {"epoch": 1, "loss": losses[1]}]
    assert atk.val_indices is None and atk.train_indices is None
    assert atk.best_epoch is None and atk.best_val_loss is None


def test_early_stopping_arguments_are_checked(enc_gen, public_images) -> None:
    enc, gen = enc_gen
    dec = _decoder_attack(enc, public_images)
    for kw in (dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(patience=-1)):
        with pytest.raises(ValueError):
            AdaptiveBlackBoxAttack(dec, _defense(enc), **kw)
        with pytest.raises(ValueError):
            AdaptiveWhiteBoxAttack(enc, gen, _defense(enc), **kw)
    late = AdaptiveBlackBoxAttack(dec, _defense(enc), epochs=1, val_fraction=0.9)
    with pytest.raises(ValueError, match="none to train on"):  # round(0.9 * 2) = 2 of 2 held out
        late.fit(public_images[:2])


def test_split_is_seeded_disjoint_and_at_least_one(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    dec = _decoder_attack(enc, public_images)
    a = AdaptiveBlackBoxAttack(dec, _defense(enc), epochs=0, val_fraction=0.25, seed=3)
    a.fit(public_images)
    assert a.val_indices.numel() == 8 and a.train_indices.numel() == 24
    assert sorted(torch.cat([a.val_indices, a.train_indices]).tolist()) == list(range(32))
    b = AdaptiveBlackBoxAttack(dec, _defense(enc), epochs=0, val_fraction=0.25, seed=3)
    b.fit(public_images)
    c = AdaptiveBlackBoxAttack(dec, _defense(enc), epochs=0, val_fraction=0.25, seed=4)
    c.fit(public_images)
    assert torch.equal(a.val_indices, b.val_indices)
    assert not torch.equal(a.val_indices, c.val_indices)
    d = AdaptiveBlackBoxAttack(dec, _defense(enc), epochs=0, val_fraction=0.01)
    d.fit(public_images)
    assert d.val_indices.numel() == 1
    assert a.history == [] and a.best_epoch is None  # no epoch, no held-out loss


def _recording_defense(enc, public_images, calls):
    """A deterministic defence that records which public images (row numbers) each call saw."""
    flat = public_images.reshape(public_images.shape[0], -1)

    def protect(x):
        rows = [int(torch.nonzero((flat == r).all(1)).item()) for r in x.reshape(x.shape[0], -1)]
        calls.append(rows)
        return _defense(enc)(x)

    return protect


@pytest.mark.parametrize("kind", ["blackbox", "whitebox"])
def test_heldout_images_are_never_trained_on(kind, enc_gen, public_images) -> None:
    enc, gen = enc_gen
    images = public_images[:16]
    calls = []
    defense = _recording_defense(enc, images, calls)
    if kind == "blackbox":
        atk = AdaptiveBlackBoxAttack(
            _decoder_attack(enc, public_images),
            defense,
            epochs=2,
            batch_size=4,
            requery=True,
            val_fraction=0.25,
            seed=5,
        )
    else:
        atk = AdaptiveWhiteBoxAttack(
            enc,
            gen,
            defense,
            epochs=2,
            requery=True,
            val_fraction=0.25,
            seed=5,
            **{**_WB, "batch_size": 4},
        )
    atk.fit(images)
    val, train = atk.val_indices.tolist(), atk.train_indices.tolist()
    assert len(val) == 4 and not set(val) & set(train)
    assert calls[0] == val  # the held-out images are queried once, for the held-out loss
    epochs = [sum(calls[1 + 3 * e : 4 + 3 * e], []) for e in range(2)]  # 12 images, batches of 4
    assert len(calls) == 1 + 2 * 3
    for rows in epochs:
        assert len(rows) == 16 - 4 and sorted(rows) == train
    # the shuffling generator draws as without a split (the split has its own generator)
    order = atk.train_indices[torch.randperm(12, generator=make_generator(5))].tolist()
    assert epochs[0] == order


def _wreck_at(epoch: int, attr: str):
    """``on_epoch`` that adds N(0, 1) noise to every weight of ``attack.<attr>`` after ``epoch``.

    Its held-out loss is recorded before the noise, and every later epoch
    starts from a wrecked model (about 20x the held-out loss, far beyond what
    a few small steps recover), so later epochs cannot be the best.
    """

    def on_epoch(e, atk):
        if e == epoch:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in getattr(atk, attr).parameters():
                    p.add_(torch.randn(p.shape, generator=g))
        return {"probe": e}

    return on_epoch


def _snapshots(on_epoch, attr: str, snaps):
    """Wrap ``on_epoch`` to keep a copy of ``attack.<attr>``'s state as it was after each epoch."""
    return lambda e, a: snaps.append(_state(getattr(a, attr))) or on_epoch(e, a)


def test_blackbox_restores_the_best_epoch_and_stops_early(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    defense = _defense(enc)
    snaps = []
    atk = AdaptiveBlackBoxAttack(
        _decoder_attack(enc, public_images),
        defense,
        epochs=8,
        batch_size=8,
        lr=3e-3,
        val_fraction=0.25,
        patience=2,
    )
    atk.fit(public_images, on_epoch=_snapshots(_wreck_at(2, "decoder"), "decoder", snaps))
    assert [h["probe"] for h in atk.history] == list(range(atk.epochs_done))  # on_epoch each epoch
    assert all(set(h) == {"epoch", "loss", "val_loss", "probe"} for h in atk.history)
    _check_best(atk, patience=2)
    assert atk.best_epoch <= 2  # nothing after the wreck is better ...
    assert atk.epochs_done == atk.best_epoch + 3 < 8  # ... so it stops 2 epochs after the best
    assert _same(snaps[atk.best_epoch], _state(atk.decoder))  # the best decoder, not the last
    assert _heldout_mse(atk, defense, public_images) == pytest.approx(atk.best_val_loss, rel=1e-12)
    assert grads_are_none(atk.decoder)


def test_patience_zero_runs_every_epoch(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    defense = _defense(enc)
    atk = AdaptiveBlackBoxAttack(
        _decoder_attack(enc, public_images),
        defense,
        epochs=5,
        batch_size=8,
        lr=3e-3,
        val_fraction=0.25,
        patience=0,
    )
    atk.fit(public_images, on_epoch=_wreck_at(1, "decoder"))
    assert atk.epochs_done == 5 and len(atk.history) == 5  # 3 epochs without improvement
    _check_best(atk, patience=0)
    assert atk.best_epoch <= 1
    assert _heldout_mse(atk, defense, public_images) == pytest.approx(atk.best_val_loss, rel=1e-12)


def test_whitebox_stops_patience_epochs_after_a_plateau(enc_gen, public_images) -> None:
    enc, gen = enc_gen
    defense = _defense(enc)
    images = public_images[:16]
    atk = AdaptiveWhiteBoxAttack(enc, gen, defense, epochs=6, val_fraction=0.25, patience=2, **_WB)
    atk._opt.param_groups[0]["lr"] = 0.0  # G cannot change: the held-out loss is flat from epoch 0
    atk.fit(images)
    losses = [h["val_loss"] for h in atk.history]
    assert losses == [losses[0]] * 3  # a tie is no improvement
    assert atk.best_epoch == 0 and atk.epochs_done == 3  # stopped after epochs 1 and 2
    _check_best(atk, patience=2)
    assert _heldout_mse(atk, defense, images) == pytest.approx(losses[0], rel=1e-12)


def test_whitebox_restores_the_best_generator(enc_gen, public_images) -> None:
    enc, gen = enc_gen
    defense = _defense(enc)
    images = public_images[:16]
    snaps = []
    atk = AdaptiveWhiteBoxAttack(enc, gen, defense, epochs=3, lr=3e-3, val_fraction=0.25, **_WB)
    atk.fit(images, on_epoch=_snapshots(_wreck_at(1, "generator"), "generator", snaps))
    _check_best(atk, patience=0)
    assert atk.best_epoch <= 1 and len(snaps) == 3
    assert _same(snaps[atk.best_epoch], _state(atk.generator))  # the best G, not the last
    assert _heldout_mse(atk, defense, images) == pytest.approx(atk.best_val_loss, rel=1e-12)
    assert grads_are_none(enc, gen, atk.generator)


def test_blackbox_resume_with_heldout_split_matches_uninterrupted(
    enc_gen, public_images, tmp_path
) -> None:
    enc, _ = enc_gen
    defense = _defense(enc)
    dec = _decoder_attack(enc, public_images)
    kw = dict(batch_size=8, lr=3e-3, val_fraction=0.25, patience=2)
    full = AdaptiveBlackBoxAttack(dec, defense, epochs=8, **kw)
    full.fit(public_images, on_epoch=_wreck_at(2, "decoder"))
    assert full.epochs_done < 8 and full.best_epoch <= 2  # as in the test above
    for cut in (2, 3, full.epochs_done - 1):  # the last two cut after the best epoch
        stem = tmp_path / f"cut{cut}"
        AdaptiveBlackBoxAttack(dec, defense, epochs=cut, **kw).fit(
            public_images, on_epoch=_wreck_at(2, "decoder"), checkpoint_stem=stem
        )
        for _ in range(2):  # resume, then resume the finished run (nothing left to do)
            res = AdaptiveBlackBoxAttack(dec, defense, epochs=8, **kw).fit(
                public_images, on_epoch=_wreck_at(2, "decoder"), checkpoint_stem=stem
            )
            assert res.history == full.history
            assert (res.epochs_done, res.best_epoch, res.best_val_loss) == (
                full.epochs_done,
                full.best_epoch,
                full.best_val_loss,
            )
            assert torch.equal(res.val_indices, full.val_indices)
            assert _same(_state(full.decoder), _state(res.decoder))  # the best epoch's decoder
    with pytest.raises(ValueError, match="held-out split"):
        AdaptiveBlackBoxAttack(dec, defense, epochs=8, **{**kw, "val_fraction": 0.5}).fit(
            public_images, checkpoint_stem=tmp_path / "cut2"
        )


def test_whitebox_resume_with_heldout_split_matches_uninterrupted(
    enc_gen, public_images, tmp_path
) -> None:
    enc, gen = enc_gen
    defense = _defense(enc)
    images = public_images[:16]
    kw = dict(lr=3e-3, val_fraction=0.25, **_WB)
    full = AdaptiveWhiteBoxAttack(enc, gen, defense, epochs=3, **kw)
    full.fit(images, on_epoch=_wreck_at(1, "generator"))
    assert full.best_epoch <= 1  # the cut below is after it: the best G comes from the checkpoint
    stem = tmp_path / "g"
    AdaptiveWhiteBoxAttack(enc, gen, defense, epochs=2, **kw).fit(
        images, on_epoch=_wreck_at(1, "generator"), checkpoint_stem=stem
    )
    res = AdaptiveWhiteBoxAttack(enc, gen, defense, epochs=3, **kw).fit(
        images, on_epoch=_wreck_at(1, "generator"), checkpoint_stem=stem
    )
    assert res.history == full.history
    assert (res.best_epoch, res.best_val_loss) == (full.best_epoch, full.best_val_loss)
    assert _same(_state(full.generator), _state(res.generator))
    assert _heldout_mse(res, defense, images) == pytest.approx(res.best_val_loss, rel=1e-12)
