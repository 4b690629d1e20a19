"""Benchmarks behind ``facecraft bench``: scripts that print figures, not timed tests.

One benchmark per module: :mod:`~facecraft.experiments.bench.craft` (the paper's Crafter against
a fast configuration at equal privacy, issue 5), :mod:`~facecraft.experiments.bench.fast_profile`
(where the fast configuration's time goes), :mod:`~facecraft.experiments.bench.spectrum` (the
inversion Hessian's extreme eigenvalues), :mod:`~facecraft.experiments.bench.latency` (a
protector's per-image latency) and :mod:`~facecraft.experiments.bench.train_steps` (seconds per
step of the foundation trainings). :class:`CraftBench` (one batch and its measurement) is shared by
the first two and by ``benchmarks/``; the presets come from the profiles
(:data:`~facecraft.experiments.profiles.BENCH_DEFAULTS`).
"""

from facecraft.experiments.bench.batch import CraftBench
from facecraft.experiments.bench.craft import bench_craft, craft_summary
from facecraft.experiments.bench.craft_config import CraftBenchConfig
from facecraft.experiments.bench.fast_profile import profile_fast
from facecraft.experiments.bench.latency import bench_latency, bench_protector_latency
from facecraft.experiments.bench.spectrum import bench_spectrum
from facecraft.experiments.bench.train_steps import bench_train_steps
from facecraft.experiments.profiles import BENCH_DEFAULTS, bench_defaults

__all__ = [
    "BENCH_DEFAULTS",
    "CraftBench",
    "CraftBenchConfig",
    "bench_craft",
    "bench_defaults",
    "bench_latency",
    "bench_protector_latency",
    "bench_spectrum",
    "bench_train_steps",
    "craft_summary",
    "profile_fast",
]
