"""Feature-to-embedding attack: learnability, early stopping, seeding, the adaptive copy, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from facecraft._io import CheckpointError
from facecraft.attacks import (
    AdaptiveEmbeddingAttack,
    EmbeddingAttack,
    IdentityAttack,
    InversionAttack,
    create_attack,
    get_attack_class,
)
from facecraft.attacks.embedding import embedding_loss

K, E, SHAPE = 10, 16, (8, 4, 4)


def _toy(n_per: int, seed: int, noise: float = 1.0):
    """Features: one of ``K`` fixed identity prototypes plus noise; targets: a fixed linear map
    of the identity's prototype plus a little noise. Returns ``(features, embeddings, labels)``."""
    fixed = torch.Generator().manual_seed(99)
    protos = torch.randn(K, *SHAPE, generator=fixed)
    proj = torch.randn(protos[0].numel(), E, generator=fixed) / protos[0].numel() ** 0.5
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per)
    x = protos[y] + noise * torch.randn(len(y), *SHAPE, generator=g)
    e = protos[y].flatten(1) @ proj + 0.05 * torch.randn(len(y), E, generator=g)
    return x, e, y


def _small(**kw) -> dict:
    return {"epochs": 20, "width": 16, "batch_size": 64, "lr": 3e-3, **kw}


