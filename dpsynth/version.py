"""The installed dpsynth version, read from the package metadata (pyproject.toml).

Modules that record the version (manifest, ledger, CLI) import it from here, never
from the package ``__init__`` (which imports them: a cycle).
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("dpsynth")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
