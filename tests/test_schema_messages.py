"""Issue 13 item 2: schema errors that get a custodian unstuck (YAML traps, oneOf, and
``schema check --show-values`` for the custodian's eyes only)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from dpsynth.cli import main
from dpsynth.errors import SchemaError
from dpsynth.schema import parse_schema

HEAD = "format: dpsynth.table-schema/v1\nname: t\nversion: '1'\nprivacy_unit: {max_rows: 1}\n"


def test_yaml_words_and_leading_zeros_load_as_written() -> None:
    s = parse_schema(HEAD + "columns:\n"
                     "  - {name: a, kind: categorical, categories: [no, yes, on, off]}\n"
                     "  - {name: b, kind: categorical, categories: [01, 02, 10, 7]}\n"
                     "  - {name: c, kind: categorical, nullable: true, categories: [x]}\n")
    assert s.column("a").categories == ("no", "yes", "on", "off")
    assert s.column("b").categories == ("01", "02", "10", "7")
    assert s.column("c").nullable is True


@pytest.mark.parametrize(("column", "message"), [
    ("{name: a, kind: integer, bounds: [0, 9], bin_width: 1, bin_edges: [0, 10]}",
     "schema.columns['a']: give either bin_edges or bin_width, not both"),
    ("{name: a, kind: integer, bounds: [0, 9]}",
     "schema.columns['a']: give either bin_edges or bin_width"),
    ("{name: a, kind: categorical, categories: [x], nullable: yes}",
     "schema.columns['a'].nullable: 'yes' is text, not a boolean: write true or false"),
])
def test_schema_mistakes_say_what_to_write_instead(column: str, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_schema(HEAD + f"columns:\n  - {column}\n")
    text = str(err.value)
    assert text.startswith(message), text
    assert "{" not in text and "\n" not in text  # never the dumped entry, one line


SCHEMA = HEAD + """columns:
  - {name: chapter, kind: categorical, categories: [A, B]}
  - {name: age, kind: integer, bounds: [0, 99], bin_width: 10}
"""


def _table(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "s.yaml").write_text(SCHEMA)
    chapter = ["A"] * 10 + ["misc adult", "misc adult", "Zq"]
    pl.DataFrame({"chapter": chapter, "age": ["30"] * 13}).write_csv(tmp_path / "t.csv")
    return tmp_path / "s.yaml", tmp_path / "t.csv"


def test_show_values_lists_offending_values_on_the_terminal_only(tmp_path: Path) -> None:
    schema, table = _table(tmp_path)
    base = ["schema", "check", "--schema", str(schema), "--input", str(table)]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 3 and "misc adult" not in res.output
    res = CliRunner().invoke(main, [*base, "--show-values", "5"])
    assert res.exit_code == 3
    assert "PRIVATE" in res.stderr
    assert "column 'chapter' [rule: category]: 'misc adult' (2 row(s)), 'Zq' (1 row(s))" in res.stderr
    # never in machine-readable output
    res = CliRunner().invoke(main, [*base, "--show-values", "5", "--json"])
    assert res.exit_code == 2 and "misc adult" not in res.output
    res = CliRunner().invoke(main, [*base, "--json"])
    assert res.exit_code == 3 and "misc adult" not in res.output
    assert json.loads(res.stdout)["problems"][0]["rule"] == "category"
