"""Defences by name (modelled on ``opacus/accountants/registry.py``).

``register_defense(name, cls, force=False)`` raises ``ValueError`` on a
duplicate unless ``force``; ``create_defense(name, **kwargs)`` raises
``ValueError`` listing the registered names when ``name`` is unknown.
"""

from facecraft._registry import Registry
from facecraft.defenses.base import FeatureDefense

__all__ = [
    "register_defense",
    "create_defense",
    "available_defenses",
    "get_defense_class",
    "DEFENSES",
]

DEFENSES: Registry[FeatureDefense] = Registry("defense")
register_defense = DEFENSES.register
create_defense = DEFENSES.create
get_defense_class = DEFENSES.get
available_defenses = DEFENSES.names
