"""Training loops: resume after a kill gives the same weights; finished runs reload."""

from pathlib import Path

import pytest
import torch

from facecraft.models import Amortizer, Critic, Generator, build_target, feature_shape
from facecraft.models.train import train_amortizer, train_target, train_wgan_gp


class _Kill(Exception):
    pass


def _killer(at: int):
    def progress(done: int, total: int, desc: str) -> None:
        if done == at:
            raise _Kill()

    return progress


def _data(n=40, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    attrs = (images.float().mean(dim=(1, 2, 3)) > 127).float()[:, None].repeat(1, 2)
    return images, attrs


def _target_run(stem: Path, progress=None):
    torch.manual_seed(0)
    net = build_target("resnet18", num_outputs=2, width=0.125)
    images, attrs = _data()
    train_target(
        net,
        images,
        attrs,
        epochs=3,
        batch_size=16,
        lr=1e-3,
        device=torch.device("cpu"),
        seed=3,
        checkpoint_stem=stem,
        progress=progress,
    )
    return net


def test_target_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    ref = _target_run(tmp_path / "a" / "target")
    with pytest.raises(_Kill):
        _target_run(
            tmp_path / "b" / "target", progress=_killer(7)
        )  # dies in epoch 3 (3 batches/epoch)
    assert (tmp_path / "b" / "target.partial.json").exists()
    resumed = _target_run(tmp_path / "b" / "target")
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert not (tmp_path / "b" / "target.partial.json").exists()


def test_finished_target_reloads_without_training(tmp_path: Path) -> None:
    ref = _target_run(tmp_path / "target")
    again = _target_run(tmp_path / "target", progress=_killer(1))  # would die if it trained
    assert all(
        torch.equal(a, b) for a, b in zip(ref.state_dict().values(), again.state_dict().values())
    )


def _gan_run(stem: Path, progress=None):
    torch.manual_seed(0)
    g, d = Generator(8, 32, width=4), Critic(32, width=4)
    images, _ = _data()
    train_wgan_gp(
        g,
        d,
        images,
        steps=6,
        batch_size=8,
        n_critic=2,
        sample_every=2,
        device=torch.device("cpu"),
        seed=1,
        checkpoint_stem=stem,
        progress=progress,
    )
    return g, d


def test_prior_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    g_ref, d_ref = _gan_run(tmp_path / "a" / "prior")
    with pytest.raises(_Kill):
        _gan_run(tmp_path / "b" / "prior", progress=_killer(5))
    g, d = _gan_run(tmp_path / "b" / "prior")
    for a, b in zip(
        list(g_ref.state_dict().values()) + list(d_ref.state_dict().values()),
        list(g.state_dict().values()) + list(d.state_dict().values()),
    ):
        assert torch.equal(a, b)


def test_amortizer_lowers_latent_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = Generator(8, 32, width=4).eval()
    enc = build_target("resnet18", num_outputs=2, width=0.125).encoder.eval()
    amor = Amortizer(feature_shape(enc, 32), 8, width=4)
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(amor.eval()(enc(g(z))), z).item()
    rec = train_amortizer(
        amor,
        enc,
        g,
        steps=150,
        batch_size=32,
        lr=3e-3,
        device=torch.device("cpu"),
        checkpoint_stem=tmp_path / "amor",
    )
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(amor.eval()(enc(g(z))), z).item()
    assert after < 0.8 * before, (before, after)
    assert rec["metrics"]["latent_mse"] == pytest.approx(rec["metrics"]["latent_mse"])
    assert all(p.grad is None for p in enc.parameters())


def test_train_head_learns_attributes_from_features_and_leaves_the_original() -> None:
    from torch import nn

    from facecraft.metrics.utility import mean_auc
    from facecraft.models.train import train_head

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(256, 4, 2, 2, generator=g)
    w = torch.randn(16, 3, generator=g)
    attrs = (feats.flatten(1) @ w > 0).long()
    head = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3)
    )
    before = {k: v.clone() for k, v in head.state_dict().items()}
    trained = train_head(
        head, feats[:192], attrs[:192], epochs=40, lr=1e-2, device=torch.device("cpu"), seed=0
    )
    with torch.no_grad():
        auc_trained = float(mean_auc(trained(feats[192:]), attrs[192:]))
        auc_fresh = float(mean_auc(head.eval()(feats[192:]), attrs[192:]))
    assert auc_trained > 0.9 > auc_fresh + 0.2
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    with pytest.raises(ValueError, match="one attribute row per feature"):
        train_head(head, feats[:10], attrs[:9], epochs=1, device=torch.device("cpu"))
