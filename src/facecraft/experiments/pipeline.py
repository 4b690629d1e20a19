"""The whole study behind ``facecraft demo``: defences x attacks, evaluated, with a report.

Every cell (one defence at one parameter value, one attack) is stored as soon
as it is finished (``cells/<hash>/<setting>--<attack>.json`` plus a few
reconstructions for the report grid), keyed by the hash of everything it depends
on: the folder by the data, models, attacks and evaluation, the ``<setting>``
prefix by the defence's own keyword arguments. Killed at any point, the same
command resumes and recomputes nothing that was finished; a profile or sweep
that changes one defence's settings recomputes only that defence's cells.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from facecraft._io import (
    atomic_write_json,
    checkpoint_exists,
    load_checkpoint,
    read_json,
    run_lock,
    save_checkpoint,
)
from facecraft._torchutils import eval_mode, torch_threads
from facecraft.attacks import (
    AdaptiveBlackBoxAttack,
    AdaptiveEmbeddingAttack,
    AdaptiveWhiteBoxAttack,
    DecoderAttack,
    EmbeddingAttack,
    HybridAttack,
    WhiteBoxAttack,
)
from facecraft.attacks._common import query_in_batches
from facecraft.defenses import Crafter, create_defense
from facecraft.defenses.base import FeatureDefense
from facecraft.experiments.config import RunConfig, config_to_dict
from facecraft.experiments.evaluate import (
    EvalContext,
    embedding_privacy_metrics,
    oracle_ceiling,
    privacy_metrics,
    utility_metrics,
)
from facecraft.experiments.study import Study, spread_over_identities
from facecraft.models.train import train_head

__all__ = [
    "run_demo",
    "DEMO_ATTACKS",
    "EMBEDDING_ATTACKS",
    "Setting",
    "UNPROTECTED",
    "StudyRunner",
    "defense_grid",
    "profile_setting",
    "build_report",
    "selected_attacks",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

#: the attacks every defence faces in the demo (adaptive ones skipped for "none", where they equal the basic ones)
DEMO_ATTACKS = (
    "whitebox",
    "blackbox",
    "hybrid",
    "embedding",
    "adaptive-whitebox",
    "adaptive-blackbox",
    "adaptive-embedding",
)
_ADAPTIVE = ("adaptive-whitebox", "adaptive-blackbox", "adaptive-embedding")
#: attacks that predict a face-recognition embedding rather than a face (judged by :func:`embedding_privacy_metrics`)
EMBEDDING_ATTACKS = ("embedding", "adaptive-embedding")
_GRID_FACES = 6
#: the most settings the report's grid shows one row each; a larger grid (a sweep) gets one row per defence
_GRID_ROWS = 10

#: defences whose released features come from the target's own encoder (so the shared decoder and amortizer apply)
_SAME_ENCODER = (
    "none",
    "noise",
    "crafter",
    "crafter-fast",
    "crafter-z",
    "amortized-crafter",
    "distilled-crafter",
)


class Setting(NamedTuple):
    """One defence at one parameter value: its registered name, the swept value (``None`` when the defence
    has no sweep) and the constructor keyword arguments (the swept value included)."""

    name: str
    param: Optional[float]
    kwargs: Dict[str, Any]

    @property
    def label(self) -> str:
        """``"name:param"``, e.g. ``crafter:0.1``, for stage names and progress messages."""
        return f"{self.name}:{self.param}"

    @property
    def same_encoder(self) -> bool:
        """Whether the release comes from the target's own encoder (so its decoder and amortizer apply)."""
        return self.name in _SAME_ENCODER


#: the target's own release, through which stored features of any defence are attacked
UNPROTECTED = Setting("none", None, {})


def defense_grid(cfg: RunConfig) -> List[Setting]:
    """Every defence setting in ``cfg.defenses``.

    ``cfg.defenses[name] = {"kwargs": {...}, "sweep": {"param": p, "values": [...]}}``; ``"demo": False``
    in a spec leaves that defence out of :func:`run_demo` unless asked for by name (sweeps still use its kwargs).
    """
    out = []
    for name, spec in cfg.defenses.items():
        kwargs = dict(spec.get("kwargs", {}))
        sweep = spec.get("sweep")
        if not sweep:
            out.append(Setting(name, None, kwargs))
            continue
        for v in sweep["values"]:
            out.append(Setting(name, v, {**kwargs, sweep["param"]: v}))
    return out


