"""The profiles (``facecraft.experiments.profiles``) and their re-export from
``facecraft.experiments.config``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from facecraft.defenses.crafter_fast import FAST_STEP
from facecraft.experiments import config, profiles
from facecraft.experiments.config import RunConfig, config_from_dict, config_to_dict


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_every_profile_builds_and_round_trips_through_json(name: str) -> None:
    cfg = profiles.profile_config(name)
    assert cfg.profile == name
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_from_dict(RunConfig, d) == cfg


def test_each_call_builds_fresh_settings() -> None:
    a, b = profiles.profile_config("tiny"), profiles.profile_config("tiny")
    assert a == b and a.defenses is not b.defenses
    fast = a.defenses["crafter-fast"]["kwargs"]
    assert fast == a.defenses["distilled-crafter"]["kwargs"]["teacher_kwargs"]
    assert fast is not a.defenses["distilled-crafter"]["kwargs"]["teacher_kwargs"]


def test_config_names_the_profiles_without_importing_them() -> None:
    assert tuple(profiles.PROFILES) == config.PROFILE_NAMES
    assert set(config.__all__) <= set(dir(config))
    with pytest.raises(ValueError, match="one of"):
        config.RunConfig(profile="nope")


def test_profile_overrides_and_unknown_names() -> None:
    cfg = profiles.profile_config("small", device="cpu", seed=3)
    assert (cfg.device, cfg.seed) == ("cpu", 3)
    assert cfg == dataclasses.replace(profiles.profile_config("small"), device="cpu", seed=3)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        profiles.profile_config("huge")
    with pytest.raises(ValueError, match="RunConfig.profile must be one of"):
        RunConfig(profile="huge")
    assert RunConfig(profile="custom").profile == "custom"


def test_bench_presets_cover_every_profile_and_take_the_fast_step_from_crafter() -> None:
    assert set(profiles.BENCH_DEFAULTS) == set(profiles.PROFILES)
    small = profiles.BENCH_DEFAULTS["small"]
    pretrain = ("critic_pretrain_steps", "critic_pretrain_faces", "outer_steps")
    assert small["fast"] == {
        **{k: v for k, v in FAST_STEP.items() if k not in pretrain},
        "persistent_critic": True,
    }
    assert small["fast_critic"] == {
        "steps": FAST_STEP["critic_pretrain_steps"],
        "faces": FAST_STEP["critic_pretrain_faces"],
    }
    copy = profiles.bench_defaults("tiny")
    copy["reference"]["inner_steps"] = 99
    assert profiles.BENCH_DEFAULTS["tiny"]["reference"]["inner_steps"] != 99
    assert profiles.bench_defaults("custom") == profiles.BENCH_DEFAULTS["paper"]


@pytest.mark.parametrize(
    "first", ["facecraft.experiments.profiles", "facecraft.experiments.config"]
)
def test_either_module_imports_first(first: str) -> None:
    code = (
        f"import {first}; from facecraft.experiments.profiles import PROFILES; print(len(PROFILES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
