"""``bench_craft`` / ``profile_fast`` (issue 5, CRAFTER.md section 3) on the synthetic tiny profile.

A benchmark is a script, not a timed test: nothing here asserts a speed-up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from facecraft.experiments.bench import (
    BENCH_DEFAULTS,
    CraftBenchConfig,
    bench_craft,
    craft_summary,
    profile_fast,
)
from facecraft.experiments.bench.craft import _schedule
from facecraft.experiments.profiles import PROFILES, profile_config
from facecraft.experiments.study import Study

KEYS = {
    "batch",
    "reference_s",
    "fast_s",
    "ratio",
    "epsilon_reference",
    "epsilon_fast",
    "utility_loss_reference",
    "utility_loss_fast",
    "eval_acc_whitebox_reference",
    "eval_acc_whitebox_fast",
    "reached",
    "fast_steps",
    "reference_kwargs",
    "fast_kwargs",
    "device",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return Study(profile_config("tiny", device="cpu"), tmp_path_factory.mktemp("bench"))


def test_bench_craft_tiny_returns_the_schema(study: Study) -> None:
    threads = torch.get_num_threads()
    config = CraftBenchConfig(
        batch=8,
        reference_steps=2,
        max_fast_steps=2,
        fast_start_steps=1,
        eval_dlib=False,
        reference_kwargs={"neumann_iters": 5},
        num_threads=1,
    )
    out = bench_craft(study, config)
    assert KEYS <= set(out)
    json.dumps(out)  # one JSON line
    assert list(craft_summary(out))[:4] == ["batch", "reference_s", "fast_s", "ratio"]
    assert torch.get_num_threads() == threads  # the thread count is restored
    assert out["batch"] == 8 and out["device"] == "cpu"
    for k in (
        "reference_s",
        "fast_s",
        "ratio",
        "epsilon_reference",
        "epsilon_fast",
        "utility_loss_reference",
        "utility_loss_fast",
        "eval_acc_whitebox_reference",
        "eval_acc_whitebox_fast",
    ):
        assert math.isfinite(out[k]), k
    assert out["reference_s"] > 0 and out["fast_s"] > 0
    assert out["ratio"] == pytest.approx(out["reference_s"] / out["fast_s"])
    assert 1 <= out["fast_steps"] <= 2
    assert out["utility_loss_reference"] > 0 and out["utility_loss_fast"] >= 0
    for k in ("eval_acc_whitebox_reference", "eval_acc_whitebox_fast"):
        assert 0.0 <= out[k] <= 1.0
    assert (
        out["reference_kwargs"]["outer_steps"] == 2
        and out["reference_kwargs"]["solver"] == "neumann"
    )
    # given kwargs update the profile's defaults
    assert (
        out["reference_kwargs"]["neumann_iters"] == 5
        and out["reference_kwargs"]["inner_steps"] == 5
    )
    assert out["reference_kwargs"]["warm_start"] is False
    assert (
        out["fast_kwargs"]["outer_steps"] == out["fast_steps"]
        and out["fast_kwargs"]["warm_start"] is True
    )
    # the search stops at the first chunk that reaches the reference, or at max_fast_steps
    search = out["search"]
    assert search[-1]["steps"] == out["fast_steps"] and search[-1]["reached"] == out["reached"]
    assert not any(s["reached"] for s in search[:-1])
    assert out["reached"] or out["fast_steps"] == 2
    assert out["fast_s"] == search[-1]["seconds"]
    assert math.isfinite(out["critic_epsilon_reference"]) and math.isfinite(
        out["epsilon_undefended"]
    )
    assert out["torch_threads"] == 1
    # the fast configuration's critic is trained once on public faces, timed apart from the batch
    assert out["fast_critic"] == BENCH_DEFAULTS["tiny"]["fast_critic"] and out["fast_setup_s"] > 0
    assert out["ratio_with_setup"] == pytest.approx(
        out["reference_s"] / (out["fast_s"] + out["fast_setup_s"])
    )


def test_bench_craft_without_a_pretrained_critic(
    study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facecraft.experiments.bench as bench_module

    critics = []  # the starting critic of each timed run (reference, then fast)
    crafter = bench_module.CraftBench.crafter

    def recording(self, kwargs, outer_steps, critic=None):
        if not kwargs.get(
            "critic_pretrain_steps"
        ):  # not the Crafter that pre-trains the fast one's critic
            critics.append(critic)
        return crafter(self, kwargs, outer_steps, critic)

    monkeypatch.setattr(bench_module.CraftBench, "crafter", recording)
    one_step = CraftBenchConfig(
        batch=4,
        reference_steps=1,
        max_fast_steps=1,
        eval_dlib=False,
        eval_undefended=False,
        reference_kwargs={"neumann_iters": 2},
        fast_critic_steps=0,
        warmup=False,
    )
    out = bench_craft(study, one_step)
    assert out["fast_critic"]["steps"] == 0 and out["fast_setup_s"] == 0.0
    assert critics == [None, None]  # reference and fast both start from a fresh critic
    critics.clear()
    bench_craft(study, dataclasses.replace(one_step, fast_critic_steps=2))
    assert (
        len(critics) == 2 and critics[0] is None and isinstance(critics[1], torch.nn.Module)
    )  # only the fast one
    with pytest.raises(ValueError, match="fast_critic_steps"):
        CraftBenchConfig(reference_steps=1, max_fast_steps=1, fast_critic_steps=-1)
    with pytest.raises(ValueError, match="confirm_repeats"):
        CraftBenchConfig(reference_steps=1, max_fast_steps=1, confirm_repeats=-1)


def test_bench_craft_confirms_on_fresh_seeds(study: Study) -> None:
    config = CraftBenchConfig(
        batch=4,
        reference_steps=1,
        max_fast_steps=1,
        eval_dlib=False,
        eval_undefended=False,
        reference_kwargs={"neumann_iters": 2},
        pii_repeats=2,
        confirm_repeats=3,
        warmup=False,
    )
    out = bench_craft(study, config)
    assert len(out["epsilons_reference"]) == 2 and len(out["epsilons_reference_confirm"]) == 3
    assert out["epsilon_reference"] == pytest.approx(sum(out["epsilons_reference"]) / 2)
    assert out["epsilon_fast_confirm"] == pytest.approx(sum(out["epsilons_fast_confirm"]) / 3)
    # other seeds, so other estimates of the same release
    assert out["epsilons_reference_confirm"][:2] != out["epsilons_reference"]
    bound = out["epsilon_reference_confirm"] + out["tolerance"] * abs(
        out["epsilon_reference_confirm"]
    )
    assert out["confirmed"] == (out["epsilon_fast_confirm"] <= bound)


def test_bench_craft_config_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="outer_steps"):
        CraftBenchConfig(reference_steps=1, max_fast_steps=1, fast_kwargs={"outer_steps": 2})
    with pytest.raises(ValueError, match="batch"):
        CraftBenchConfig(batch=1, reference_steps=1, max_fast_steps=1)
    with pytest.raises(ValueError, match="max_fast_steps"):
        CraftBenchConfig(reference_steps=1, max_fast_steps=0)
    with pytest.raises(ValueError, match="reference_steps"):
        CraftBenchConfig(reference_steps=True)
    with pytest.raises(ValueError, match="num_threads"):
        CraftBenchConfig(reference_steps=1, max_fast_steps=1, num_threads=0)
    with pytest.raises(ValueError, match=r"\['critic_int_steps'\] are not Crafter arguments"):
        CraftBenchConfig(fast_kwargs={"critic_int_steps": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        CraftBenchConfig().batch = 4  # type: ignore[misc]
    # unset step counts are the profile's preset
    assert CraftBenchConfig().reference_steps is None


def test_profile_fast_lists_top_functions(study: Study) -> None:
    for backend in ("torch", "cprofile"):
        rows = profile_fast(
            study,
            batch=4,
            outer_steps=1,
            top=5,
            backend=backend,
            fast_kwargs={"solver": "cg", "cg_iters": 1},
        )
        assert 1 <= len(rows) <= 5
        assert all(isinstance(n, str) and s >= 0 for n, s in rows)
        assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)


def test_schedule_grows_to_the_cap() -> None:
    assert _schedule(1, 6, 1.5) == [1, 2, 3, 5, 6]
    assert _schedule(4, 3, 2.0) == [3]
    assert set(BENCH_DEFAULTS) == set(PROFILES)
    paper = BENCH_DEFAULTS["paper"]["reference"]
    assert (paper["inner_steps"], paper["neumann_iters"], paper["critic_steps"]) == (80, 120, 10)
    # the Neumann step converges on the largest inversion-Hessian eigenvalue measured on our models
    # (2.2e4, `facecraft bench spectrum --profile small`; docs/BENCHMARKS.md), unlike the paper's
    # 1e-3
    for prof in ("small", "paper"):
        assert BENCH_DEFAULTS[prof]["reference"]["neumann_alpha"] * 2.23e4 < 2.0


def test_bench_craft_validates_before_training(tmp_path: Path) -> None:
    # arguments are checked before any stage is trained
    s = Study(profile_config("tiny", device="cpu"), tmp_path)
    with pytest.raises(ValueError, match="growth"):
        bench_craft(s, CraftBenchConfig(reference_steps=1, max_fast_steps=1, growth=1.0))
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "given, message", [("{cg_iters: 4}", "not JSON"), ("[4]", "expected a JSON object")]
)
def test_bench_craft_cli_rejects_bad_fast_kwargs(tmp_path: Path, given: str, message: str) -> None:
    from typer.testing import CliRunner

    from facecraft.cli import app

    r = CliRunner().invoke(
        app,
        [
            "bench",
            "craft",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path / "run"),
            "--fast-kwargs",
            given,
        ],
    )
    assert r.exit_code != 0
    assert message in r.output
    assert not (tmp_path / "run").exists()


def test_bench_latency_reports_per_image_times_and_ratios() -> None:
    from facecraft.experiments.bench import bench_latency
    from facecraft.models import build_target

    enc = build_target("resnet18", num_outputs=2, width=0.125).encoder.eval()
    x = torch.rand(4, 3, 32, 32)
    threads = torch.get_num_threads()
    out = bench_latency(
        enc, lambda im: enc(im) * 2, x, batch_sizes=(1, 4), repeats=2, num_threads=1
    )
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="needs 8 images"):
        bench_latency(enc, enc, x, batch_sizes=(8,), num_threads=1)
    assert torch.get_num_threads() == threads
    assert out["threads"] == 1 and set(out["by_batch"]) == {"1", "4"}
    for v in out["by_batch"].values():
        assert v["encoder_ms_per_image"] > 0 and v["defense_ms_per_image"] > 0
        assert v["ratio"] == pytest.approx(v["defense_ms_per_image"] / v["encoder_ms_per_image"])


def test_bench_train_steps_times_each_training() -> None:
    from facecraft.experiments.bench import bench_train_steps

    threads = torch.get_num_threads()
    out = bench_train_steps(profile_config("tiny"), num_outputs=3, repeats=1, num_threads=1)
    assert out["threads"] == 1 and torch.get_num_threads() == threads
    assert all(out[f"{k}_s_per_step"] > 0 for k in ("target", "prior", "amortizer"))


def test_bench_spectrum_reports_a_positive_spectrum_and_a_converging_alpha(study: Study) -> None:
    from facecraft.experiments.bench import bench_spectrum

    out = bench_spectrum(study, batch=4, inner_steps=5, iters=30)
    json.dumps(out)
    assert out["batch"] == 4 and len(out["hessian_max"]) == 4 and len(out["gauss_newton_min"]) == 4
    for lo, hi in zip(out["gauss_newton_min"], out["gauss_newton_max"]):
        assert -1e-3 * hi <= lo <= hi  # Gauss-Newton is positive semi-definite
    assert out["neumann_alpha_max"] == pytest.approx(2.0 / max(out["hessian_max"]))
    assert 0.0 <= out["neumann_residual_120"] <= 1.0
