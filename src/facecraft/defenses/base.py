"""The common interface of every feature defence (STYLE.md section 2, rule 2).

A defence runs on the edge: it maps private images ``(N, 3, S, S)`` in [0, 1]
to the features ``(N, *F)`` that are released to the cloud. It exposes the
encoder an attacker would see (``encoder``; adversarial learning and DISCO
change it) and the cloud head that consumes the release (``head``), so that
white-box attacks and utility are measured against the right networks.
"""

from __future__ import annotations

import abc
import inspect
import json
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from facecraft._torchutils import eval_mode
from facecraft._validation import validate_images

__all__ = ["FeatureDefense"]


class FeatureDefense(abc.ABC):
    """Base class: images -> released features.

    Args:
        encoder: the edge encoder ``Enc`` (images in [0, 1] -> features).
        head: the cloud head ``f`` (features -> logits), for task-oriented
            utility and for measuring mean AUC.
    """

    #: whether :meth:`protect` is randomised (A3 query averaging applies).
    randomized: bool = False

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module] = None) -> None:
        self.encoder = encoder
        self.head = head
        self.history: List[Dict[str, Any]] = []
        #: whether the last :meth:`fit` trained anything (False: nothing to learn, or a finished checkpoint)
        self.fit_trained = False

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """The name this defence is registered under."""

    def fit(self, public_images: torch.Tensor, public_attributes: Optional[torch.Tensor] = None, *,
            progress=None) -> "FeatureDefense":
        """Train whatever the defence learns on public data; default: nothing."""
        return self

    @abc.abstractmethod
    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """Released features ``(N, *F)`` for images ``(N, 3, S, S)`` in [0, 1]."""

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def __call__(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Validate ``images`` and run :meth:`protect` (extra keywords passed on) in eval mode."""
        validate_images(images)
        # defences optimise internally (Crafter, Crafter-z), so gradients stay on even when the
        # caller queries the defence under torch.no_grad() (as adaptive attackers do)
        with eval_mode(self.encoder, self.head), torch.enable_grad():
            out = self.protect(images.detach().to(self.device), **kwargs)
        return out.detach()

    def networks(self) -> Dict[str, nn.Module]:
        """The networks :meth:`protect` needs, keyed by their constructor argument names.

        The base returns ``encoder`` and (when set) ``head``; defences holding
        more (Crafter's generator and amortizer) extend it. Used by
        :class:`facecraft.defenses.protector.Protector` to save and rebuild a
        defence.
        """
        nets = {"encoder": self.encoder}
        if self.head is not None:
            nets["head"] = self.head
        return nets

    def get_config(self) -> Dict[str, Any]:
        """The constructor's non-network keyword arguments, as JSON-able values.

        Read from the attributes named like the constructor's parameters
        (every defence stores its hyperparameters under their argument
        names); a constructor that passes ``**kwargs`` on to its parent's
        (a preset such as ``crafter-fast``) also gets the parent's parameters.
        Networks (values that are modules) are left out; see :meth:`networks`.

        Raises:
            AttributeError: a constructor parameter is not stored as an attribute.
            TypeError: a value is not JSON-able.
        """
        out: Dict[str, Any] = {}
        for name in _constructor_parameters(type(self)):
            if name in ("encoder", "head") or name in self.networks():
                continue
            if not hasattr(self, name):
                raise AttributeError(
                    f"{type(self).__name__} does not store its constructor argument {name!r}"
                )
            value = getattr(self, name)
            if isinstance(value, nn.Module):
                continue
            if isinstance(value, tuple):
                value = list(value)
            try:
                json.dumps(value)
            except TypeError as e:
                raise TypeError(f"{type(self).__name__}.{name} = {value!r} is not JSON-able") from e
            out[name] = value
        return out

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """Learned tensors beyond :meth:`networks` that :meth:`protect` needs (default: none)."""
        return {}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Inverse of :meth:`extra_state`; raises ``ValueError`` on unexpected keys."""
        if tensors:
            raise ValueError(
                f"{type(self).__name__} holds no extra state, got keys {sorted(tensors)[:5]}"
            )

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"


def _constructor_parameters(cls: type) -> List[str]:
    """Named parameters of ``cls.__init__``, then those of each parent whose ``__init__`` receives ``**kwargs``."""
    names: List[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.name not in names
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names