def profile_setting(cfg: RunConfig, name: str, param: Optional[float] = None) -> Setting:
    """The setting of defence ``name`` in ``cfg``'s profile at value ``param`` of its swept parameter
    (default: the profile's first value); a defence the profile does not list gets its defaults."""
    spec = cfg.defenses.get(name, {})
    sweep = spec.get("sweep")
    kwargs = dict(spec.get("kwargs", {}))
    if sweep:
        param = float(sweep["values"][0]) if param is None else float(param)
        kwargs[sweep["param"]] = param
    return Setting(name, param, kwargs)


class StudyRunner:
    """Runs defence settings against attacks on a :class:`Study`, storing every cell (module docstring).

    Used by :func:`run_demo` (settings one after the other) and by
    :mod:`facecraft.experiments.sweep` (settings in parallel processes).
    """

    def __init__(self, study: Study, progress: Optional[ProgressFn]) -> None:
        self.study = study
        self.cfg = study.cfg
        self.progress = progress
        # cells are keyed by everything they depend on (module docstring): the folder by the config less its
        # defences, each setting's files by its own kwargs (stem)
        cfg = {k: v for k, v in config_to_dict(self.cfg).items() if k not in ("device", "defenses")}
        self.cells = study.run_dir / "cells" / study.key(cfg)
        self.cells.mkdir(parents=True, exist_ok=True)
        self._decoders: Dict[str, DecoderAttack] = {}
        self._embedders: Dict[str, EmbeddingAttack] = {}
        self._public_emb: Optional[torch.Tensor] = None
        self.oracles = tuple(self.cfg.eval.get("oracles", ("dlib", "evalnet")))
        if "dlib" not in self.oracles:
            raise ValueError(f"the dlib oracle is always used; got oracles {self.oracles}")

    # -- shared pieces --------------------------------------------------------------------------
    def context(self) -> EvalContext:
        s = self.study
        idx = s.eval_indices()
        test = s.data.eval_test
        originals = test.float_images(idx)
        dl = s.dlib_oracle()
        emb_stem = (
            s.run_dir / "models" / f"dlib-eval-{s.key('dlib-eval', idx.tolist(), dl.crop_fraction)}"
        )
        if checkpoint_exists(emb_stem):
            emb = load_checkpoint(emb_stem, kind="embeddings")[0]["embeddings"]
        else:
            emb = dl.embed(originals, progress=self.progress)
            save_checkpoint(emb_stem, {"embeddings": emb}, kind="embeddings")
        g, _ = s.prior()
        gen = torch.Generator().manual_seed(self.cfg.seed + 5)
        z = torch.randn(max(64, originals.shape[0]), g.latent_dim, generator=gen).to(s.device)
        with torch.no_grad():
            prior_samples = torch.cat([g(z[i : i + 128]) for i in range(0, z.shape[0], 128)]).cpu()
        return EvalContext(
            originals=originals,
            labels=test.identities[idx],
            attributes=None if test.attributes is None else test.attributes[idx],
            dlib=dl,
            evalnet=s.evalnet() if "evalnet" in self.oracles else None,
            prior_samples=prior_samples,
            original_embeddings=emb,
            pii_steps=int(self.cfg.eval.get("pii_steps", 300)),
            pii_width=int(self.cfg.eval.get("pii_width", 32)),
            seed=self.cfg.seed,
        )

    def attack_kwargs(self, name: str) -> Dict[str, Any]:
        return dict(self.cfg.attacks.get(name, {}))

    def _per_encoder(
        self, kind: str, attack: str, setting: Setting, *extra: Any
    ) -> Tuple[str, Path]:
        """``(key, file stem)`` of a model the attacker trains once per distinct encoder (``kind``: decoder or
        embedding; configured by ``attack``'s kwargs and ``extra``): the target's own, or that of a defence that
        retrains it."""
        shared = setting.same_encoder
        name = "target" if shared else self.stem(setting)
        stem = self.study.model_stem(
            f"{kind}-{name}",
            self.attack_kwargs(attack),
            config_to_dict(self.cfg.model),
            config_to_dict(self.cfg.target),
            None if shared else name,
            *extra,
        )
        return ("target" if shared else setting.label), stem

    def decoder(self, setting: Setting, defense: FeatureDefense) -> DecoderAttack:
        """The black-box decoder for the encoder ``defense`` exposes (one per distinct encoder)."""
        s = self.study
        key, stem = self._per_encoder("decoder", "blackbox", setting)
        if key in self._decoders:
            return self._decoders[key]
        kw = self.attack_kwargs("blackbox")
        atk = DecoderAttack(defense.encoder, image_size=s.data.image_size, **kw)
        t0 = time.time()
        atk.fit(s.data.public.images, progress=self.progress, checkpoint_stem=stem)
        s.record_stage(f"decoder[{key}]", time.time() - t0, cached=not atk.fit_trained)
        self._decoders[key] = atk
        return atk

    def public_subset_indices(self, attack: Optional[str] = None) -> torch.Tensor:
        """Which public images the adaptive attacker runs through the defence (``eval.adaptive_public``, seeded);
        an ``attack`` named in ``eval.adaptive_public_by_attack`` takes the first that many of them."""
        n = int(self.cfg.eval.get("adaptive_public", 1024))
        return self._public_order()[:n][: self._public_count(attack)]

    def _public_order(self) -> torch.Tensor:
        """The attacker's seeded order of the public faces: its adaptive releases and the embedding pool are
        prefixes of it."""
        g = torch.Generator().manual_seed(self.cfg.seed + 23)
        return torch.randperm(len(self.study.data.public), generator=g)

    def _public_count(self, attack: Optional[str]) -> Optional[int]:
        n = self.cfg.eval.get("adaptive_public_by_attack", {}).get(attack) if attack else None
        return None if n is None else int(n)

    def public_subset(self, attack: Optional[str] = None) -> torch.Tensor:
        """The adaptive attacker's own public images (:meth:`public_subset_indices`)."""
        return self.study.data.public.float_images(self.public_subset_indices(attack))

    def faces_for(self, attack: str, ctx: EvalContext) -> Optional[torch.Tensor]:
        """Positions in ``ctx`` of the faces ``attack`` is run on: ``eval.n_images_by_attack[attack]`` of them
        spread over the identities (seeded, the same for every defence, so cells stay paired), or ``None``
        for all of them."""
        n = self.cfg.eval.get("n_images_by_attack", {}).get(attack)
        if n is None or int(n) >= ctx.labels.shape[0]:
            return None
        return spread_over_identities(ctx.labels, int(n), self.cfg.seed + 29)

    def embedding_pool(self) -> Optional[torch.Tensor]:
        """The public faces whose dlib embeddings the embedding attacks learn from: every public face, or with
        ``eval.embedding_public = n`` the first ``max(n, eval.adaptive_public)`` of the adaptive attacker's
        seeded order (so the adaptive attacker's own faces are among them); ``None`` for all."""
        n = self.cfg.eval.get("embedding_public")
        if n is None:
            return None
        return self._public_order()[: max(int(n), int(self.cfg.eval.get("adaptive_public", 1024)))]

    def public_embeddings(self, indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """dlib embeddings ``(N, 128)`` of the public faces ``indices`` (default: the whole
        :meth:`embedding_pool`): what the embedding attacks learn to predict (computed once per run directory,
        stored under ``models/``)."""
        pool = self.embedding_pool()
        if self._public_emb is None:
            from facecraft.metrics.dlib_oracle import DlibOracle

            s = self.study
            dl = DlibOracle(
                crop_fraction=s.dlib_crop
            )  # embedding needs no gallery: runs beside the gallery's fit
            sizes = [] if pool is None else [int(pool.numel())]
            stem = (
                s.run_dir
                / "models"
                / f"dlib-public-{s.key('dlib-public', dl.crop_fraction, *sizes)}"
            )
            t0 = time.time()
            cached = checkpoint_exists(stem)
            if cached:
                emb = load_checkpoint(stem, kind="embeddings")[0]["embeddings"]
            else:
                emb = dl.embed(
                    s.data.public.float_images(pool),
                    progress=self.progress,
                    checkpoint_stem=stem.parent / (stem.name + "-partial"),
                )
                save_checkpoint(stem, {"embeddings": emb}, kind="embeddings")
            s.record_stage("dlib_public", time.time() - t0, cached=cached)
            self._public_emb = emb
        if indices is None:
            return self._public_emb
        if pool is None:
            return self._public_emb[indices]
        where = torch.full((len(self.study.data.public),), -1, dtype=torch.long)
        where[pool] = torch.arange(pool.numel())
        rows = where[indices]
        if (rows < 0).any():
            raise ValueError(
                "asked for the dlib embedding of a public face outside eval.embedding_public's pool"
            )
        return self._public_emb[rows]

    def embedding_attack(self, setting: Setting, defense: FeatureDefense) -> EmbeddingAttack:
        """The plain embedding attack for the encoder ``defense`` exposes: regress dlib's embedding from
        that encoder's raw features of the :meth:`embedding_pool` (one per distinct encoder, like the decoder)."""
        s = self.study
        pool = self.embedding_pool()
        sizes = [] if pool is None else [int(pool.numel())]
        key, stem = self._per_encoder("embedding", "embedding", setting, *sizes)
        if key in self._embedders:
            return self._embedders[key]
        atk = EmbeddingAttack(
            **{"seed": self.cfg.seed, **self.attack_kwargs("embedding")}, device=str(s.device)
        )
        t0 = time.time()
        if checkpoint_exists(stem):
            atk.load(stem)
        else:
            with eval_mode(defense.encoder):
                images = s.data.public.images if pool is None else s.data.public.images[pool]
                feats = query_in_batches(defense.encoder, images, s.device, 256).cpu()
            atk.fit(feats, self.public_embeddings(), progress=self.progress, checkpoint_stem=stem)
        s.record_stage(f"embedding[{key}]", time.time() - t0, cached=not atk.fit_trained)
        self._embedders[key] = atk
        return atk

    def public_released(
        self, setting: Setting, defense: FeatureDefense, attack: Optional[str] = None
    ) -> torch.Tensor:
        """The defence's release of :meth:`public_subset` (the adaptive attacks train on it; an attack with a
        smaller budget on the first rows)."""
        f = self._stored_release(
            setting,
            "public-features",
            defense,
            self.public_subset(),
            f"protect attacker's public images ({setting.label})",
        )[0]
        return f[: self._public_count(attack)]

    def _stored_release(
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
        defense.reseed(
            what
        )  # a randomised release depends on (seed, what) only, not on this process's past
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
        """The setting's defence, fitted (or loaded) where it trains on public faces."""
        s = self.study
        name, param, kwargs = setting
        target = s.target()
        extra: Dict[str, Any] = {}
        if name in ("crafter", "crafter-fast", "crafter-z", "amortized-crafter"):
            g, _ = s.prior()
            extra = {"generator": g, "amortizer": s.amortizer()}
        if name == "disco":
            extra = {"image_size": s.data.image_size}
        d = create_defense(name, encoder=target.encoder, head=target.head, **extra, **kwargs)
        if hasattr(d, "teacher_setting"):
            # distilled from a teacher's stored release of the attacker's public faces (issue 16): made once
            # per cells folder, reused here; the fit is stored beside it
            teacher = Setting(*d.teacher_setting())
            pairs = self.public_released(teacher, self.build_defense(teacher))
            t0 = time.time()
            d.fit(
                self.public_subset(),
                teacher_features=pairs,
                progress=self.progress,
                checkpoint_stem=self.cells / f"{self.stem(setting)}-fit",
            )
            s.record_stage(f"fit[{name}:{param}]", time.time() - t0, cached=not d.fit_trained)
        if name in ("advlearn", "disco"):
            stem = s.model_stem(
                f"defense-{name}-{param}",
                kwargs,
                config_to_dict(self.cfg.model),
                config_to_dict(self.cfg.target),
            )
            t0 = time.time()
            d.fit(
                s.data.public.float_images(),
                s.data.public.attributes,
                progress=self.progress,
                checkpoint_stem=stem,
            )
            s.record_stage(f"fit[{name}:{param}]", time.time() - t0, cached=not d.fit_trained)
        fit_key: Optional[Tuple[str, Dict[str, Any]]] = None
        if isinstance(d, Crafter) and d.critic_pretrain_steps > 0:
            # the fast configuration's critic (issue 5): one file for every beta and outer step that share it
            fit_key = ("defense-crafter-critic", d.critic_pretrain_config())
        elif name == "amortized-crafter":
            fit_key = (f"defense-{name}-{param}", kwargs)
        if fit_key is not None:
            # trained on public faces through the attacker's prior and amortizer, so their configs key the file
            stem = s.model_stem(
                fit_key[0],
                fit_key[1],
                config_to_dict(self.cfg.model),
                config_to_dict(self.cfg.target),
                config_to_dict(self.cfg.prior),
                config_to_dict(self.cfg.amortizer),
            )
            t0 = time.time()
            d.fit(s.data.public.images, progress=self.progress, checkpoint_stem=stem)
            s.record_stage(f"fit[{name}:{param}]", time.time() - t0, cached=not d.fit_trained)
        return d

    def released(
        self, setting: Setting, defense: FeatureDefense, ctx: EvalContext
    ) -> Tuple[torch.Tensor, float]:
        """``(features, seconds)``: the defence's release of the attacked private faces."""
        return self._stored_release(
            setting, "features", defense, ctx.originals, f"protect ({setting.label})"
        )

    # -- attacks ----------------------------------------------------------------------------------
    def make_attack(self, attack: str, setting: Setting, defense: FeatureDefense):
        """The attack ``attack`` against ``setting``'s release, with the attacker's models."""
        s = self.study
        g, critic = s.prior()
        amor = s.amortizer() if setting.same_encoder else None
        kw = self.attack_kwargs(attack)
        if attack == "whitebox":
            return WhiteBoxAttack(defense.encoder, g, amortizer=amor, **kw)
        if attack == "blackbox":
            return self.decoder(setting, defense)
        if attack == "hybrid":
            return HybridAttack(defense.encoder, self.decoder(setting, defense), **kw)
        if attack == "adaptive-whitebox":
            return AdaptiveWhiteBoxAttack(defense.encoder, g, defense, amortizer=amor, **kw)
        if attack == "adaptive-blackbox":
            return AdaptiveBlackBoxAttack(self.decoder(setting, defense), defense, **kw)
        raise ValueError(f"the demo does not run attack {attack!r}")

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
        stem = self.stem(setting)
        path = self.cells / f"{stem}--{attack}.json"
        if path.exists():
            return {**read_json(path), "setting": stem}
        faces = self.faces_for(attack, ctx)
        scope: Dict[str, Any] = {
            "n_faces": int(ctx.labels.shape[0] if faces is None else faces.numel())
        }
        if (
            faces is not None
        ):  # this attack runs on a subset: positions into results.json's "labels"
            ctx, feats = ctx.select(faces), (feats[0][faces], feats[1])
            scope["faces"] = faces.tolist()
        if (
            attack in _ADAPTIVE
        ):  # how many public releases the attacker learned from (held-out ones included)
            scope["public_faces"] = int(self.public_subset_indices(attack).numel())
        if attack in EMBEDDING_ATTACKS:
            return self._embedding_cell(
                setting, attack, defense, feats, ctx, {**utility, **scope}, path
            )
        atk = self.make_attack(
            attack, setting, defense
        )  # a decoder it trains is timed as its own stage
        t0 = time.time()
        history: List[Dict[str, Any]] = []
        if attack in _ADAPTIVE:
            # the per-epoch curve is measured on the first `adaptive_curve_images` faces (all by default)
            n_curve = int(self.cfg.eval.get("adaptive_curve_images") or feats[0].shape[0])
            curve_ctx = ctx.subset(n_curve)

            def on_epoch(epoch: int, a) -> Dict[str, Any]:
                return {
                    **privacy_metrics(a(feats[0][:n_curve]), curve_ctx, full=False),
                    "n_images": n_curve,
                }

            atk.fit(
                self.public_subset(attack),
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
            {"images": recon[:_GRID_FACES]},
            kind="reconstructions",
        )
        return self._store_row(
            setting, attack, {**metrics, **utility, **scope}, feats[1], t0, history, path
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
        """Write a finished cell's row (with its adaptive curve) atomically to ``path`` and return it."""
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
        """A cell of an embedding attack: the plain one as trained on raw public features, the adaptive one
        fine-tuned from it on the defence's release of the attacker's public faces; no face is drawn."""
        plain = self.embedding_attack(setting, defense)
        t0 = time.time()
        history: List[Dict[str, Any]] = []
        atk: EmbeddingAttack = plain
        if attack == "adaptive-embedding":
            kw = self.attack_kwargs("adaptive-embedding")
            atk = AdaptiveEmbeddingAttack(
                plain, **{"seed": self.cfg.seed, **kw}, device=str(self.study.device)
            )
            atk.fit(
                self.public_released(setting, defense, attack),
                self.public_embeddings(self.public_subset_indices(attack)),
                progress=self.progress,
                checkpoint_stem=self.cells / f"{self.stem(setting)}--{attack}-state",
            )
            history = list(atk.history)
        measured = {**embedding_privacy_metrics(atk(feats[0]), ctx), **utility}
        return self._store_row(setting, attack, measured, feats[1], t0, history, path)

    def stem(self, setting: Setting) -> str:
        """File prefix of a setting's cells, e.g. ``crafter_1.0-3f2a9c1d``: name, value and a hash of its
        constructor ``kwargs`` (so a changed defence setting never reads another's cells)."""
        return f"{setting.name}_{setting.param}-{self.study.key('defense', setting.name, setting.kwargs)[:8]}"

    # -- one defence setting ------------------------------------------------------------------------
    def train_scenario(
        self, setting: Setting, defense: FeatureDefense, released: torch.Tensor, ctx: EvalContext
    ) -> Dict[str, Any]:
        """Training-scenario utility (CRAFTER.md section 1): a fresh cloud head trained on the defence's
        release of ``eval.train_scenario.images`` private training images, its mean AUC on ``released``.

        Stored per defence setting; ``{}`` when the profile has no ``train_scenario`` or no attributes.
        """
        spec = self.cfg.eval.get("train_scenario")
        train = self.study.data.eval_train
        if not spec or train.attributes is None or ctx.attributes is None:
            return {}
        path = self.cells / f"{self.stem(setting)}-train-scenario.json"
        if path.exists():
            return read_json(path)
        n = min(int(spec.get("images", 256)), len(train))
        idx = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(self.cfg.seed + 31)
        )[:n]
        feats, secs = self._stored_release(
            setting,
            "train-scenario-features",
            defense,
            train.float_images(idx),
            f"protect private training images ({setting.label})",
        )
        t0 = time.time()
        trained = train_head(
            self._head(defense),
            feats,
            train.attributes[idx],
            epochs=int(spec.get("epochs", 20)),
            lr=float(spec.get("lr", 1e-3)),
            device=self.study.device,
            seed=self.cfg.seed,
        )
        out = {
            "mean_auc_train_scenario": utility_metrics(released, trained, ctx)["mean_auc"],
            "train_scenario_images": n,
            "train_scenario_seconds": secs + time.time() - t0,
        }
        atomic_write_json(path, out)
        return out

    @staticmethod
    def _attacks_on(setting: Setting, attacks: List[str]) -> List[str]:
        # against the raw release an adaptive attack is its plain counterpart, so it is not run twice
        return [a for a in attacks if not (setting.name == "none" and a in _ADAPTIVE)]

    def run_setting(
        self, setting: Setting, attacks: List[str], ctx: EvalContext
    ) -> List[Dict[str, Any]]:
        """Every attack against one defence setting: its release, utility (both scenarios) and the cells."""
        defense = self.build_defense(setting)
        feats = self.released(setting, defense, ctx)
        utility = {
            **utility_metrics(feats[0], self._head(defense), ctx),
            **self.train_scenario(setting, defense, feats[0], ctx),
        }
        return [
            self.cell(setting, attack, defense, feats, ctx, utility)
            for attack in self._attacks_on(setting, attacks)
        ]

    def finished_rows(self, setting: Setting, attacks: List[str]) -> List[Dict[str, Any]]:
        """The stored rows of one setting's finished cells (nothing is computed)."""
        stem = self.stem(setting)
        paths = [self.cells / f"{stem}--{a}.json" for a in self._attacks_on(setting, attacks)]
        return [{**read_json(p), "setting": stem} for p in paths if p.exists()]

    def _head(self, defense: FeatureDefense) -> torch.nn.Module:
        """The cloud head that reads ``defense``'s release: its own (adversarial learning and DISCO train one)
        or the target's."""
        return defense.head if defense.head is not None else self.study.target().head

    def oracles_ready(self) -> None:
        """Fit (or load) the identity oracles every cell is judged by."""
        self.study.dlib_oracle()
        if "evalnet" in self.oracles:
            self.study.evalnet()

    def shared_decoder(self, attacks: List[str], *, embedding: bool = True) -> None:
        """Train (or load) the black-box decoder and (with ``embedding``) the embedding attack of the target's
        own encoder, if ``attacks`` use them."""
        t = self.study.target()
        raw = create_defense("none", encoder=t.encoder, head=t.head)
        if set(attacks) & {"blackbox", "hybrid", "adaptive-blackbox"}:
            self.decoder(UNPROTECTED, raw)
        if embedding and set(attacks) & set(EMBEDDING_ATTACKS):
            self.embedding_attack(UNPROTECTED, raw)

    def shared_models(self, attacks: List[str]) -> None:
        """Train (or load) everything several settings share, before any of them runs (so parallel
        workers of :mod:`facecraft.experiments.sweep` never train the same model twice);
        :func:`facecraft.experiments.sweep.train_shared` does it in two processes."""
        s = self.study
        s.target(), s.prior(), s.amortizer()
        self.oracles_ready()
        self.shared_decoder(attacks)

    def write_results(
        self,
        ctx: EvalContext,
        rows: List[Dict[str, Any]],
        out_dir: Optional[Path] = None,
        wall_seconds: Optional[float] = None,
    ) -> Path:
        """``results.json`` (the issue-3 schema plus curves and config) in ``out_dir`` (the run directory);
        ``wall_seconds``: the wall-clock time of the invocation that computed them (a resumed run's is
        only that of its last invocation)."""
        s, cfg = self.study, self.cfg
        out_dir = Path(out_dir or s.run_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ceiling = oracle_ceiling(ctx)
        data = s.data
        results = {
            "dataset": cfg.data.dataset,
            "profile": cfg.profile,
            "synthetic": bool(data.synthetic),
            "n_identities": data.eval_train.num_identities,
            "n_images": int(ctx.originals.shape[0]),
            "n_identities_attacked": int(ctx.labels.unique().numel()),
            # the attacked faces' identities, in the order of every row's per-face "hits" (paired tests)
            "labels": ctx.labels.tolist(),
            "chance": 1.0 / data.eval_train.num_identities,
            "oracle_ceiling": ceiling["top1"],
            "oracle_ceiling_top5": ceiling["top5"],
            "statistics": "ci95: 95% percentile bootstrap over identities (2,000 resamples); wilson95: per-face "
            "Wilson score interval; exposed_identities: share of identities with a face identified "
            "(top-1); hits: per-face 0/1 in the order of labels",
            "target_mean_auc_eval_test": read_json(s.run_dir / "stages.json")["stages"]
            .get("target", {})
            .get("metrics", {}),
            "rows": [{k: v for k, v in r.items() if k != "history"} for r in rows],
            "adaptive_curves": [
                {
                    "defense": r["defense"],
                    "param": r["param"],
                    "attack": r["attack"],
                    "history": r["history"],
                }
                for r in rows
                if r.get("history")
            ],
            "config": config_to_dict(cfg),
            "cells": os.path.relpath(self.cells, out_dir),
            "run_dir": os.path.relpath(s.run_dir, out_dir),
            "wall_seconds": wall_seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
        save_checkpoint(
            self.cells / "originals", {"images": ctx.originals[:_GRID_FACES]}, kind="originals"
        )
        atomic_write_json(out_dir / "results.json", results)
        return out_dir / "results.json"


def study_threads() -> int:
    """Torch threads of every study computation, whatever ``--workers``: half the cores (at least one).

    Floating-point sums depend on how many threads split them, so a model trained with 2 threads differs in
    its last bits from one trained with 1; a fixed count per computation makes a run with ``--workers 1`` and
    one with ``--workers 2`` (two processes, each with this many threads) agree bit for bit (issue 20).
    """
    return max(1, (os.cpu_count() or 1) // 2)


def peak_rss_mb() -> float:
    """Peak resident memory in MiB of this process or of any finished child (pool workers), whichever is
    larger (``getrusage``; Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    unit = 1 if sys.platform == "darwin" else 1024
    peak = max(
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return round(peak * unit / 2**20, 1)


def selected_attacks(cfg: RunConfig, attacks: Optional[List[str]]) -> List[str]:
    """``attacks``, else ``cfg.eval['attacks']``, else :data:`DEMO_ATTACKS`."""
    return list(attacks or cfg.eval.get("attacks", DEMO_ATTACKS))


def holds_run_dir(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``fn`` runs holding its ``run_dir`` argument (:func:`facecraft._io.run_lock`), so two
    commands on one run directory never interleave; the second says so and waits."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def held(*args: Any, **kwargs: Any) -> Any:
        with run_lock(signature.bind(*args, **kwargs).arguments["run_dir"], on_wait=log.warning):
            return fn(*args, **kwargs)

    return held


@holds_run_dir
def run_demo(
    cfg: RunConfig,
    run_dir: Path,
    *,
    data_root: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    attacks: Optional[List[str]] = None,
    defenses: Optional[List[str]] = None,
    workers: int = 1,
    finished_only: bool = False,
) -> Path:
    """Run (or resume) the study of ``cfg`` in ``run_dir``; writes ``results.json`` and the report.

    Args:
        cfg: the run's configuration (profile).
        run_dir: where everything is stored and reused.
        data_root: dataset folder or its parent (else ``FACECRAFT_DATA``).
        progress: ``progress(done, total, desc)``.
        attacks: attack names to run (default: ``cfg.eval['attacks']`` or :data:`DEMO_ATTACKS`).
        defenses: defence names to run (default: every one in ``cfg.defenses``).
        workers: defence settings run at once in separate processes
            (:func:`facecraft.experiments.sweep.run_settings`); 1 runs them here, one after the other.
        finished_only: compute no cell: write the results and report of the cells finished so far
            (to look at a long run while it goes on, or after it was stopped).

    Returns:
        The path of ``report.html``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if defenses is not None:
        unknown = set(defenses) - set(cfg.defenses)
        if unknown:
            raise ValueError(
                f"defences {sorted(unknown)} are not in the {cfg.profile} profile; "
                f"choose from {sorted(cfg.defenses)}"
            )
    from facecraft.experiments.sweep import (  # (sweep builds on this module)
        run_settings,
        train_shared,
    )

    study = Study(cfg, run_dir, data_root=data_root, progress=progress)
    demo = StudyRunner(study, progress)
    names = selected_attacks(cfg, attacks)
    settings = [
        st
        for st in defense_grid(cfg)
        if (
            st.name in defenses if defenses is not None else cfg.defenses[st.name].get("demo", True)
        )
    ]
    rows: List[Dict[str, Any]] = []
    if finished_only:
        for setting in settings:
            rows += demo.finished_rows(setting, names)
        if not rows:
            raise ValueError(f"no finished cell in {demo.cells}: nothing to report yet")
        demo.write_results(demo.context(), rows)
        return build_report(study.run_dir)
    if progress:
        progress(0, len(settings), "defence settings")
    with torch_threads(study_threads()):
        train_shared(demo, names, workers=workers, data_root=data_root)
        ctx = demo.context()
        if workers > 1:
            rows = run_settings(
                cfg,
                study.run_dir,
                settings,
                names,
                workers=workers,
                data_root=data_root,
                progress=progress,
                run_started=study.run_started,
            )
        else:
            for i, setting in enumerate(settings):
                rows += demo.run_setting(setting, names, ctx)
                if progress:
                    progress(i + 1, len(settings), "defence settings")
    demo.write_results(ctx, rows, wall_seconds=time.time() - study.run_started)
    return build_report(study.run_dir)


def build_report(run_dir: Path) -> Path:
    """Draw the figures from ``run_dir``'s results and cells and write ``report.html`` / ``report.md``."""
    from facecraft.experiments.report import plot_adaptive, plot_grid, plot_tradeoff, write_report

    run_dir = Path(run_dir)
    if not (run_dir / "results.json").exists():
        raise ValueError(
            f"{run_dir} holds no results.json; run `facecraft demo` or `facecraft evaluate` first"
        )
    results = read_json(run_dir / "results.json")
    if not (
        isinstance(results, dict)
        and isinstance(results.get("rows"), list)
        and isinstance(results.get("cells"), str)
    ):
        raise ValueError(
            f"{run_dir / 'results.json'} is not a facecraft results file (it needs a list of 'rows' "
            "and the 'cells' folder); `facecraft demo`, `sweep` and `evaluate` write one"
        )
    cells = run_dir / results["cells"]
    if not checkpoint_exists(cells / "originals"):
        raise ValueError(
            f"{run_dir / 'results.json'} names the cells folder {cells}, which holds no originals; "
            "was the run directory moved without its cells?"
        )
    originals = load_checkpoint(cells / "originals", kind="originals")[0]["images"]
    figures = {"tradeoff": plot_tradeoff(results)}
    adaptive = plot_adaptive(results)
    if adaptive:
        figures["adaptive"] = adaptive
    recon: Dict[str, Dict[str, torch.Tensor]] = {}
    attacks: List[str] = list(dict.fromkeys(r["attack"] for r in results["rows"]))
    # a row per setting (a demo's grid); over _GRID_ROWS settings (a sweep), one per defence, the setting with the
    # median parameter, so the grid stays readable
    chosen: Dict[str, List[Any]] = {}
    stems: Dict[Tuple[str, Any], str] = {}
    for r in results["rows"]:
        if r["param"] not in chosen.setdefault(r["defense"], []):
            chosen[r["defense"]].append(r["param"])
        stems[(r["defense"], r["param"])] = r.get("setting", f"{r['defense']}_{r['param']}")
    every = sum(len(ps) for ps in chosen.values()) <= _GRID_ROWS
    for d, params in chosen.items():
        ps = sorted(params, key=lambda p: (p is None, p))
        for p in ps if every else [ps[len(ps) // 2]]:
            label = d if p is None else f"{d} {p:g}"
            recon[label] = {}
            for a in attacks:
                stem = cells / f"{stems[(d, p)]}--{a}-recon"
                if checkpoint_exists(stem):
                    recon[label][a] = load_checkpoint(stem, kind="reconstructions")[0]["images"]
    drawn = [
        a for a in attacks if any(a in per for per in recon.values())
    ]  # embedding attacks draw no face
    if recon and drawn:
        figures["grid"] = plot_grid(originals, recon, drawn)
    return write_report(run_dir, figures=figures)["html"]
