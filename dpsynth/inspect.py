"""Verifying a release bundle (``dpsynth inspect``): what the files themselves can prove.

:func:`verify_bundle` runs every check below and reports every failure, never only the
first. Each problem starts with the name of the check that found it:

``manifest``
    ``manifest.json`` is readable JSON, valid against ``schemas/manifest.v1.json``.
``files``
    every file the manifest lists exists as a regular file with the listed size and
    SHA-256, and the bundle has every file of the documented layout.
``directory``
    nothing else is in the directory: no unlisted file, directory (empty ones
    included), symbolic link or special file. ``manifest.json.sig`` is the one
    unlisted file allowed (a signature of the manifest cannot be listed in it).
``schema``
    ``schema.yaml`` hashes to ``schema_sha256`` (whatever its manifest entry says), is
    a valid table schema, and its released columns and privacy unit are the manifest's.
``rows``
    ``rows`` is the row count of ``synthetic.parquet`` (its metadata), of
    ``synthetic.csv`` (parsed as CSV) and of the suite's row-count expectation.
``columns``
    ``columns`` are the Parquet schema's, the CSV header's and the sidecar's columns.
``release``
    the release id, dataset id and engine agree across the manifest, the Parquet
    metadata, the CSV sidecar, the privacy report and the ledger entry; the
    validation results are of the bundled suite, with no failed critical expectation.
``privacy``
    epsilon, delta and rho agree across the manifest's ``privacy``, its
    ``ledger_entry`` and ``privacy-report.json``; rho is the zCDP budget of
    (epsilon, delta); the report's steps add up to its spent rho, within the budget,
    and its stated epsilon is that spend's conversion.
``model``
    a bundle of dpsynth's own engines (AIM, MST) lists ``model/model.json`` and
    ``model/model.npz`` (other engines' bundles list neither); they are a valid
    ``dpsynth.model/v1`` model (:func:`dpsynth.model_format.model_problems`: plain
    arrays, probability tables summing to 1 and agreeing on the junction tree's
    separators) of the manifest's engine and columns.
``signature``
    only with a public key (``--verify-key``): ``manifest.json.sig`` is a valid
    Ed25519 signature of ``manifest.json``'s bytes by that key.

What this proves, and what it does not (``docs/bundle-format.md``): without a
signature, the checks show that the bundle is complete and internally consistent, so
a careless edit or a partial copy is caught. They cannot show who wrote it: anyone can
regenerate every file and manifest entry consistently. Only the signature, checked
against a key obtained from the custodian by another channel, proves origin.

Reads only the bundle (public files); never raises for a damaged bundle.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq

from dpsynth.bundle import (
    CSV,
    CSV_SIDECAR,
    DATASHEET,
    MANIFEST,
    PARQUET,
    PRIVACY_HTML,
    PRIVACY_JSON,
    QUALITY_HTML,
    RESULTS,
    SCHEMA,
    SIGNATURE,
    SUITE,
    _check_relpath,
    _manifest_errors,
)
from dpsynth.errors import DpsynthError, InternalError, StorageError
from dpsynth.hashing import sha256_file
from dpsynth.model_format import MODEL_ARRAYS, MODEL_ENGINES, MODEL_JSON, model_problems
from dpsynth.privacy.accountant import Budget, epsilon_for, rho_for
from dpsynth.schema import Schema, parse_schema

if TYPE_CHECKING:
    from dpsynth.signing import PublicKey

__all__ = ["CHECKS", "LAYOUT", "InspectResult", "verify_bundle"]

#: Every file a release bundle holds besides the manifest (docs/bundle-format.md).
LAYOUT = (PARQUET, CSV, CSV_SIDECAR, SCHEMA, PRIVACY_JSON, PRIVACY_HTML, QUALITY_HTML, SUITE,
          RESULTS, DATASHEET)
#: The checks, in the order they run.
CHECKS = ("manifest", "files", "directory", "schema", "rows", "columns", "release", "privacy",
          "model", "signature")

_REL_TOL = 1e-6
"""Relative slack for values recomputed from others (zCDP conversions, sums of floats):
another dpsynth version may round its conversions differently in the last digits."""


@dataclass(frozen=True)
class InspectResult:
    """What :func:`verify_bundle` found: ``ok`` when ``problems`` is empty.

    ``checks`` maps each name of :data:`CHECKS` to ``ok``, ``failed`` or ``skipped``
    (not run: no key was given, or what it compares is missing or unreadable, which
    is a problem of another check). ``signature`` is ``verified``, ``invalid``,
    ``missing`` (a key was given, no signature found), ``not verified`` (a signature
    is there, no key was given) or ``unsigned``.
    """

    ok: bool
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    signature: str = "unsigned"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "checks": dict(self.checks),
                "signature": self.signature, "summary": dict(self.summary)}


class _Report:
    """Collects problems by check."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.status: dict[str, str] = {}

    def fail(self, check: str, message: str) -> None:
        self.problems.append(f"{check}: {message}")
        self.status[check] = "failed"

    def ran(self, check: str) -> None:
        self.status.setdefault(check, "ok")

    def skip(self, check: str) -> None:
        self.status.setdefault(check, "skipped")

    def same(self, check: str, what: str, found: Any, expected: Any, where: str) -> None:
        """``found`` (at ``where``) must equal ``expected`` (the manifest's ``what``)."""
        if not _equal(found, expected):
            self.fail(check, f"{where} ({_show(found)}) does not match the manifest's "
                      f"{what} ({_show(expected)})")

    def close(self, check: str, what: str, found: Any, expected: Any, where: str) -> None:
        """Like :meth:`same`, for a float recomputed from other values."""
        if not (_is_number(found) and _is_number(expected)
                and math.isclose(found, expected, rel_tol=_REL_TOL, abs_tol=1e-15)):
            self.fail(check, f"{where} ({_show(found)}) does not match {what} "
                      f"({_show(expected)})")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _equal(a: Any, b: Any) -> bool:
    """JSON values equal as JSON means them: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any) -> float | None:
    """``x`` as a float when it is a finite JSON number, else None."""
    return float(x) if _is_number(x) else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    privacy, engine = _obj(manifest.get("privacy")), _obj(manifest.get("engine"))
    cols = manifest.get("columns")
    return {
        "release_id": manifest.get("release_id"),
        "dataset_id": manifest.get("dataset_id"),
        "created": manifest.get("created"),
        "dpsynth_version": manifest.get("dpsynth_version"),
        "engine": engine.get("name"),
        "epsilon": privacy.get("epsilon"),
        "delta": privacy.get("delta"),
        "rows": manifest.get("rows"),
        "columns": len(cols) if isinstance(cols, list) else None,
        "files": len(manifest.get("files") or []),
    }


# --------------------------------------------------------------------------- the walk


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` (relative POSIX path, lstat), never following links."""
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                yield Path(e.path).relative_to(root).as_posix(), st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))


