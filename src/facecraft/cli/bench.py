"""``facecraft bench ...``: benchmark scripts that print figures (not timed tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import typer

from facecraft.cli._common import (
    DataRootOpt,
    DeviceOpt,
    FacesOpt,
    OutOpt,
    ProfileOpt,
    _Bars,
    _config,
    _fail,
    _setup_logging,
    _study,
    _with_faces,
    bench_app,
    console,
)


@bench_app.command("spectrum")
def bench_spectrum_cmd(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    batch: int = typer.Option(32, help="Private faces."),
    inner_steps: int = typer.Option(40, help="Inversion steps after the amortizer."),
    iters: int = typer.Option(40, help="Power iterations per end of the spectrum."),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Extreme eigenvalues of the inversion Hessian at z*: prints one JSON line.

    They say which Neumann step converges."""
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.bench import bench_spectrum

    try:
        with _Bars() as bars:
            study = _study(profile, None, data_root, out, device, bars)
            result = bench_spectrum(study, batch=batch, inner_steps=inner_steps, iters=iters)
    except (DataError, ValueError) as e:
        _fail(e)
    typer.echo(json.dumps(result))


def _json_object(text: Optional[str], option: str) -> Optional[Dict[str, Any]]:
    """The JSON object given to ``option`` (None when not given); ValueError for anything else."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{option}: not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"{option}: expected a JSON object such as '{{\"cg_iters\": 4}}', got {text!r}"
        )
    return value


@bench_app.command("craft")
def bench_craft_cmd(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    batch: int = typer.Option(32, help="Private faces in the batch."),
    reference_steps: Optional[int] = typer.Option(None, help="Outer steps of the reference run."),
    max_fast_steps: Optional[int] = typer.Option(None, help="Cap on the fast run's outer steps."),
    threads: int = typer.Option(1, help="torch intra-op threads during the timed runs."),
    json_out: Optional[Path] = typer.Option(None, help="Also write the JSON line to this file."),
    top: int = typer.Option(15, help="Functions to list in the fast run's profile (0: none)."),
    pii_repeats: int = typer.Option(3, help="Seeded epsilon-PII estimates averaged per release."),
    fast_kwargs: Optional[str] = typer.Option(
        None,
        help="JSON object of Crafter arguments updating the fast configuration, "
        "e.g. '{\"critic_init_steps\": 30}'.",
    ),
    fast_start_steps: Optional[int] = typer.Option(
        None,
        min=1,
        help="Outer steps of the fast search's first chunk (Default: reference steps // 4).",
    ),
    confirm_repeats: int = typer.Option(
        5,
        min=0,
        help="Fresh-seed epsilon-PII estimates that re-check the accepted fast release "
        "and the reference after the search (0: none).",
    ),
    fast_critic_steps: Optional[int] = typer.Option(
        None,
        min=0,
        help="Updates of the fast configuration's critic, trained once on public faces "
        "(timed apart as fast_setup_s); 0: a fresh critic per batch. "
        "Default: the profile's.",
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Reference (paper) vs fast Crafter on one batch at equal epsilon-PII: prints one JSON line."""
    _setup_logging(verbose)
    from facecraft._io import atomic_write_json, atomic_write_text
    from facecraft.data import DataError
    from facecraft.experiments.bench import (
        CraftBenchConfig,
        bench_craft,
        craft_summary,
        profile_fast,
    )

    full_json = json_out.with_name(json_out.stem + ".full.json") if json_out else None
    try:
        fast = _json_object(fast_kwargs, "--fast-kwargs")
        if json_out:
            from facecraft._validation import check_output_stem

            for p in (json_out, full_json):
                check_output_stem(p, ("",), run_dir=out, option="--json-out")
        config = CraftBenchConfig(  # step counts 0 or unset: the profile's preset
            batch=batch,
            reference_steps=reference_steps or None,
            max_fast_steps=max_fast_steps or None,
            fast_kwargs=fast,
            fast_start_steps=fast_start_steps,
            fast_critic_steps=fast_critic_steps,
            pii_repeats=pii_repeats,
            confirm_repeats=confirm_repeats,
            num_threads=threads,
        )
        with _Bars() as bars:
            study = _study(profile, None, data_root, out, device, bars)
            result = bench_craft(study, config, progress=bars)
            hot = (
                profile_fast(
                    study,
                    batch=batch,
                    top=top,
                    num_threads=threads,
                    fast_kwargs=fast,
                    fast_critic_steps=fast_critic_steps,
                )
                if top
                else []
            )
    except (DataError, ValueError) as e:
        _fail(e)
    line = json.dumps(craft_summary(result))
    for name, secs in hot:
        console.print(f"{secs:9.3f} s  {name}")
    if json_out:
        atomic_write_text(json_out, line + "\n")
        atomic_write_json(full_json, result)
    typer.echo(line)


