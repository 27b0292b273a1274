"""Where custodian-only (CONFIDENTIAL) files may go, and how they are written.

The internal audit report (``dpsynth audit``, ``release --audit-dir``) holds
statistics of the real table that are not differentially private. Two rules keep
it from travelling with a public bundle by accident:

* :func:`refuse_audit_dir`: its directory is never inside a bundle (this one or
  any other: a directory holding a bundle manifest), never the bundle itself and
  never a directory that contains the bundle (its parent or further up), since
  whoever ships that directory ships the report too;
* :func:`write_confidential`: its files are created with mode 0600 (owner only),
  in a directory created with mode 0700.

This module reads no data and imports nothing private, so configuration
validation (``ReleaseConfig``) can use it before any budget is reserved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpsynth.errors import UsageError

__all__ = ["refuse_audit_dir", "write_confidential"]

_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "dpsynth.bundle-manifest/v1"


def _is_bundle(d: Path) -> bool:
    try:
        manifest = json.loads((d / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == _MANIFEST_FORMAT


def refuse_audit_dir(audit_dir: Path, bundle_dir: Path, *, option: str = "--out") -> None:
    """Raise :class:`UsageError` (exit 2) when ``audit_dir`` would put the
    confidential report inside, at, or above the bundle ``bundle_dir``, or inside
    any other bundle."""
    a, b = Path(audit_dir).resolve(), Path(bundle_dir).resolve()
    why = ""
    if a == b or b in a.parents:
        why = "is inside the bundle directory"
    elif a in b.parents:
        why = ("is the bundle's parent directory" if a == b.parent
               else "contains the bundle directory")
    else:
        inside = next((p for p in (a, *a.parents) if _is_bundle(p)), None)
        if inside is not None:
            why = f"is inside another release bundle ({str(inside)!r})"
    if why:
        raise UsageError(f"{option} {str(audit_dir)!r} {why}: the CONFIDENTIAL audit report "
                         "holds statistics of the real table and must be kept apart from "
                         "anything published; choose a directory outside the bundle's tree")


def write_confidential(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600; the directory,
    if created here, 0700). An existing file is replaced and its mode reset."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd >= 0:
            os.close(fd)