def _check_directory(root: Path, listed: dict[str, dict[str, Any]], r: _Report) -> None:
    """Nothing in the bundle that the manifest does not account for."""
    r.ran("directory")
    parents = {p for rel in listed for p in _parents(rel)}
    for rel, st in sorted(_walk(root)):
        if stat.S_ISLNK(st.st_mode):
            r.fail("directory", f"unlisted file: {rel} (symbolic link)")
        elif stat.S_ISDIR(st.st_mode):
            if rel not in parents:
                r.fail("directory", f"unlisted directory: {rel}/")
        elif not stat.S_ISREG(st.st_mode):
            r.fail("directory", f"unlisted file: {rel} (not a regular file)")
        elif rel not in listed and rel not in (MANIFEST, SIGNATURE):
            r.fail("directory", f"unlisted file: {rel}")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _regular(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it is a regular file reached without symbolic links."""
    p = root
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return None
    return p if p.is_file() else None


def _check_files(root: Path, listed: dict[str, dict[str, Any]], r: _Report) -> None:
    """Listed files: present, with the right size and hash; the layout complete."""
    r.ran("files")
    for rel, entry in sorted(listed.items()):
        try:
            _check_relpath(rel)
        except InternalError:
            continue  # reported by the manifest check
        f = _regular(root, rel)
        if f is None:
            r.fail("files", f"missing file: {rel}")
            continue
        size = f.stat().st_size
        if size != entry.get("size"):
            r.fail("files", f"size mismatch: {rel} (manifest {entry.get('size')}, found {size})")
            continue
        if sha256_file(f) != entry.get("sha256"):
            r.fail("files", f"checksum mismatch: {rel}")
    for rel in LAYOUT:
        if rel not in listed:
            r.fail("files", f"not in the manifest: {rel} (every bundle has it)")


# --------------------------------------------------------------------------- cross-checks


class _Files:
    """Reads bundle files once each, for the cross-checks; ``None`` when unreadable
    (reported once, under the check that needed it)."""

    def __init__(self, root: Path, r: _Report) -> None:
        self.root, self.r = root, r
        self._cache: dict[str, Any] = {}

    def get(self, rel: str, check: str, read: Callable[[Path], Any], what: str,
            part: str = "") -> Any:
        key = f"{rel}:{part}"
        if key not in self._cache:
            path = _regular(self.root, rel)
            if path is None:
                value = None  # a missing file is the files check's problem
                self.r.skip(check)
            else:
                try:
                    value = read(path)
                except Exception as exc:  # a damaged file: say which and how, no content
                    self.r.fail(check, f"{rel} is not readable {what} ({type(exc).__name__})")
                    value = None
            self._cache[key] = value
        return self._cache[key]

    def json(self, rel: str, check: str) -> dict[str, Any] | None:
        doc = self.get(rel, check, lambda p: json.loads(p.read_text(encoding="utf-8")), "JSON")
        return doc if isinstance(doc, dict) else None

    def parquet(self, check: str) -> Any:
        return self.get(PARQUET, check, pq.read_metadata, "Parquet")

    def csv_header(self, check: str) -> list[str] | None:
        def read(p: Path) -> list[str]:
            with p.open(newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), [])
        out: list[str] | None = self.get(CSV, check, read, "CSV", "header")
        return out

    def csv_rows(self, check: str) -> int | None:
        def read(p: Path) -> int:
            lf = pl.scan_csv(p, infer_schema=False, has_header=True)
            return int(lf.select(pl.len()).collect().item())
        out: int | None = self.get(CSV, check, read, "CSV", "rows")
        return out


def _check_schema(m: dict[str, Any], f: _Files, r: _Report) -> Schema | None:
    """Check ``schema.yaml`` against the manifest; the parsed schema, or ``None``."""
    path = _regular(f.root, SCHEMA)
    if path is None:
        r.skip("schema")
        return None
    r.ran("schema")
    digest = sha256_file(path)
    if digest != m.get("schema_sha256"):
        r.fail("schema", f"{SCHEMA} has SHA-256 {digest}, not the manifest's schema_sha256 "
               f"({_show(m.get('schema_sha256'))})")
    try:
        schema = parse_schema(path.read_text(encoding="utf-8"), source_name=SCHEMA)
    except (DpsynthError, OSError, UnicodeDecodeError) as exc:
        kind = exc.kind if isinstance(exc, DpsynthError) else type(exc).__name__
        r.fail("schema", f"{SCHEMA} is not a valid table schema ({kind})")
        return None
    r.same("schema", "columns", [c.name for c in schema.released_columns], m.get("columns"),
           f"the released columns of {SCHEMA}")
    r.same("schema", "privacy.unit", schema.privacy_unit.description,
           _obj(m.get("privacy")).get("unit"), f"the privacy unit of {SCHEMA}")
    for key, value in (("schema_name", schema.name), ("schema_version", schema.version)):
        if key in m:
            r.same("schema", key, value, m[key], f"the {key.split('_')[1]} in {SCHEMA}")
    return schema


def _suite_row_counts(suite: dict[str, Any]) -> list[Any]:
    out = []
    for e in suite.get("expectations") or []:
        if isinstance(e, dict) and e.get("type") == "expect_table_row_count_to_be_between":
            kw = _obj(e.get("kwargs"))
            out += [kw.get("min_value"), kw.get("max_value")]
    return out


def _check_rows(m: dict[str, Any], f: _Files, r: _Report) -> None:
    rows = m.get("rows")
    r.ran("rows")
    meta = f.parquet("rows")
    if meta is not None:
        r.same("rows", "rows", meta.num_rows, rows, f"the row count of {PARQUET}")
    n_csv = f.csv_rows("rows")
    if n_csv is not None:
        r.same("rows", "rows", n_csv, rows, f"the row count of {CSV}")
    suite = f.json(SUITE, "rows")
    if suite is not None:
        counts = _suite_row_counts(suite)
        if not counts:
            r.fail("rows", f"{SUITE} has no row-count expectation")
        for n in dict.fromkeys(counts):
            r.same("rows", "rows", n, rows, f"the row count expected by {SUITE}")


def _check_columns(m: dict[str, Any], f: _Files, r: _Report) -> None:
    cols = m.get("columns")
    r.ran("columns")
    meta = f.parquet("columns")
    if meta is not None:
        r.same("columns", "columns", list(meta.schema.to_arrow_schema().names), cols,
               f"the columns of {PARQUET}")
    header = f.csv_header("columns")
    if header is not None and cols != []:
        r.same("columns", "columns", header, cols, f"the header of {CSV}")
    side = f.json(CSV_SIDECAR, "columns")
    if side is not None:
        names = [c.get("name") for c in side.get("columns") or [] if isinstance(c, dict)]
        r.same("columns", "columns", names, cols, f"the columns in {CSV_SIDECAR}")


def _check_release(m: dict[str, Any], f: _Files, r: _Report) -> None:
    rid = m.get("release_id")
    r.ran("release")
    meta = f.parquet("release")
    if meta is not None:
        kv = meta.metadata or {}
        found = kv.get(b"dpsynth.release_id", b"").decode("utf-8", "replace") or None
        r.same("release", "release_id", found, rid, f"dpsynth.release_id in {PARQUET}")
        if kv.get(b"dpsynth.synthetic") != b"true":
            r.fail("release", f"{PARQUET} is not marked dpsynth.synthetic = true")
    side = f.json(CSV_SIDECAR, "release")
    if side is not None:
        r.same("release", "release_id", side.get("release_id"), rid,
               f"release_id in {CSV_SIDECAR}")
        if side.get("dpsynth.synthetic") is not True or side.get("file") != CSV:
            r.fail("release", f"{CSV_SIDECAR} does not mark {CSV} as synthetic")
    report = f.json(PRIVACY_JSON, "release")
    if report is not None:
        r.same("release", "release_id", report.get("release_id"), rid,
               f"release_id in {PRIVACY_JSON}")
        if "dataset_id" in m:
            r.same("release", "dataset_id", report.get("dataset_id"), m["dataset_id"],
                   f"dataset_id in {PRIVACY_JSON}")
        r.same("release", "engine", report.get("engine"), m.get("engine"),
               f"the engine in {PRIVACY_JSON}")
        r.same("release", "schema_sha256", _obj(report.get("schema")).get("sha256"),
               m.get("schema_sha256"), f"schema.sha256 in {PRIVACY_JSON}")
        r.same("release", "privacy.unit", _obj(report.get("privacy_unit")).get("description"),
               _obj(m.get("privacy")).get("unit"), f"privacy_unit.description in {PRIVACY_JSON}")
    ledger = _obj(m.get("ledger_entry"))
    if ledger:
        r.same("release", "release_id", ledger.get("release_id"), rid, "ledger_entry.release_id")
        if "dataset_id" in m:
            r.same("release", "dataset_id", ledger.get("dataset_id"), m["dataset_id"],
                   "ledger_entry.dataset_id")
    suite, results = f.json(SUITE, "release"), f.json(RESULTS, "release")
    if results is not None:
        entries = results.get("results")
        critical = [e for e in entries if not (isinstance(e, dict) and e.get("success") is True)
                    and _obj(_obj(e).get("expectation_config")).get("severity", "critical")
                    not in ("warning", "info")] if isinstance(entries, list) else None
        if critical is None or critical:  # a failed warning-severity rule is reported, not fatal
            r.fail("release", f"{RESULTS} records a failed critical expectation, or no results")
        if suite is not None and results.get("suite_name") != suite.get("name"):
            r.fail("release", f"{RESULTS} is for suite {_show(results.get('suite_name'))}, "
                   f"not {_show(suite.get('name'))} of {SUITE}")


def _check_privacy(m: dict[str, Any], f: _Files, r: _Report) -> None:
    p = _obj(m.get("privacy"))
    r.ran("privacy")
    ledger = _obj(m.get("ledger_entry"))
    for key in ("epsilon", "delta", "rho"):
        if key in ledger:
            r.same("privacy", f"privacy.{key}", ledger[key], p.get(key), f"ledger_entry.{key}")
    eps, delta, rho = _num(p.get("epsilon")), _num(p.get("delta")), _num(p.get("rho"))
    if eps is not None and delta is not None and rho is not None and eps > 0 and 0 < delta < 1:
        r.close("privacy", f"the zCDP budget of (epsilon {eps:g}, delta {delta:g})",
                rho, rho_for(eps, delta), "the manifest's privacy.rho")
    report = f.json(PRIVACY_JSON, "privacy")
    if report is None:
        return
    rel = _obj(report.get("release"))
    for key, name in (("epsilon", "requested_epsilon"), ("delta", "requested_delta"),
                      ("rho", "budget_rho"), ("delta", "delta")):
        r.same("privacy", f"privacy.{key}", rel.get(name), p.get(key),
               f"release.{name} in {PRIVACY_JSON}")
    steps = report.get("steps")
    if not isinstance(steps, list) or not all(_num(_obj(s).get("rho")) is not None
                                              for s in steps):
        r.fail("privacy", f"{PRIVACY_JSON} does not list its steps with their rho")
        return
    spent = _num(rel.get("spent_rho"))
    r.close("privacy", "the sum of the steps' rho", spent,
            math.fsum(_obj(s)["rho"] for s in steps), f"release.spent_rho in {PRIVACY_JSON}")
    if rel.get("steps") != len(steps):
        r.fail("privacy", f"release.steps in {PRIVACY_JSON} ({_show(rel.get('steps'))}) is not "
               f"the number of steps listed ({len(steps)})")
    if spent is None or spent < 0:
        return
    if rho is not None and rho >= 0 and not Budget(rho).covers(Budget(spent)):
        r.fail("privacy", f"{PRIVACY_JSON} spends rho {spent:.6g}, more than the budget "
               f"{rho:.6g}")
    if delta is not None and 0 < delta < 1:
        r.close("privacy", f"the (epsilon, delta {delta:g}) conversion of its spent rho",
                rel.get("epsilon"), epsilon_for(spent, delta),
                f"release.epsilon in {PRIVACY_JSON}")


def _check_model(m: dict[str, Any], listed: dict[str, dict[str, Any]], f: _Files,
                 r: _Report, schema: Schema | None) -> None:
    engine = _obj(m.get("engine")).get("name")
    model_rels = (MODEL_JSON, MODEL_ARRAYS)
    r.ran("model")
    if engine not in MODEL_ENGINES:
        for rel in model_rels:
            if rel in listed:
                r.fail("model", f"{rel} is listed, but engine {_show(engine)} has no dpsynth "
                       "model")
        return
    missing = [rel for rel in model_rels if rel not in listed]
    if len(missing) == len(model_rels):
        return  # a bundle written before models were saved (0.1.0): nothing to check
    for rel in missing:
        r.fail("model", f"not in the manifest: {rel} (the model is both files)")
    paths = [_regular(f.root, rel) for rel in model_rels]
    if missing or None in paths:
        return  # a listed file that is missing is the files check's problem
    doc_bytes, npz_bytes = (p.read_bytes() for p in paths if p is not None)
    problems = model_problems(doc_bytes, npz_bytes)
    for problem in problems:
        r.fail("model", problem)
    if problems:
        return
    doc = json.loads(doc_bytes)
    r.same("model", "engine.name", doc["engine"], engine, f"the engine in {MODEL_JSON}")
    if schema is not None:  # the model's columns: measured ones (+ the internal row count)
        r.same("model", "columns", [c["name"] for c in doc["columns"]],
               [c.name for c in schema.model_columns], f"the columns of {MODEL_JSON}")


# --------------------------------------------------------------------------- verify


def verify_bundle(path: str | Path, verify_key: PublicKey | None = None) -> InspectResult:
    """Check a bundle against its manifest and the manifest against the files (see the
    module docstring for every check); with ``verify_key``, also its signature.

    Never raises for a damaged bundle (every problem is listed); raises
    :class:`StorageError` only when ``path`` is not a readable directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise StorageError(f"bundle {str(root)!r} is not a directory")
    r = _Report()
    signature = _check_signature(root, verify_key, r)
    r.ran("manifest")
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        r.fail("manifest", f"missing file: {MANIFEST}")
        return _result(r, {}, signature)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        r.fail("manifest", f"not readable JSON ({type(exc).__name__})")
        return _result(r, {}, signature)
    for problem in _manifest_errors(manifest):
        r.fail("manifest", f"invalid: {problem}")
    if not isinstance(manifest, dict):
        return _result(r, {}, signature)

    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            listed[entry["path"]] = entry
    _check_files(root, listed, r)
    _check_directory(root, listed, r)
    files = _Files(root, r)
    schema = _check_schema(manifest, files, r)
    _check_rows(manifest, files, r)
    _check_columns(manifest, files, r)
    _check_release(manifest, files, r)
    _check_privacy(manifest, files, r)
    _check_model(manifest, listed, files, r, schema)
    return _result(r, _summary(manifest), signature)


def _result(r: _Report, summary: dict[str, Any], signature: str) -> InspectResult:
    checks = {name: r.status.get(name, "skipped") for name in CHECKS}
    return InspectResult(not r.problems, r.problems, summary, checks, signature)


def _check_signature(root: Path, key: PublicKey | None, r: _Report) -> str:
    sig_path = _regular(root, SIGNATURE)
    if key is None:
        r.skip("signature")
        return "not verified" if sig_path is not None else "unsigned"
    from dpsynth.signing import verify_signature

    r.ran("signature")
    manifest = _regular(root, MANIFEST)
    if sig_path is None or manifest is None:
        r.fail("signature", f"missing file: {SIGNATURE if sig_path is None else MANIFEST} "
               "(a key was given, so the bundle must be signed)")
        return "missing"
    if not verify_signature(key, manifest.read_bytes(), sig_path.read_bytes()):
        r.fail("signature", f"{SIGNATURE} is not a valid signature of {MANIFEST} by the key "
               f"{key.fingerprint}")
        return "invalid"
    return "verified"
