"""The release bundle: atomic write, manifest schema, signature file, synthetic markers
(verification: tests/test_inspect.py)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pyarrow.parquet as pq
import pytest

import dpsynth.bundle as bundle
from dpsynth.bundle import (
    CSV_SIDECAR,
    MANIFEST,
    SIGNATURE,
    Content,
    manifest_schema_json,
    synthetic_table_files,
    write_bundle,
    write_synthetic_csv,
    write_synthetic_parquet,
)
from dpsynth.errors import InternalError, StorageError

REPO = Path(__file__).resolve().parent.parent
SHA = "ab" * 32


def _df() -> pl.DataFrame:
    return pl.DataFrame({"sex": ["F", None, "M"], "age": [3, 40, None],
                         "ok": [True, None, False]},
                        schema={"sex": pl.String, "age": pl.Int64, "ok": pl.Boolean})


def _fields(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "release_id": "rel-1",
        "dataset_id": "small",
        "engine": {"name": "mst", "settings": {"degree": 2}},
        "sampler_seed": 7,
        "rows": 3,
        "columns": ["sex", "age", "ok"],
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "rho": 0.01,
                    "unit": "one patient"},
        "schema_sha256": SHA,
        "ledger_entry": {"release_id": "rel-1", "dataset_id": "small", "rho": 0.01,
                         "epsilon": 1.0, "delta": 1e-6, "status_at_bundle_time": "spent"},
    }
    d.update(over)
    return d


def _files() -> dict[str, Content]:
    files = synthetic_table_files(_df(), "rel-1")
    files["schema.yaml"] = b"name: small\n"
    files["validation/results.json"] = b"{}\n"
    return files


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_write_and_verify(tmp_path: Path) -> None:
    out = write_bundle(tmp_path / "b", _files(), _fields())
    assert out == tmp_path / "b"
    assert _leftovers(tmp_path) == ["b"]
    manifest = json.loads((out / MANIFEST).read_text())
    jsonschema.Draft202012Validator(manifest_schema_json()).validate(manifest)
    assert {f["path"] for f in manifest["files"]} == set(_files())
    assert set(manifest["dependencies"]) >= {"opendp", "polars", "pyarrow", "pandas", "numpy",
                                             "great-expectations"}
    assert _matches_manifest(out)
    assert (manifest["release_id"], manifest["engine"]["name"], manifest["rows"]) == ("rel-1",
                                                                                   "mst", 3)
    assert not (out / SIGNATURE).exists()


def _matches_manifest(out: Path) -> bool:
    manifest = json.loads((out / MANIFEST).read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    return on_disk - {MANIFEST, SIGNATURE} == {e["path"] for e in manifest["files"]} and all(
        hashlib.sha256((out / e["path"]).read_bytes()).hexdigest() == e["sha256"]
        for e in manifest["files"])


def test_signature_written_before_the_rename(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def sign(data: bytes) -> bytes:
        seen.append(data)
        assert not (tmp_path / "b").exists()  # still in the temporary directory
        return b"s" * 64

    out = write_bundle(tmp_path / "b", _files(), _fields(), sign=sign)
    assert seen == [(out / MANIFEST).read_bytes()]
    assert (out / SIGNATURE).read_bytes() == b"s" * 64
    assert SIGNATURE not in {e["path"] for e in json.loads(seen[0])["files"]}
    assert _matches_manifest(out)


def test_failing_signer_leaves_nothing(tmp_path: Path) -> None:
    def sign(data: bytes) -> bytes:
        raise StorageError("key store unavailable")

    with pytest.raises(StorageError):
        write_bundle(tmp_path / "b", _files(), _fields(), sign=sign)
    assert _leftovers(tmp_path) == []


def test_published_schema_is_the_packaged_one() -> None:
    link = REPO / "schemas" / "manifest.v1.json"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert json.loads(link.read_text()) == manifest_schema_json()
    jsonschema.Draft202012Validator.check_schema(manifest_schema_json())


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = bundle._write_file

    def flaky(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(bundle, "_write_file", flaky)
    with pytest.raises(StorageError):
        write_bundle(tmp_path / "b", _files(), _fields())
    assert _leftovers(tmp_path) == []


def test_invalid_manifest_leaves_nothing(tmp_path: Path) -> None:
    bad = _fields(ledger_entry={"release_id": "rel-1", "dataset_id": "small", "rho": 0.01,
                                "epsilon": 1.0, "delta": 1e-6, "input_hash": "0" * 64})
    with pytest.raises(InternalError, match="ledger_entry"):
        write_bundle(tmp_path / "b", _files(), bad)
    assert _leftovers(tmp_path) == []


def test_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(StorageError, match="not empty"):
        write_bundle(tmp_path / "b", _files(), _fields())
    assert _leftovers(tmp_path) == ["b"]
    assert _leftovers(tmp_path / "b") == ["keep.txt"]


def test_empty_out_dir_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    write_bundle(tmp_path / "b", _files(), _fields())
    assert _matches_manifest(tmp_path / "b")


def test_rejects_unsafe_paths(tmp_path: Path) -> None:
    for rel in ("../x", "/abs", "a/../b", MANIFEST, SIGNATURE):
        with pytest.raises(InternalError):
            write_bundle(tmp_path / "b", {rel: b"x"}, _fields())
    assert _leftovers(tmp_path) == []


def test_parquet_marked_synthetic() -> None:
    df = _df()
    table = pq.read_table(io.BytesIO(write_synthetic_parquet(df, "rel-9")))
    meta = table.schema.metadata
    assert meta[b"dpsynth.synthetic"] == b"true"
    assert meta[b"dpsynth.release_id"] == b"rel-9"
    assert pl.from_arrow(table).equals(df)


def test_csv_plain_with_sidecar() -> None:
    df = _df()
    text = write_synthetic_csv(df, "rel-9").decode()
    assert text.splitlines() == ["sex,age,ok", "F,3,true", ",40,", "M,,false"]
    files = synthetic_table_files(df, "rel-9")
    sidecar = files[CSV_SIDECAR]
    assert isinstance(sidecar, bytes)
    side = json.loads(sidecar)
    assert side["dpsynth.synthetic"] is True and side["release_id"] == "rel-9"
    assert side["file"] == "synthetic.csv"


def test_enum_columns_are_published_as_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded tables hold text as pl.Enum; the files hold plain strings, written in
    several row groups (the row-group size is lowered to force that)."""
    monkeypatch.setattr(bundle, "_ROW_GROUP", 2)
    df = _df().with_columns(pl.col("sex").cast(pl.Enum(["F", "M"])))
    table = pq.read_table(io.BytesIO(write_synthetic_parquet(df, "rel-9")))
    assert str(table.schema.field("sex").type) in ("string", "large_string")
    assert table.schema.metadata[b"dpsynth.synthetic"] == b"true"
    assert pq.ParquetFile(io.BytesIO(write_synthetic_parquet(df, "rel-9"))).num_row_groups == 2
    assert pl.from_arrow(table).equals(_df())
    assert write_synthetic_csv(df, "rel-9") == write_synthetic_csv(_df(), "rel-9")
    side = json.loads(bundle.write_synthetic_csv_sidecar(df, "rel-9"))
    assert [c["type"] for c in side["columns"]] == ["String", "Int64", "Boolean"]
