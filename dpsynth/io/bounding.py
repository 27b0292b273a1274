"""Contribution bounding: keep at most k rows per patient, chosen by a keyed hash (PRIVATE).

Owns the bounding rule and the functions both backends compute it with. A row's
key is a hash of a per-run secret, the patient id's raw text and the row's codes
(identical rows of a patient are numbered, so each row gets its own key); each
patient keeps its k rows with the smallest keys. So the rows a patient keeps
depend only on that patient's own rows and the secret: adding, removing or
moving any other row changes nothing for them, which keeps the sensitivity at k
for any secret. The secret is 32 bytes from ``secrets.token_bytes`` unless one is
given; it only makes the choice random, so a known secret (for a reproducible
run) is safe too (docs/privacy-model.md, "Unit of privacy and contribution
bounding"). The Spark backend (:mod:`dpsynth.marginals.spark`) computes the same
keys with the same functions (:func:`content_hashes`, :func:`bounding_keys`);
:func:`bound_contributions` is the polars path's vectorised form of the rule.

Rules: messages never show a value; nothing here draws DP noise.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from dpsynth.errors import InputDataError, InternalError, UsageError

__all__ = [
    "bound_contributions",
    "bounding_keys",
    "bounding_mask",
    "bounding_secret",
    "content_hashes",
    "patient_hashes",
]

_PERSON = b"dpsynth-bound-v1"
"""blake2b personalisation of the patient hash (16 bytes); a new rule takes a new one."""
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_HASH_BLOCK = 1 << 13


def bounding_secret(secret: bytes | int | None = None) -> bytes:
    """The per-run bounding secret as bytes. ``None``: 32 fresh bytes from the
    operating system (``secrets.token_bytes``); ``bytes``: as they are (at most 64,
    blake2b's key size); an ``int`` (0 <= secret < 2**256, for reproducible runs):
    its 32-byte big-endian form. The secret only makes the choice random: the DP
    guarantee holds for any secret, known or not."""
    if secret is None:
        return secrets.token_bytes(32)
    if isinstance(secret, bool) or not isinstance(secret, int | bytes):
        raise UsageError("the bounding secret must be bytes, a non-negative int or None")
    if isinstance(secret, int):
        if not 0 <= secret < 1 << 256:
            raise UsageError("an int bounding secret must satisfy 0 <= secret < 2**256")
        return secret.to_bytes(32, "big")
    if len(secret) > 64:
        raise UsageError("the bounding secret must be at most 64 bytes")
    return bytes(secret)


def patient_hashes(secret: bytes, values: Iterable[str]) -> np.ndarray:
    """One keyed hash per patient id (``uint64``): blake2b keyed with ``secret``
    (8-byte digest, read little-endian) over the id's raw text in UTF-8."""
    base = hashlib.blake2b(key=secret, digest_size=8, person=_PERSON)

    def one(value: str) -> bytes:
        h = base.copy()
        h.update(value.encode("utf-8"))
        return h.digest()

    values = iter(values)
    parts = [np.zeros(0, dtype=np.uint64)]
    while chunk := b"".join(map(one, itertools.islice(values, 1 << 16))):
        parts.append(np.frombuffer(chunk, dtype="<u8").astype(np.uint64))
    return np.concatenate(parts)


def _fmix(x: np.ndarray) -> None:
    """splitmix64's finaliser, in place (wrapping ``uint64`` arithmetic)."""
    x ^= x >> 30
    x *= _M1
    x ^= x >> 27
    x *= _M2
    x ^= x >> 31


def _mix_codes(patient_hash: np.ndarray, columns: Sequence[np.ndarray],
               rows: np.ndarray | None = None) -> np.ndarray:
    """Per row, the patient's hash mixed with the row's codes (per column: xor,
    multiply, xorshift; then splitmix64's finaliser); the top 63 bits as ``int64``.
    ``rows``: the rows of ``columns`` that ``patient_hash`` belongs to (all if None)."""
    n = len(patient_hash)
    cols = [c if c.dtype.kind == "u" else c.astype(np.uint64) for c in map(np.asarray, columns)]
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, _HASH_BLOCK):
        e = min(s + _HASH_BLOCK, n)
        h = np.array(patient_hash[s:e], dtype=np.uint64)
        for c in cols:
            h ^= c[s:e] if rows is None else c[rows[s:e]]
            h *= _GOLDEN
            h ^= h >> 29
        _fmix(h)
        out[s:e] = (h >> 1).view(np.int64)
    return out


