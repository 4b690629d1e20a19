"""A name-to-class registry shared by attacks and defences.

Modelled on ``opacus/accountants/registry.py``: a private dict, ``register``
raising on duplicates unless ``force``, ``create`` raising on unknown names
(and, unlike opacus, listing the registered ones).
"""

from __future__ import annotations

from typing import Any, Dict, Generic, List, Type, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A registry of classes by name.

    Args:
        kind: what is registered ("attack", "defense"), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: Dict[str, Type[T]] = {}

    def register(self, name: str, cls: Type[T], *, force: bool = False) -> None:
        """Register ``cls`` under ``name``; raise ``ValueError`` on a duplicate unless ``force``."""
        if name in self._classes and not force:
            raise ValueError(
                f"{self.kind} {name!r} is already registered to {self._classes[name].__name__}; "
                "pass force=True to replace it"
            )
        self._classes[name] = cls

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests to restore the registry)."""
        self._classes.pop(name, None)

    def get(self, name: str) -> Type[T]:
        """Return the class registered under ``name``; raise ``ValueError`` if unknown."""
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or '(none)'}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Instantiate the class registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes
