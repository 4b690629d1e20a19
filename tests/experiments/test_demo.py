"""The demo pipeline end to end on the synthetic tiny profile: report contents, kill and resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from facecraft.experiments.pipeline import run_demo
from facecraft.experiments.profiles import profile_config


class _Kill(Exception):
    pass


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo that is killed part-way through the cells, then resumed with the same command."""
    out = tmp_path_factory.mktemp("demo")
    cfg = profile_config("tiny", device="cpu")
    seen = {"protect": 0}

    def killer(done: int, total: int, desc: str) -> None:
        if desc.startswith("protect") and done == total:
            seen["protect"] += 1
            if seen["protect"] == 3:  # after the third defence's release is stored
                raise _Kill()

    with pytest.raises(_Kill):
        run_demo(cfg, out, progress=killer)
    cells = next((out / "cells").iterdir())
    done_before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert any("--" in n for n in done_before), "no finished cell before the kill"
    run_demo(cfg, out)
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    # nothing finished before the kill was recomputed
    assert all(after[n] == t for n, t in done_before.items())
    assert len(after) > len(done_before)
    return out


@pytest.mark.slow
def test_demo_writes_results_in_schema(demo_run: Path) -> None:
    r = json.loads((demo_run / "results.json").read_text())
    assert r["synthetic"] is True and r["profile"] == "tiny"
    assert r["chance"] == pytest.approx(1 / r["n_identities"])
    assert set(r["oracle_ceiling"]) == {"dlib", "evalnet"}
    pairs = {(row["defense"], row["attack"]) for row in r["rows"]}
    for d in ("none", "noise", "advlearn", "disco", "crafter-z", "crafter"):
        assert (d, "whitebox") in pairs and (d, "blackbox") in pairs
    for attack in ("adaptive-whitebox", "adaptive-blackbox", "embedding", "adaptive-embedding"):
        assert ("crafter", attack) in pairs
    assert ("none", "embedding") in pairs and ("none", "adaptive-embedding") not in pairs
    assert not any(d == "amortized-crafter" for d, _ in pairs)  # "demo": False in the profile
    assert r["wall_seconds"] > 0
    n = r["n_images"]
    assert len(r["labels"]) == n and r["n_identities_attacked"] == len(set(r["labels"]))
    for row in r["rows"]:
        # tiny: the white-box attack runs on 6 of the 8 faces (eval.n_images_by_attack), the same 6
        # for every defence
        m = row["n_faces"]
        if row["attack"] == "whitebox":
            assert m == 6 and len(set(row["faces"])) == 6 and max(row["faces"]) < n
            assert row["faces"] == next(x["faces"] for x in r["rows"] if x["attack"] == "whitebox")
        else:
            assert m == n and "faces" not in row
        # the adaptive attackers learn from 16 public releases, the white-box one from 12 of them
        assert row.get("public_faces") == {
            "adaptive-whitebox": 12,
            "adaptive-blackbox": 16,
            "adaptive-embedding": 16,
        }.get(row["attack"])
        oracles = (
            ("dlib",) if row["attack"].endswith("embedding") else ("dlib", "evalnet")
        )  # no image to judge
        for key in ("eval_acc_top1", "eval_acc_top5"):
            for o in oracles:
                acc, (lo, hi) = row[key][o], row["ci95"][key][o]
                assert 0.0 <= lo <= acc <= hi <= 1.0
                hits = row["hits"][f"{o}_top{key[-1]}"]
                assert len(hits) == m and hits.count("1") == round(acc * m)
        assert 0.0 <= row["exposed_identities"]["dlib"] <= 1.0
        assert -1.0 <= row["fsim"] <= 1.0 and row["mean_auc"] is not None
    curves = r["adaptive_curves"]
    # tiny: 2 attacker epochs (the embedding attack may stop early on its held-out faces)
    assert curves and all(
        len(c["history"]) == 2 for c in curves if c["attack"] != "adaptive-embedding"
    )
    emb = [c for c in curves if c["attack"] == "adaptive-embedding"]
    assert emb and all("val_loss" in h for c in emb for h in c["history"])


