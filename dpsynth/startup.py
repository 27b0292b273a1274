"""Process start-up: import the heavy modules of a command without paying twice for them.

A release imports about 2,800 modules (great-expectations in its validation worker,
polars, pyarrow, numpy, OpenDP, cryptography in the release itself). While they load,
the cyclic garbage collector runs hundreds of collections over the growing heap of
module objects, none of which is garbage: about a third of great-expectations' import
time on the NIST excerpt (2.6 of 7 s, issue 15). At exit, the interpreter scans that
heap again (2 s after importing great-expectations). :func:`frozen_imports` imports
with the collector paused, then freezes what the imports created (``gc.freeze``:
moved to a permanent generation that collections, and the interpreter's exit, skip).

This module owns only that; it must not import anything heavy itself.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["frozen_imports"]


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the imports in the ``with`` block without cyclic garbage collection, then
    freeze every object alive (module objects, mostly) and restore the collector.

    Objects frozen are never collected: use it around imports, once per process (the
    CLI's first import of the pipeline; the validation worker's warm-up)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
