"""Attacks by name (modelled on ``opacus/accountants/registry.py``).

``register_attack(name, cls, force=False)`` raises ``ValueError`` on a
duplicate unless ``force``; ``create_attack(name, **kwargs)`` raises
``ValueError`` listing the registered names when ``name`` is unknown.
"""

from facecraft._registry import Registry
from facecraft.attacks.base import InversionAttack

__all__ = ["register_attack", "create_attack", "available_attacks", "get_attack_class", "ATTACKS"]

ATTACKS: Registry[InversionAttack] = Registry("attack")
register_attack = ATTACKS.register
create_attack = ATTACKS.create
get_attack_class = ATTACKS.get
available_attacks = ATTACKS.names
