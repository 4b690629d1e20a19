"""The ``facecraft`` command: parse arguments into configs, call ``experiments``; no logic here."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from facecraft.experiments.config import RunConfig, profile_config

app = typer.Typer(
    help="Protect face features against inversion (Crafter) and audit feature releases.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare or fetch face data.", no_args_is_help=True)
train_app = typer.Typer(
    help="Train the target network, the attacker's prior and amortizer.", no_args_is_help=True
)
list_app = typer.Typer(help="List registered attacks or defences.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmark scripts that print figures (not timed tests).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(list_app, name="list")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)


def _fail(e: Exception) -> None:
    """Print ``e`` as one unwrapped ``error:`` line (its text is not read as markup) and exit with code 2."""
    from rich.markup import escape

    console.print(
        "[red]error:[/red] " + escape(" ".join(str(e).split())), soft_wrap=True, highlight=False
    )
    raise typer.Exit(2)


def _check_out(out: Optional[Path]) -> Optional[Path]:
    """``--out``: refused (one line) when it, or a parent of it, is a file."""
    from facecraft._validation import check_run_dir

    if out is not None:
        try:
            check_run_dir(out, "--out")
        except ValueError as e:
            _fail(e)
    return out


def _workers(value: str) -> int:
    """``--workers``: a positive count, or ``auto`` (one per CPU core, at most 2: the settings of a study
    share memory bandwidth, and two already halve a demo on a 2-core machine)."""
    if value == "auto":
        return max(1, min(2, os.cpu_count() or 1))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        _fail(ValueError(f"--workers must be a positive integer or 'auto', got {value!r}"))
    return n


def _check_device(device: str) -> str:
    """``--device``: refused (one line) when this machine or torch build lacks it."""
    from facecraft._torchutils import resolve_device

    try:
        resolve_device(device)
    except ValueError as e:
        _fail(e)
    return device


ProfileOpt = typer.Option(
    "small",
    "--profile",
    "-p",
    help="tiny (tests, synthetic data), small (CPU study) or paper (GPU).",
)
DataRootOpt = typer.Option(
    None, "--data-root", help="Dataset folder or its parent (default: $FACECRAFT_DATA)."
)
OutOpt = typer.Option(
    Path("runs/default"),
    "--out",
    "-o",
    help="Run directory (reused as a cache).",
    callback=_check_out,
)
DeviceOpt = typer.Option(
    "auto", "--device", help="auto, cpu, cuda, cuda:1, mps ...", callback=_check_device
)
DatasetOpt = typer.Option(
    None,
    "--dataset",
    help="celeba, celeba-official, lfw, folder or synthetic (default: the profile's).",
)


class _Bars:
    """Turns ``progress(done, total, desc)`` callbacks into one live display of two lines: the whole run
    (defence settings done, elapsed, estimate left) and the step now running (stage or cell), which each
    new step replaces."""

    #: the description under which the pipeline reports settings done (the whole run's line)
    OVERALL = "defence settings"

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.overall = None
        self.last = (0, 0, "")

    def __enter__(self) -> "_Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int, desc: str) -> None:
        if desc == self.OVERALL:
            if self.overall is None:
                self.overall = self.progress.add_task(desc, total=total)
            self.progress.update(self.overall, completed=done, total=total)
            return
        if self.task is None:
            self.task = self.progress.add_task(desc, total=total)
        elif (total, desc) != self.last[1:] or done < self.last[0]:
            self.progress.reset(self.task, total=total, completed=0, description=desc)
        self.progress.update(self.task, completed=done, description=desc)
        self.last = (done, total, desc)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a scheduler's stop) into ``SystemExit``, so the process pools of a demo or
    sweep are shut down by their ``with`` blocks instead of outliving the command."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _config(profile: str, dataset: Optional[str], device: str) -> RunConfig:
    cfg = profile_config(profile, device=device)
    if dataset:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    return cfg


#: ``--faces``: how many private test faces are attacked (``eval.n_images``)
FacesOpt = typer.Option(
    None,
    "--faces",
    help="Private test faces to attack: a number, or 'all' (default: the profile's).",
)


def _with_faces(cfg: RunConfig, faces: Optional[str]) -> RunConfig:
    """``cfg`` with ``eval.n_images`` set from ``--faces`` (a positive number or ``all``)."""
    if faces is None:
        return cfg
    if faces.strip().lower() == "all":
        n: Optional[int] = None
    else:
        try:
            n = int(faces)
        except ValueError:
            raise ValueError(f"--faces must be a positive number or 'all', got {faces!r}") from None
        if n < 1:
            raise ValueError(f"--faces must be a positive number or 'all', got {faces!r}")
    return dataclasses.replace(cfg, eval={**cfg.eval, "n_images": n})


def _study(
    profile: str, dataset: Optional[str], data_root: Optional[str], out: Path, device: str, bars
):
    from facecraft.experiments.study import Study

    return Study(_config(profile, dataset, device), out, data_root=data_root, progress=bars)


@data_app.command("prepare")
def data_prepare(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    force: bool = typer.Option(
        False, "--force", help="Prepare the split again even when a matching one is cached."
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Build the identity-disjoint public / eval_train / eval_test split and cache it as uint8 arrays.

    A cached split is reused only while the data root's file list (names, sizes, modification times) is the
    one it was made from; --force prepares it again regardless.
    """
    _setup_logging(verbose)
    from facecraft.data import DataError

    try:
        with _Bars() as bars:
            study = _study(profile, dataset, data_root, out, "cpu", bars)
            study.force_data = force
            data = study.data
    except (DataError, ValueError) as e:
        _fail(e)
    console.print_json(json.dumps(data.manifest.get("counts", {})))


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="Only 'lfw' is fetchable."),
    data_root: Path = typer.Option(..., "--data-root", help="Where to unpack."),
    url: Optional[str] = typer.Option(None, help="Override the download URL (file:// works)."),
    sha256: Optional[str] = typer.Option(None, help="Expected SHA-256 of the archive."),
) -> None:
    """Download the official LFW archive (needs a network), verify its checksum and unpack it."""
    from facecraft.data import DataError, fetch_lfw

    if name != "lfw":
        _fail(
            ValueError(
                f"cannot fetch {name!r}; only 'lfw' is public without a login (CelebA: see README)"
            )
        )
    kwargs = {k: v for k, v in {"url": url, "sha256": sha256}.items() if v}
    try:
        with _Bars() as bars:
            path = fetch_lfw(data_root, progress=bars, **kwargs)
    except (DataError, OSError) as e:
        _fail(e)
    console.print(f"LFW unpacked at {path}")


