"""Black-box and hybrid Eval Acc of ``bench craft``'s releases (issue 5): is the equal privacy more
than white-box?

``bench craft`` judges privacy by white-box epsilon-PII and Eval Acc. This script rebuilds, on the
same batch, the undefended release, the fast configuration's release after ``--fast-steps`` outer
steps and the reference's after ``--reference-steps`` (both deterministic, so the releases ``bench
craft`` accepted), and attacks each with the study's trained black-box decoder and the hybrid
attack; one JSON line per release
(dlib top-1 Eval Acc, utility loss). Prints figures; not a test. One thread, so run it pinned:

    taskset -c 0 python benchmarks/craft_decoders.py --run runs/small-v2 --fast-steps 3
    --reference-steps 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from facecraft.attacks.decoder import DecoderAttack
from facecraft.attacks.hybrid import HybridAttack
from facecraft.experiments.bench import CraftBench, bench_defaults
from facecraft.experiments.config import config_to_dict
from facecraft.experiments.profiles import profile_config
from facecraft.experiments.study import Study
from facecraft.metrics.identity import topk_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", type=Path, required=True, help="a study's run directory with its trained decoder"
    )
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fast-steps", type=int, default=3)
    ap.add_argument("--reference-steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = profile_config(args.profile, device="cpu")
    study = Study(cfg, args.run, data_root=args.data_root)
    bench = CraftBench(study, args.batch, eval_dlib=True, pii_repeats=1, progress=None)
    kw = dict(cfg.attacks.get("blackbox", {}))
    stem = study.model_stem(
        "decoder-target", kw, config_to_dict(cfg.model), config_to_dict(cfg.target), None
    )
    decoder = DecoderAttack(bench.target.encoder, image_size=study.data.image_size, **kw)
    decoder.fit(
        study.data.public.images, checkpoint_stem=stem
    )  # the study's decoder, or trained here
    hybrid = HybridAttack(bench.target.encoder, decoder, **dict(cfg.attacks.get("hybrid", {})))
    oracle = study.dlib_oracle()

    def eval_acc(recon: torch.Tensor) -> float:
        scores = oracle.scores_from_embeddings(oracle.embed(recon.clamp(0, 1).float().cpu()))
        return float(topk_accuracy(scores, bench.labels, k=1))

    d = bench_defaults(args.profile)
    critic, _ = bench.defender_critic(
        d["fast_critic"]["steps"], d["fast_critic"]["faces"], d["fast"]
    )
    releases = {
        "undefended": bench.f0,
        f"fast ({args.fast_steps} steps)": bench.protect(
            d["fast"], args.fast_steps, "fast", critic
        )[0],
        f"reference ({args.reference_steps} steps)": bench.protect(
            d["reference"], args.reference_steps, "ref"
        )[0],
    }
    for name, feats in releases.items():
        with torch.no_grad():
            blackbox = eval_acc(decoder(feats))
        print(
            json.dumps(
                {
                    "release": name,
                    "blackbox": blackbox,
                    "hybrid": eval_acc(hybrid(feats)),
                    "utility_loss": float((feats - bench.f0).flatten(1).pow(2).mean(1).mean()),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
