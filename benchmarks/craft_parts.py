"""Where the fast Crafter configuration's time goes, by part of the algorithm (issue 5).

Runs ``bench craft``'s fast configuration (with its pre-trained critic) on the benchmark's batch for
each ``--steps`` value under ``cProfile`` and prints one JSON line each: the run's seconds and the
cumulative seconds of the inner inversion (``invert_latent``: the first solve's ``init_steps``, then
``inner_steps`` per outer step), the critic updates (``train_critic``), the hypergradient
(``implicit_feature_grad``) and
the prior term (``_prior_score``). Prints figures; not a test. One thread, so run it pinned:

    taskset -c 0 python benchmarks/craft_parts.py --run runs/small-v2 --steps 3 10
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
from pathlib import Path

import torch

from facecraft.experiments.bench import CraftBench, bench_defaults
from facecraft.experiments.profiles import profile_config
from facecraft.experiments.study import Study

PARTS = ("invert_latent", "train_critic", "implicit_feature_grad", "_prior_score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", type=Path, required=True, help="a study's run directory with its trained models"
    )
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--steps", type=int, nargs="+", default=[3, 10], help="outer steps of each profiled run"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    study = Study(profile_config(args.profile, device="cpu"), args.run, data_root=args.data_root)
    bench = CraftBench(study, args.batch, eval_dlib=False, pii_repeats=1, progress=None)
    d = bench_defaults(args.profile)
    critic, _ = bench.defender_critic(
        d["fast_critic"]["steps"], d["fast_critic"]["faces"], d["fast"]
    )
    bench.warmup(d["fast"], critic)
    for steps in args.steps:
        prof = cProfile.Profile()
        prof.enable()
        _, secs, _ = bench.protect(d["fast"], steps, "fast", critic)
        prof.disable()
        out = {"steps": steps, "seconds": round(secs, 2)}
        for (_path, _line, fn), v in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
            if fn in PARTS:
                out[fn] = round(out.get(fn, 0.0) + v[3], 2)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