def _train(
    which: str,
    profile: str,
    dataset: Optional[str],
    data_root: Optional[str],
    out: Path,
    device: str,
    verbose: bool,
) -> None:
    _setup_logging(verbose)
    from facecraft.data import DataError

    try:
        with _Bars() as bars:
            study = _study(profile, dataset, data_root, out, device, bars)
            getattr(study, which)()
    except (DataError, ValueError) as e:
        _fail(e)
    stages = json.loads((out / "stages.json").read_text())["stages"]
    console.print_json(json.dumps(stages.get(which, {})))


@train_app.command("target")
def train_target_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the split target network (attribute classifier) on public images; report mean AUC on eval_test."""
    _train("target", profile, dataset, data_root, out, device, verbose)


@train_app.command("prior")
def train_prior_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the attacker's WGAN-GP face prior on public images; writes a sample grid PNG."""
    _train("prior", profile, dataset, data_root, out, device, verbose)


@train_app.command("amortizer")
def train_amortizer_cmd(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Train the amortizer Amor(Enc(G(z))) -> z (trains target and prior first if needed)."""
    _train("amortizer", profile, dataset, data_root, out, device, verbose)


@list_app.command("attacks")
def list_attacks() -> None:
    """Registered attack names."""
    from facecraft.attacks import available_attacks

    for n in available_attacks():
        typer.echo(n)


@list_app.command("defenses")
def list_defenses() -> None:
    """Registered defence names."""
    from facecraft.defenses import available_defenses

    for n in available_defenses():
        typer.echo(n)


@app.command()
def evaluate(
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    defense: Optional[List[str]] = typer.Option(
        None, "--defense", "-d", help="Defence(s) to evaluate (repeat)."
    ),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat)."
    ),
    skip_evalnet: bool = typer.Option(
        False, "--skip-evalnet", help="Judge with the dlib oracle only (no Eval-net training)."
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Attack the chosen defences' releases and write results.json (Eval Acc, FSIM, SSIM, PSNR, epsilon-PII, AUC)."""
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.pipeline import run_demo

    try:
        with _Bars() as bars:
            cfg = _config(profile, dataset, device)
            if skip_evalnet:
                cfg = dataclasses.replace(cfg, eval={**cfg.eval, "oracles": ["dlib"]})
            report = run_demo(
                cfg,
                out,
                data_root=data_root,
                progress=bars,
                attacks=attack or None,
                defenses=defense or None,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(f"[green]done[/green]: {out / 'results.json'}, {report}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory holding results.json."),
) -> None:
    """Write report.html (self-contained) and report.md from a run directory's results."""
    from facecraft.experiments.pipeline import build_report

    try:
        path = build_report(run_dir)
    except ValueError as e:
        _fail(e)
    console.print(f"[green]wrote[/green] {path} and {path.with_suffix('.md')}")


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
    """Extreme eigenvalues of the inversion Hessian at z* (which Neumann step converges): prints one JSON line."""
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
    from facecraft.experiments.bench import bench_craft, bench_defaults, profile_fast

    defaults = bench_defaults(profile)
    try:
        fast = _json_object(fast_kwargs, "--fast-kwargs")
        if json_out:
            from facecraft._validation import check_output_stem

            for p in (json_out, json_out.with_name(json_out.stem + ".full.json")):
                check_output_stem(p, ("",), run_dir=out, option="--json-out")
        with _Bars() as bars:
            study = _study(profile, None, data_root, out, device, bars)
            result = bench_craft(
                study,
                batch=batch,
                num_threads=threads,
                progress=bars,
                pii_repeats=pii_repeats,
                reference_steps=reference_steps or defaults["reference_steps"],
                max_fast_steps=max_fast_steps or defaults["max_fast_steps"],
                fast_kwargs=fast,
                fast_critic_steps=fast_critic_steps,
                fast_start_steps=fast_start_steps,
                confirm_repeats=confirm_repeats,
            )
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
    line = json.dumps(
        {
            k: result[k]
            for k in (
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
                "fast_setup_s",
                "ratio_with_setup",
            )
        }
    )
    for name, secs in hot:
        console.print(f"{secs:9.3f} s  {name}")
    if json_out:
        atomic_write_text(json_out, line + "\n")
        atomic_write_json(json_out.with_name(json_out.stem + ".full.json"), result)
    typer.echo(line)


@app.command()
def demo(
    profile: str = typer.Option("tiny", "--profile", "-p", help="tiny, small or paper."),
    data_root: Optional[str] = DataRootOpt,
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", callback=_check_out),
    device: str = DeviceOpt,
    workers: str = typer.Option(
        "auto",
        "--workers",
        "-w",
        help="Defence settings run at once (processes); auto: one per CPU core, at most 2.",
    ),
    faces: Optional[str] = FacesOpt,
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat; default: every one)."
    ),
    defense: Optional[List[str]] = typer.Option(
        None,
        "--defense",
        "-d",
        help="Defence(s) of the profile to run (repeat; default: every demo one).",
    ),
    finished_only: bool = typer.Option(
        False,
        "--finished-only",
        help="Compute nothing: results and report of the cells finished so far.",
    ),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Run the whole study: data, models, defences x attacks, results.json and a report. Resumable."""
    _setup_logging(verbose)
    _exit_on_sigterm()
    from facecraft.data import DataError
    from facecraft.experiments.pipeline import run_demo

    try:
        with _Bars() as bars:
            result = run_demo(
                _with_faces(_config(profile, None, device), faces),
                out,
                data_root=data_root,
                progress=bars,
                workers=_workers(workers),
                finished_only=finished_only,
                attacks=attack or None,
                defenses=defense or None,
            )
    except (DataError, ValueError) as e:
        _fail(e)
    from facecraft.experiments.report import headline

    console.print(
        headline(json.loads((result.parent / "results.json").read_text())), highlight=False
    )
    console.print(f"[green]done[/green]: report at {result}")


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
    """Seconds per step of the target, prior and amortizer trainings of a profile, and the predicted totals."""
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
    """A defence's per-image latency as a multiple of the encoder's forward, batch 1 and 64: one JSON line
    (for an exportable defence also its bare network's, ``edge_module``: what a device runs).

    Trains the profile's setting of the defence (or reuses it from --out, as the study stores it; --faces
    selects the study's cells folder, where distilled-crafter finds its teacher's releases).
    """
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.bench import bench_protector_latency
    from facecraft.experiments.pipeline import StudyRunner, profile_setting
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


@app.command("export")
def export_cmd(
    defense: str = typer.Option(
        ..., "--defense", "-d", help="An exportable defence (e.g. distilled-crafter)."
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    output: Path = typer.Option(
        ..., "--out", "-o", help="The model file to write (plus FILE.json)."
    ),
    param: Optional[float] = typer.Option(
        None,
        "--param",
        help="The value of the profile's swept "
        "parameter (e.g. beta); default: the profile's first.",
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    run_dir: Path = typer.Option(
        Path("runs/small"),
        "--run-dir",
        help="Run directory holding the study's models and cells (reused as a cache).",
    ),
    faces: Optional[str] = FacesOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Write encoder + protector as one model (images in [0, 1] -> released features) and a JSON sidecar.

    The sidecar records input size, normalisation, feature shape, the defence's config and, when the study in
    --run-dir (same --faces) has finished cells for the setting, its measured privacy.
    """
    _setup_logging(verbose)
    from facecraft.data import DataError
    from facecraft.experiments.export import check_exportable, export_study_defense, sidecar_path
    from facecraft.experiments.pipeline import DEMO_ATTACKS, StudyRunner, profile_setting
    from facecraft.experiments.study import Study

    try:
        check_exportable(defense)
        cfg = _with_faces(_config(profile, None, device), faces)
        setting = profile_setting(cfg, defense, param)
        with _Bars() as bars:
            runner = StudyRunner(Study(cfg, run_dir, data_root=data_root, progress=bars), bars)
            record = export_study_defense(runner, setting, output, fmt=fmt, attacks=DEMO_ATTACKS)
    except (DataError, ValueError, ImportError) as e:
        _fail(e)
    console.print(
        f"[green]wrote[/green] {output} and {sidecar_path(output)} (features {record['feature_shape']})"
    )


