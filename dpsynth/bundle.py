"""The release bundle: layout, synthetic-table writers, manifest, atomic write.

A bundle is a directory handed to researchers. :func:`write_bundle` writes every
file into a temporary directory beside the target (same filesystem), adds
``manifest.json`` (each file's SHA-256 and size plus provenance, valid against
``schemas/manifest.v1.json``), fsyncs, and renames the directory into place, so
a bundle is either complete or absent: on any failure the temporary directory is
removed. :func:`check_out_path` is every check of the target path that
:func:`write_bundle` makes; the pipeline runs the same function before the budget is
reserved. The temporary directory is locked (``flock``) by the writing process; a
SIGKILL can leave it behind, and :func:`remove_stale_temp_dirs` (run by the next
release to the same path) removes only unlocked ones. With a signer,
``manifest.json.sig`` (a detached signature of the manifest's bytes, see
``dpsynth/signing.py``) is written before the rename too. Verifying a bundle is
``dpsynth/inspect.py``'s job.

No time of day: the run time grows with the private row count, so the bundle
carries the release *date* only (:func:`release_date`, UTC, day precision) — in
the manifest's ``created``, and as the modification time (midnight UTC) of every
file and directory it writes. Exact timestamps and stage timings stay in the
ledger and on the custodian's stdout.

Synthetic-table marking: Parquet carries key-value metadata
``dpsynth.synthetic = "true"`` and ``dpsynth.release_id``; CSV is a plain CSV
(header row, null written as an empty cell) with a sidecar
``synthetic.csv.meta.json`` saying it is synthetic and naming the release. A
comment line inside the CSV was rejected because it breaks most CSV readers.

Rules for this module: it receives only public bytes (DP outputs and their
post-processing) and never reads the private table; it must not put anything
computed on the real table (input file hash, true row count) into the manifest
— the manifest's JSON Schema forbids the fields that could carry them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import io
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from importlib import metadata, resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import jsonschema
import polars as pl
import pyarrow.parquet as pq

from dpsynth.crashpoints import crash_point
from dpsynth.errors import DpsynthError, InternalError, StorageError
from dpsynth.hashing import sha256_file
from dpsynth.model_format import model_files
from dpsynth.version import __version__

if TYPE_CHECKING:
    from dpsynth.record import ReleaseRecord
    from dpsynth.report.builder import Reports

__all__ = [
    "CSV_SIDECAR",
    "DEPENDENCIES",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "SIGNATURE",
    "SYNTHETIC_NOTICE",
    "Content",
    "Writer",
    "check_out_path",
    "csv_writer",
    "dependency_versions",
    "manifest_schema_json",
    "parquet_writer",
    "release_date",
    "release_files",
    "release_manifest",
    "remove_stale_temp_dirs",
    "synthetic_table_files",
    "write_bundle",
    "write_synced",
    "write_synthetic_csv",
    "write_synthetic_csv_sidecar",
    "write_synthetic_parquet",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "dpsynth.bundle-manifest/v1"
SIGNATURE = MANIFEST + ".sig"
"""The detached signature of ``manifest.json`` (optional; not listed in the manifest,
which cannot hold a hash of its own signature)."""
PARQUET = "synthetic.parquet"
CSV = "synthetic.csv"
CSV_SIDECAR = "synthetic.csv.meta.json"
#: Distributions whose versions are recorded in every manifest.
DEPENDENCIES = ("opendp", "polars", "pyarrow", "pandas", "numpy", "great-expectations")
SYNTHETIC_NOTICE = (
    "SYNTHETIC DATA generated with differential privacy by dpsynth. "
    "Rows are not real patients; do not use them to identify or contact anyone."
)
_ROW_GROUP = 1 << 18

Writer = Callable[[BinaryIO], None]
"""Streams one bundle file into an open binary file."""
Content = bytes | Writer
"""A bundle file's content: bytes, or a :data:`Writer` for files too large to hold."""


# --------------------------------------------------------------------------- writers


def _plain_type(dtype: pl.DataType) -> pl.DataType:
    """How a column is published: Enum and Categorical columns as plain text."""
    return pl.String() if isinstance(dtype, pl.Enum | pl.Categorical) else dtype


