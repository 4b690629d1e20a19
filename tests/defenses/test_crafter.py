"""Tests for facecraft.defenses.crafter (Crafter)."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

import facecraft.defenses._critic as critic_module  # where Crafter takes its hypergradient
from facecraft.defenses import Crafter, IHVPSolver
from facecraft.defenses._critic import CriticConfig
from facecraft.defenses.best_response import InnerInversion
from facecraft.defenses.critic_pretraining import CriticPretraining
from facecraft.defenses.outer_loop import OuterLoop
from facecraft.models import Amortizer

# a few cheap outer steps with a trainable critic
SMALL = dict(
    outer_steps=2,
    inner_steps=3,
    init_steps=5,
    critic_steps=2,
    critic_width=8,
    solver="cg",
    cg_iters=2,
)
# the privacy setting: a fixed critic (distance to the prior mean image), no utility
PRIVACY = dict(
    beta=0.0,
    outer_steps=3,
    inner_steps=8,
    init_steps=60,
    critic_steps=0,
    lr=0.05,
    cg_iters=3,
    neumann_iters=10,
    neumann_alpha=5.0,
)  # alpha * lambda_max(H) ~ 0.5 here


def _crafter(tiny_target, tiny_gan, **kw) -> Crafter:
    return Crafter(tiny_target.encoder, tiny_target.head, tiny_gan[0], **kw)


# --------------------------------------------------------------------------- basic contract


def test_output_shape_and_history(tiny_target, tiny_gan, private_images):
    c = _crafter(tiny_target, tiny_gan, **SMALL)
    out = c(private_images)
    assert out.shape == tiny_target.encoder(private_images).shape
    assert not out.requires_grad
    assert [h["step"] for h in c.history] == [0, 1]
    assert all(math.isfinite(h[k]) for h in c.history for k in ("epsilon", "utility", "inversion"))
    assert c.last_epsilon == c.history[-1]["epsilon"]
    c(private_images)
    assert [h["call"] for h in c.history] == [0, 0, 1, 1]


def test_same_seed_same_output_other_seed_differs(tiny_target, tiny_gan, private_images):
    a = _crafter(tiny_target, tiny_gan, seed=3, **SMALL)(private_images)
    b = _crafter(tiny_target, tiny_gan, seed=3, **SMALL)(private_images)
    c = _crafter(tiny_target, tiny_gan, seed=4, **SMALL)(private_images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_repeated_calls_are_deterministic(tiny_target, tiny_gan, private_images):
    c = _crafter(tiny_target, tiny_gan, **SMALL)
    assert torch.equal(c(private_images), c(private_images))


def test_model_grads_untouched_and_flags_restored(tiny_target, tiny_gan, private_images):
    G, _ = tiny_gan
    tiny_target.head.train()
    c = _crafter(tiny_target, tiny_gan, utility="task", **SMALL)
    c(private_images)
    assert tiny_target.head.training and not tiny_target.encoder.training and not G.training
    for p in list(tiny_target.parameters()) + list(G.parameters()):
        assert p.grad is None and p.requires_grad


def test_progress_called_every_outer_step(tiny_target, tiny_gan, private_images):
    calls = []
    _crafter(tiny_target, tiny_gan, **SMALL)(
        private_images, progress=lambda d, t, s: calls.append((d, t, s))
    )
    assert calls == [(1, 2, "crafter"), (2, 2, "crafter")]


@pytest.mark.parametrize("solver", ["neumann", "cg", "gn-cg"])
def test_fast_and_reference_paths_run(tiny_target, tiny_gan, private_images, solver):
    # "fast": warm start, persistent critic; "reference": amortized restarts, fresh critic per step.
    amor = Amortizer((16, 8, 8), 16, width=4).eval()
    for kw in (
        dict(warm_start=True, persistent_critic=True),
        dict(warm_start=False, persistent_critic=False),
    ):
        cfg = {**SMALL, "solver": solver, "neumann_iters": 3, **kw}
        out = _crafter(tiny_target, tiny_gan, amortizer=amor, **cfg)(private_images)
        assert torch.isfinite(out).all()


def test_task_utility_with_given_attributes(tiny_target, tiny_gan, private_images):
    attrs = torch.randint(0, 2, (8, 4), generator=torch.Generator().manual_seed(0)).float()
    c = _crafter(tiny_target, tiny_gan, utility="task", **SMALL)
    c(private_images, attributes=attrs)
    assert all(h["utility"] > 0 for h in c.history)
    with pytest.raises(ValueError, match="one per image"):
        c(private_images, attributes=attrs[:3])


def test_logits_utility_is_zero_at_the_original_and_its_gradient_matches_finite_differences(
    tiny_target, private_images
):
    head = tiny_target.head.eval()
    f0 = tiny_target.encoder(private_images).detach()
    outer = OuterLoop(utility="logits")
    targets = outer.utility_targets(f0, head, None)
    assert torch.equal(targets, head(f0).detach())
    with torch.no_grad():
        assert float(outer.utility_loss(f0, f0, targets, head)) == 0.0
    f = (f0 + 0.3 * torch.randn(f0.shape, generator=torch.Generator().manual_seed(1))).double()
    f.requires_grad_(True)
    head64 = head.double()
    try:
        loss = outer.utility_loss(f, f0.double(), targets.double(), head64)
        assert float(loss) > 0
        (grad,) = torch.autograd.grad(loss, f)
        d = torch.randn(f.shape, generator=torch.Generator().manual_seed(2), dtype=f.dtype)
        eps = 1e-5
        with torch.no_grad():
            up = outer.utility_loss(f + eps * d, f0.double(), targets.double(), head64)
            dn = outer.utility_loss(f - eps * d, f0.double(), targets.double(), head64)
        assert float((up - dn) / (2 * eps)) == pytest.approx(float((grad * d).sum()), rel=1e-5)
    finally:
        head.float()


def test_logits_utility_keeps_the_heads_scores_closer_than_the_feature_utility(
    tiny_target, tiny_gan, private_images
):
    # at a beta where both move the features about as far, the logits utility changes the head's
    # scores less per unit of feature change: it spends its moves where the head does not look
    head = tiny_target.head.eval()
    f0 = tiny_target.encoder(private_images).detach()
    ratios = {}
    for utility in ("feature", "logits"):
        c = _crafter(
            tiny_target, tiny_gan, utility=utility, beta=1.0, **{**SMALL, "outer_steps": 6}
        )
        f = c(private_images)
        with torch.no_grad():
            moved = (f - f0).pow(2).mean()
            scores = (head(f) - head(f0)).pow(2).mean()
        assert moved > 0
        ratios[utility] = float(scores / moved)
    assert ratios["logits"] < ratios["feature"]


def test_release_noise_is_calibrated_fresh_per_call_and_restarted_by_reseed(
    tiny_target, tiny_gan, private_images
):
    plain = _crafter(tiny_target, tiny_gan, **SMALL)(private_images)
    c = _crafter(tiny_target, tiny_gan, release_noise=0.5, **SMALL)
    assert c.randomized and not _crafter(tiny_target, tiny_gan, **SMALL).randomized
    c.reseed("release")
    a, b = c(private_images), c(private_images)
    assert not torch.equal(a, b)  # the stream advances: fresh noise per query (A3 applies)
    c.reseed("release")
    assert torch.equal(c(private_images), a)  # same seed and key, same release
    d = _crafter(tiny_target, tiny_gan, release_noise=0.5, **SMALL)
    d.reseed("other")
    assert not torch.equal(d(private_images), a)
    # the crafting is the plain Crafter's; the noise is 0.5 std of each Enc(X)'s entries
    f0 = tiny_target.encoder(private_images).detach()
    ratio = (a - plain).flatten(1).std(dim=1) / f0.flatten(1).std(dim=1)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5), rtol=0.1)
    with pytest.raises(ValueError, match="release_noise"):
        _crafter(tiny_target, tiny_gan, release_noise=-1.0)


def test_constructor_validation(tiny_target, tiny_gan):
    with pytest.raises(ValueError, match="unknown IHVP solver"):
        _crafter(tiny_target, tiny_gan, solver="lbfgs")
    with pytest.raises(ValueError, match="unknown utility"):
        _crafter(tiny_target, tiny_gan, utility="identity")
    with pytest.raises(ValueError, match="needs the cloud head"):
        Crafter(tiny_target.encoder, None, tiny_gan[0], utility="task")
    with pytest.raises(ValueError, match="needs the cloud head"):
        Crafter(tiny_target.encoder, None, tiny_gan[0], utility="logits")
    with pytest.raises(ValueError, match="beta"):
        _crafter(tiny_target, tiny_gan, beta=-1.0)


def test_config_round_trips_constructor(tiny_target, tiny_gan):
    c = _crafter(tiny_target, tiny_gan, beta=2.0, solver="gn-cg", warm_start=True)
    cfg = c.get_config()
    assert cfg["beta"] == 2.0 and cfg["solver"] == "gn-cg" and cfg["warm_start"] is True
    again = Crafter(tiny_target.encoder, tiny_target.head, tiny_gan[0], **cfg)
    assert again.get_config() == cfg


def test_default_solver_and_an_explicit_equal_one_give_identical_releases(
    tiny_target, tiny_gan, private_images
):
    cfg = {k: v for k, v in SMALL.items() if k not in ("solver", "cg_iters")}
    default = _crafter(tiny_target, tiny_gan, **cfg, neumann_iters=4)
    assert default.ihvp == IHVPSolver(neumann_iters=4)
    # the same solver spelled out argument by argument, from the config's own fields
    fields = dataclasses.asdict(IHVPSolver(neumann_iters=4))
    explicit = _crafter(tiny_target, tiny_gan, **cfg, solver=fields.pop("kind"), **fields)
    assert explicit.ihvp == default.ihvp
    assert torch.equal(default(private_images), explicit(private_images))


def test_flat_arguments_are_grouped_and_read_back(tiny_target, tiny_gan):
    # every flat argument set to a value unlike its default (and unlike the others)
    flat = dict(
        beta=0.25, utility="task", outer_steps=7, lr=0.03, loss_scale=50.0,
        inner_steps=9, inner_lr=0.002, inner_momentum=0.8, init_steps=11,
        warm_start=True, warm_offset=True,
        critic_steps=3, critic_init_steps=5, critic_width=12, gp_weight=15.0,
        critic_lr=1e-3, persistent_critic=False,
        critic_pretrain_steps=13, critic_pretrain_faces=17,
        solver="cg", neumann_alpha=0.004, neumann_iters=19, cg_iters=21, cg_tol=1e-5,
        damping=0.3, release_noise=0.2, seed=23,
    )  # fmt: skip
    c = _crafter(tiny_target, tiny_gan, **flat)
    assert c.outer == OuterLoop(7, 0.03, 0.25, "task", 50.0)
    assert c.inner == InnerInversion(9, 0.002, 0.8, 11, True, True)
    assert c.critic_config == CriticConfig(3, 5, 12, 15.0, 1e-3, False)
    assert c.pretraining == CriticPretraining(13, 17)
    assert c.ihvp == IHVPSolver("cg", 0.004, 19, 21, 1e-5, 0.3)
    cfg = c.get_config()  # the networks not given (None) are in it, as they always were
    assert cfg == {**flat, "amortizer": None, "critic": None}
    assert list(cfg) == [k for k in inspect.signature(Crafter.__init__).parameters if k in cfg]
    with pytest.raises(AttributeError, match="frozen 'ihvp' config"):
        c.cg_iters = 2
    with pytest.raises(ValueError, match="cg_iters must be >= 0"):
        _crafter(tiny_target, tiny_gan, cg_iters=-1)
    with pytest.raises(ValueError, match="critic_pretrain_faces"):
        _crafter(tiny_target, tiny_gan, critic_pretrain_faces=-1)
    with pytest.raises(ValueError, match="inner_lr"):
        _crafter(tiny_target, tiny_gan, inner_lr=0.0)


# --------------------------------------------------------------------------- privacy and utility


@pytest.mark.parametrize("solver", ["neumann", "gn-cg"])  # "cg": below
def test_crafted_features_pull_inversion_towards_prior(
    tiny_target, tiny_gan, private_images, mean_critic, attacker_gap, solver
):
    f0 = tiny_target.encoder(private_images).detach()
    crafted = _crafter(tiny_target, tiny_gan, critic=mean_critic, solver=solver, **PRIVACY)(
        private_images
    )
    assert attacker_gap(crafted) < 0.5 * attacker_gap(f0)


def test_reversed_hypergradient_pushes_away(
    tiny_target, tiny_gan, private_images, mean_critic, attacker_gap, monkeypatch
):
    # The sign matters: ascending the privacy loss instead pushes reconstructions away.
    crafted = _crafter(tiny_target, tiny_gan, critic=mean_critic, solver="cg", **PRIVACY)(
        private_images
    )
    orig = critic_module.implicit_feature_grad
    monkeypatch.setattr(critic_module, "implicit_feature_grad", lambda *a, **k: -orig(*a, **k))
    reversed_ = _crafter(tiny_target, tiny_gan, critic=mean_critic, solver="cg", **PRIVACY)(
        private_images
    )
    f0 = tiny_target.encoder(private_images).detach()
    assert attacker_gap(crafted) < attacker_gap(f0) < attacker_gap(reversed_)


def test_large_beta_keeps_features_close(tiny_target, tiny_gan, private_images, mean_critic):
    f0 = tiny_target.encoder(private_images).detach()
    cfg = {**PRIVACY, "solver": "cg"}
    free = _crafter(tiny_target, tiny_gan, critic=mean_critic, **cfg)(private_images)
    cfg["beta"] = 1e4
    tied = _crafter(tiny_target, tiny_gan, critic=mean_critic, **cfg)(private_images)
    u_free = float((free - f0).pow(2).mean())
    u_tied = float((tied - f0).pow(2).mean())
    assert u_tied < 0.1 * u_free
    assert u_tied < 2 * PRIVACY["lr"] ** 2  # within about one Adam step of F0 per entry


def test_fixed_critic_is_not_modified(tiny_target, tiny_gan, private_images):
    from facecraft.models import Critic

    torch.manual_seed(1)
    critic = Critic(32, width=8)
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    _crafter(tiny_target, tiny_gan, critic=critic, **SMALL)(private_images)
    assert all(torch.equal(before[k], v) for k, v in critic.state_dict().items())
    assert all(p.grad is None for p in critic.parameters())


@pytest.mark.parametrize("persistent", [True, False])
def test_critic_init_steps_train_a_new_critic_longer(
    tiny_target, tiny_gan, private_images, monkeypatch, persistent
):
    counts = []
    train = critic_module.train_critic

    def counting(*args, steps, **kw):
        counts.append(steps)
        return train(*args, steps=steps, **kw)

    monkeypatch.setattr(critic_module, "train_critic", counting)
    kw = {
        **SMALL,
        "outer_steps": 3,
        "critic_steps": 2,
        "critic_init_steps": 7,
        "persistent_critic": persistent,
    }
    _crafter(tiny_target, tiny_gan, **kw)(private_images)
    # a persistent critic is new once per batch; a non-persistent one at every outer step
    assert counts == ([7, 2, 2] if persistent else [7, 7, 7])
    counts.clear()
    _crafter(tiny_target, tiny_gan, **{**kw, "critic_init_steps": None})(private_images)
    assert counts == [2, 2, 2]
    with pytest.raises(ValueError, match="critic_init_steps"):
        _crafter(tiny_target, tiny_gan, **{**kw, "critic_init_steps": -1})


@pytest.mark.parametrize("offset", [False, True])
def test_warm_start_and_warm_offset_choose_the_inner_start(
    tiny_target, tiny_gan, private_images, monkeypatch, offset
):
    import facecraft.defenses.best_response as best_response_module  # where Crafter inverts

    torch.manual_seed(0)
    amor = Amortizer((16, 8, 8), 16, width=4).eval()
    calls = []
    invert = best_response_module.invert_latent

    def recording(enc, gen, feats, z0, **kw):
        z = invert(enc, gen, feats, z0, **kw)
        calls.append((feats.clone(), z0.clone(), z.clone()))
        return z

    monkeypatch.setattr(best_response_module, "invert_latent", recording)
    kw = {**SMALL, "outer_steps": 3, "warm_start": True, "warm_offset": offset}
    _crafter(tiny_target, tiny_gan, amortizer=amor, **kw)(private_images)
    assert len(calls) == 3
    with torch.no_grad():
        assert torch.allclose(
            calls[0][1], amor(calls[0][0])
        )  # the first solve starts from Amor(F0)
        for (f_prev, _, z_prev), (f, z0, _) in zip(calls, calls[1:]):
            assert not torch.allclose(f, f_prev)  # F moved, so the two starts differ
            # warm start: the previous z*; with the offset, Amor(F) plus the previous solve's
            # correction
            want = amor(f) + (z_prev - amor(f_prev)) if offset else z_prev
            assert torch.allclose(z0, want, atol=1e-6)


def test_fit_pretrains_the_critic_once_and_reloads_it(
    tiny_target, tiny_gan, private_images, tmp_path
):
    kw = {**SMALL, "critic_pretrain_steps": 3, "critic_pretrain_faces": 4}
    c = _crafter(tiny_target, tiny_gan, **kw)
    with pytest.raises(RuntimeError, match="fit"):
        c(private_images)  # its critic must be trained first
    stem = tmp_path / "critic"
    c.fit(private_images, checkpoint_stem=stem)
    assert (
        c.fit_trained
        and c.critic is not None
        and not any(p.requires_grad for p in c.critic.parameters())
    )
    out = c(private_images)
    # a second defence loads the saved critic instead of training, and crafts the same features
    d = _crafter(tiny_target, tiny_gan, **kw).fit(private_images, checkpoint_stem=stem)
    assert not d.fit_trained
    assert all(
        torch.equal(a, b)
        for a, b in zip(c.critic.state_dict().values(), d.critic.state_dict().values())
    )
    assert torch.equal(d(private_images), out)
    # without pre-training fit does nothing
    e = _crafter(tiny_target, tiny_gan, **SMALL).fit(private_images)
    assert e.critic is None and not e.fit_trained


def test_crafter_fast_is_crafter_with_the_fast_step(tiny_target, tiny_gan):
    from facecraft.defenses import create_defense
    from facecraft.defenses.crafter_fast import FAST_STEP, FastCrafter

    d = create_defense(
        "crafter-fast",
        encoder=tiny_target.encoder,
        head=tiny_target.head,
        generator=tiny_gan[0],
        beta=2.0,
    )
    assert isinstance(d, FastCrafter) and d.name() == "crafter-fast"
    cfg = d.get_config()
    assert cfg["beta"] == 2.0  # an argument overrides the preset
    assert all(cfg[k] == v for k, v in FAST_STEP.items() if k != "beta")
    # the config rebuilds the same defence
    again = FastCrafter(tiny_target.encoder, tiny_target.head, tiny_gan[0], **cfg)
    assert again.get_config() == cfg
