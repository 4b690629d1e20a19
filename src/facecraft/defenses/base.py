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
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Tuple

import torch
from torch import nn

from facecraft._torchutils import eval_mode
from facecraft._validation import validate_images

__all__ = ["ConfigField", "FeatureDefense", "numeric_parameters"]


class FeatureDefense(abc.ABC):
    """Base class: images -> released features.

    Args:
        encoder: the edge encoder ``Enc`` (images in [0, 1] -> features).
        head: the cloud head ``f`` (features -> logits), for task-oriented
            utility and for measuring mean AUC.
    """

    #: whether :meth:`protect` is randomised (A3 query averaging applies).
    randomized: bool = False
    #: whether :meth:`edge_module` gives one network a device can run (``facecraft export``,
    #: issue 16): not for a per-image optimisation (Crafter) or a random draw (noise)
    exportable: bool = False

    # Traits the study reads (issue 19): a runner, report or sweep asks the defence, never its name.
    #: whether the release comes from the target's own encoder, so the attacker's decoder,
    #: amortizer and embedding regressor trained on that encoder apply (False where the defence
    #: retrains the encoder)
    keeps_encoder: bool = True
    #: whether the release is ``Enc(X)`` unchanged (no protection): an adaptive attack is then its
    #: plain one
    raw_release: bool = False
    #: whether this is a feature-crafting defence (Crafter's family): the subject of the report's
    #: claim table
    crafts_features: bool = False
    #: constructor arguments the study supplies beyond ``encoder`` and ``head``: any of
    #: ``"generator"`` and ``"amortizer"`` (the attacker-side prior), ``"image_size"``
    study_inputs: Tuple[str, ...] = ()
    #: what :meth:`fit` learns from in a study: ``None`` (nothing), ``"attributes"`` (public faces
    #: and their attributes), ``"prior"`` (public faces through the study's prior and amortizer)
    #: or ``"teacher"`` (another defence's release of the attacker's public faces,
    #: :meth:`teacher_setting`)
    fits_on: Optional[str] = None
    #: rough cost of one setting in a study, for scheduling (a sweep starts the costliest first)
    relative_cost: int = 10

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module] = None) -> None:
        self.encoder = encoder
        self.head = head
        self.history: List[Dict[str, Any]] = []
        #: whether the last :meth:`fit` trained anything (False: nothing to learn, or a finished
        #: checkpoint)
        self.fit_trained = False

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """The name this defence is registered under."""

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        progress=None,
    ) -> "FeatureDefense":
        """Train whatever the defence learns on public data; default: nothing."""
        return self

    @abc.abstractmethod
    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """Released features ``(N, *F)`` for images ``(N, 3, S, S)`` in [0, 1]."""

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def __call__(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Validate ``images`` (a non-empty float32 batch, finite, in [0, 1]) and run
        :meth:`protect` (extra keywords passed on) in eval mode; a non-finite release raises
        ``ValueError``."""
        validate_images(images, dtype=torch.float32, allow_empty=False)
        # defences optimise internally (Crafter, Crafter-z), so gradients stay on even when the
        # caller queries the defence under torch.no_grad() (as adaptive attackers do)
        with eval_mode(self.encoder, self.head), torch.enable_grad():
            out = self.protect(images.detach().to(self.device), **kwargs)
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"{self!r} released non-finite features (NaN or infinity); check its parameters"
            )
        return out.detach()

    def edge_module(self) -> nn.Module:
        """Images in [0, 1] -> released features as one module (:attr:`exportable` ones only)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported as one network")

    def fit_key(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(name, config)`` under which a study stores this defence's fit when several settings
        share it (e.g. one pre-trained critic for every beta); ``None``: one fit per setting."""
        return None

    def teacher_setting(self) -> Tuple[str, Optional[float], Dict[str, Any]]:
        """``(name, param, kwargs)`` of the defence whose release this one learns from (``fits_on ==
        "teacher"`` only)."""
        raise NotImplementedError(f"{type(self).__name__} learns from no teacher")

    def reseed(self, key: str) -> None:
        """Restart the defence's random stream from its seed and ``key`` (randomised ones only).

        The study calls it before each stored release (``key`` names the release), so the release
        depends on the seed, the key and the images, never on the calls made before: a resumed run
        or another worker recomputes it bit for bit (issue 20). A deterministic defence ignores it.
        """

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
        names, or reads them from a frozen config through a
        :class:`ConfigField` of that name); a constructor that passes ``**kwargs``
        on to its parent's (a preset such as ``crafter-fast``) also gets the
        parent's parameters.
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
        params = {k: v for k, v in vars(self).items() if _scalar(v) and not k.startswith("_")}
        for k in _constructor_parameters(type(self)):  # those read from frozen configs
            v = getattr(self, k, None)
            if _scalar(v):
                params.setdefault(k, v)
        return (
            f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
        )


class ConfigField:
    """A defence's read-only attribute that reads one field of a frozen config it holds.

    A defence that groups its flat constructor arguments into frozen
    dataclasses (e.g. Crafter's :class:`~facecraft.defenses.hypergrad.IHVPSolver`)
    declares each argument as ``name = ConfigField("group", "field")`` (``field``
    defaults to ``name``), so :meth:`FeatureDefense.get_config`, sweeps and saved
    protectors keep finding it under its constructor name. Assigning it raises
    ``AttributeError``: the config is frozen, so build a new defence instead.

    Args:
        group: the attribute holding the config.
        field: the config's field (Default: None: the attribute's own name).
    """

    def __init__(self, group: str, field: Optional[str] = None) -> None:
        self.group = group
        self.field = field
        self.name = field or group

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        if self.field is None:
            self.field = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.group), self.field or self.name)

    def __set__(self, obj: Any, value: Any) -> NoReturn:
        raise AttributeError(
            f"{type(obj).__name__}.{self.name} is read from its frozen {self.group!r} config; "
            "build a new defence to change it"
        )


def numeric_parameters(cls: type) -> List[str]:
    """Constructor parameters of a defence class whose default is a number (what a sweep varies)."""
    return [
        p.name
        for p in _init_parameters(cls)
        if (isinstance(p.default, (int, float)) and not isinstance(p.default, bool))
        or (p.default is None and str(p.annotation) in ("Optional[int]", "Optional[float]"))
    ]


def scalar_parameters(cls: type) -> List[str]:
    """Constructor parameters of a defence class whose default is a number, string or bool (what a
    sweep may fix with ``--set``)."""
    return [p.name for p in _init_parameters(cls) if _scalar(p.default)]


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))


def _constructor_parameters(cls: type) -> List[str]:
    """Named parameters of ``cls.__init__``, then those of each parent whose ``__init__`` receives
    ``**kwargs``."""
    return [p.name for p in _init_parameters(cls)]


def _init_parameters(cls: type) -> List[inspect.Parameter]:
    """The named parameters (``self`` and ``*args`` / ``**kwargs`` apart) of ``cls.__init__``,
    then of each parent's whose child passes ``**kwargs`` on, first occurrence of a name kept."""
    found: Dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                found.setdefault(p.name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(found.values())