def parquet_writer(df: pl.DataFrame, release_id: str) -> Writer:
    """Writes the synthetic table as Parquet, marked synthetic in key-value metadata.

    Enum/Categorical columns are written as plain strings, one row group at a time
    (so only a row group is ever converted)."""
    def write(fh: BinaryIO) -> None:
        plain = pl.DataFrame(schema={n: _plain_type(t) for n, t in df.schema.items()})
        schema = plain.to_arrow().schema.with_metadata({
            b"dpsynth.synthetic": b"true",
            b"dpsynth.release_id": release_id.encode("utf-8"),
            b"dpsynth.notice": SYNTHETIC_NOTICE.encode("utf-8"),
        })
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for start in range(0, max(df.height, 1), _ROW_GROUP):
                part = df.slice(start, _ROW_GROUP).cast(plain.schema)
                writer.write_table(part.to_arrow().cast(schema))
    return write


def csv_writer(df: pl.DataFrame) -> Writer:
    """Writes the synthetic table as plain CSV (header row; null is an empty cell).

    The CSV itself carries no marker (a comment line breaks CSV readers); its
    sidecar :data:`CSV_SIDECAR` (:func:`write_synthetic_csv_sidecar`) does.
    """
    def write(fh: BinaryIO) -> None:
        df.write_csv(fh, null_value="")
    return write


def _to_bytes(writer: Writer) -> bytes:
    buf = io.BytesIO()
    writer(buf)
    return buf.getvalue()


def write_synthetic_parquet(df: pl.DataFrame, release_id: str) -> bytes:
    """The synthetic table as Parquet bytes (see :func:`parquet_writer`)."""
    return _to_bytes(parquet_writer(df, release_id))


def write_synthetic_csv(df: pl.DataFrame, release_id: str) -> bytes:
    """The synthetic table as CSV bytes (see :func:`csv_writer`); ``release_id`` is
    recorded in the sidecar, accepted here for symmetry with the Parquet writer."""
    del release_id
    return _to_bytes(csv_writer(df))


def write_synthetic_csv_sidecar(df: pl.DataFrame, release_id: str) -> bytes:
    """``synthetic.csv.meta.json``: marks ``synthetic.csv`` as synthetic data."""
    doc: dict[str, Any] = {
        "dpsynth.synthetic": True,
        "release_id": release_id,
        "file": CSV,
        "notice": SYNTHETIC_NOTICE,
        "null": "an empty cell",
    }
    if df.width:
        doc["columns"] = [{"name": n, "type": str(_plain_type(t))} for n, t in df.schema.items()]
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def synthetic_table_files(df: pl.DataFrame, release_id: str) -> dict[str, Content]:
    """The three synthetic-table files of a bundle, by relative path (the tables are
    streamed to disk by :func:`write_bundle`, never held in memory as bytes)."""
    return {
        PARQUET: parquet_writer(df, release_id),
        CSV: csv_writer(df),
        CSV_SIDECAR: write_synthetic_csv_sidecar(df, release_id),
    }


# --------------------------------------------------------------------------- layout

PRIVACY_JSON = "privacy-report.json"
PRIVACY_HTML = "privacy-report.html"
QUALITY_HTML = "quality-report.html"
SCHEMA = "schema.yaml"
DATASHEET = "DATASHEET.md"
SUITE = "validation/suite.json"
RESULTS = "validation/results.json"


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, default=str).encode("utf-8")


def release_files(record: ReleaseRecord, reports: Reports) -> dict[str, Content]:
    """Every file of a release bundle but the manifest, by relative path (see
    ``docs/bundle-format.md``); ``model/`` only for dpsynth's own engines
    (:mod:`dpsynth.model_format`)."""
    return {
        **synthetic_table_files(record.table, record.release_id),
        **model_files(record.model, record.engine),
        SCHEMA: record.schema.text.encode("utf-8"),
        PRIVACY_JSON: _json(reports.privacy),
        PRIVACY_HTML: reports.privacy_html.encode("utf-8"),
        QUALITY_HTML: reports.quality_html.encode("utf-8"),
        SUITE: _json(record.validation.suite_json),
        RESULTS: _json(record.validation.results_json),
        DATASHEET: reports.datasheet.encode("utf-8"),
    }


def release_manifest(record: ReleaseRecord) -> dict[str, Any]:
    """The provenance fields of a release's manifest (``write_bundle`` adds the
    format, date, versions and the file list)."""
    return {
        "release_id": record.release_id,
        "dataset_id": record.dataset_id,
        "engine": {"name": record.engine, "settings": dict(record.engine_settings)},
        "sampler_seed": record.sampler_seed,
        "rows": record.rows,
        "columns": [c.name for c in record.schema.released_columns],
        "privacy": {"epsilon": record.budget.epsilon, "delta": record.budget.delta,
                    "rho": record.rho.rho, "unit": record.schema.privacy_unit.description},
        "schema_sha256": record.schema.sha256,
        # the charge is released by the rename; the ledger records when
        "ledger_entry": {"release_id": record.release_id, "dataset_id": record.dataset_id,
                         "rho": record.rho.rho, "epsilon": record.budget.epsilon,
                         "delta": record.budget.delta, "status_at_bundle_time": "spent"},
    }


