"""Probe (issue 5): which cheap Crafter step tracks the reference's epsilon-PII?

Runs several Crafter configurations (each the profile's fast one of ``bench craft`` updated by a few
keyword arguments, with or without the defender's critic pre-trained on public faces) for the same
number of outer steps on the benchmark's batch of private faces, and
prints one JSON line per configuration: seconds, seconds per step, the white-box epsilon-PII,
    utility
loss and white-box Eval Acc (dlib) that ``bench craft`` measures, and the defence's own critic
estimate.
The first line is the undefended release. Prints figures; not a test. One thread, so run it pinned:

    taskset -c 1 python benchmarks/fast_probe.py --run runs/small-v2 --steps 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from facecraft.experiments.bench import CraftBench, bench_defaults
from facecraft.experiments.profiles import profile_config
from facecraft.experiments.study import Study

#: name -> (updates of the fast configuration, updates of the defender's critic pre-training or
#: None). Session 5 probed the session-4 step (``fast-s4``: 3 warm-started inversion steps, 4 CG
#: iterations, 2 fresh critic steps, beta 1); session 6 the pre-trained critic and the offset warm
#: start (the profile's "fast").
S4 = {"warm_offset": False, "inner_steps": 3, "cg_iters": 4, "beta": 1.0}
PRE = {"steps": 200, "faces": 256}
CANDIDATES = {
    "fast-s4": (S4, {"steps": 0}),
    "fast-s4+critic-init": ({**S4, "critic_init_steps": 30}, {"steps": 0}),
    "fast-s4+critic10": ({**S4, "critic_steps": 10}, {"steps": 0}),
    "reference-with-gn-cg4": (
        {"warm_start": False, "inner_steps": 40, "critic_steps": 10, "cg_iters": 4, "beta": 1.0},
        {"steps": 0},
    ),
    # session 6
    "offset3+critic10": ({**S4, "warm_offset": True, "critic_steps": 10}, {"steps": 0}),
    "offset5+pre+cg4": ({"cg_iters": 4, "beta": 1.0}, PRE),
    "offset5+pre+cg2": ({"cg_iters": 2, "beta": 1.0}, PRE),
    "offset5+pre+cg1": ({"beta": 1.0}, PRE),
    "offset5+pre+fixed-critic": ({"cg_iters": 4, "beta": 1.0, "critic_steps": 0}, PRE),
    "amor40+pre+cg4": ({"warm_start": False, "inner_steps": 40, "cg_iters": 4, "beta": 1.0}, PRE),
    "amor40+pre+cg4+beta3": (
        {"warm_start": False, "inner_steps": 40, "cg_iters": 4, "beta": 3.0},
        PRE,
    ),
    "fast": (
        {},
        PRE,
    ),  # the profile's fast configuration: offset 5, CG 1, critic 2 after pre-training, beta 5
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", type=Path, required=True, help="a study's run directory with its trained models"
    )
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="outer steps of every configuration")
    ap.add_argument("--pii-repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only these candidates")
    args = ap.parse_args()
    torch.set_num_threads(1)
    study = Study(profile_config(args.profile, device="cpu"), args.run, data_root=args.data_root)
    bench = CraftBench(
        study, args.batch, eval_dlib=True, pii_repeats=args.pii_repeats, progress=None
    )
    print(json.dumps({"config": "undefended", **bench.measure(bench.f0)}), flush=True)
    fast = bench_defaults(args.profile)["fast"]
    critics = {}
    for name, (update, pre) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        kwargs = {**fast, **update}
        critic = None
        if pre["steps"] > 0:
            key = (pre["steps"], pre["faces"])
            if key not in critics:
                critics[key] = bench.defender_critic(pre["steps"], pre["faces"], kwargs)
                print(
                    json.dumps({"defender_critic": pre, "seconds": round(critics[key][1], 1)}),
                    flush=True,
                )
            critic = critics[key][0]
        bench.warmup(kwargs, critic)
        feats, secs, crafter = bench.protect(kwargs, args.steps, name, critic)
        print(
            json.dumps(
                {
                    "config": name,
                    "steps": args.steps,
                    "seconds": round(secs, 2),
                    "s_per_step": round(secs / args.steps, 3),
                    **bench.measure(feats),
                    "critic_epsilon": crafter.last_epsilon,
                    "kwargs": update,
                    "pretrained_critic": pre,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
