"""The attacker's side of a study (CRAFTER.md section 2): public faces and what is trained on them.

The attacker owns public faces (identity-disjoint from the private ones), their
dlib embeddings, and the models it trains once per encoder it faces: the
black-box decoder (the ``blackbox`` attack, reused by ``hybrid`` and
``adaptive-blackbox``) and the embedding regressor (``embedding``). A defence
that keeps the target's encoder (``keeps_encoder``) shares the target's models;
one that retrains the encoder gets its own. Every model is stored under
``models/`` and reused by later runs.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from facecraft._io import checkpoint_exists, load_checkpoint, save_checkpoint
from facecraft._torchutils import eval_mode, query_in_batches
from facecraft.attacks import DecoderAttack, EmbeddingAttack, create_attack, get_attack_class
from facecraft.defenses.base import FeatureDefense
from facecraft.experiments.config import config_to_dict
from facecraft.experiments.grid import Setting, setting_stem
from facecraft.experiments.study import Study

__all__ = ["AttackerSide", "build_attack"]

ProgressFn = Callable[[int, int, str], None]


class AttackerSide:
    """The attacker's public data and per-encoder models in ``study`` (module docstring).

    Args:
        study: the study whose public faces and trained models are used.
        progress: ``progress(done, total, desc)`` for the trainings.
    """

    def __init__(self, study: Study, progress: Optional[ProgressFn]) -> None:
        self.study = study
        self.cfg = study.cfg
        self.progress = progress
        self._decoders: Dict[str, DecoderAttack] = {}
        self._embedders: Dict[str, EmbeddingAttack] = {}
        self._public_emb: Optional[torch.Tensor] = None

    def attack_kwargs(self, name: str) -> Dict[str, Any]:
        """The profile's keyword arguments of attack ``name``."""
        return dict(self.cfg.attacks.get(name, {}))

    # -- public faces -----------------------------------------------------------------------------
    def public_subset_indices(self, attack: Optional[str] = None) -> torch.Tensor:
        """Which public images the adaptive attacker runs through the defence
        (``eval.adaptive_public``, seeded); an ``attack`` named in
        ``eval.adaptive_public_by_attack`` takes the first that many."""
        n = int(self.cfg.eval.get("adaptive_public", 1024))
        return self._public_order()[:n][: self.public_count(attack)]

    def _public_order(self) -> torch.Tensor:
        """The attacker's seeded order of the public faces: its adaptive releases and the embedding
        pool are prefixes of it."""
        g = torch.Generator().manual_seed(self.cfg.seed + 23)
        return torch.randperm(len(self.study.data.public), generator=g)

    def public_count(self, attack: Optional[str]) -> Optional[int]:
        """``eval.adaptive_public_by_attack[attack]``: how many adaptive releases ``attack`` learns
        from (``None``: all of them)."""
        n = self.cfg.eval.get("adaptive_public_by_attack", {}).get(attack) if attack else None
        return None if n is None else int(n)

    def public_subset(self, attack: Optional[str] = None) -> torch.Tensor:
        """The adaptive attacker's own public images (:meth:`public_subset_indices`)."""
        return self.study.data.public.float_images(self.public_subset_indices(attack))

    def embedding_pool(self) -> Optional[torch.Tensor]:
        """The public faces whose dlib embeddings the embedding attacks learn from: every public
        face, or with ``eval.embedding_public = n`` the first ``max(n, eval.adaptive_public)`` of
        the adaptive attacker's seeded order (so the adaptive attacker's own faces are among them);
        ``None`` for all."""
        n = self.cfg.eval.get("embedding_public")
        if n is None:
            return None
        return self._public_order()[: max(int(n), int(self.cfg.eval.get("adaptive_public", 1024)))]

    def public_embeddings(self, indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """dlib embeddings ``(N, 128)`` of the public faces ``indices`` (default: the whole
        :meth:`embedding_pool`): what the embedding attacks learn to predict (computed once per run
        directory, stored under ``models/``)."""
        pool = self.embedding_pool()
        if self._public_emb is None:
            self._public_emb = self._embed_pool(pool)
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

    def _embed_pool(self, pool: Optional[torch.Tensor]) -> torch.Tensor:
        """dlib embeddings of the public faces ``pool`` (all for ``None``), loaded or computed and
        stored."""
        from facecraft.metrics.dlib_oracle import DlibOracle

        s = self.study
        # embedding needs no gallery: runs beside the gallery's fit
        dl = DlibOracle(crop_fraction=s.dlib_crop)
        sizes = [] if pool is None else [int(pool.numel())]
        stem = (
            s.run_dir / "models" / f"dlib-public-{s.key('dlib-public', dl.crop_fraction, *sizes)}"
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
        return emb

    # -- models trained once per encoder
    # ------------------------------------------------------------
    def _per_encoder(
        self, kind: str, attack: str, setting: Setting, *extra: Any
    ) -> Tuple[str, Path]:
        """``(key, file stem)`` of a model the attacker trains once per distinct encoder (``kind``:
        decoder or embedding; configured by ``attack``'s kwargs and ``extra``): the target's own, or
        that of a defence that retrains it."""
        shared = setting.same_encoder
        name = "target" if shared else setting_stem(self.study, setting)
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
        t0 = time.time()
        atk = self.train_decoder(defense.encoder, stem)
        s.record_stage(f"decoder[{key}]", time.time() - t0, cached=not atk.fit_trained)
        self._decoders[key] = atk
        return atk

    def embedding_attack(self, setting: Setting, defense: FeatureDefense) -> EmbeddingAttack:
        """The plain embedding attack for the encoder ``defense`` exposes: regress dlib's embedding
        from that encoder's raw features of the :meth:`embedding_pool` (one per distinct encoder,
        like the decoder)."""
        s = self.study
        pool = self.embedding_pool()
        sizes = [] if pool is None else [int(pool.numel())]
        key, stem = self._per_encoder("embedding", "embedding", setting, *sizes)
        if key in self._embedders:
            return self._embedders[key]
        t0 = time.time()
        atk = self.train_embedder(defense.encoder, stem)
        s.record_stage(f"embedding[{key}]", time.time() - t0, cached=not atk.fit_trained)
        self._embedders[key] = atk
        return atk

    def train_decoder(self, encoder: nn.Module, stem: Path) -> DecoderAttack:
        """The black-box decoder against ``encoder``, trained on ``(Enc(X'), X')`` of the public
        faces (or loaded from ``stem``)."""
        kw = self.attack_kwargs("blackbox")
        atk = DecoderAttack(encoder, image_size=self.study.data.image_size, **kw)
        atk.fit(self.study.data.public.images, progress=self.progress, checkpoint_stem=stem)
        return atk

    def train_embedder(self, encoder: nn.Module, stem: Path) -> EmbeddingAttack:
        """The embedding attack against ``encoder``: dlib's embedding regressed from ``encoder``'s
        features of the :meth:`embedding_pool` (loaded from ``stem`` when stored there)."""
        s = self.study
        atk = EmbeddingAttack(
            **{"seed": self.cfg.seed, **self.attack_kwargs("embedding")}, device=str(s.device)
        )
        if checkpoint_exists(stem):
            atk.load(stem)
        else:
            pool = self.embedding_pool()
            with eval_mode(encoder):
                images = s.data.public.images if pool is None else s.data.public.images[pool]
                feats = query_in_batches(encoder, images, s.device, 256).cpu()
            atk.fit(feats, self.public_embeddings(), progress=self.progress, checkpoint_stem=stem)
        return atk

    def make_attack(self, attack: str, setting: Setting, defense: FeatureDefense):
        """The attack ``attack`` against ``setting``'s release, built through the attack registry
        with the attacker's models its constructor asks for (by parameter name)."""
        cls = get_attack_class(attack)
        if issubclass(cls, DecoderAttack):
            return self.decoder(setting, defense)  # trained once per encoder, shared
        s = self.study
        provides: Dict[str, Callable[[], Any]] = {
            "encoder": lambda: defense.encoder,
            "generator": lambda: s.prior()[0],
            "amortizer": lambda: s.amortizer() if setting.same_encoder else None,
            "defense": lambda: defense,
            "decoder_attack": lambda: self.decoder(setting, defense),
        }
        return build_attack(attack, provides, self.attack_kwargs(attack))


def build_attack(name: str, provides: Dict[str, Callable[[], Any]], kwargs: Dict[str, Any]) -> Any:
    """``create_attack(name, ...)`` with the pieces of ``provides`` (name -> maker, called only when
    needed) that the attack's constructor names as parameters, plus ``kwargs``."""
    params = inspect.signature(get_attack_class(name).__init__).parameters
    wanted = {k: make() for k, make in provides.items() if k in params}
    return create_attack(name, **wanted, **kwargs)
