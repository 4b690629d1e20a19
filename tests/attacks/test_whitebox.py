"""White-box latent inversion: recovery of a known latent, amortized start, hygiene."""

from __future__ import annotations

import torch

from facecraft.attacks import WhiteBoxAttack, inversion_loss, invert_latent, latent_objective
from facecraft.models import Amortizer, feature_shape

from ._attack_helpers import LATENT, SIZE, grads_are_none


def _target(gen, enc, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    z_true = torch.randn(n, LATENT, generator=g)
    with torch.no_grad():
        x_true = gen(z_true)
        f = enc(x_true)
    return z_true, x_true, f


def _img_mse(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def test_inversion_recovers_known_image(enc_gen) -> None:
    enc, gen = enc_gen
    _, x_true, f = _target(gen, enc)
    atk = WhiteBoxAttack(enc, gen, steps=100, restarts=2, seed=0)
    z0 = atk.initial_latents(f, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = _img_mse(gen(z0), x_true)
    out = atk(f)
    err = _img_mse(out, x_true)
    assert out.shape == (6, 3, SIZE, SIZE) and 0 <= out.min() and out.max() <= 1
    # most samples land in the right basin and get (almost) exactly there
    assert err.median() < start.median() / 1000
    assert err.median() < 1e-5
    assert err.mean() < start.mean() / 3


def test_invert_latent_never_worse_than_start(enc_gen) -> None:
    enc, gen = enc_gen
    _, _, f = _target(gen, enc, n=4)
    z0 = torch.randn(4, LATENT, generator=torch.Generator().manual_seed(5))
    z = invert_latent(enc, gen, f, z0, steps=20)
    with torch.no_grad():
        before, after = inversion_loss(enc, gen, f, z0), inversion_loss(enc, gen, f, z)
        obj0, obj1 = latent_objective(enc, gen, f, z0), latent_objective(enc, gen, f, z)
    assert torch.all(obj1 <= obj0) and torch.all(after <= before)
    assert after.mean() < 0.8 * before.mean()
    assert not z.requires_grad and z.shape == z0.shape


def test_grads_untouched_and_flags_restored(enc_gen) -> None:
    enc, gen = enc_gen
    enc.train()
    gen.train()
    critic_flags = [p.requires_grad for p in gen.parameters()]
    _, _, f = _target(gen.eval(), enc.eval(), n=2)
    enc.train()
    gen.train()
    calls = []
    WhiteBoxAttack(enc, gen, steps=3)(f, progress=lambda d, t, s: calls.append((d, t)))
    assert enc.training and gen.training
    assert grads_are_none(enc, gen)
    assert [p.requires_grad for p in gen.parameters()] == critic_flags
    assert calls[-1] == (3, 3)


def test_same_seed_same_output(enc_gen) -> None:
    enc, gen = enc_gen
    _, _, f = _target(gen, enc, n=2)
    a = WhiteBoxAttack(enc, gen, steps=5, seed=3)(f)
    b = WhiteBoxAttack(enc, gen, steps=5, seed=3)(f)
    c = WhiteBoxAttack(enc, gen, steps=5, seed=4)(f)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prior_term_uses_critic(enc_gen) -> None:
    enc, gen = enc_gen
    from facecraft.models import Critic

    critic = Critic(SIZE, width=8).eval()
    _, _, f = _target(gen, enc, n=2)
    z = torch.randn(2, LATENT)
    with torch.no_grad():
        plain = latent_objective(enc, gen, f, z)
        with_prior = latent_objective(enc, gen, f, z, critic=critic, prior_weight=2.0)
        assert torch.allclose(with_prior, plain - 2.0 * critic(gen(z)))
    WhiteBoxAttack(enc, gen, critic=critic, prior_weight=1.0, steps=2)(f)
    assert grads_are_none(critic)


def _train_amortizer(enc, gen, steps: int) -> Amortizer:
    torch.manual_seed(0)
    amor = Amortizer(feature_shape(enc, SIZE), LATENT, width=8)
    opt = torch.optim.Adam(amor.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(7)
    amor.train()
    for _ in range(steps):
        z = torch.randn(32, LATENT, generator=g)
        with torch.no_grad():
            f = enc(gen(z))
        loss = (amor(f) - z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    amor.zero_grad(set_to_none=True)
    return amor.eval()


def test_amortized_start_beats_cold_start(enc_gen) -> None:
    enc, gen = enc_gen
    amor = _train_amortizer(enc, gen, steps=60)
    _, x_true, f = _target(gen, enc, n=16, seed=11)
    cold = WhiteBoxAttack(enc, gen, steps=10, seed=0)
    warm = WhiteBoxAttack(enc, gen, amortizer=amor, steps=10)
    with torch.no_grad():
        l_rand = inversion_loss(enc, gen, f, cold.initial_latents(f)).mean()
        l_amor = inversion_loss(enc, gen, f, warm.initial_latents(f)).mean()
    assert l_amor < 0.7 * l_rand
    err_cold = _img_mse(cold(f), x_true).mean()
    err_warm = _img_mse(warm(f), x_true).mean()
    assert err_warm < err_cold
    assert grads_are_none(amor)
