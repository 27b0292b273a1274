"""The straight-line pipeline: ``check`` and ``release``, one step after another.

Reads like design.md §3: schema -> budget reserved -> private table read,
checked, bounded and encoded -> measurement session -> engine fit -> (privacy
boundary) -> sample -> decode -> validate -> reports -> bundle -> ledger commit.
Each step is a call into its module; this file only sequences them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpsynth.schema import load_schema

__all__ = ["check"]


def check(schema_path: str | Path, input_path: str | Path | None = None) -> dict[str, Any]:
    """Validate a schema, and optionally a table against it. Writes nothing."""
    schema = load_schema(schema_path)
    out: dict[str, Any] = {
        "schema": schema.name,
        "schema_sha256": schema.sha256,
        "columns": len(schema.columns),
        "released_columns": len(schema.measured_columns),
        "privacy_unit": schema.privacy_unit.description,
    }
    if input_path is not None:
        from dpsynth.io import check_table, read_table

        df = read_table(input_path, schema)
        check_table(df, schema)
        out["input_checked"] = True
    return out
