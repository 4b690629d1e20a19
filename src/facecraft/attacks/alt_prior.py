"""A2 adaptive attack: white-box inversion through a different prior (CRAFTER.md section 2).

Crafter steers the attacker's inversion towards the average face of the prior
``G`` it was crafted against. A2 tests whether that protection transfers to an
attacker holding a *different* prior: another architecture and latent size
(the paper mentions StyleGAN-like generators). The algorithm is the white-box
latent inversion of :mod:`facecraft.attacks.whitebox`; only the prior (and its
optional amortizer and critic) changes, e.g. a
:class:`facecraft.models.resgan.ResGenerator` trained on the same public faces.

References:
    Wang et al., "Crafter: Facial Feature Crafting against Inversion-based
    Identity Theft on Deep Models", NDSS 2024, https://arxiv.org/abs/2401.07205.

Note:
    The second prior is trained outside the attack (by the generic WGAN-GP
    loop) and passed in; the attack does not train it.
"""

from __future__ import annotations

from facecraft.attacks.registry import register_attack
from facecraft.attacks.whitebox import WhiteBoxAttack

__all__ = ["AltPriorAttack"]


class AltPriorAttack(WhiteBoxAttack):
    r"""A2: white-box latent inversion through an alternative prior ``G2``.

    Args:
        encoder: the encoder ``Enc`` the attacker knows.
        generator: the alternative prior ``G2`` (e.g. a
            :class:`~facecraft.models.resgan.ResGenerator`), with a
            ``latent_dim`` attribute.
        amortizer: optional amortizer trained for ``G2`` (Default: None).
        critic: optional critic of ``G2`` for the realism term (Default: None).
        steps: descent iterations (Default: 600).
        lr: step size (Default: 5e-3).
        momentum: heavy-ball momentum (Default: 0.9).
        prior_weight: weight of ``-D(G2(z))`` (Default: 0.0).
        restarts: cold starts per feature (Default: 1).
        seed: seed of the start latents (Default: 0).

    Shape:
        - features: ``(N, *F)``, the encoder's feature shape.
        - output: ``(N, 3, S, S)`` in [0, 1].

    References:
        Wang et al., NDSS 2024, https://arxiv.org/abs/2401.07205 (adaptive attacks, A2).

    Note:
        The same rescaled objective as :class:`WhiteBoxAttack` (see
        :mod:`facecraft.attacks.whitebox`), and its constructor: only the
        registered name differs.
    """

    @classmethod
    def name(cls) -> str:
        return "alt-prior"


register_attack("alt-prior", AltPriorAttack)
