"""Feature defences: released features that resist inversion (CRAFTER.md sections 3 and 5).

Importing this package registers every defence by name:

* ``"none"``: :class:`NoDefense`, release ``Enc(X)``;
* ``"noise"``: :class:`GaussianNoise`, Gaussian feature noise (randomised);
* ``"advlearn"``: :class:`AdversarialLearning`, an encoder trained against a decoder;
* ``"disco"``: :class:`DISCO`, learned input-dependent channel pruning;
* ``"crafter"``: :class:`Crafter`, feature crafting through the attacker's inversion
  (the paper's method);
* ``"crafter-fast"``: :class:`FastCrafter`, Crafter with the fast step of ``bench craft``
  (a critic pre-trained once on public faces; beyond the paper);
* ``"crafter-z"``: :class:`CrafterZ`, its latent-space variant;
* ``"amortized-crafter"``: :class:`AmortizedCrafter`, a network trained with Crafter's
  objective that crafts features in one forward pass (beyond the paper);
* ``"distilled-crafter"``: :class:`DistilledCrafter`, a network regressed on a Crafter's releases of
  public faces, exportable to ONNX / TorchScript (beyond the paper; issue 16).

:func:`fit_defender_critic` trains Crafter's critic once on public faces (its fast configuration);
:class:`Protector` and :func:`load_protector` package any of them for the edge;
:mod:`facecraft.defenses.hypergrad` holds the implicit-gradient maths and :class:`IHVPSolver`,
the frozen settings of its inverse-Hessian-vector product.
"""

from facecraft.defenses.advlearn import AdversarialLearning
from facecraft.defenses.amortized_crafter import AmortizedCrafter, FeatureCrafter
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.crafter import Crafter
from facecraft.defenses.crafter_fast import FastCrafter
from facecraft.defenses.crafter_z import CrafterZ
from facecraft.defenses.critic_pretraining import fit_defender_critic
from facecraft.defenses.disco import DISCO, ChannelPruner
from facecraft.defenses.distilled import DistilledCrafter, EdgeProtector
from facecraft.defenses.hypergrad import (
    IHVPSolver,
    cg_ihvp,
    implicit_feature_grad,
    neumann_ihvp,
)
from facecraft.defenses.noise import GaussianNoise
from facecraft.defenses.none import NoDefense
from facecraft.defenses.protector import Protector, load_protector
from facecraft.defenses.registry import (
    DEFENSES,
    available_defenses,
    create_defense,
    get_defense_class,
    register_defense,
)

__all__ = [
    "DEFENSES",
    "DISCO",
    "AdversarialLearning",
    "AmortizedCrafter",
    "ChannelPruner",
    "Crafter",
    "CrafterZ",
    "DistilledCrafter",
    "EdgeProtector",
    "FastCrafter",
    "FeatureCrafter",
    "FeatureDefense",
    "GaussianNoise",
    "IHVPSolver",
    "NoDefense",
    "Protector",
    "available_defenses",
    "cg_ihvp",
    "create_defense",
    "fit_defender_critic",
    "get_defense_class",
    "implicit_feature_grad",
    "load_protector",
    "neumann_ihvp",
    "register_defense",
]
