"""Synthesis engines behind one protocol, and their registry.

Owns: the name -> engine registry (``aim`` is the default, ``mst``) and
:func:`get_engine`. Each engine is a plain function ``fit(session, settings)``
returning a :class:`~dpsynth.engines.base.FittedModel`, with a frozen settings
dataclass.

Everything in this package is post-processing of what the measurement session
returns. Must not: import private-table modules (``dpsynth.io``,
``dpsynth.check``, ``dpsynth.marginals``), the session module, or opendp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dpsynth.engines.aim import AIMSettings, fit_aim
from dpsynth.engines.base import Engine, FittedModel, Model, SessionLike
from dpsynth.engines.mst import MSTSettings, fit_mst
from dpsynth.engines.smartnoise import (
    SmartnoiseAIMSettings,
    SmartnoiseMSTSettings,
    SmartnoiseMWEMSettings,
    fit_smartnoise_aim,
    fit_smartnoise_mst,
    fit_smartnoise_mwem,
)
from dpsynth.errors import UsageError

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "AIMSettings",
    "Engine",
    "EngineSpec",
    "FittedModel",
    "MSTSettings",
    "Model",
    "get_engine",
]


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: its ``fit`` function and settings type."""

    name: str
    fit_fn: Callable[[Any, Any], Model]
    settings: type
    summary: str

    def fit(self, session: SessionLike, settings: Any = None) -> Model:
        if settings is None:
            settings = self.settings()
        if not isinstance(settings, self.settings):
            raise UsageError(
                f"settings ({type(settings).__name__}) must be {self.settings.__name__} "
                f"for engine {self.name!r}"
            )
        return self.fit_fn(session, settings)


ENGINES: dict[str, EngineSpec] = {
    "aim": EngineSpec("aim", fit_aim, AIMSettings, "AIM (McKenna et al. 2022), the default"),
    "mst": EngineSpec("mst", fit_mst, MSTSettings, "MST (McKenna et al. 2021)"),
    "smartnoise-mst": EngineSpec(
        "smartnoise-mst", fit_smartnoise_mst, SmartnoiseMSTSettings,
        "smartnoise-synth 1.0.8 MST (optional extra; row-level unit only, DP total instead of "
        "the true N, smartnoise's own noise)"),
    "smartnoise-aim": EngineSpec(
        "smartnoise-aim", fit_smartnoise_aim, SmartnoiseAIMSettings,
        "smartnoise-synth 1.0.8 AIM (optional extra; row-level unit only, smartnoise's own noise)"),
    "smartnoise-mwem": EngineSpec(
        "smartnoise-mwem", fit_smartnoise_mwem, SmartnoiseMWEMSettings,
        "smartnoise-synth 1.0.8 MWEM (optional extra; row-level unit only, small domains, public "
        "domain and DP total, smartnoise's own noise)"),
}

DEFAULT_ENGINE = "aim"


def get_engine(name: str = DEFAULT_ENGINE) -> EngineSpec:
    """The registered engine called ``name``."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UsageError(f"engine ({name!r}) must be one of: {', '.join(sorted(ENGINES))}") from None
