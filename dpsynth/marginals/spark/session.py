"""Starting Spark, and keeping its error text out of messages (PRIVATE).

Owns the SparkSession the backend runs on (:func:`spark_session`), the lazy
import of pyspark (:func:`pyspark_functions`: a clean :class:`UsageError` when
the extra is missing) and :func:`spark_errors`, which replaces any Spark or py4j
error with a fixed message (their text may quote a cell).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dpsynth.errors import InputDataError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = ["INSTALL_HINT", "pyspark_functions", "spark_errors", "spark_session"]

INSTALL_HINT = "pip install 'dpsynth[spark]' (and a Java 17 runtime)"

_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
}


def pyspark_functions() -> Any:
    """``pyspark.sql.functions``, or a :class:`UsageError` saying how to install it."""
    try:
        import pyspark.sql  # noqa: F401
        from pyspark.sql import functions
    except ImportError:
        raise UsageError(f"the Spark backend needs pyspark: {INSTALL_HINT}") from None
    return functions


def spark_session(master: str | None = None, app_name: str = "dpsynth") -> SparkSession:
    """The SparkSession to run on.

    ``master`` given: a session for it (``local[2]``, ``spark://host:7077``,
    ``k8s://...``, ``yarn``). Otherwise the active session, or, under
    ``spark-submit`` (which provides the master and resources), that
    environment's; otherwise ``local[*]``. A local master gets loopback binding,
    no UI and few shuffle partitions.
    """
    pyspark_functions()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if master is None and active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master is None and not under_submit:
        master = "local[*]"
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # bounding runs Python on the workers: this interpreter, with dpsynth
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            for k, v in _LOCAL_CONF.items():
                builder = builder.config(k, v)
    try:
        return builder.getOrCreate()
    except Exception:
        raise UsageError("could not start Spark (is Java 17 installed and JAVA_HOME set?)") from None



@contextlib.contextmanager
def spark_errors() -> Iterator[None]:
    """Spark and py4j errors may quote a cell: replace them, keep no text."""
    from pyspark.errors import PySparkException

    try:
        yield
    except (InputDataError, UsageError):
        raise
    except PySparkException:
        raise InputDataError("Spark could not read or process the input (details withheld: "
                             "they may quote a value)", rule="spark-read") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("py4j", "pyspark")):
            raise InputDataError("Spark failed while processing the input (details withheld: "
                                 "they may quote a value)", rule="spark-read") from None
        raise