def content_hashes(secret: bytes, patient_values: Sequence[str] | np.ndarray,
                   codes: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's content hash (``int64``, 0 <= h < 2**63): the keyed hash of its
    patient id's raw text (:func:`patient_hashes`, once per distinct id) mixed with
    its codes. ``patient_values``: each row's raw patient id; ``codes``: one array of
    code values per released column (any integer dtype). A patient's identical rows
    get the same hash. Both backends compute the hash with this code."""
    import pandas as pd

    ids, distinct = pd.factorize(np.asarray(patient_values, dtype=object))
    return _mix_codes(patient_hashes(secret, distinct)[ids], codes)


def bounding_keys(content_hash: np.ndarray, occurrence: np.ndarray) -> np.ndarray:
    """Each row's bounding key (``int64``, 0 <= key < 2**63) from its content hash
    and its occurrence number among its patient's identical rows (0, 1, ...), so
    identical rows get distinct keys. Both backends compute the key with this code."""
    x = np.asarray(content_hash, dtype=np.int64).view(np.uint64) + _GOLDEN * (
        np.asarray(occurrence).astype(np.uint64) + np.uint64(1))
    _fmix(x)
    return (x >> 1).view(np.int64)


def _offsets(*keys: np.ndarray) -> np.ndarray:
    """Each position's offset in its run of equal ``keys`` (runs are contiguous)."""
    n = len(keys[0])
    same = np.ones(max(n - 1, 0), dtype=bool)
    for a in keys:
        same &= a[1:] == a[:-1]
    pos = np.arange(n)
    start = np.concatenate([[True], ~same]) if n else np.zeros(0, dtype=bool)
    return pos - np.maximum.accumulate(np.where(start, pos, 0))


def _occurrences(h: np.ndarray, run: np.ndarray) -> np.ndarray:
    """For rows grouped by patient (``run``, nondecreasing) in file order: each row's
    number among the earlier rows of its patient with the same content hash ``h``."""
    n = len(h)
    # sort by the hash's top 32 bits, then position: identical rows of a patient are
    # adjacent and in file order
    packed = np.sort(((h.view(np.uint64) >> 31) << 32) | np.arange(n, dtype=np.uint64))
    top, pos = packed >> 32, (packed & _LOW32).astype(np.int64)
    dup = np.zeros(n, dtype=bool)
    dup[1:] = top[1:] == top[:-1]
    dup[:-1] |= dup[1:]
    occurrence = np.zeros(n, dtype=np.int64)
    if not dup.any():
        return occurrence
    top, pos = top[dup], pos[dup]
    first = np.concatenate([[True], top[1:] != top[:-1]])
    group = np.cumsum(first) - 1
    lead = pos[first][group]
    pure = (h[pos] == h[lead]) & (run[pos] == run[lead])
    pure_group = np.logical_and.reduceat(pure, np.flatnonzero(first))[group]
    occurrence[pos[pure_group]] = _offsets(top[pure_group])
    # rare: two contents share the top 32 bits; number those groups exactly
    mixed = pos[~pure_group]
    if mixed.size:
        mixed = mixed[np.lexsort((mixed, h[mixed], run[mixed]))]
        occurrence[mixed] = _offsets(run[mixed], h[mixed])
    return occurrence


def _smallest_k(key: np.ndarray, h: np.ndarray, occurrence: np.ndarray, run: np.ndarray,
                lengths: np.ndarray, k: int) -> np.ndarray:
    """For rows grouped by patient (``run`` = 0, 1, ... with ``lengths`` rows each,
    every one more than ``k``): whether the row is among its patient's ``k`` smallest
    by (key, content hash, occurrence)."""
    bits = max(1, (len(lengths) - 1).bit_length())
    # sort by patient, then the key's top bits: the k-th value is the patient's cut
    packed = (run.astype(np.uint64) << (64 - bits)) | (key.view(np.uint64) >> (bits - 1))
    cut_at = np.concatenate([[0], np.cumsum(lengths)[:-1]]) + k
    ordered = np.sort(packed)
    cut, after = ordered[cut_at - 1], ordered[cut_at]
    keep = packed <= np.repeat(cut, lengths)
    # rare: the k-th and (k+1)-th share the top bits; rank those patients exactly
    tied = np.repeat(after == cut, lengths)
    if tied.any():
        rows = np.flatnonzero(tied)
        rows = rows[np.lexsort((occurrence[rows], h[rows], key[rows], run[rows]))]
        keep[rows] = _offsets(run[rows]) < k
    return keep


def bound_contributions(df: pl.DataFrame, unit_column: str, k: int,
                        secret: bytes | int | None = None,
                        unit_values: pl.Series | None = None) -> pl.DataFrame:
    """Keep at most ``k`` rows per patient, chosen at random by a keyed hash.

    The rule: a row's content hash is :func:`content_hashes` of its patient id's raw
    text and its codes (every column of ``df`` but ``unit_column``); a patient's
    identical rows are numbered 0, 1, ...; a row's key is :func:`bounding_keys` of
    (content hash, number); each patient keeps its ``k`` rows with the smallest keys
    (ties, which need a 63-bit collision, by content hash then number). So the rows
    a patient keeps depend only on that patient's rows, as a multiset (not on their
    order, nor on any other row), and on the secret; for a random secret they are a
    uniformly random ``k``-subset of them. Patients with at most ``k`` rows keep
    them all (and are not hashed). The Spark backend computes the same keys with the
    same functions, so both keep the same rows for the same secret. Kept rows stay
    in file order.

    ``unit_values``: if given, ``unit_column`` holds integer indexes into it (the
    Categorical ids of :func:`check_and_encode`) and it holds the raw ids' text;
    otherwise ``unit_column`` holds the raw ids. ``secret``: see
    :func:`bounding_secret` (``None``: a fresh one).
    """
    mask = bounding_mask(df, unit_column, k, secret, unit_values)
    return df if mask.all() else df.filter(pl.Series(mask))


def bounding_mask(df: pl.DataFrame, unit_column: str, k: int,
                  secret: bytes | int | None = None,
                  unit_values: pl.Series | None = None) -> np.ndarray:
    """The rows :func:`bound_contributions` keeps, as a boolean array over ``df``'s rows
    (same rule, same arguments). For callers that keep other data per row aside, such
    as the schema draft, which bounds on each row's patient id and a hash of its text."""
    key_secret = bounding_secret(secret)
    n = df.height
    if n >= 1 << 32:
        raise UsageError("more than 2**32 rows: use the spark backend")
    unit = df[unit_column]
    if unit.null_count():
        raise InputDataError("the patient id is missing", column=unit_column,
                             rule="privacy-unit-missing")
    if unit_values is None:
        unit = unit.cast(pl.String)
        unit_values = unit.unique().sort()
        unit = unit.rank("dense") - 1
    # rows grouped by patient, in file order: one sort of (patient << 32 | row)
    row = unit.to_numpy().astype(np.uint64)
    row <<= 32
    row |= np.arange(n, dtype=np.uint64)
    row.sort()
    patient = row >> 32
    row &= _LOW32
    starts = np.flatnonzero(np.concatenate([[True], patient[1:] != patient[:-1]]))
    lengths = np.diff(np.append(starts, n))
    over = lengths > k
    if not over.any():
        return np.ones(n, dtype=bool)
    row = row[np.repeat(over, lengths)]  # the rows of patients with more than k rows
    lengths = lengths[over]
    need = patient[starts[over]].astype(np.int64)
    del patient, starts
    run = np.repeat(np.arange(len(lengths)), lengths)
    raw = unit_values.gather(need)
    if raw.null_count():  # pragma: no cover - every id in the column has its text
        raise InternalError("a patient id has no raw value")
    hashes = patient_hashes(key_secret, itertools.chain.from_iterable(
        raw.slice(i, 1 << 16).to_list() for i in range(0, len(raw), 1 << 16)))
    del raw
    # content hashes, computed in file order (the code columns are read in order)
    in_file = np.zeros(n, dtype=np.int64)
    in_file[row] = run + 1
    file_rows = np.flatnonzero(in_file)
    codes = [df[c].to_numpy() for c in df.columns if c != unit_column]
    in_file[file_rows] = _mix_codes(hashes[in_file[file_rows] - 1], codes, file_rows)
    h = in_file[row]
    del in_file, file_rows, codes
    occurrence = _occurrences(h, run)
    keep = _smallest_k(bounding_keys(h, occurrence), h, occurrence, run, lengths, k)
    mask = np.ones(n, dtype=bool)
    mask[row[~keep]] = False
    return mask
