"""Probe (issue 5): can the amortized Crafter's network ``C`` be distilled from Crafter's own
releases?

Takes the releases a small study already stored for one Crafter setting (the attacker's public faces
and the training-scenario faces: 128 pairs ``(Enc(X), F*)``), regresses ``Enc(X) + C(Enc(X))`` on
``F*`` (MSE, Adam), applies ``C`` to the 64 attacked faces and prints, for the raw, crafted and
distilled releases, the black-box attack's dlib top-1 Eval Acc, FSIM and the mean AUC. Prints
figures; not a test.

    python benchmarks/distill_probe.py --run runs/small-v2 --setting crafter_0.1-482c5d35
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facecraft._io import load_checkpoint
from facecraft.defenses import create_defense
from facecraft.defenses.amortized_crafter import FeatureCrafter
from facecraft.experiments.evaluate import privacy_metrics, utility_metrics
from facecraft.experiments.grid import UNPROTECTED
from facecraft.experiments.profiles import profile_config
from facecraft.experiments.runner import StudyRunner
from facecraft.experiments.study import Study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the study's run directory")
    ap.add_argument(
        "--setting", required=True, help="a Crafter setting's file prefix in the cells folder"
    )
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = profile_config(args.profile, device="cpu")
    study = Study(cfg, args.run, data_root=args.data_root)
    runner = StudyRunner(study, None)

    def stored(what: str) -> torch.Tensor:
        return load_checkpoint(runner.cells / f"{args.setting}-{what}", kind="released-features")[
            0
        ]["features"]

    f_pub, f_tr, f_ev = (
        stored("public-features"),
        stored("train-scenario-features"),
        stored("features"),
    )
    target = study.target().eval()
    train = study.data.eval_train
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 31))[
        : f_tr.shape[0]
    ]
    ctx = runner.context()
    with torch.no_grad():
        e_pub, e_tr, e_ev = (
            target.encoder(x)
            for x in (runner.attacker.public_subset(), train.float_images(idx), ctx.originals)
        )
    x, y = torch.cat([e_pub, e_tr]), torch.cat([f_pub, f_tr])
    print(
        f"{x.shape[0]} training pairs; Crafter's change (MSE per element): "
        f"{(f_ev - e_ev).pow(2).mean():.3f}"
    )
    torch.manual_seed(0)
    crafter = FeatureCrafter(x.shape[1], 64)
    opt = torch.optim.Adam(crafter.parameters(), lr=1e-3)
    for step in range(args.steps):
        i = torch.randint(0, x.shape[0], (32,))
        loss = (x[i] + crafter(x[i]) - y[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 300 == 0 or step == args.steps - 1:
            with torch.no_grad():
                held_out = (e_ev + crafter(e_ev) - f_ev).pow(2).mean()
            print(
                f"step {step}: train MSE {loss.item():.3f}, "
                f"attacked faces' MSE to Crafter's release {held_out:.3f}"
            )
    with torch.no_grad():
        distilled = e_ev + crafter(e_ev)
    decoder = runner.attacker.decoder(
        UNPROTECTED, create_defense("none", encoder=target.encoder, head=target.head)
    )
    for name, feats in (("raw", e_ev), ("crafter", f_ev), ("distilled", distilled)):
        m = privacy_metrics(decoder(feats), ctx, full=False)
        auc = utility_metrics(feats, target.head, ctx)["mean_auc"]
        print(
            f"{name}: black-box Eval Acc {m['eval_acc_top1']['dlib']:.3f}, "
            f"FSIM {m['fsim']:.3f}, mean AUC {auc:.3f}"
        )


if __name__ == "__main__":
    main()