@pytest.mark.slow
def test_demo_report_holds_grid_plot_and_table(demo_run: Path) -> None:
    html = (demo_run / "report.html").read_text()
    md = (demo_run / "report.md").read_text()
    for name in ("grid", "tradeoff", "adaptive"):
        assert (demo_run / f"{name}.png").stat().st_size > 1000
        assert f"alt='{name}' src='data:image/png;base64," in html
        assert f"({name}.png)" in md
    assert "SYNTHETIC" in html and "SYNTHETIC" in md
    assert "<table>" in html and "| crafter | 10.0 | whitebox |" in md
    assert "Stages and machine" in md


@pytest.mark.slow
def test_demo_grid_shows_every_setting_and_a_sweep_one_per_defence(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import facecraft.experiments.report as report

    rows_drawn = []
    draw = report.plot_grid
    monkeypatch.setattr(
        report,
        "plot_grid",
        lambda o, recon, a, **kw: rows_drawn.append(list(recon)) or draw(o, recon, a, **kw),
    )
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    report.build_report(run)
    assert {"crafter 1", "crafter 10", "none", "noise 1"} <= set(rows_drawn[-1])
    monkeypatch.setattr(report, "_GRID_ROWS", 3)  # the grid of a larger sweep
    report.build_report(run)
    crafters = [label for label in rows_drawn[-1] if label.startswith("crafter ")]
    assert crafters == ["crafter 10"]  # the median of (1, 10)


@pytest.mark.slow
def test_demo_measures_the_training_scenario(demo_run: Path) -> None:
    r = json.loads((demo_run / "results.json").read_text())
    for row in r["rows"]:
        assert 0.0 <= row["mean_auc_train_scenario"] <= 1.0
        assert row["train_scenario_images"] == 24


@pytest.mark.slow
def test_sweep_runs_settings_in_parallel_processes_and_reuses_the_demo_models(
    demo_run: Path,
) -> None:
    from facecraft.experiments.sweep import parse_axis, run_sweep, sweep_config

    models_before = {p.name: p.stat().st_mtime_ns for p in (demo_run / "models").iterdir()}
    cfg = sweep_config(profile_config("tiny", device="cpu"), [parse_axis("noise:sigma=0.1,3")])
    report = run_sweep(
        cfg, demo_run, workers=2, backend="process", attacks=["whitebox", "blackbox"], name="noise"
    )
    out = demo_run / "sweeps" / "noise"
    assert report == out / "report.html" and report.exists()
    r = json.loads((out / "results.json").read_text())
    cells = {(row["defense"], row["param"], row["attack"]) for row in r["rows"]}
    assert cells == {
        (d, p, a)
        for d, p in (("none", None), ("noise", 0.1), ("noise", 3.0))
        for a in ("whitebox", "blackbox")
    }
    auc = {row["param"]: row["mean_auc"] for row in r["rows"] if row["defense"] == "noise"}
    assert auc[3.0] < auc[0.1]  # more noise, less utility
    # the shared models were reused, not retrained, and the demo's own results are untouched
    assert {
        p.name: p.stat().st_mtime_ns
        for p in (demo_run / "models").iterdir()
        if p.name in models_before
    } == models_before
    assert json.loads((demo_run / "results.json").read_text())["profile"] == "tiny"
    # a second run finds every cell done
    cell_dir = out / r["cells"]
    stamps = {p.name: p.stat().st_mtime_ns for p in cell_dir.glob("*--*.json")}
    run_sweep(
        cfg, demo_run, workers=1, backend="serial", attacks=["whitebox", "blackbox"], name="noise"
    )
    assert {p.name: p.stat().st_mtime_ns for p in cell_dir.glob("*--*.json")} == stamps


def test_sweep_axis_parsing_and_config() -> None:
    from facecraft.experiments.sweep import parse_axis, sweep_config

    ax = parse_axis("crafter:beta=0.5, 2")
    assert (ax.defense, ax.param, ax.values) == ("crafter", "beta", (0.5, 2.0))
    for bad in ("crafter", "crafter:beta", "crafter:beta=x", "nosuch:p=1"):
        with pytest.raises(ValueError):
            parse_axis(bad)
    cfg = sweep_config(profile_config("tiny"), [ax])
    assert list(cfg.defenses) == ["none", "crafter"]
    spec = cfg.defenses["crafter"]
    assert spec["sweep"] == {"param": "beta", "values": [0.5, 2.0]}
    assert spec["kwargs"]["solver"] == "gn-cg" and "beta" not in spec["kwargs"]
    with pytest.raises(ValueError, match="at least one"):
        sweep_config(profile_config("tiny"), [])


def test_sweep_fixed_arguments_reach_the_swept_defence_only() -> None:
    from facecraft.experiments.sweep import parse_axis, parse_fixed, sweep_config

    assert parse_fixed("crafter-fast:utility=task") == ("crafter-fast", "utility", "task")
    assert parse_fixed("crafter:outer_steps= 7") == ("crafter", "outer_steps", 7)
    assert parse_fixed("crafter:warm_start=false") == ("crafter", "warm_start", False)
    assert parse_fixed("noise:sigma=0.5") == ("noise", "sigma", 0.5)
    for bad in ("crafter", "crafter:utility", "nosuch:p=1", "crafter:nosuch=1"):
        with pytest.raises(ValueError):
            parse_fixed(bad)
    axes = [parse_axis("crafter-fast:beta=0.1"), parse_axis("noise:sigma=1")]
    cfg = sweep_config(profile_config("tiny"), axes, fixed=[("crafter-fast", "utility", "task")])
    assert cfg.defenses["crafter-fast"]["kwargs"]["utility"] == "task"
    assert "utility" not in cfg.defenses["noise"]["kwargs"]
    with pytest.raises(ValueError, match="not swept"):
        sweep_config(profile_config("tiny"), axes, fixed=[("disco", "ratio", 0.5)])
    with pytest.raises(ValueError, match="swept parameter"):
        sweep_config(profile_config("tiny"), axes, fixed=[("noise", "sigma", 2.0)])


@pytest.mark.slow
def test_cli_craft_then_attack_any_release(demo_run: Path) -> None:
    from typer.testing import CliRunner

    from facecraft.cli import app

    runner = CliRunner()
    feats = demo_run / "released-noise.safetensors"
    common = ["--profile", "tiny", "--out", str(demo_run), "--device", "cpu"]
    r = runner.invoke(
        app, ["craft", "-d", "noise", "--limit", "6", "--output", str(feats), *common]
    )
    assert r.exit_code == 0, r.output
    assert feats.exists() and feats.with_suffix(".json").exists()
    r = runner.invoke(
        app,
        [
            "attack",
            "--features",
            str(feats),
            "-a",
            "blackbox",
            "--output",
            str(demo_run / "recon.safetensors"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    line = json.loads(r.output.strip().splitlines()[-1])
    assert (
        line["n"] == 6 and line["defense"] == "noise" and 0.0 <= line["eval_acc_top1_dlib"] <= 1.0
    )
    lo, hi = line["eval_acc_top1_dlib_ci95"]
    assert lo <= line["eval_acc_top1_dlib"] <= hi and 0.0 <= line["identities_exposed_dlib"] <= 1.0
    r = runner.invoke(app, ["attack", "--features", str(demo_run / "missing.safetensors"), *common])
    assert r.exit_code == 2 and "error" in r.output


@pytest.mark.slow
def test_finished_only_reports_without_computing(demo_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(demo_run, out)
    cells = next(
        p for p in (out / "cells").iterdir() if list(p.glob("crafter_10.0-*--whitebox.json"))
    )
    for f in cells.glob("crafter_10.0-*"):
        f.unlink()  # as if the run had been stopped before this setting
    (out / "results.json").unlink()
    run_demo(profile_config("tiny", device="cpu"), out, finished_only=True)
    r = json.loads((out / "results.json").read_text())
    assert (out / "report.html").exists()
    assert not any(row["defense"] == "crafter" and row["param"] == 10.0 for row in r["rows"])
    assert any(row["defense"] == "crafter" and row["param"] == 1.0 for row in r["rows"])
    assert not list(cells.glob("crafter_10.0-*"))  # nothing was recomputed


@pytest.mark.slow
def test_cells_are_keyed_per_defence_setting(demo_run: Path) -> None:
    """A changed defence recomputes only its own cells; a changed attack gets a fresh cells
    folder."""
    import dataclasses

    from facecraft.experiments.grid import defense_grid, profile_setting
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study
    from facecraft.experiments.sweep import parse_axis, sweep_config

    cfg = profile_config("tiny", device="cpu")
    runner = StudyRunner(Study(cfg, demo_run), None)
    setting = {(st.name, st.param): st for st in defense_grid(cfg)}[("crafter", 1.0)]
    assert profile_setting(cfg, "crafter", 1.0) == setting
    rows = runner.finished_rows(setting, ["whitebox", "blackbox"])
    assert len(rows) == 2 and all(r["setting"] == runner.stem(setting) for r in rows)
    assert runner.stem(setting).startswith("crafter_1.0-")
    changed = setting._replace(kwargs={**setting.kwargs, "outer_steps": 99})
    assert (
        runner.stem(changed) != runner.stem(setting)
        and runner.finished_rows(changed, ["whitebox"]) == []
    )
    other = sweep_config(cfg, [parse_axis("noise:sigma=0.1")])  # other defences: same folder
    assert StudyRunner(Study(other, demo_run), None).cells == runner.cells
    harder = dataclasses.replace(cfg, attacks={**cfg.attacks, "whitebox": {"steps": 16}})
    assert StudyRunner(Study(harder, demo_run), None).cells != runner.cells


def test_settings_run_slowest_first_and_come_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from facecraft.experiments import pool

    started = []

    def fake_task(task):
        started.append(task["defense"])
        return [{"defense": task["defense"], "param": task["param"]}]

    monkeypatch.setattr(pool, "run_task", fake_task)
    from facecraft.experiments.grid import Setting

    settings = [
        Setting("none", None, {}),
        Setting("noise", 1.0, {}),
        Setting("crafter", 0.1, {}),
        Setting("disco", 0.5, {}),
        Setting("crafter", 1.0, {}),
    ]
    rows = pool.run_settings(
        profile_config("tiny"), Path("unused"), settings, ["whitebox"], workers=1, backend="serial"
    )
    assert started == ["crafter", "crafter", "disco", "noise", "none"]
    assert [(r["defense"], r["param"]) for r in rows] == [(d, p) for d, p, _ in settings]


def test_a_model_trained_in_this_run_is_not_recorded_as_cached(tmp_path: Path) -> None:
    from facecraft.experiments.study import Study

    cfg = profile_config("tiny", device="cpu")
    first = Study(cfg, tmp_path)
    first.record_stage("prior", 12.0, cached=False)
    worker = Study(
        cfg, tmp_path, run_started=first.run_started
    )  # another process of the same invocation
    worker.record_stage("prior", 0.1, cached=True)
    stages = json.loads((tmp_path / "stages.json").read_text())["stages"]
    assert stages["prior"]["cached"] is False and stages["prior"]["seconds"] == 12.0
    later = Study(cfg, tmp_path)  # a later invocation loads it from the cache
    later.record_stage("prior", 0.1, cached=True)
    stages = json.loads((tmp_path / "stages.json").read_text())["stages"]
    assert stages["prior"]["cached"] is True and stages["prior"]["seconds"] == 12.0


@pytest.mark.slow
def test_shared_models_train_in_two_lanes(tmp_path: Path) -> None:
    """With workers, the prior and amortizer train in a second process; every stage is recorded as
    trained (not cached) and the settings can then load them all."""
    from facecraft.experiments.pool import train_shared
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study

    cfg = profile_config("tiny", device="cpu")
    runner = StudyRunner(Study(cfg, tmp_path), None)
    train_shared(runner, ["whitebox", "blackbox"], workers=2)
    stages = json.loads((tmp_path / "stages.json").read_text())["stages"]
    for name in ("target", "prior", "amortizer", "dlib_oracle", "evalnet", "decoder[target]"):
        assert stages[name]["cached"] is False, name
    names = {p.name.split("-")[0] for p in (tmp_path / "models").glob("*.safetensors")}
    assert {"target", "prior", "amortizer", "evalnet", "decoder"} <= names


def test_profile_setting_takes_the_swept_value_into_the_kwargs() -> None:
    from facecraft.experiments.grid import UNPROTECTED, Setting, profile_setting

    cfg = profile_config("tiny")
    first = profile_setting(cfg, "crafter")
    assert (
        first.param == cfg.defenses["crafter"]["sweep"]["values"][0]
        and first.kwargs["beta"] == first.param
    )
    other = profile_setting(cfg, "crafter", 7)
    assert other.param == 7.0 and other.kwargs["beta"] == 7.0 and other.kwargs["solver"] == "gn-cg"
    assert profile_setting(cfg, "none") == UNPROTECTED == Setting("none", None, {})
    assert (
        other.label == "crafter:7.0"
        and other.same_encoder
        and not profile_setting(cfg, "advlearn").same_encoder
    )


@pytest.mark.slow
def test_crafter_fast_fits_its_critic_once_per_study(demo_run: Path) -> None:
    """The fast Crafter's critic is trained on public faces by the first build, then loaded from its
    file."""
    from facecraft.experiments.grid import profile_setting
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study

    cfg = profile_config("tiny", device="cpu")
    setting = profile_setting(cfg, "crafter-fast", 5.0)
    first = StudyRunner(Study(cfg, demo_run), None).build_defense(setting)
    assert first.critic is not None and first.fit_trained
    again = StudyRunner(Study(cfg, demo_run), None).build_defense(setting)
    assert not again.fit_trained  # loaded, not trained
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.critic.state_dict().values(), again.critic.state_dict().values())
    )
    # beta does not change the critic, so another beta loads the same file
    other_beta = StudyRunner(Study(cfg, demo_run), None).build_defense(
        profile_setting(cfg, "crafter-fast", 1.0)
    )
    assert other_beta.beta == 1.0 and not other_beta.fit_trained


_TIMING_KEYS = ("attack_seconds", "protect_seconds", "train_scenario_seconds")


def _measured(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _TIMING_KEYS}


@pytest.mark.slow
def test_recomputed_noise_release_is_bit_identical(demo_run: Path, tmp_path: Path) -> None:
    """Issue 20: delete the noise setting's public release and adaptive cells and rerun: the rows
    are the same numbers (the noise stream restarts from (seed, release) instead of advancing across
    calls)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    before = json.loads((run / "results.json").read_text())
    adaptive = ["adaptive-blackbox", "adaptive-embedding"]
    cells = (
        run / before["cells"]
    )  # the demo's own cells (a sweep in the same run directory has its own)
    gone = [
        p
        for p in cells.iterdir()
        if p.name.startswith("noise_")
        and ("-public-features" in p.name or any(f"--{a}" in p.name for a in adaptive))
    ]
    assert any("-public-features" in p.name for p in gone) and len(gone) >= 4
    for p in gone:
        p.unlink()
    run_demo(profile_config("tiny", device="cpu"), run, attacks=adaptive, defenses=["noise"])
    after = json.loads((run / "results.json").read_text())
    old = {
        r["attack"]: _measured(r)
        for r in before["rows"]
        if r["defense"] == "noise" and r["attack"] in adaptive
    }
    new = {r["attack"]: _measured(r) for r in after["rows"]}
    assert set(new) == set(adaptive) and new == old
    assert after["peak_rss_mb"] > 0


@pytest.mark.slow
def test_demo_killed_anywhere_then_resumed_gives_the_same_numbers(
    demo_run: Path, tmp_path: Path
) -> None:
    """Issue 20, the short soak: SIGKILL/SIGTERM a `facecraft demo` of the noise setting at random
    moments (random --workers), finish it, and every measured number equals the uninterrupted
    run's."""
    import importlib.util
    import random
    import shutil

    spec = importlib.util.spec_from_file_location(
        "kill_soak", Path(__file__).parents[2] / "benchmarks" / "kill_soak.py"
    )
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    attacks = ["blackbox", "adaptive-blackbox", "embedding", "adaptive-embedding"]

    def noise_only(results: dict) -> dict:
        keep = {
            **results,
            "rows": [
                r for r in results["rows"] if r["defense"] == "noise" and r["attack"] in attacks
            ],
        }
        keep["adaptive_curves"] = [
            c
            for c in results["adaptive_curves"]
            if c["defense"] == "noise" and c["attack"] in attacks
        ]
        return keep

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    cells = (
        run / json.loads((run / "results.json").read_text())["cells"]
    )  # the demo's, not a sweep's
    removed = [p for p in cells.iterdir() if p.name.startswith("noise_")]
    assert any("-public-features" in p.name for p in removed)
    for p in removed:
        p.unlink()
    extra = ["-d", "noise", *[x for a in attacks for x in ("-a", a)]]
    events = soak.chain(run, "tiny", kills=2, max_delay=30.0, rng=random.Random(1), extra=extra)
    assert len(events) == 2
    reference = noise_only(json.loads((demo_run / "results.json").read_text()))
    assert len(reference["rows"]) == len(attacks)
    assert (
        soak.differences(reference, noise_only(json.loads((run / "results.json").read_text())))
        == []
    )


@pytest.mark.slow
def test_sweep_on_a_local_ray_cluster_equals_the_process_backend(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: a two-setting tiny sweep on a Ray cluster started on this machine (`ray start
    --head`, reached through RAY_ADDRESS as an existing cluster would be) gives the process
    backend's numbers."""
    import shutil
    import socket
    import subprocess
    import sys

    ray = pytest.importorskip("ray")  # CI installs the `cluster` extra, so this runs there
    from typer.testing import CliRunner

    from facecraft.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = str(Path(sys.executable).with_name("ray"))
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--object-store-memory",
            str(200 * 2**20),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    rows = {}
    try:
        for backend in ("process", "ray"):
            run = tmp_path / backend
            shutil.copytree(demo_run, run)
            if backend == "ray":
                monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
            r = CliRunner().invoke(
                app,
                [
                    "sweep",
                    "-g",
                    "noise:sigma=0.5,2",
                    "--profile",
                    "tiny",
                    "--out",
                    str(run),
                    "-a",
                    "blackbox",
                    "--workers",
                    "2",
                    "--backend",
                    backend,
                    "--name",
                    "pair",
                    "--device",
                    "cpu",
                ],
            )
            assert r.exit_code == 0, r.output
            res = json.loads((run / "sweeps" / "pair" / "results.json").read_text())
            rows[backend] = {
                (x["defense"], x["param"]): {k: v for k, v in x.items() if k not in _TIMING_KEYS}
                for x in res["rows"]
            }
    finally:
        ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
    assert set(rows["ray"]) == {("none", None), ("noise", 0.5), ("noise", 2.0)}
    assert rows["ray"] == rows["process"]


@pytest.mark.slow
def test_a_new_defence_runs_through_demo_sweep_and_report_without_edits_elsewhere(
    demo_run: Path, tmp_path: Path
) -> None:
    """Issue 19: adding a defence touches only its class and its registration; the demo, the sweep
    and the report run it by asking its traits."""
    from facecraft.defenses import DEFENSES, register_defense
    from facecraft.defenses.base import FeatureDefense
    from facecraft.experiments.report import build_report
    from facecraft.experiments.sweep import parse_axis, run_sweep, sweep_config

    class ScaledRelease(FeatureDefense):
        """Release ``scale * Enc(X)``."""

        relative_cost = 1

        def __init__(self, encoder, head=None, *, scale: float = 0.5) -> None:
            super().__init__(encoder, head)
            self.scale = scale

        @classmethod
        def name(cls) -> str:
            return "toy-scaled"

        def protect(self, images: torch.Tensor) -> torch.Tensor:
            return self.encoder(images) * self.scale

    register_defense("toy-scaled", ScaledRelease)
    try:
        attacks = ["blackbox", "embedding", "adaptive-blackbox"]
        base = profile_config("tiny", device="cpu")
        cfg = dataclasses.replace(
            base,
            defenses={
                "none": {},
                "toy-scaled": {"sweep": {"param": "scale", "values": [0.5]}},
            },
        )
        # the demo's trained models and data, not its cells or results
        out = tmp_path / "toy"
        shutil.copytree(
            demo_run,
            out,
            ignore=shutil.ignore_patterns("cells", "sweeps", "report*", "results.json"),
        )
        report = run_demo(cfg, out, attacks=attacks)
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert {(r["defense"], r["attack"]) for r in rows} == {
            ("none", "blackbox"),
            ("none", "embedding"),
            ("toy-scaled", "blackbox"),
            ("toy-scaled", "embedding"),
            ("toy-scaled", "adaptive-blackbox"),
        }
        assert "toy-scaled" in report.read_text()
        swept = sweep_config(base, [parse_axis("toy-scaled:scale=0.25,2")])
        sweep_report = run_sweep(
            swept, out, workers=1, backend="serial", attacks=attacks[:1], name="toy"
        )
        params = {
            r["param"]
            for r in json.loads(sweep_report.with_name("results.json").read_text())["rows"]
            if r["defense"] == "toy-scaled"
        }
        assert params == {0.25, 2.0}
        assert build_report(sweep_report.parent) == sweep_report
    finally:
        DEFENSES.unregister("toy-scaled")


@pytest.mark.slow
def test_a_private_pool_from_another_face_set_reuses_the_public_models(
    demo_run: Path, tmp_path: Path
) -> None:
    """Issue 17: the attacked people come from a set without attributes (here a folder of
    synthetic faces; `--dataset lfw` the same way), the attacker and the target keep the study's
    public data (their trained models are reused), utility is measured on the study's own faces."""
    import numpy as np
    from PIL import Image

    from facecraft.data.synthetic import make_synthetic
    from facecraft.experiments.private_pool import with_private_pool

    pool = tmp_path / "people"
    # five people with 12 faces (the pool: at least 10 each) and one with 2 (left out, as LFW's
    # many people with a few images are)
    made = make_synthetic(5, 12, 1, 2, 32, seed=5)
    images = torch.cat([s.float_images() for s in (made.eval_train, made.eval_test, made.public)])
    people = torch.cat(
        [made.eval_train.identities, made.eval_test.identities, made.public.identities + 5]
    )
    for i, (img, who) in enumerate(zip(images, people.tolist())):
        (pool / f"person{who}").mkdir(parents=True, exist_ok=True)
        pixels = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(pool / f"person{who}" / f"{i:03d}.png")
    out = tmp_path / "run"
    shutil.copytree(
        demo_run, out, ignore=shutil.ignore_patterns("cells", "sweeps", "report*", "results.json")
    )
    cfg = with_private_pool(profile_config("tiny", device="cpu"), "folder", utility_faces=8)
    run_demo(cfg, out, data_root=str(pool), attacks=["blackbox", "embedding"], defenses=["none"])
    r = json.loads((out / "results.json").read_text())
    k = 5
    assert r["dataset"] == "folder" and r["n_identities"] == k
    assert r["chance"] == pytest.approx(1 / k) and "study's own data" in r["utility_faces"]
    assert all(0.0 < row["mean_auc"] <= 1.0 for row in r["rows"])
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert stages["target"]["cached"] and stages["prior"]["cached"]  # public models reused
    assert not stages["dlib_oracle"]["cached"]  # the gallery is the pool's
