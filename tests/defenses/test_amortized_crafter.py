"""Tests for facecraft.defenses.amortized_crafter (Crafter amortized into one forward pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facecraft.defenses import AmortizedCrafter, FeatureCrafter, Protector, load_protector

# a fixed critic (distance to the prior mean image), no utility: the toy privacy setting of
# test_crafter
PRIVACY = dict(
    beta=0.0,
    steps=40,
    batch_size=8,
    width=16,
    lr=1e-2,
    inner_steps=30,
    critic_steps=0,
    cg_iters=3,
    checkpoint_every=10,
)


@pytest.fixture()
def public_images(tiny_gan) -> torch.Tensor:
    """The defender's public faces: drawn like the private ones, other latents."""
    G, _ = tiny_gan
    with torch.no_grad():
        return G(2.5 * torch.randn(64, G.latent_dim, generator=torch.Generator().manual_seed(11)))


def _fit(tiny_target, tiny_gan, public_images, **kw) -> AmortizedCrafter:
    d = AmortizedCrafter(tiny_target.encoder, tiny_target.head, tiny_gan[0], **{**PRIVACY, **kw})
    return d.fit(public_images)


def test_crafter_network_starts_at_identity() -> None:
    c = FeatureCrafter(16, width=8)
    f = torch.randn(2, 16, 8, 8)
    assert torch.equal(f + c(f), f)


def test_protect_before_fit_is_a_clear_error(tiny_target, tiny_gan, private_images) -> None:
    d = AmortizedCrafter(tiny_target.encoder, tiny_target.head, tiny_gan[0])
    with pytest.raises(RuntimeError, match="not trained"):
        d(private_images)


def test_trained_network_pulls_unseen_faces_towards_the_prior(
    tiny_target, tiny_gan, private_images, public_images, mean_critic, attacker_gap
) -> None:
    d = _fit(tiny_target, tiny_gan, public_images, critic=mean_critic)
    f0 = tiny_target.encoder(private_images).detach()
    released = d(private_images)  # faces it never saw in training
    assert released.shape == f0.shape
    assert attacker_gap(released) < 0.7 * attacker_gap(f0)


def test_large_beta_keeps_the_release_close(
    tiny_target, tiny_gan, private_images, public_images, mean_critic
) -> None:
    f0 = tiny_target.encoder(private_images).detach()
    free = _fit(tiny_target, tiny_gan, public_images, critic=mean_critic, steps=15)(private_images)
    tied = _fit(tiny_target, tiny_gan, public_images, critic=mean_critic, steps=15, beta=1e4)(
        private_images
    )
    assert float((tied - f0).pow(2).mean()) < 0.1 * float((free - f0).pow(2).mean())


class _Kill(Exception):
    pass


def test_fit_resumes_after_a_kill_to_the_same_weights(
    tiny_target, tiny_gan, public_images, tmp_path: Path
) -> None:
    kw = dict(steps=6, critic_steps=2, critic_width=8, inner_steps=3, checkpoint_every=2, beta=1.0)
    whole = _fit(tiny_target, tiny_gan, public_images, **kw)

    def killer(done: int, total: int, desc: str) -> None:
        if done == 5:
            raise _Kill()

    d = AmortizedCrafter(tiny_target.encoder, tiny_target.head, tiny_gan[0], **{**PRIVACY, **kw})
    with pytest.raises(_Kill):
        d.fit(public_images, progress=killer, checkpoint_stem=tmp_path / "ac")
    resumed = AmortizedCrafter(
        tiny_target.encoder, tiny_target.head, tiny_gan[0], **{**PRIVACY, **kw}
    )
    resumed.fit(public_images, checkpoint_stem=tmp_path / "ac")
    assert [h["step"] for h in resumed.history] == list(range(6)) and resumed.fit_trained
    again = AmortizedCrafter(
        tiny_target.encoder, tiny_target.head, tiny_gan[0], **{**PRIVACY, **kw}
    )
    assert not again.fit(public_images, checkpoint_stem=tmp_path / "ac").fit_trained
    for a, b in zip(whole.crafter.state_dict().values(), resumed.crafter.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_protector_round_trip_needs_no_generator(
    tiny_target, tiny_gan, private_images, public_images, tmp_path: Path
) -> None:
    d = _fit(
        tiny_target, tiny_gan, public_images, steps=3, critic_steps=1, critic_width=8, inner_steps=2
    )
    Protector(d, image_size=32, arch="resnet18", width=0.25, num_outputs=4).save(tmp_path / "edge")
    loaded = load_protector(tmp_path / "edge")
    assert torch.allclose(loaded.protect(private_images), d(private_images), atol=1e-6)