# --------------------------------------------------------------------------- manifest


def manifest_schema_json() -> dict[str, Any]:
    """The published JSON Schema of ``manifest.json``."""
    text = resources.files("dpsynth.resources").joinpath("manifest.v1.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def dependency_versions() -> dict[str, str | None]:
    """Installed versions of :data:`DEPENDENCIES` (None when not installed)."""
    out: dict[str, str | None] = {}
    for dist in DEPENDENCIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _manifest_errors(doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        manifest_schema_json(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    out = []
    for e in errors:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        msg = e.message if len(e.message) <= 160 else e.message[:157] + "..."
        out.append(f"{where}: {msg}")
    return out


def _check_relpath(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if (not rel or p.is_absolute() or "\\" in rel or any(part in ("", ".", "..") for part in
                                                         rel.split("/"))):
        raise InternalError(f"bundle path {rel!r} must be a plain relative path")
    if rel in (MANIFEST, SIGNATURE):
        raise InternalError(f"{rel} is written by write_bundle, not passed in")
    return p


# --------------------------------------------------------------------------- atomic write


def write_synced(fh: BinaryIO, data: Content) -> None:
    """Write ``data`` (bytes, or a writer called with ``fh``) to an open file and fsync it."""
    if isinstance(data, bytes):
        fh.write(data)
    else:
        data(fh)
    fh.flush()
    os.fsync(fh.fileno())


def _write_file(path: Path, data: Content) -> None:
    """Write and fsync one file (a module-level seam the tests use to inject failures)."""
    with open(path, "xb") as fh:
        write_synced(fh, data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def release_date() -> str:
    """Today's date in UTC (``YYYY-MM-DD``): the only time a bundle carries."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def _stamp_day(root: Path, day: str) -> None:
    """Set every file's and directory's modification time to midnight UTC of
    ``day``, so file times do not tell when (or how long) the run was."""
    midnight = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()
    for p in [*root.rglob("*"), root]:
        os.utime(p, (midnight, midnight), follow_symlinks=False)


TEMP_INFIX = ".tmp-"
"""A bundle's temporary directory is ``.<name>.tmp-<random>`` beside ``<name>``."""
STALE_AFTER_S = 5.0
"""An unlocked temporary directory changed more recently than this is left alone: the
window between ``mkdtemp`` and taking its lock (microseconds) is far shorter."""


def _temp_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}{TEMP_INFIX}"


def check_out_path(out_dir: Path, in_use: type[DpsynthError] = StorageError) -> Path:
    """Every check :func:`write_bundle` makes of its target, run once before the budget
    is reserved (``in_use=UsageError``: exit 2, nothing charged) and again by
    ``write_bundle`` itself (exit 6). Returns the parent directory.

    * ``out_dir`` must not be a symbolic link (dangling or not: the rename would
      fail), a mount point (the rename would fail), or anything but an empty
      directory (a bundle is never overwritten): ``in_use``;
    * its parent is created if needed, and a temporary directory is created there
      and removed again (the real one is made the same way): :class:`StorageError`.
    """
    out_dir = Path(out_dir)
    where = repr(str(out_dir))
    if out_dir.is_symlink():
        raise in_use(f"output path {where} is a symbolic link; give the real directory "
                     "(a bundle is renamed into place, never written through a link)")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise in_use(f"output path {where} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise in_use(f"output directory {where} already exists and is not empty; "
                         "choose a new directory (a bundle is never overwritten)")
        if os.path.ismount(out_dir):
            raise in_use(f"output directory {where} is a mount point; the bundle is renamed "
                         "into place, so give a new directory inside the mounted volume")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=_temp_prefix(out_dir), dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise StorageError(f"cannot create a directory in {str(parent)!r} "
                           f"({exc.strerror or type(exc).__name__})") from None
    return parent


def _lock_dir(path: Path) -> int:
    """Open ``path`` and hold an exclusive ``flock`` on it (released by the kernel when
    this process dies, SIGKILL included). Returns the descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_stale_temp_dirs(out_dir: Path) -> tuple[list[Path], list[Path]]:
    """Remove the temporary directories a killed writer of ``out_dir`` left beside it.

    A directory ``.<name>.tmp-*`` is stale when nobody holds its lock (its writer is
    dead: the kernel drops a ``flock`` with the process) and it has not changed for
    :data:`STALE_AFTER_S`. Locked (live) ones, and any whose lock cannot be tested
    (a filesystem without ``flock``), are left alone. Returns ``(removed, kept)``.
    """
    out_dir = Path(out_dir)
    removed: list[Path] = []
    kept: list[Path] = []
    prefix = _temp_prefix(out_dir)
    try:
        candidates = sorted(p for p in out_dir.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return removed, kept
    for d in candidates:
        try:
            st = d.lstat()
            if not stat.S_ISDIR(st.st_mode) or time.time() - st.st_ctime < STALE_AFTER_S:
                kept.append(d)
                continue
            fd = _lock_dir(d)
        except OSError:
            kept.append(d)  # locked by a live writer, gone meanwhile, or no flock here
            continue
        try:
            shutil.rmtree(d)
            removed.append(d)
        except OSError:
            kept.append(d)
        finally:
            os.close(fd)
    return removed, kept


def write_bundle(out_dir: Path, files: Mapping[str, Content],
                 manifest_fields: dict[str, Any],
                 sign: Callable[[bytes], bytes] | None = None) -> Path:
    """Write a complete bundle to ``out_dir`` atomically and return its path.

    ``files`` maps relative POSIX paths to contents (``manifest.json`` excluded):
    bytes, or a :data:`Writer` that streams the file (large tables).
    ``manifest_fields`` supplies the provenance (``release_id``, ``engine``,
    ``sampler_seed``, ``schema_sha256``, ``privacy``, ``rows``, ``columns``,
    ``ledger_entry``, optionally ``dataset_id``/``schema_name``/``schema_version``);
    ``format``, ``created``, ``dpsynth_version``, ``dependencies`` (unless
    given) and ``files`` are filled in here. The manifest is validated against
    ``schemas/manifest.v1.json`` before anything is renamed into place.
    ``sign``, when given, returns the signature of the manifest's bytes, written to
    :data:`SIGNATURE` before the rename.

    Raises :class:`StorageError` (exit 6) when ``out_dir`` fails
    :func:`check_out_path` or the filesystem fails, :class:`InternalError` when the caller passes
    an invalid manifest; in every failure no bundle and no temp dir remain.
    """
    out_dir = Path(out_dir)
    parent = check_out_path(out_dir)
    rels = {rel: _check_relpath(rel) for rel in files}
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out_dir), dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create a directory in {str(parent)!r} "
                           f"({exc.strerror or type(exc).__name__})") from None
    lock: int | None = None
    published = False
    try:
        # held until the bundle is in place: the next run removes the directory only
        # if this process died (remove_stale_temp_dirs)
        with contextlib.suppress(OSError):  # a filesystem without flock: no lock
            lock = _lock_dir(tmp)
        entries = []
        for rel in sorted(files):
            data = files[rel]
            target = tmp.joinpath(*rels[rel].parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(target, data)
            crash_point("in-bundle")
            entries.append({"path": rel, "sha256": sha256_file(target),
                            "size": target.stat().st_size})
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "created": release_date(),
            "dpsynth_version": __version__,
            "dependencies": dependency_versions(),
        }
        manifest.update(manifest_fields)
        manifest["files"] = entries
        problems = _manifest_errors(manifest)
        if problems:
            raise InternalError("manifest does not match schemas/manifest.v1.json: "
                                + "; ".join(problems[:3]))
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _write_file(tmp / MANIFEST, manifest_bytes)
        if sign is not None:
            _write_file(tmp / SIGNATURE, sign(manifest_bytes))
        _stamp_day(tmp, manifest["created"])
        for d in sorted({p.parent for p in tmp.rglob("*")}, key=lambda p: -len(p.parts)):
            _fsync_dir(d)
        # mkdtemp makes it 0700; a bundle is meant to be read by others
        os.chmod(tmp, 0o755)  # noqa: S103
        crash_point("before-publish")
        check_out_path(out_dir)
        try:
            # rename(2) replaces an empty directory and fails on a non-empty one,
            # so a bundle that appeared meanwhile is never overwritten.
            os.rename(tmp, out_dir)
            published = True
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise StorageError(f"output directory {str(out_dir)!r} appeared while the "
                                   "bundle was written; not overwritten") from None
            raise
        _fsync_dir(parent)
    except BaseException as exc:
        # A bundle renamed into place but not made durable is taken back: on failure
        # no bundle and no temporary directory remain.
        shutil.rmtree(out_dir if published else tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the bundle to {str(out_dir)!r} "
                               f"({exc.strerror or type(exc).__name__})") from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return out_dir