@app.command()
def craft(
    defense: str = typer.Option(
        ..., "--defense", "-d", help="A registered defence (facecraft list defenses)."
    ),
    param: Optional[float] = typer.Option(
        None,
        "--param",
        help="The value of the profile's swept parameter "
        "(e.g. beta for crafter); default: the profile's first.",
    ),
    split: str = typer.Option("eval_test", "--split", help="eval_test, eval_train or public."),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Only the first N images of the split."
    ),
    output: Path = typer.Option(
        ..., "--output", help="Where to write the features (.safetensors + .json)."
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Protect a split's faces with a defence and write the released features (with identities) to OUTPUT."""
    _setup_logging(verbose)
    import torch

    from facecraft._io import save_checkpoint
    from facecraft._validation import check_number, check_output_stem
    from facecraft.attacks._common import query_in_batches
    from facecraft.data import DataError
    from facecraft.defenses import get_defense_class
    from facecraft.experiments.pipeline import StudyRunner, profile_setting
    from facecraft.experiments.study import Study

    try:
        cfg = _config(profile, None, device)
        get_defense_class(defense)  # an unknown name is refused before any work
        check_number("--param", param, optional=True)
        check_number("--limit", limit, low=1, integer=True, optional=True)
        setting = profile_setting(cfg, defense, param)
        if split not in ("eval_test", "eval_train", "public"):
            raise ValueError(f"--split must be eval_test, eval_train or public, got {split!r}")
        check_output_stem(
            output.with_suffix(""),
            (".safetensors", ".json"),
            run_dir=out,
            option="--output",
            kind="released-features",
        )
        with _Bars() as bars:
            study = Study(cfg, out, data_root=data_root, progress=bars)
            d = StudyRunner(study, bars).build_defense(setting)
            faces = getattr(study.data, split)
            n = len(faces) if limit is None else min(limit, len(faces))
            feats = query_in_batches(
                d,
                faces.float_images(slice(0, n)),
                torch.device("cpu"),
                64,
                bars,
                f"protect ({defense})",
            )
        save_checkpoint(
            output.with_suffix(""),
            {"features": feats, "identities": faces.identities[:n]},
            kind="released-features",
            meta={
                "defense": defense,
                "param": setting.param,
                "split": split,
                "profile": profile,
                "kwargs": setting.kwargs,
            },
        )
    except (DataError, ValueError) as e:
        _fail(e)
    console.print(
        f"[green]wrote[/green] {output.with_suffix('.safetensors')} ({n} released features)"
    )


@app.command()
def attack(
    features: Path = typer.Option(
        ..., "--features", help="Released features written by `facecraft craft`."
    ),
    name: str = typer.Option("whitebox", "--attack", "-a", help="whitebox, blackbox or hybrid."),
    output: Optional[Path] = typer.Option(
        None, "--output", help="Also write the reconstructions here."
    ),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Path = OutOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Reconstruct faces from any feature release of the target's encoder and judge them with the dlib oracle.

    Prints one JSON line: Eval Acc top-1/top-5 (dlib, gallery = eval_train) when the file holds identities,
    with 95% intervals (bootstrap over identities, and per-face Wilson) and the share of identities exposed.
    """
    _setup_logging(verbose)
    from facecraft._io import CheckpointError, load_checkpoint, save_checkpoint
    from facecraft._validation import check_output_stem
    from facecraft.data import DataError
    from facecraft.defenses import create_defense
    from facecraft.experiments.pipeline import UNPROTECTED, StudyRunner
    from facecraft.experiments.study import config_feature_shape
    from facecraft.metrics.identity import topk_hits
    from facecraft.metrics.stats import accuracy_summary

    try:
        if name not in ("whitebox", "blackbox", "hybrid"):
            raise ValueError(
                f"--attack must be whitebox, blackbox or hybrid (the adaptive ones need the defence: "
                f"use `facecraft evaluate`), got {name!r}"
            )
        if output:
            check_output_stem(
                output.with_suffix(""),
                (".safetensors", ".json"),
                run_dir=out,
                option="--output",
                kind="reconstructions",
            )
        tensors, meta = load_checkpoint(features.with_suffix(""), kind="released-features")
        _check_release(
            features.with_suffix(".safetensors"),
            tensors,
            config_feature_shape(_config(profile, None, device)),
        )
        with _Bars() as bars:
            study = _study(profile, None, data_root, out, device, bars)
            runner = StudyRunner(study, bars)
            target = study.target()
            release = create_defense(
                "none", encoder=target.encoder, head=target.head
            )  # the encoder it came from
            recon = runner.make_attack(name, UNPROTECTED, release)(
                tensors["features"].to(study.device), progress=bars
            )
            result = {
                "attack": name,
                "features": str(features),
                "defense": meta.get("defense"),
                "param": meta.get("param"),
                "n": int(recon.shape[0]),
            }
            if "identities" in tensors:
                scores = study.dlib_oracle().scores(recon.cpu(), progress=bars)
                for k in (1, 5):
                    summ = accuracy_summary(
                        topk_hits(scores, tensors["identities"], k=k), tensors["identities"]
                    )
                    result[f"eval_acc_top{k}_dlib"] = summ["acc"]
                    result[f"eval_acc_top{k}_dlib_ci95"] = summ["ci95"]
                    result[f"eval_acc_top{k}_dlib_wilson95"] = summ["wilson95"]
                    if k == 1:
                        result["identities_exposed_dlib"] = summ["exposed"]
        if output:
            save_checkpoint(
                output.with_suffix(""),
                {"images": recon.cpu()},
                kind="reconstructions",
                meta={"attack": name, "features": str(features)},
            )
    except (DataError, ValueError, TypeError, CheckpointError) as e:
        _fail(e)
    typer.echo(json.dumps(result))


def _check_release(path: Path, tensors: Dict[str, Any], shape: tuple) -> None:
    """``--features``: a non-empty finite float32 ``features`` tensor of the encoder's shape, and identities
    (when present) one integer per feature vector."""
    from facecraft._validation import validate_features

    if "features" not in tensors:
        raise ValueError(f"{path}: holds no 'features' tensor (keys: {sorted(tensors) or 'none'})")
    validate_features(tensors["features"], shape=shape, name=str(path))
    ids = tensors.get("identities")
    if ids is not None and (
        ids.dim() != 1
        or ids.shape[0] != tensors["features"].shape[0]
        or ids.is_floating_point()
        or ids.is_complex()
    ):
        raise ValueError(
            f"{path}: 'identities' must be one integer per feature vector "
            f"({tensors['features'].shape[0]}), got {ids.dtype} of shape {tuple(ids.shape)}"
        )


@app.command()
def sweep(
    grid: List[str] = typer.Option(
        ..., "--grid", "-g", help="DEFENCE:PARAM=V1,V2,... (repeat), e.g. noise:sigma=0.5,1,2"
    ),
    profile: str = typer.Option("small", "--profile", "-p", help="tiny, small or paper."),
    data_root: Optional[str] = DataRootOpt,
    out: Path = typer.Option(Path("runs/small"), "--out", "-o", callback=_check_out),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="Attack(s) to run (repeat)."
    ),
    workers: int = typer.Option(2, "--workers", "-w", help="Defence settings run at once."),
    backend: str = typer.Option("process", "--backend", help="serial, process or ray."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Sub-folder of OUT/sweeps for the results."
    ),
    skip_evalnet: bool = typer.Option(
        False, "--skip-evalnet", help="Judge with the dlib oracle only."
    ),
    faces: Optional[str] = FacesOpt,
    device: str = DeviceOpt,
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Sweep defence parameters (plus the unprotected reference), settings in parallel; resumable.

    Reuses the models of a demo in the same --out directory; writes OUT/sweeps/NAME/results.json and a report.
    """
    _setup_logging(verbose)
    _exit_on_sigterm()
    from facecraft._validation import check_path_name
    from facecraft.data import DataError
    from facecraft.experiments.sweep import parse_axis, run_sweep, sweep_config

    try:
        if name is not None:
            check_path_name(name, "--name")
        cfg = sweep_config(
            _with_faces(_config(profile, None, device), faces), [parse_axis(g) for g in grid]
        )
        if skip_evalnet:
            cfg = dataclasses.replace(cfg, eval={**cfg.eval, "oracles": ["dlib"]})
        with _Bars() as bars:
            report_path = run_sweep(
                cfg,
                out,
                workers=workers,
                backend=backend,
                attacks=attack or None,
                data_root=data_root,
                progress=bars,
                name=name,
            )
    except (DataError, ValueError, RuntimeError) as e:
        _fail(e)
    console.print(f"[green]done[/green]: {report_path}")


if __name__ == "__main__":  # pragma: no cover
    app()
