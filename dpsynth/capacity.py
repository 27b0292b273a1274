"""Will ``--rows N`` fit? The synthetic table's memory, checked before the budget is reserved.

``--rows`` is the custodian's number, so it can be checked before anything is
charged (the default, the DP estimate of the row count, is only known after the
fit). :func:`check_rows` refuses with :class:`UsageError` (exit 2, no charge):

* more than :data:`~dpsynth.config.MAX_ROWS` rows (a fixed, documented maximum,
  also checked by ``ReleaseConfig``);
* more rows than the memory this process may use can hold: rows x
  :func:`bytes_per_row` > :func:`available_memory`.

The estimate is per synthetic row and grows with the schema's released columns:
the sampler keeps every row's codes and a few int64/float64 working arrays per
row, the decoder adds one typed column per released column (8 bytes a cell at
most, plus its int64 copy while it is decoded), and the expectation suite
converts a few columns to pandas at a time, and the CSV and Parquet writers
buffer a row group. :data:`ROW_BYTES` and :data:`CELL_BYTES` come from the peak
RSS of whole releases (``/usr/bin/time -f %M``, ``--engine mst --rows N``): the
6-column test table (tests/test_release.py) took 486 MB at 200,000 rows, 954 MB at
2 million and 1,962 MB at 6 million (about 255 bytes a row); diabetes130 (48
columns) took 781 MB at 200,000 and 2,381 MB at 3 million (about 571 bytes a row).
A line through the two, 210 + 7.5 a column, rounded up to 256 + 12 a column,
overestimates both by 30-45%. :data:`MARGIN_BYTES` covers what does not grow with
the rows (reports, figures).

Available memory is the smallest of: ``MemAvailable`` in ``/proc/meminfo``, and the
cgroup limit minus its current usage (v2 ``memory.max``/``memory.current``, v1
``memory.limit_in_bytes``/``memory.usage_in_bytes``), i.e. a Kubernetes
container's memory limit. Where none can be read, only :data:`MAX_ROWS` applies.

Nothing here reads data: the estimate depends on the public schema only.
"""

from __future__ import annotations

from pathlib import Path

from dpsynth.config import MAX_ROWS
from dpsynth.errors import UsageError
from dpsynth.schema import Schema

__all__ = ["CELL_BYTES", "MARGIN_BYTES", "ROW_BYTES", "available_memory", "bytes_per_row",
           "check_rows"]

ROW_BYTES = 256
"""Peak memory per synthetic row whatever the width (the sampler's int64 group index,
its uniform draws and search positions, the validation's per-row work)."""
CELL_BYTES = 12
"""Peak memory per synthetic cell: the code, the decoded value, and their share of the
per-column copies made while decoding, validating and writing."""
MARGIN_BYTES = 256 * 2**20
"""Kept free for what does not grow with the rows (reports, figures)."""

_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")


def bytes_per_row(schema: Schema) -> int:
    """Estimated peak memory of one synthetic row of ``schema``, in bytes."""
    return ROW_BYTES + CELL_BYTES * len(schema.measured_columns)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def _mem_available(proc: Path) -> int | None:
    try:
        lines = (proc / "meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def _cgroup_room(root: Path) -> int | None:
    """The cgroup's memory limit minus its usage, or None without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes",
                                    "memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        # cgroup v1 says "no limit" with a huge number (page-rounded LONG_MAX)
        if limit is not None and limit < 1 << 60:
            usage = _read_int(root / usage_file) or 0
            return max(0, limit - usage)
    return None


def available_memory(proc: Path = _PROC, cgroup: Path = _CGROUP) -> int | None:
    """Bytes this process may still allocate (the smallest known bound), or None."""
    known = [b for b in (_mem_available(proc), _cgroup_room(cgroup)) if b is not None]
    return min(known) if known else None


def check_rows(schema: Schema, rows: int, available: int | None = None) -> None:
    """Refuse ``rows`` synthetic rows of ``schema`` that cannot fit (see the module
    docstring); ``available`` defaults to :func:`available_memory`."""
    if rows > MAX_ROWS:
        raise UsageError(f"rows ({rows}) must be at most {MAX_ROWS:,}")
    room = available_memory() if available is None else available
    if room is None:
        return
    per_row = bytes_per_row(schema)
    fits = max(0, room - MARGIN_BYTES) // per_row
    if rows > fits:
        raise UsageError(
            f"rows ({rows:,}) needs about {rows * per_row / 2**30:,.1f} GiB for the synthetic "
            f"table ({per_row} bytes a row for {len(schema.measured_columns)} released "
            f"columns) but {room / 2**30:,.1f} GiB of memory is available; ask for at most "
            f"{fits:,} rows, or run where more memory is available")
