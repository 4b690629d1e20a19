"""What a study runs: defence settings (a defence at one parameter value) and attack names.

A :class:`Setting` is the unit every runner works in (one release, its utility
and one cell per attack); :func:`defense_grid` expands a profile's defences and
their sweeps into settings. Nothing here knows a defence by name: what the study
needs to know about one it reads from the defence class's traits
(:class:`~facecraft.defenses.base.FeatureDefense`).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from facecraft.defenses import get_defense_class
from facecraft.experiments.config import RunConfig
from facecraft.experiments.study import Study

__all__ = [
    "ADAPTIVE_ATTACKS",
    "DEMO_ATTACKS",
    "EMBEDDING_ATTACKS",
    "Setting",
    "UNPROTECTED",
    "attacks_on",
    "defense_grid",
    "profile_setting",
    "selected_attacks",
    "setting_stem",
]

#: the attacks every defence faces in the demo (adaptive ones skipped for the raw release, where
#: they equal the basic ones)
DEMO_ATTACKS = (
    "whitebox",
    "blackbox",
    "hybrid",
    "embedding",
    "adaptive-whitebox",
    "adaptive-blackbox",
    "adaptive-embedding",
)
#: attacks that learn from the defence's release of the attacker's public faces (A1)
ADAPTIVE_ATTACKS = ("adaptive-whitebox", "adaptive-blackbox", "adaptive-embedding")
#: attacks that predict a face-recognition embedding rather than a face
EMBEDDING_ATTACKS = ("embedding", "adaptive-embedding")


class Setting(NamedTuple):
    """One defence at one parameter value: its registered name, the swept value (``None`` when the
    defence has no sweep) and the constructor keyword arguments (the swept value included)."""

    name: str
    param: Optional[float]
    kwargs: Dict[str, Any]

    @property
    def label(self) -> str:
        """``"name:param"``, e.g. ``crafter:0.1``, for stage names and progress messages."""
        return f"{self.name}:{self.param}"

    @property
    def same_encoder(self) -> bool:
        """Whether the release comes from the target's own encoder (the defence's
        ``keeps_encoder``), so the attacker's decoder and amortizer of that encoder apply."""
        return bool(get_defense_class(self.name).keeps_encoder)


#: the target's own release, through which stored features of any defence are attacked
UNPROTECTED = Setting("none", None, {})


def defense_grid(cfg: RunConfig) -> List[Setting]:
    """Every defence setting in ``cfg.defenses``.

    ``cfg.defenses[name] = {"kwargs": {...}, "sweep": {"param": p, "values": [...]}}``; ``"demo":
    False`` in a spec leaves that defence out of the demo unless asked for by name (sweeps still use
    its kwargs).
    """
    out = []
    for name, spec in cfg.defenses.items():
        kwargs = dict(spec.get("kwargs", {}))
        sweep = spec.get("sweep")
        if not sweep:
            out.append(Setting(name, None, kwargs))
            continue
        for v in sweep["values"]:
            out.append(Setting(name, v, {**kwargs, sweep["param"]: v}))
    return out


def profile_setting(cfg: RunConfig, name: str, param: Optional[float] = None) -> Setting:
    """The setting of defence ``name`` in ``cfg``'s profile at value ``param`` of its swept
    parameter (default: the profile's first value); a defence the profile does not list gets its
    defaults."""
    spec = cfg.defenses.get(name, {})
    sweep = spec.get("sweep")
    kwargs = dict(spec.get("kwargs", {}))
    if sweep:
        param = float(sweep["values"][0]) if param is None else float(param)
        kwargs[sweep["param"]] = param
    return Setting(name, param, kwargs)


def selected_attacks(cfg: RunConfig, attacks: Optional[List[str]]) -> List[str]:
    """``attacks``, else ``cfg.eval['attacks']``, else :data:`DEMO_ATTACKS`."""
    return list(attacks or cfg.eval.get("attacks", DEMO_ATTACKS))


def attacks_on(setting: Setting, attacks: List[str]) -> List[str]:
    """The attacks run against ``setting``: against a raw release (``raw_release``) an adaptive
    attack is its plain counterpart, so it is not run twice."""
    raw = get_defense_class(setting.name).raw_release
    return [a for a in attacks if not (raw and a in ADAPTIVE_ATTACKS)]


def setting_stem(study: Study, setting: Setting) -> str:
    """File prefix of a setting's cells, e.g. ``crafter_1.0-3f2a9c1d``: name, value and a hash of
    its constructor ``kwargs`` (so a changed defence setting never reads another's cells)."""
    return (
        f"{setting.name}_{setting.param}-{study.key('defense', setting.name, setting.kwargs)[:8]}"
    )
