"""Exact marginal counting over the private, contribution-bounded codes (PRIVATE).

The measurement session (``dpsynth.privacy.session``) asks a *counter* for exact
marginal counts and does everything else itself: caching, sensitivity, noise,
charging. A counter is any object with this small interface
(:class:`MarginalCounter`); two ship with dpsynth:

* :class:`~dpsynth.marginals.numpy_counter.NumpyCounter` (default): the compact
  ``uint8``/``uint16`` code matrix in memory on one machine; counts in row blocks
  with ``numpy.bincount`` on an int64 multi-index built per block.
* ``dpsynth.marginals.spark.SparkCounter`` (extra ``dpsynth[spark]``): a cached,
  bounded, encoded Spark DataFrame; counts with ``groupBy().count()``. The
  subpackage also reads, checks and bounds the input with Spark
  (:func:`~dpsynth.marginals.spark.spark_load`). Imported lazily; importing this
  package never imports pyspark.

This package owns the counter protocol (:class:`MarginalCounter`), the one check of
a marginal's columns every counter and the session share
(:func:`~dpsynth.marginals.columns.marginal_columns`), and :func:`open_counter`,
which runs the private half of the chosen backend.

Rules: a counter returns exact counts only to the session; it never draws noise,
never logs or raises with values, and nothing after the privacy boundary
(``dpsynth/engines``, sampler, reports) may import this package (a test checks).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import numpy as np

__all__ = ["BACKENDS", "LoadedCounter", "MarginalCounter", "NumpyCounter", "TimedCounter",
           "marginal_columns", "open_counter"]

BACKENDS = ("polars", "spark")
"""Counting backends: ``polars`` (read with polars, count with numpy on one machine;
the default) and ``spark`` (read, check, bound and count with Spark)."""


@runtime_checkable
class MarginalCounter(Protocol):
    """Exact counts over the released columns of a contribution-bounded table.

    ``columns`` and ``sizes`` are public (the schema's released columns and domain
    sizes, code ``0 .. size-1``). ``count(cols)`` returns int64 exact counts of
    shape ``tuple(sizes of cols)``, axes in ``cols`` order.

    Optional methods the session uses when present:

    * ``count_many(marginals) -> list[np.ndarray]``: several marginals at once (one
      pass over the data, or one distributed job, where the backend can);
    * ``export_codes() -> np.ndarray``: the ``(n_rows, n_cols)`` codes, for
      ``MeasurementSession.spend_all_for_external`` only (external engines, k = 1).
    """

    @property
    def columns(self) -> tuple[str, ...]: ...

    @property
    def sizes(self) -> tuple[int, ...]: ...

    def count(self, cols: tuple[str, ...]) -> np.ndarray: ...


from dpsynth.marginals.columns import marginal_columns  # noqa: E402
from dpsynth.marginals.numpy_counter import NumpyCounter  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from dpsynth.schema import Schema


class TimedCounter:
    """A counter that adds up the seconds spent counting (``seconds``), for the
    release's timings; everything else is the wrapped counter's."""

    def __init__(self, inner: MarginalCounter) -> None:
        self._inner = inner
        self.seconds = 0.0

    @property
    def columns(self) -> tuple[str, ...]:
        return self._inner.columns

    @property
    def sizes(self) -> tuple[int, ...]:
        return self._inner.sizes

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t

    def count(self, cols: tuple[str, ...]) -> np.ndarray:
        return cast(np.ndarray, self._timed(self._inner.count, cols))

    def __getattr__(self, name: str) -> Any:
        # the optional methods (count_many, export_codes) exactly when the inner has them
        if name not in ("count_many", "export_codes"):
            raise AttributeError(name)
        fn = getattr(self._inner, name)
        return lambda *args: self._timed(fn, *args)


@dataclass(frozen=True)
class LoadedCounter:
    """The private half's result for any backend (PRIVATE: hand ``counter`` to a
    MeasurementSession and drop the reference)."""

    counter: MarginalCounter
    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    contribution_bound: int
    unit_rows: np.ndarray | None = None
    """Exact patients by clamped row count (hand it to the session; PRIVATE)."""


@contextlib.contextmanager
def open_counter(path: str | Path, schema: Schema, *, backend: str = "polars",
                 spark_master: str | None = None,
                 bounding_secret: bytes | int | None = None) -> Iterator[LoadedCounter]:
    """Read, check, bound and encode the input with ``backend``; yield a counter.

    Use the counter (build the session, fit the engine) inside the ``with``: on
    exit the Spark backend drops its cached table and stops the SparkSession if
    it started one (an existing session, e.g. under ``spark-submit``, is kept).

    ``spark_master``: Spark master URL for ``backend="spark"`` (``local[4]``,
    ``spark://...``, ``k8s://...``); ``None`` uses the active session or the
    ``spark-submit`` environment, else ``local[*]``. Ignored by ``polars``.
    ``bounding_secret``: key of the contribution-bounding hash
    (:func:`dpsynth.io.bound_contributions`; both backends keep the same rows for
    the same secret); ``None``: 32 random bytes from the OS. A known secret is safe:
    a patient's kept rows depend only on that patient's rows, so the DP guarantee
    does not rely on the secret; it only makes the choice random.
    """
    from dpsynth.errors import UsageError

    if backend == "polars":
        from dpsynth.io import load_encoded

        enc = load_encoded(path, schema, bounding_secret)
        counter = NumpyCounter(enc.codes, enc.columns, enc.sizes)
        loaded = LoadedCounter(counter, enc.columns, enc.sizes, enc.contribution_bound,
                               enc.unit_rows)
        del enc, counter
        yield loaded
        return
    if backend != "spark":
        raise UsageError(f"backend ({backend!r}) must be one of {', '.join(BACKENDS)}")
    from dpsynth.marginals import spark as sp

    sp.pyspark_functions()  # a clean UsageError when the extra is missing
    from pyspark.sql import SparkSession

    existing = SparkSession.getActiveSession()
    session = sp.spark_session(spark_master)
    started = existing is None or session is not existing
    try:
        enc_s = sp.spark_load(str(path), schema, bounding_secret, session)
        try:
            yield LoadedCounter(enc_s.counter, enc_s.columns, enc_s.sizes,
                                enc_s.contribution_bound, enc_s.unit_rows)
        finally:
            enc_s.counter.close()
    finally:
        if started:
            session.stop()
