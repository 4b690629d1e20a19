"""The attacker of ``facecraft audit``: the study's attacker side facing a user's encoder.

It trains what CRAFTER.md section 2 gives the attacker of the target, once per user encoder (files
keyed by the encoder's hash under the run directory's ``models/``): the black-box decoder on the
public faces, an amortizer for the white-box attack's start, and the embedding regressor; other
attacks are built through the attack registry from these pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from torch import nn

from facecraft.attacks import DecoderAttack, EmbeddingAttack, get_attack_class
from facecraft.experiments.attacker import AttackerSide, build_attack
from facecraft.experiments.config import config_to_dict
from facecraft.experiments.study import Study
from facecraft.models import Amortizer
from facecraft.models.train import train_amortizer

__all__ = ["AuditAttacker"]

ProgressFn = Callable[[int, int, str], None]


class AuditAttacker(AttackerSide):
    """The attacker's side of ``study`` facing the user's ``encoder`` (key: its hash; ``shape``: its
    feature shape) instead of the target's."""

    def __init__(
        self,
        study: Study,
        encoder: nn.Module,
        key: str,
        shape: Tuple[int, ...],
        progress: Optional[ProgressFn],
    ) -> None:
        super().__init__(study, progress)
        self.encoder, self.key, self.shape = encoder, key, shape
        self._amortizer: Optional[nn.Module] = None
        self._decoder: Optional[DecoderAttack] = None
        self._embedder: Optional[EmbeddingAttack] = None

    def stem(self, what: str, *parts: Any) -> Path:
        return self.study.model_stem(f"audit-{what}-{self.key[:12]}", self.key, *parts)

    def amortizer(self) -> Optional[nn.Module]:
        """``Amor(F) -> z`` for the user's encoder, or ``None`` when its maps are not square powers
        of two of side >= 4 (the white-box attack then starts from the prior's mean latent)."""
        if self._amortizer is None:
            m, a = self.cfg.model, self.cfg.amortizer
            try:
                amor = Amortizer(self.shape, m.latent_dim, width=m.amortizer_width)
            except ValueError:
                return None
            g, _ = self.study.prior()
            train_amortizer(
                amor,
                self.encoder,
                g,
                steps=a.steps,
                batch_size=a.batch_size,
                lr=a.lr,
                device=self.study.device,
                seed=self.cfg.seed,
                checkpoint_stem=self.stem("amortizer", config_to_dict(m), config_to_dict(a)),
                progress=self.progress,
            )
            self._amortizer = amor.eval()
        return self._amortizer

    def user_decoder(self) -> DecoderAttack:
        """The black-box decoder trained on ``(Enc(X'), X')`` of the public faces."""
        if self._decoder is None:
            kw = self.attack_kwargs("blackbox")
            stem = self.stem("decoder", kw, config_to_dict(self.cfg.model))
            self._decoder = self.train_decoder(self.encoder, stem)
        return self._decoder

    def user_embedder(self) -> EmbeddingAttack:
        """The embedding regressor from the user's features of the public pool to dlib's."""
        if self._embedder is None:
            kw = {"seed": self.cfg.seed, **self.attack_kwargs("embedding")}
            pool = self.embedding_pool()
            stem = self.stem("embedding", kw, [] if pool is None else [int(pool.numel())])
            self._embedder = self.train_embedder(self.encoder, stem)
        return self._embedder

    def attack(self, name: str) -> Any:
        """Attack ``name`` against the user's encoder, built through the attack registry."""
        if name == "embedding":
            return self.user_embedder()
        if issubclass(get_attack_class(name), DecoderAttack):
            return self.user_decoder()
        provides: Dict[str, Callable[[], Any]] = {
            "encoder": lambda: self.encoder,
            "generator": lambda: self.study.prior()[0],
            "amortizer": self.amortizer,
            "decoder_attack": self.user_decoder,
        }
        return build_attack(name, provides, self.attack_kwargs(name))
