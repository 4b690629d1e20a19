"""Inversion attacks against released face features (CRAFTER.md section 2).

Importing this package registers every attack by name:

- ``"whitebox"``: :class:`WhiteBoxAttack`, latent inversion through the GAN prior.
- ``"blackbox"``: :class:`DecoderAttack`, a decoder trained on public ``(Enc(X), X)``.
- ``"hybrid"``: :class:`HybridAttack`, decoder start refined in image space.
- ``"adaptive-whitebox"``: :class:`AdaptiveWhiteBoxAttack` (A1), the prior retrained on protected
  features.
- ``"adaptive-blackbox"``: :class:`AdaptiveBlackBoxAttack` (A1), the decoder fine-tuned on protected
  features.
- ``"alt-prior"``: :class:`AltPriorAttack` (A2), inversion through a different prior.
- ``"average"``: :class:`AveragingAttack` (A3), mean of repeated releases.
- ``"feature2id"``: :class:`Feature2IDAttack`, identity straight from features (an
  :class:`IdentityAttack`, not an :class:`InversionAttack`).
- ``"embedding"``: :class:`EmbeddingAttack`, a face-recognition embedding regressed from
  features (its own interface: neither an image nor identity scores).
- ``"adaptive-embedding"``: :class:`AdaptiveEmbeddingAttack` (A1), the embedding regressor
  trained on protected features.
"""

from facecraft.attacks.adaptive_blackbox import AdaptiveBlackBoxAttack
from facecraft.attacks.adaptive_embedding import AdaptiveEmbeddingAttack
from facecraft.attacks.adaptive_whitebox import AdaptiveWhiteBoxAttack
from facecraft.attacks.alt_prior import AltPriorAttack
from facecraft.attacks.averaging import AveragingAttack, query_average
from facecraft.attacks.base import DefenseFn, InversionAttack, ProgressFn
from facecraft.attacks.decoder import DecoderAttack
from facecraft.attacks.embedding import EmbeddingAttack
from facecraft.attacks.feature2id import Feature2IDAttack, FeatureClassifier, IdentityAttack
from facecraft.attacks.hybrid import HybridAttack
from facecraft.attacks.registry import (
    ATTACKS,
    available_attacks,
    create_attack,
    get_attack_class,
    register_attack,
)
from facecraft.attacks.whitebox import (
    WhiteBoxAttack,
    inversion_loss,
    invert_latent,
    latent_objective,
)

__all__ = [
    "ATTACKS",
    "AdaptiveBlackBoxAttack",
    "AdaptiveEmbeddingAttack",
    "AdaptiveWhiteBoxAttack",
    "AltPriorAttack",
    "AveragingAttack",
    "DecoderAttack",
    "DefenseFn",
    "EmbeddingAttack",
    "Feature2IDAttack",
    "FeatureClassifier",
    "HybridAttack",
    "IdentityAttack",
    "InversionAttack",
    "ProgressFn",
    "WhiteBoxAttack",
    "available_attacks",
    "create_attack",
    "get_attack_class",
    "inversion_loss",
    "invert_latent",
    "latent_objective",
    "query_average",
    "register_attack",
]
