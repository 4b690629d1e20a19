"""One defence setting of a study, attacked and measured: the code path under ``demo`` and
``sweep``.

Every cell (one defence at one parameter value, one attack) is stored as soon
as it is finished (``cells/<hash>/<setting>--<attack>.json`` plus a few
reconstructions for the report grid), keyed by the hash of everything it depends
on: the folder by the data, models, attacks and evaluation, the ``<setting>``
prefix by the defence's own keyword arguments. Killed at any point, the same
command resumes and recomputes nothing that was finished; a profile or sweep
that changes one defence's settings recomputes only that defence's cells.

The runner never branches on a defence's name: it builds defences and attacks
through their registries with what the study provides, and asks the defence's
traits (``study_inputs``, ``fits_on``, ``keeps_encoder``, ``raw_release``)
what it needs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from facecraft._io import (
    atomic_write_json,
    checkpoint_exists,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from facecraft._torchutils import query_in_batches
from facecraft.attacks import AdaptiveEmbeddingAttack, EmbeddingAttack
from facecraft.defenses import create_defense, get_defense_class
from facecraft.defenses.base import FeatureDefense
from facecraft.experiments.attacker import AttackerSide
from facecraft.experiments.config import config_to_dict
from facecraft.experiments.context import attack_faces, eval_context, utility_context
from facecraft.experiments.evaluate import (
    EvalContext,
    embedding_privacy_metrics,
    privacy_metrics,
    utility_metrics,
)
from facecraft.experiments.grid import (
    ADAPTIVE_ATTACKS,
    EMBEDDING_ATTACKS,
    Setting,
    attacks_on,
    setting_stem,
)
from facecraft.experiments.results import GRID_FACES
from facecraft.experiments.scenario import train_scenario_utility
from facecraft.experiments.study import Study

__all__ = ["ProgressFn", "StudyRunner", "study_defense"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


def study_defense(
    study: Study, name: str, amortizer: Callable[[], Any], **kwargs: Any
) -> FeatureDefense:
    """``create_defense(name, **kwargs)`` plus the study inputs the defence asks for
    (``study_inputs``): the prior's generator, ``amortizer()`` and the image size, each made only
    when asked for."""
    provides: Dict[str, Callable[[], Any]] = {
        "generator": lambda: study.prior()[0],
        "amortizer": amortizer,
        "image_size": lambda: study.data.image_size,
    }
    extra = {k: provides[k]() for k in get_defense_class(name).study_inputs}
    return create_defense(name, **extra, **kwargs)


class StudyRunner:
    """Runs defence settings against attacks on a :class:`Study`, storing every cell (module
    docstring).

    Used by :func:`~facecraft.experiments.pipeline.run_demo` (settings one after the other) and by
    :mod:`facecraft.experiments.pool` (settings in parallel processes).
    """

    def __init__(self, study: Study, progress: Optional[ProgressFn]) -> None:
        self.study = study
        self.cfg = study.cfg
        self.progress = progress
        # cells are keyed by everything they depend on (module docstring): the folder by the config
        # less its defences, each setting's files by its own kwargs (stem)
        cfg = {k: v for k, v in config_to_dict(self.cfg).items() if k not in ("device", "defenses")}
        self.cells = study.run_dir / "cells" / study.key(cfg)
        self.cells.mkdir(parents=True, exist_ok=True)
        self.attacker = AttackerSide(study, progress)
        self.oracles = tuple(self.cfg.eval.get("oracles", ("dlib", "evalnet")))
        if "dlib" not in self.oracles:
            raise ValueError(f"the dlib oracle is always used; got oracles {self.oracles}")

    # -- releases ---------------------------------------------------------------------------------
    def context(self) -> EvalContext:
        """The attacked private faces and what judges them
        (:func:`~facecraft.experiments.context.eval_context`)."""
        return eval_context(self.study, self.oracles, self.progress)

    def public_released(
        self, setting: Setting, defense: FeatureDefense, attack: Optional[str] = None
    ) -> torch.Tensor:
        """The defence's release of the attacker's public faces (the adaptive attacks train on it;
        an attack with a smaller budget on the first rows)."""
        f = self.stored_release(
            setting,
            "public-features",
            defense,
            self.attacker.public_subset(),
            f"protect attacker's public images ({setting.label})",
        )[0]
        return f[: self.attacker.public_count(attack)]

    def stored_release(
        self, setting: Setting, what: str, defense: FeatureDefense, images: torch.Tensor, desc: str
    ) -> Tuple[torch.Tensor, float]:
        """``(features, seconds)`` of the defence's release of ``images``, queried once per defence
        setting and stored in the cells folder as ``<stem>-<what>`` (an optimisation defence such as
        Crafter is costly to query, and a crash must not lose it)."""
        stem = self.cells / f"{self.stem(setting)}-{what}"
        if checkpoint_exists(stem):
            t, meta = load_checkpoint(stem, kind="released-features")
            return t["features"], meta["seconds"]
        t0 = time.time()
        bs = int(self.cfg.eval.get("protect_batch", 64))
        # a randomised release depends on (seed, what) only, not on this process's past
        defense.reseed(what)
        f = query_in_batches(defense, images, torch.device("cpu"), bs, self.progress, desc)
        secs = time.time() - t0
        save_checkpoint(
            stem,
            {"features": f},
            kind="released-features",
            meta={"seconds": secs, "defense": setting.label},
        )
        return f, secs

    # -- defences ---------------------------------------------------------------------------------
    def build_defense(self, setting: Setting) -> FeatureDefense:
        """The setting's defence with the study inputs it asks for (``study_inputs``), fitted (or
        loaded) where it learns on public faces (``fits_on``)."""
        s = self.study
        target = s.target()
        d = study_defense(
            s, setting.name, s.amortizer, encoder=target.encoder, head=target.head, **setting.kwargs
        )
        if d.fits_on is not None:
            t0 = time.time()
            self._fit(setting, d)
            s.record_stage(f"fit[{setting.label}]", time.time() - t0, cached=not d.fit_trained)
        return d

    def _fit(self, setting: Setting, d: FeatureDefense) -> None:
        """Fit ``d`` on what its ``fits_on`` names, stored under a key of everything the fit
        reads."""
        s, how = self.study, d.fits_on
        model_cfgs = [config_to_dict(self.cfg.model), config_to_dict(self.cfg.target)]
        if how == "teacher":
            # distilled from a teacher's stored release of the attacker's public faces: made once
            # per cells folder, reused here; the fit is stored beside it
            teacher = Setting(*d.teacher_setting())
            pairs = self.public_released(teacher, self.build_defense(teacher))
            stem = self.cells / f"{self.stem(setting)}-fit"
            d.fit(
                self.attacker.public_subset(),
                teacher_features=pairs,
                progress=self.progress,
                checkpoint_stem=stem,
            )
            return
        name, key_cfg = d.fit_key() or (f"defense-{setting.name}-{setting.param}", setting.kwargs)
        if how == "attributes":
            stem = s.model_stem(name, key_cfg, *model_cfgs)
            public = s.data.public
            d.fit(
                public.float_images(),
                public.attributes,
                progress=self.progress,
                checkpoint_stem=stem,
            )
        elif how == "prior":
            # trained on public faces through the attacker's prior and amortizer: their configs key
            # it
            prior_cfgs = [config_to_dict(self.cfg.prior), config_to_dict(self.cfg.amortizer)]
            stem = s.model_stem(name, key_cfg, *model_cfgs, *prior_cfgs)
            d.fit(s.data.public.images, progress=self.progress, checkpoint_stem=stem)
        else:
            raise ValueError(f"{setting.name} fits on {how!r}; the study knows none of that")

    def released(
        self, setting: Setting, defense: FeatureDefense, ctx: EvalContext
    ) -> Tuple[torch.Tensor, float]:
        """``(features, seconds)``: the defence's release of the attacked private faces."""
        return self.stored_release(
            setting, "features", defense, ctx.originals, f"protect ({setting.label})"
        )

    # -- attacks ----------------------------------------------------------------------------------
    def cell(
        self,
        setting: Setting,
        attack: str,
        defense: FeatureDefense,
        feats: Tuple[torch.Tensor, float],
        ctx: EvalContext,
        utility: Dict[str, Any],
    ) -> Dict[str, Any]:
        """One (setting, attack) row: computed, or read back if a run finished it before."""
        path = self.cells / f"{self.stem(setting)}--{attack}.json"
        if path.exists():
            return {**read_json(path), "setting": self.stem(setting)}
        faces = attack_faces(self.cfg, attack, ctx.labels)
        scope: Dict[str, Any] = {
            "n_faces": int(ctx.labels.shape[0] if faces is None else faces.numel())
        }
        # this attack runs on a subset: positions into results.json's "labels"
        if faces is not None:
            ctx, feats = ctx.select(faces), (feats[0][faces], feats[1])
            scope["faces"] = faces.tolist()
        if attack in ADAPTIVE_ATTACKS:
            # how many public releases the attacker learned from (held-out ones included)
            scope["public_faces"] = int(self.attacker.public_subset_indices(attack).numel())
        measured = {**utility, **scope}
        if attack in EMBEDDING_ATTACKS:
            return self._embedding_cell(setting, attack, defense, feats, ctx, measured, path)
        return self._image_cell(setting, attack, defense, feats, ctx, measured, path)

    def _image_cell(
        self,
        setting: Setting,
        attack: str,
        defense: FeatureDefense,
        feats: Tuple[torch.Tensor, float],
        ctx: EvalContext,
        measured: Dict[str, Any],
        path: Path,
    ) -> Dict[str, Any]:
        """A cell of an attack that draws faces (adaptive ones first learn from the public
        releases)."""
        stem = self.stem(setting)
        # a decoder it trains is its own stage
        atk = self.attacker.make_attack(attack, setting, defense)
        t0 = time.time()
        history: List[Dict[str, Any]] = []
        if attack in ADAPTIVE_ATTACKS:
            # the per-epoch curve is measured on the first `adaptive_curve_images` faces (all by
            # default)
            n_curve = int(self.cfg.eval.get("adaptive_curve_images") or feats[0].shape[0])
            curve_ctx = ctx.subset(n_curve)

            def on_epoch(epoch: int, a) -> Dict[str, Any]:
                return {
                    **privacy_metrics(a(feats[0][:n_curve]), curve_ctx, full=False),
                    "n_images": n_curve,
                }

            atk.fit(
                self.attacker.public_subset(attack),
                protected=self.public_released(setting, defense, attack),
                progress=self.progress,
                on_epoch=on_epoch,
                checkpoint_stem=self.cells / f"{stem}--{attack}-state",
            )
            history = [{k: v for k, v in h.items()} for h in atk.history]
        recon = atk(feats[0], progress=self.progress)
        metrics = privacy_metrics(recon, ctx)
        save_checkpoint(
            self.cells / f"{stem}--{attack}-recon",
            {"images": recon[:GRID_FACES]},
            kind="reconstructions",
        )
        return self._store_row(
            setting, attack, {**metrics, **measured}, feats[1], t0, history, path
        )

    def _store_row(
        self,
        setting: Setting,
        attack: str,
        measured: Dict[str, Any],
        protect_seconds: float,
        t0: float,
        history: List[Dict[str, Any]],
        path: Path,
    ) -> Dict[str, Any]:
        """Write a finished cell's row (with its adaptive curve) atomically to ``path`` and return
        it."""
        row = {
            "defense": setting.name,
            "param": setting.param,
            "setting": self.stem(setting),
            "attack": attack,
            **measured,
            "protect_seconds": protect_seconds,
            "attack_seconds": time.time() - t0,
        }
        atomic_write_json(path, {**row, "history": history})
        return {**row, "history": history}

    def _embedding_cell(
        self,
        setting: Setting,
        attack: str,
        defense: FeatureDefense,
        feats: Tuple[torch.Tensor, float],
        ctx: EvalContext,
        utility: Dict[str, Any],
        path: Path,
    ) -> Dict[str, Any]:
        """A cell of an embedding attack: the plain one as trained on raw public features, the
        adaptive one fine-tuned from it on the defence's release of the attacker's public faces; no
        face is drawn."""
        plain = self.attacker.embedding_attack(setting, defense)
        t0 = time.time()
        history: List[Dict[str, Any]] = []
        atk: EmbeddingAttack = plain
        if attack == "adaptive-embedding":
            kw = self.attacker.attack_kwargs("adaptive-embedding")
            atk = AdaptiveEmbeddingAttack(
                plain, **{"seed": self.cfg.seed, **kw}, device=str(self.study.device)
            )
            atk.fit(
                self.public_released(setting, defense, attack),
                self.attacker.public_embeddings(self.attacker.public_subset_indices(attack)),
                progress=self.progress,
                checkpoint_stem=self.cells / f"{self.stem(setting)}--{attack}-state",
            )
            history = list(atk.history)
        measured = {**embedding_privacy_metrics(atk(feats[0]), ctx), **utility}
        return self._store_row(setting, attack, measured, feats[1], t0, history, path)

    def stem(self, setting: Setting) -> str:
        """File prefix of a setting's cells (:func:`~facecraft.experiments.grid.setting_stem`)."""
        return setting_stem(self.study, setting)

    # -- one defence setting
    # ------------------------------------------------------------------------
    def train_scenario(
        self, setting: Setting, defense: FeatureDefense, released: torch.Tensor, ctx: EvalContext
    ) -> Dict[str, Any]:
        """Training-scenario utility of the setting
        (:func:`~facecraft.experiments.scenario.train_scenario_utility`), stored per setting."""

        def release(images: torch.Tensor) -> Tuple[torch.Tensor, float]:
            desc = f"protect private training images ({setting.label})"
            return self.stored_release(setting, "train-scenario-features", defense, images, desc)

        path = self.cells / f"{self.stem(setting)}-train-scenario.json"
        return train_scenario_utility(self.study, path, release, self.head(defense), released, ctx)

    def run_setting(
        self, setting: Setting, attacks: List[str], ctx: EvalContext
    ) -> List[Dict[str, Any]]:
        """Every attack against one defence setting: its release, utility (both scenarios) and the
        cells."""
        defense = self.build_defense(setting)
        feats = self.released(setting, defense, ctx)
        utility = self.utility(setting, defense, feats[0], ctx)
        return [
            self.cell(setting, attack, defense, feats, ctx, utility)
            for attack in attacks_on(setting, attacks)
        ]

    def utility(
        self, setting: Setting, defense: FeatureDefense, released: torch.Tensor, ctx: EvalContext
    ) -> Dict[str, Any]:
        """Mean AUC of the cloud head on the release (inference scenario) and of a head trained on
        releases (training scenario): on the attacked faces, or, for a private pool without
        attributes, on the study's own private test faces (stored as
        ``<stem>-utility-features``)."""
        uctx = utility_context(self.study)
        if uctx is not None:
            desc = f"protect utility faces ({setting.label})"
            images = uctx.originals
            released = self.stored_release(setting, "utility-features", defense, images, desc)[0]
            ctx = uctx
        return {
            **utility_metrics(released, self.head(defense), ctx),
            **self.train_scenario(setting, defense, released, ctx),
        }

    def finished_rows(self, setting: Setting, attacks: List[str]) -> List[Dict[str, Any]]:
        """The stored rows of one setting's finished cells (nothing is computed)."""
        stem = self.stem(setting)
        paths = [self.cells / f"{stem}--{a}.json" for a in attacks_on(setting, attacks)]
        return [{**read_json(p), "setting": stem} for p in paths if p.exists()]

    def head(self, defense: FeatureDefense) -> torch.nn.Module:
        """The cloud head that reads ``defense``'s release: its own (a defence that retrains the
        network has one) or the target's."""
        return defense.head if defense.head is not None else self.study.target().head