@bench_app.command("steps")
def bench_steps_cmd(
    profile: str = ProfileOpt,
    threads: int = typer.Option(2, help="torch intra-op threads."),
    repeats: int = typer.Option(5, help="Timed steps per training (after one warm-up)."),
    public_images: Optional[int] = typer.Option(
        None,
        help="Size of the public split (9872 for celeba-chips), to predict the target's total.",
    ),
) -> None:
    """Seconds per step of a profile's target, prior and amortizer trainings, and the totals."""
    from facecraft.experiments.bench import bench_train_steps

    cfg = _config(profile, None, "cpu")
    out = bench_train_steps(cfg, repeats=repeats, num_threads=threads)
    if public_images:
        steps = cfg.target.epochs * -(-public_images // cfg.target.batch_size)
        out["target_predicted_s"] = out["target_s_per_step"] * steps
    out["prior_predicted_s"] = out["prior_s_per_step"] * cfg.prior.steps
    out["amortizer_predicted_s"] = out["amortizer_s_per_step"] * cfg.amortizer.steps
    typer.echo(json.dumps({"profile": profile, **{k: round(v, 4) for k, v in out.items()}}))


@bench_app.command("latency")
def bench_latency_cmd(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    defense: str = typer.Option(
        "amortized-crafter",
        "--defense",
        "-d",
        help="A trained one-pass defence: amortized-crafter or distilled-crafter.",
    ),
    beta: Optional[float] = typer.Option(
        None, help="The defence's swept value (beta); default: the profile's first."
    ),
    faces: Optional[str] = FacesOpt,
    threads: int = typer.Option(1, help="torch intra-op threads during the timed runs."),
    repeats: int = typer.Option(20, help="Timed calls per batch size (median reported)."),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """A defence's latency per image as a multiple of the encoder's: one JSON line.

    Batch 1 and 64; for an exportable defence also its bare network's (``edge_module``: what a
    device runs).

    Trains the profile's setting of the defence (or reuses it from --out, as the study stores it;
    --faces selects the study's cells folder, where distilled-crafter finds its teacher's releases).
    """
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.bench import bench_protector_latency
    from facecraft.experiments.grid import profile_setting
    from facecraft.experiments.runner import StudyRunner
    from facecraft.experiments.study import Study

    try:
        with _Bars() as bars:
            cfg = _with_faces(_config(profile, None, device), faces)
            if defense not in cfg.defenses:
                raise ValueError(f"the {profile} profile has no {defense} settings")
            setting = profile_setting(cfg, defense, beta)
            study = Study(cfg, out, data_root=data_root, progress=bars)
            d = StudyRunner(study, bars).build_defense(setting)
            images = study.data.eval_test.float_images(study.eval_indices()[:64]).to(study.device)
            result = bench_protector_latency(
                study.target().encoder,
                d,
                images,
                batch_sizes=(1, 64),
                repeats=repeats,
                num_threads=threads,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    typer.echo(
        json.dumps({"profile": profile, "defense": defense, "beta": setting.param, **result})
    )