def _identify(gallery: torch.Tensor, gallery_y: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """Nearest class mean by cosine."""
    means = torch.stack([gallery[gallery_y == c].mean(0) for c in range(K)])
    return (nnf.normalize(probe, dim=1) @ nnf.normalize(means, dim=1).T).argmax(1)


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ the loss
def test_embedding_loss_is_mse_plus_cosine_distance() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    want = nnf.mse_loss(a, b) + (1 - nnf.cosine_similarity(a, b, dim=1)).mean()
    assert torch.allclose(embedding_loss(a, b), want)
    assert torch.allclose(embedding_loss(a, b, reduction="none").mean(), want)
    assert float(embedding_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        embedding_loss(a, b, reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        embedding_loss(a, b[:, :3])


# ------------------------------------------------------------------ learning
def test_learns_identity_revealing_embeddings() -> None:
    x, e, y = _toy(40, seed=0)
    x_te, e_te, y_te = _toy(10, seed=1)
    atk = EmbeddingAttack(**_small()).fit(x, e)
    assert not isinstance(atk, (InversionAttack, IdentityAttack))
    pred_tr, pred_te = atk(x), atk(x_te)
    assert pred_te.shape == (len(y_te), E) and not pred_te.requires_grad
    acc = (_identify(pred_tr, y, pred_te) == y_te).float().mean()
    assert acc > 0.8  # chance is 0.1
    assert nnf.cosine_similarity(pred_te, e_te, dim=1).mean() > 0.9
    assert atk.history[-1]["loss"] < atk.history[0]["loss"]
    assert atk.fit_trained
    assert all(p.grad is None for p in atk.regressor.parameters())


def test_flat_features() -> None:
    x, e, y = _toy(20, seed=0)
    atk = EmbeddingAttack(**_small(epochs=10)).fit(x.flatten(1), e)
    out = atk(x[:5].flatten(1))
    assert out.shape == (5, E) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="expected features of shape"):
        atk(x[:5])


def test_held_out_split_is_seeded_and_sized() -> None:
    x, e, _ = _toy(5, seed=0)  # 50 rows
    a = EmbeddingAttack(epochs=0, val_fraction=0.1, seed=3).fit(x, e)
    b = EmbeddingAttack(epochs=0, val_fraction=0.1, seed=3).fit(x, e)
    assert a.val_index is not None and a.val_index.numel() == 5
    assert torch.equal(a.val_index, b.val_index)
    tiny = EmbeddingAttack(epochs=0, val_fraction=0.01).fit(x[:3], e[:3])
    assert tiny.val_index is not None and tiny.val_index.numel() == 1  # at least one row
    assert EmbeddingAttack(epochs=0, val_fraction=0.0).fit(x, e).val_index is None
    with pytest.raises(ValueError, match=r"leaving 1 to train on \(at least 2 needed\)"):
        EmbeddingAttack(epochs=0, val_fraction=0.5).fit(x[:2], e[:2])


def test_early_stopping_restores_the_best_state() -> None:
    # random targets: the held-out loss soon rises as the network memorises its training rows
    g = torch.Generator().manual_seed(5)
    x, e = torch.randn(60, 16, generator=g), torch.randn(60, 8, generator=g)
    epochs, patience = 100, 3
    atk = EmbeddingAttack(
        epochs=epochs, width=16, batch_size=16, lr=1e-2, patience=patience, val_fraction=0.25
    ).fit(x, e)
    val = [h["val_loss"] for h in atk.history]
    assert [h["epoch"] for h in atk.history] == list(range(len(val)))
    assert len(val) < epochs  # it stopped early
    best = min(range(len(val)), key=val.__getitem__)
    assert atk.best_epoch == best
    assert len(val) == best + patience + 1
    assert all(v >= val[best] for v in val[best + 1 :])
    assert val[-1] > val[best]
    held = atk.val_index
    assert held is not None
    assert float(embedding_loss(atk(x[held]), e[held])) == pytest.approx(val[best], rel=1e-5)


def test_without_held_out_rows_keeps_the_last_epoch() -> None:
    x, e, _ = _toy(5, seed=0)
    atk = EmbeddingAttack(**_small(epochs=3, val_fraction=0.0)).fit(x, e)
    assert atk.best_epoch == 2 and all(h["val_loss"] is None for h in atk.history)


def test_same_seed_same_predictions() -> None:
    x, e, _ = _toy(10, seed=0)
    a = EmbeddingAttack(**_small(epochs=3), seed=1).fit(x, e)
    b = EmbeddingAttack(**_small(epochs=3), seed=1).fit(x, e)
    c = EmbeddingAttack(**_small(epochs=3), seed=2).fit(x, e)
    assert torch.equal(a(x), b(x))
    assert a.history == b.history
    assert not torch.equal(a(x), c(x))
    assert torch.equal(a.fit(x, e)(x), b(x))  # a second fit starts afresh


def test_training_flag_restored() -> None:
    x, e, _ = _toy(5, seed=0)
    atk = EmbeddingAttack(**_small(epochs=1)).fit(x, e)
    for flag in (True, False):
        atk.regressor.train(flag)
        atk(x)
        assert atk.regressor.training is flag


def test_progress_reports_epochs() -> None:
    x, e, _ = _toy(5, seed=0)
    calls = []
    EmbeddingAttack(**_small(epochs=2)).fit(x, e, progress=lambda d, t, s: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]


# ------------------------------------------------------------------ adaptive
def test_adaptive_starts_from_a_copy_of_the_base() -> None:
    x, e, _ = _toy(10, seed=0)
    base = EmbeddingAttack(**_small(epochs=3)).fit(x, e)
    before = _state(base.regressor)
    protected = x + 0.3
    start = AdaptiveEmbeddingAttack(base, epochs=0).fit(protected, e)
    assert torch.equal(start(x), base(x))
    assert start.regressor is not base.regressor
    ada = AdaptiveEmbeddingAttack(base, **_small(epochs=3)).fit(protected, e)
    assert not torch.equal(ada(x), base(x))
    after = _state(base.regressor)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in base.regressor.parameters())


def test_adaptive_without_base_is_the_plain_attack() -> None:
    x, e, _ = _toy(10, seed=0)
    plain = EmbeddingAttack(**_small(epochs=3)).fit(x, e)
    ada = AdaptiveEmbeddingAttack(None, **_small(epochs=3)).fit(x, e)
    unfitted_base = AdaptiveEmbeddingAttack(EmbeddingAttack(), **_small(epochs=3)).fit(x, e)
    assert torch.equal(ada(x), plain(x)) and torch.equal(unfitted_base(x), plain(x))


def test_adaptive_reads_protected_features_better_than_the_base() -> None:
    x, e, _ = _toy(30, seed=0)
    x_te, e_te, _ = _toy(10, seed=1)
    perm = torch.randperm(SHAPE[0], generator=torch.Generator().manual_seed(7))

    def defense(f: torch.Tensor) -> torch.Tensor:  # a fixed channel shuffle and sign flip
        return -f[:, perm]

    base = EmbeddingAttack(**_small()).fit(x, e)
    ada = AdaptiveEmbeddingAttack(base, **_small()).fit(defense(x), e)
    base_loss = embedding_loss(base(defense(x_te)), e_te)
    ada_loss = embedding_loss(ada(defense(x_te)), e_te)
    assert ada_loss < 0.5 * base_loss


def test_adaptive_checks_the_base() -> None:
    x, e, _ = _toy(5, seed=0)
    base = EmbeddingAttack(**_small(epochs=1)).fit(x, e)
    with pytest.raises(ValueError, match="the base maps"):
        AdaptiveEmbeddingAttack(base, epochs=1).fit(x, e[:, :4])
    with pytest.raises(TypeError, match="EmbeddingAttack"):
        AdaptiveEmbeddingAttack(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------ state
def test_save_load_round_trip(tmp_path) -> None:
    x, e, _ = _toy(5, seed=0)
    atk = EmbeddingAttack(**_small(epochs=3, width=8)).fit(x, e)
    atk.save(tmp_path / "emb")
    back = EmbeddingAttack().load(tmp_path / "emb")
    assert torch.equal(back(x), atk(x))
    assert back.width == 8 and back.best_epoch == atk.best_epoch and back.history == atk.history
    ada = AdaptiveEmbeddingAttack(atk, epochs=1).fit(x, e)
    ada.save(tmp_path / "ada")
    assert torch.equal(AdaptiveEmbeddingAttack().load(tmp_path / "ada")(x), ada(x))
    with pytest.raises(CheckpointError, match="adaptive-embedding"):
        EmbeddingAttack().load(tmp_path / "ada")
    (tmp_path / "other.json").write_text('{"kind": "feature2id"}')
    with pytest.raises(CheckpointError, match="feature2id"):
        EmbeddingAttack().load(tmp_path / "other")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        EmbeddingAttack().load(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="not fitted"):
        EmbeddingAttack().save(tmp_path / "nothing")


def test_checkpoint_stem_reuses_a_finished_model(tmp_path) -> None:
    x, e, _ = _toy(5, seed=0)
    stem = tmp_path / "ckpt" / "emb"
    first = EmbeddingAttack(**_small(epochs=2)).fit(x, e, checkpoint_stem=stem)
    assert first.fit_trained
    assert (tmp_path / "ckpt" / "emb.safetensors").exists()
    assert (tmp_path / "ckpt" / "emb.json").exists()
    calls = []
    again = EmbeddingAttack(**_small(epochs=2), seed=9).fit(
        x, e, checkpoint_stem=stem, progress=lambda *a: calls.append(a)
    )
    assert not again.fit_trained and not calls
    assert torch.equal(again(x), first(x)) and again.history == first.history
    with pytest.raises(CheckpointError, match="holds a regressor"):
        EmbeddingAttack().fit(x.flatten(1), e, checkpoint_stem=stem)


# ------------------------------------------------------------------ input checks
def test_fit_input_checks() -> None:
    x, e, _ = _toy(2, seed=0)
    atk = EmbeddingAttack(epochs=1, width=4)
    with pytest.raises(ValueError, match="same number of rows"):
        atk.fit(x, e[:-1])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="features must be finite"):
        atk.fit(bad, e)
    bad_e = e.clone()
    bad_e[1, 2] = float("inf")
    with pytest.raises(ValueError, match="embeddings must be finite"):
        atk.fit(x, bad_e)
    with pytest.raises(ValueError, match="2-D"):
        atk.fit(x, e[:, :, None])
    with pytest.raises(ValueError, match="at least 2"):
        atk.fit(x[:1], e[:1])
    with pytest.raises(ValueError, match="dimensions"):
        atk.fit(x[:, None], e)
    with pytest.raises(TypeError):
        atk.fit(x, e.tolist())  # type: ignore[arg-type]


def test_call_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        EmbeddingAttack()(torch.randn(2, 4))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"width": 0}, "width"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"patience": 0}, "patience"),
    ],
)
def test_bad_constructor_values(kwargs: dict, field: str) -> None:
    for cls in (EmbeddingAttack, AdaptiveEmbeddingAttack):
        with pytest.raises(ValueError, match=field):
            cls(**kwargs)


