"""Black-box decoder attack: training lowers the loss, resumable checkpoints, fine-tuning."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from facecraft.attacks import DecoderAttack

from ._attack_helpers import SIZE, grads_are_none


def _recon_mse(atk: DecoderAttack, enc, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nnf.mse_loss(atk(enc(images)), images))


def test_training_lowers_loss_and_keeps_encoder_clean(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    enc.train()
    # 8 epochs: eval-mode BatchNorm statistics need ~30 updates to settle (at 4, one init in six
    # ends worse)
    atk = DecoderAttack(enc, epochs=8, batch_size=8, width=8, image_size=SIZE, lr=3e-3)
    before = _recon_mse(atk, enc.eval(), public_images)
    enc.train()
    calls = []
    atk.fit(public_images, progress=lambda d, t, s: calls.append(d))
    assert enc.training  # flag restored
    enc.eval()
    after = _recon_mse(atk, enc, public_images)
    assert after < before
    assert len(atk.history) == 8 and atk.history[-1]["loss"] < 0.7 * atk.history[0]["loss"]
    assert calls == list(range(1, 9))
    assert grads_are_none(enc, atk.decoder)
    out = atk(enc(public_images[:3]))
    assert out.shape == (3, 3, SIZE, SIZE) and out.min() >= 0 and out.max() <= 1


def test_decoder_built_lazily_and_uint8_accepted(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    atk = DecoderAttack(enc, epochs=1, batch_size=16, width=8)
    assert atk.decoder is None
    atk.fit((public_images * 255).round().to(torch.uint8))
    assert atk.decoder is not None
    assert atk(enc(public_images[:2])).shape == (2, 3, SIZE, SIZE)


def test_fit_resumes_from_checkpoint(enc_gen, public_images, tmp_path) -> None:
    enc, _ = enc_gen
    kw = dict(batch_size=16, width=8, image_size=SIZE, seed=1)
    torch.manual_seed(0)
    full = DecoderAttack(enc, epochs=3, **kw).fit(public_images)
    torch.manual_seed(0)
    part = DecoderAttack(enc, epochs=2, **kw).fit(public_images, checkpoint_stem=tmp_path / "dec")
    assert (tmp_path / "dec.safetensors").exists() and (tmp_path / "dec.json").exists()
    torch.manual_seed(0)
    resumed = DecoderAttack(enc, epochs=3, **kw)
    resumed.fit(public_images, checkpoint_stem=tmp_path / "dec")
    assert resumed.epochs_done == 3 and len(resumed.history) == 3 and resumed.fit_trained
    assert part.epochs_done == 2
    assert (
        not DecoderAttack(enc, epochs=3, **kw)
        .fit(public_images, checkpoint_stem=tmp_path / "dec")
        .fit_trained
    )
    for a, b in zip(full.decoder.state_dict().values(), resumed.decoder.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_fine_tune_fits_new_pairs(enc_gen, public_images) -> None:
    enc, _ = enc_gen
    atk = DecoderAttack(enc, epochs=0, batch_size=8, width=8, image_size=SIZE)
    with torch.no_grad():
        feats = enc(public_images) * 0.5 + 0.3  # some "protected" features
    with torch.no_grad():
        before = float(nnf.mse_loss(atk(feats), public_images))
    seen = []
    atk.fine_tune(
        feats, public_images, epochs=8, lr=3e-3, on_epoch=lambda e, a: seen.append(e) or {"e": e}
    )
    with torch.no_grad():
        after = float(nnf.mse_loss(atk(feats), public_images))
    assert after < 0.7 * before
    assert seen == list(range(8)) and [h["e"] for h in atk.history] == list(range(8))
