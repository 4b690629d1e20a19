"""One batch of private faces and the one measurement every Crafter release on it gets.

:class:`CraftBench` is what ``facecraft bench craft``
(:func:`~facecraft.experiments.bench.bench_craft`) and
:func:`~facecraft.experiments.bench.profile_fast` time and judge Crafter configurations on;
scripts in ``benchmarks/`` use it to compare configurations on the same batch. The measurement is
the white-box attacker's epsilon-PII (CRAFTER.md section 3), its Eval Acc and the utility loss.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import torch

from facecraft._torchutils import frozen
from facecraft.attacks.whitebox import WhiteBoxAttack
from facecraft.defenses.crafter import Crafter
from facecraft.experiments.bench._shared import ProgressFn, sync
from facecraft.experiments.study import Study
from facecraft.metrics.identity import topk_accuracy
from facecraft.metrics.pii import epsilon_pii

__all__ = ["CraftBench"]


class CraftBench:
    """One batch of private faces, the study's models and the one measurement every release gets.

    :func:`bench_craft` and :func:`profile_fast` are built on it; scripts use it to
    compare Crafter configurations on the same batch (``benchmarks/fast_probe.py``).
    :meth:`protect` times one Crafter run; :meth:`measure` gives its utility loss,
    white-box epsilon-PII (CRAFTER.md section 3) and white-box Eval Acc.
    """

    def __init__(
        self,
        study: Study,
        batch: int,
        *,
        eval_dlib: bool,
        pii_repeats: int,
        progress: Optional[ProgressFn],
    ) -> None:
        self.study = study
        self.progress = progress
        self.eval_dlib = eval_dlib
        self.pii_repeats = pii_repeats
        idx = study.eval_indices()[:batch]
        if idx.shape[0] < 2:
            raise ValueError(
                f"the benchmark needs at least 2 eval faces, the study has {idx.shape[0]}"
            )
        test = study.data.eval_test
        dev = study.device
        self.n = int(idx.shape[0])
        self.images = test.float_images(idx).to(dev)
        self.labels = test.identities[idx]
        self.target = study.target()
        self.generator, _ = study.prior()
        self.amortizer = study.amortizer()
        with torch.no_grad(), frozen(self.target.encoder):
            self.f0 = self.target.encoder(self.images).detach()
        cfg = study.cfg
        gen = torch.Generator().manual_seed(cfg.seed + 5)
        z = torch.randn(max(64, self.n), self.generator.latent_dim, generator=gen).to(dev)
        with torch.no_grad(), frozen(self.generator):
            self.prior_samples = torch.cat(
                [self.generator(z[i : i + 128]) for i in range(0, z.shape[0], 128)]
            )
        self.pii_steps = int(cfg.eval.get("pii_steps", 300))
        self.pii_width = int(cfg.eval.get("pii_width", 32))
        self.attack = WhiteBoxAttack(
            self.target.encoder,
            self.generator,
            amortizer=self.amortizer,
            **dict(cfg.attacks.get("whitebox", {})),
        )

    def crafter(
        self, kwargs: Dict[str, Any], outer_steps: int, critic: Optional[torch.nn.Module] = None
    ) -> Crafter:
        """A Crafter with ``kwargs``, ``outer_steps`` and, when given, ``critic`` as its starting
        critic."""
        extra = {} if critic is None else {"critic": critic}
        return Crafter(
            self.target.encoder,
            self.target.head,
            self.generator,
            amortizer=self.amortizer,
            **{**kwargs, **extra, "outer_steps": outer_steps},
        )

    def defender_critic(
        self, steps: int, faces: int, kwargs: Dict[str, Any]
    ) -> Tuple[Optional[torch.nn.Module], float]:
        """The critic a Crafter with ``kwargs`` pre-trains on the study's first ``faces`` public
        faces, timed.

        :meth:`~facecraft.defenses.Crafter.fit` with ``critic_pretrain_steps=steps``
        (:func:`~facecraft.defenses.fit_defender_critic`: the critic's width, learning
        rate, GP weight and seed are those of ``kwargs``).

        Returns:
            ``(critic, seconds)``, or ``(None, 0.0)`` when ``steps`` is 0 (a fresh critic per
            batch).
        """
        if steps == 0:
            return None, 0.0
        crafter = self.crafter(
            {**kwargs, "critic_pretrain_steps": steps, "critic_pretrain_faces": faces}, 1
        )
        sync(self.study.device)
        t0 = time.perf_counter()
        crafter.fit(self.study.data.public.images)
        sync(self.study.device)
        return crafter.critic, time.perf_counter() - t0

    def warmup(self, kwargs: Dict[str, Any], critic: Optional[torch.nn.Module] = None) -> None:
        """One outer step at the batch's shape with one iteration of every part (untimed)."""
        kw = dict(kwargs)
        for k in ("inner_steps", "init_steps", "neumann_iters", "cg_iters", "critic_steps"):
            if kw.get(k) is not None and kw[k] > 0:
                kw[k] = 1
        self.crafter(kw, 1, critic).protect(self.images)

    def protect(
        self,
        kwargs: Dict[str, Any],
        outer_steps: int,
        desc: str,
        critic: Optional[torch.nn.Module] = None,
    ) -> Tuple[torch.Tensor, float, Crafter]:
        """Time one Crafter run of ``outer_steps`` on the batch: ``(features, seconds,
        crafter)``."""
        crafter = self.crafter(kwargs, outer_steps, critic)
        cb = None
        if self.progress is not None:
            progress = self.progress
            cb = lambda d, t, _s: progress(d, t, desc)
        sync(self.study.device)
        t0 = time.perf_counter()
        feats = crafter.protect(self.images, progress=cb)
        sync(self.study.device)
        return feats, time.perf_counter() - t0, crafter

    def measure(
        self, feats: torch.Tensor, *, seed_offset: int = 101, repeats: Optional[int] = None
    ) -> Dict[str, Any]:
        """Utility loss, white-box epsilon-PII and Eval Acc (top-1) of one release.

        epsilon-PII is the mean of ``repeats`` (Default: ``pii_repeats``) estimates
        seeded ``cfg.seed + seed_offset + r``; the single estimates are in ``epsilons``.
        """
        feats = feats.detach().to(self.f0.device, self.f0.dtype)
        utility = float((feats - self.f0).flatten(1).pow(2).mean(dim=1).mean())
        recon = self.attack(feats).detach().clamp(0, 1)
        prior = self.prior_samples.to(recon.device, recon.dtype)
        seed = self.study.cfg.seed + seed_offset
        eps = [
            float(
                epsilon_pii(
                    recon,
                    prior,
                    steps=self.pii_steps,
                    critic_width=self.pii_width,
                    generator=torch.Generator().manual_seed(seed + r),
                )
            )
            for r in range(self.pii_repeats if repeats is None else repeats)
        ]
        if self.eval_dlib:
            oracle = self.study.dlib_oracle()
            scores = oracle.scores_from_embeddings(oracle.embed(recon.float().cpu()))
        else:
            net = self.study.evalnet()
            scores = net.scores(recon.to(net.device)).cpu()
        acc = float(topk_accuracy(scores.cpu(), self.labels, k=1))
        return {
            "epsilon": sum(eps) / len(eps),
            "utility_loss": utility,
            "eval_acc": acc,
            "epsilons": eps,
        }