# ------------------------------------------------------------------ registry
def test_registered_by_name() -> None:
    assert get_attack_class("embedding") is EmbeddingAttack
    assert get_attack_class("adaptive-embedding") is AdaptiveEmbeddingAttack
    assert type(create_attack("embedding", epochs=1)) is EmbeddingAttack
    assert type(create_attack("adaptive-embedding", epochs=1)) is AdaptiveEmbeddingAttack
    assert EmbeddingAttack.name() == "embedding"
    assert AdaptiveEmbeddingAttack.name() == "adaptive-embedding"


# ---------------------------------------------------------------- more releases, stronger attacker
def test_adaptive_attacker_trained_on_more_releases_is_at_least_as_strong() -> None:
    # a fixed "defence": the features mixed by a random orthogonal map plus fresh noise per query,
    # so the plain regressor no longer reads them and the adaptive one must learn the defence from
    # its releases
    mix = torch.linalg.qr(torch.randn(128, 128, generator=torch.Generator().manual_seed(5)))[0]

    def defend(x: torch.Tensor, seed: int) -> torch.Tensor:
        noise = 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        return (x.flatten(1) @ mix).view_as(x) + noise

    x_pub, e_pub, _ = _toy(48, seed=1)
    base = EmbeddingAttack(**_small(val_fraction=0.0, seed=0)).fit(x_pub, e_pub)
    x_priv, e_priv, y_priv = _toy(6, seed=2)
    released = defend(x_priv, seed=3)

    def accuracy(n_per: int) -> float:
        x, e, _ = _toy(n_per, seed=4)
        atk = AdaptiveEmbeddingAttack(base, **_small(seed=0, patience=5, epochs=40)).fit(
            defend(x, seed=6), e
        )
        return float((_identify(e_priv, y_priv, atk(released)) == y_priv).float().mean())

    few, many = accuracy(2), accuracy(40)  # 20 vs 400 releases of public faces
    plain = float((_identify(e_priv, y_priv, base(released)) == y_priv).float().mean())
    assert many >= few and many >= plain
    assert many > 0.8 and many - plain > 0.3
