"""Injected crash points: a real SIGKILL of this process at a named step, for tests.

Reliability tests (and ``benchmarks/reliability.py``) set the environment variable
``DPSYNTH_CRASH_AT`` to a point's name; when the code reaches :func:`crash_point`
with that name, the process kills itself with ``SIGKILL``: nothing is flushed, no
``finally`` runs, no handler sees it, exactly as when the kernel's OOM killer or
``kubectl delete pod --grace-period=0`` ends a Job. The kill is real, never
simulated. Without the variable, :func:`crash_point` does nothing.

Names in use are listed in :data:`POINTS` so a test can name every window; an
unknown name in the variable is refused at the first call (a typo would otherwise
make a crash test pass without crashing).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "POINTS", "crash_point"]

ENV = "DPSYNTH_CRASH_AT"

#: Every injected point, in pipeline order, with what has happened when it fires.
POINTS: dict[str, str] = {
    "after-reserve": "the budget is reserved, the input not yet opened",
    "after-spent": "the input was hashed and the charge marked spent",
    "after-decompress": "a compressed input was opened for reading",
    "after-fit": "the model is fitted (private half done)",
    "in-bundle": "the bundle's temporary directory is partly written",
    "before-publish": "the bundle's temporary directory is complete, not yet renamed",
    "after-publish": "the bundle was renamed to its final path, the ledger not yet updated",
}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``DPSYNTH_CRASH_AT`` names this point."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if wanted not in POINTS:
        raise RuntimeError(f"{ENV}={wanted!r} is not a crash point; known: {', '.join(POINTS)}")
    if name not in POINTS:  # pragma: no cover - a programming error
        raise RuntimeError(f"crash point {name!r} is not listed in POINTS")
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
