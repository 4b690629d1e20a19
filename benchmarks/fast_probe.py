"""Probe (issue 5): which cheap Crafter step tracks the reference's epsilon-PII?

Runs several Crafter configurations (each the profile's fast one of ``bench craft`` updated by a few
keyword arguments) for the same number of outer steps on the benchmark's batch of private faces, and
prints one JSON line per configuration: seconds, seconds per step, the white-box epsilon-PII, utility
loss and white-box Eval Acc (dlib) that ``bench craft`` measures, and the defence's own critic estimate.
The first line is the undefended release. Prints figures; not a test. One thread, so run it pinned:

    taskset -c 1 python benchmarks/fast_probe.py --run runs/small-v2 --steps 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from facecraft.experiments.bench import CraftBench, bench_defaults
from facecraft.experiments.config import profile_config
from facecraft.experiments.study import Study

#: name -> updates of the fast configuration (the session-4 fast step is "fast")
CANDIDATES = {
    "fast": {},
    "fast+critic-init": {"critic_init_steps": 30},
    "amor5+critic-init": {"warm_start": False, "inner_steps": 5, "critic_init_steps": 30},
    "amor10+critic-init": {"warm_start": False, "inner_steps": 10, "critic_init_steps": 30},
    "warm10+critic-init": {"inner_steps": 10, "critic_init_steps": 30},
    "demo-step+critic-init": {"inner_steps": 5, "cg_iters": 10, "critic_steps": 5, "critic_init_steps": 30},
    # diagnostics: the reference's critic alone; the reference with only its IHVP solver swapped for GN-CG
    "fast+critic10": {"critic_steps": 10},
    "reference-with-gn-cg4": {"warm_start": False, "inner_steps": 40, "critic_steps": 10},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a study's run directory with its trained models")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="outer steps of every configuration")
    ap.add_argument("--pii-repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only these candidates")
    args = ap.parse_args()
    torch.set_num_threads(1)
    study = Study(profile_config(args.profile, device="cpu"), args.run, data_root=args.data_root)
    bench = CraftBench(study, args.batch, eval_dlib=True, pii_repeats=args.pii_repeats, progress=None)
    print(json.dumps({"config": "undefended", **bench.measure(bench.f0)}), flush=True)
    fast = bench_defaults(args.profile)["fast"]
    for name, update in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        kwargs = {**fast, **update}
        bench.warmup(kwargs)
        feats, secs, crafter = bench.protect(kwargs, args.steps, name)
        print(json.dumps({"config": name, "steps": args.steps, "seconds": round(secs, 2),
                          "s_per_step": round(secs / args.steps, 3), **bench.measure(feats),
                          "critic_epsilon": crafter.last_epsilon, "kwargs": update}), flush=True)


if __name__ == "__main__":
    main()
