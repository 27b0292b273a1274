"""Contribution bounding is stable: a patient's kept rows depend only on that patient's
own rows and the per-run secret (issue 11, defect 3).

The DP promise needs this for *every* secret, including one the adversary knows:
adding or removing one patient must change the bounded table by at most that
patient's k rows. The rule this replaced gave row ``i`` (file order) the key
``numpy.random.default_rng(seed).permutation(n)[i]``, so inserting a patient
shifted every later row's key and changed other patients' choices: with k = 1,
patients ``a`` (rows ``(0, 0)``, ``(1, 0)``) and ``b`` (rows ``(0, 1)``, ``(1, 1)``),
one extra row in front changes ``a``'s or ``b``'s kept row for most seeds.
:func:`_old_bound` keeps that rule, and the tests below show that the same checks
catch it, so they can fail.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.errors import UsageError
from dpsynth.io import (
    bound_contributions,
    bounding_keys,
    bounding_secret,
    content_hashes,
    load_encoded,
    patient_hashes,
)
from dpsynth.io.bounding import _mix_codes, _occurrences, _smallest_k
from dpsynth.schema import parse_schema

Row = tuple[str, tuple[int, int]]

SECRETS = st.one_of(
    st.sampled_from([b"", b"\x00" * 32, b"known secret", 0, 1, 2**256 - 1]),  # fixed, known ones
    st.binary(max_size=64),
    st.integers(0, 2**256 - 1),
)
CONTENT = st.tuples(st.integers(0, 2), st.integers(0, 2))  # few values: identical rows are common
PATIENT_ROWS = st.lists(CONTENT, min_size=1, max_size=5)


def _frame(rows: list[Row]) -> pl.DataFrame:
    return pl.DataFrame({"pid": [p for p, _ in rows],
                         "a": [c[0] for _, c in rows], "b": [c[1] for _, c in rows]},
                        schema={"pid": pl.String, "a": pl.UInt8, "b": pl.UInt16})


def _kept(out: pl.DataFrame) -> dict[str, Counter[tuple[int, int]]]:
    """Each patient's kept rows, as a multiset of code tuples."""
    kept: dict[str, Counter[tuple[int, int]]] = {}
    for p, a, b in out.iter_rows():
        kept.setdefault(p, Counter())[(a, b)] += 1
    return kept


def _old_bound(df: pl.DataFrame, unit_column: str, k: int, seed: int) -> pl.DataFrame:
    """The replaced rule: row i's key is permutation(n)[i]; k smallest keys per patient."""
    key = np.random.default_rng(seed).permutation(df.height)
    patient = df[unit_column].rank("dense").to_numpy()
    order = np.lexsort((key, patient))
    keep = np.zeros(df.height, dtype=bool)
    for p in np.unique(patient):
        rows = order[patient[order] == p]
        keep[rows[:k]] = True
    return df.filter(pl.Series(keep))


@st.composite
def neighbours(draw: st.DrawFn) -> tuple[list[Row], list[Row]]:
    """A table (patients with 1-5 rows, interleaved in a random order) and the same
    table with one more patient whose rows are inserted at random positions."""
    names = draw(st.lists(st.text(min_size=1, max_size=4).filter(lambda s: s != "extra"),
                          min_size=1, max_size=8, unique=True))
    rows = [(p, r) for p in names for r in draw(PATIENT_ROWS)]
    base = [rows[i] for i in draw(st.permutations(range(len(rows))))]
    with_extra = list(base)
    for r in draw(PATIENT_ROWS):
        with_extra.insert(draw(st.integers(0, len(with_extra))), ("extra", r))
    return base, with_extra


@settings(max_examples=300, deadline=None)
@given(tables=neighbours(), k=st.integers(1, 3), secret=SECRETS)
def test_adding_or_removing_a_patient_changes_no_other_patients_rows(
        tables: tuple[list[Row], list[Row]], k: int, secret: bytes | int) -> None:
    base, with_extra = tables
    without = _kept(bound_contributions(_frame(base), "pid", k, secret))
    with_ = _kept(bound_contributions(_frame(with_extra), "pid", k, secret))
    extra = with_.pop("extra")
    assert with_ == without  # read the other way, removing "extra" changes nothing either
    assert 0 < sum(extra.values()) <= k


@settings(max_examples=150, deadline=None)
@given(tables=neighbours(), k=st.integers(1, 3), secret=SECRETS, data=st.data())
def test_file_order_does_not_matter(tables: tuple[list[Row], list[Row]], k: int,
                                    secret: bytes | int, data: st.DataObject) -> None:
    rows = tables[1]
    shuffled = [rows[i] for i in data.draw(st.permutations(range(len(rows))))]
    assert (_kept(bound_contributions(_frame(rows), "pid", k, secret))
            == _kept(bound_contributions(_frame(shuffled), "pid", k, secret)))


def test_the_old_permutation_rule_fails_the_same_check() -> None:
    """The docstring's example: the checks above would have caught the old rule."""
    base = [("a", (0, 0)), ("a", (1, 0)), ("b", (0, 1)), ("b", (1, 1))]
    with_extra = [("extra", (2, 2)), *base]

    def changed(bound: object, secret: int) -> bool:
        without = _kept(bound(_frame(base), "pid", 1, secret))  # type: ignore[operator]
        with_ = _kept(bound(_frame(with_extra), "pid", 1, secret))  # type: ignore[operator]
        del with_["extra"]
        return with_ != without

    assert sum(changed(_old_bound, s) for s in range(100)) > 30
    assert sum(changed(bound_contributions, s) for s in range(100)) == 0


def _histogram(df: pl.DataFrame) -> np.ndarray:
    return np.bincount(df["a"].to_numpy().astype(np.int64) * 5 + df["b"].to_numpy(), minlength=25)


def test_the_bounded_histogram_moves_by_at_most_k() -> None:
    """50 patients x 2 rows, k = 1, 200 secrets: one more patient, anywhere in the
    file, moves the bounded histogram by at most k (L1). The old rule moved it by 8
    on average."""
    k, old_moves = 1, []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        rows: list[Row] = [(f"p{p}", (int(rng.integers(5)), int(rng.integers(5))))
                           for p in range(50) for _ in range(2)]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        with_extra = list(rows)
        for _ in range(2):
            with_extra.insert(int(rng.integers(len(with_extra) + 1)),
                              ("extra", (int(rng.integers(5)), int(rng.integers(5)))))
        secret = rng.bytes(32)
        move = np.abs(_histogram(bound_contributions(_frame(with_extra), "pid", k, secret))
                      - _histogram(bound_contributions(_frame(rows), "pid", k, secret))).sum()
        assert move == k  # the extra patient's one kept row, nothing else
        old_moves.append(np.abs(_histogram(_old_bound(_frame(with_extra), "pid", k, seed))
                                - _histogram(_old_bound(_frame(rows), "pid", k, seed))).sum())
    assert np.mean(old_moves) > 3 * k and max(old_moves) > 10 * k


def _binomial_ok(hits: int, draws: int, p: float) -> bool:
    """Within 5 standard deviations of a Binomial(draws, p)."""
    return abs(hits - draws * p) <= 5 * np.sqrt(draws * p * (1 - p))


@pytest.mark.parametrize(("contents", "k"), [
    ([(0, 0), (0, 1), (1, 0), (1, 1)], 1),
    ([(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)], 2),
    ([(0, 0), (0, 0), (0, 0), (1, 1)], 1),  # identical rows count one by one
    ([(0, 0), (0, 0), (1, 1)], 2),
])
def test_each_row_is_kept_with_probability_k_over_m(contents: list[tuple[int, int]], k: int) -> None:
    """Over many secrets and patients (each patient's draw is independent), each of a
    patient's m rows is kept with probability k/m; identical rows each count."""
    m, n_patients, n_secrets = len(contents), 500, 20
    rows = [(f"p{p}", c) for p in range(n_patients) for c in contents]
    kept: Counter[tuple[int, int]] = Counter()
    for s in range(n_secrets):
        for patient_rows in _kept(bound_contributions(_frame(rows), "pid", k, s)).values():
            kept.update(patient_rows)
    draws = n_patients * n_secrets
    for c, copies in Counter(contents).items():
        # each copy of c is kept with probability k/m: kept copies of c ~ Binomial(draws * copies, k/m)
        assert _binomial_ok(kept[c], draws * copies, k / m), (c, kept[c], draws * copies * k / m)


def _reference(df: pl.DataFrame, k: int, secret: bytes | int) -> pl.DataFrame:
    """The documented rule, row by row: hash, number identical rows in file order, keep
    each patient's k smallest (key, hash, number)."""
    key_secret = bounding_secret(secret)
    pids = df["pid"].to_list()
    h = content_hashes(key_secret, pids, [df["a"].to_numpy(), df["b"].to_numpy()])
    seen: Counter[tuple[str, int]] = Counter()
    number = np.zeros(len(pids), dtype=np.int64)
    for i, p in enumerate(pids):
        number[i] = seen[(p, int(h[i]))]
        seen[(p, int(h[i]))] += 1
    key = bounding_keys(h, number)
    by_patient: dict[str, list[int]] = {}
    for i, p in enumerate(pids):
        by_patient.setdefault(p, []).append(i)
    keep = np.zeros(len(pids), dtype=bool)
    for idx in by_patient.values():
        idx.sort(key=lambda i: (key[i], h[i], number[i]))
        keep[idx[:k]] = True
    return df.filter(pl.Series(keep))


@settings(max_examples=150, deadline=None)
@given(tables=neighbours(), k=st.integers(1, 4), secret=SECRETS)
def test_vectorised_bounding_matches_the_row_by_row_rule(
        tables: tuple[list[Row], list[Row]], k: int, secret: bytes | int) -> None:
    df = _frame(tables[1])
    assert bound_contributions(df, "pid", k, secret).equals(_reference(df, k, secret))


def test_rare_collisions_take_the_exact_path() -> None:
    """Equal top bits of different hashes (about 2**-32 per pair) are resolved exactly."""
    top = np.int64(12345) << 31
    # patient 0: contents X, Y, X with X, Y equal in the top 32 bits; patient 1: Y
    h = np.array([top + 1, top + 2, top + 1, top + 2], dtype=np.int64)
    run = np.array([0, 0, 0, 1])
    assert _occurrences(h, run).tolist() == [0, 0, 1, 0]
    # 1024 patients: keys are compared on their top 54 bits first. Patient 0's keys
    # 5, 3, 4 share them, so its cut is tied and it is ranked on the full key.
    lengths = np.full(1024, 3)
    run = np.repeat(np.arange(1024), lengths)
    key = np.random.default_rng(0).integers(1 << 20, 1 << 62, run.size)
    key[:3] = [5, 3, 4]
    h = np.arange(run.size, dtype=np.int64)
    zero = np.zeros(run.size, dtype=np.int64)
    for k, expected in ((1, [False, True, False]), (2, [False, True, True])):
        keep = _smallest_k(key, h, zero, run, lengths, k)
        assert keep[:3].tolist() == expected
        for p in range(1, 1024):  # the others by their keys
            rows = np.flatnonzero(run == p)
            assert set(rows[keep[rows]]) == set(rows[np.argsort(key[rows])[:k]])
    # equal full keys: by content hash, then number
    key[:3] = 7
    h[:3] = [30, 10, 20]
    assert _smallest_k(key, h, zero, run, lengths, 1)[:3].tolist() == [False, True, False]


def test_hash_format_is_the_documented_one() -> None:
    """The patient hash is blake2b(raw id in UTF-8, key=secret, 8 bytes, person), and
    the row hash depends on code values, not on their dtype (the Spark path hands
    the same function int64 codes)."""
    secret = b"s" * 32
    expected = hashlib.blake2b("Zoë-17".encode(), key=secret, digest_size=8,
                               person=b"dpsynth-bound-v1").digest()
    assert patient_hashes(secret, ["Zoë-17"])[0] == int.from_bytes(expected, "little")
    codes = [np.array([0, 3, 250], dtype=np.uint8), np.array([7, 0, 1000], dtype=np.uint16)]
    wide = [c.astype(np.int64) for c in codes]
    h = content_hashes(secret, ["a", "b", "a"], codes)
    assert np.array_equal(h, content_hashes(secret, np.array(["a", "b", "a"], dtype=object), wide))
    assert np.array_equal(h, _mix_codes(patient_hashes(secret, ["a", "b", "a"]), codes))
    assert (h >= 0).all() and len(set(h.tolist())) == 3
    assert (bounding_keys(h, np.zeros(3, dtype=np.int64)) >= 0).all()


def test_bounding_secret_forms() -> None:
    a, b = bounding_secret(), bounding_secret()
    assert len(a) == 32 and a != b  # fresh from the OS each run
    assert bounding_secret(5) == (5).to_bytes(32, "big")
    assert bounding_secret(b"abc") == b"abc"
    for bad in (-1, 2**256, True, "text", b"x" * 65, 1.5):
        with pytest.raises(UsageError):
            bounding_secret(bad)  # type: ignore[arg-type]


SCHEMA = parse_schema("""\
format: dpsynth.table-schema/v1
name: bounding
version: 1
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: pid, kind: identifier}
  - {name: a, kind: categorical, categories: ["0", "1", "2"]}
  - {name: b, kind: categorical, categories: ["0", "1", "2", "3"]}
""")


def _rows(codes: np.ndarray) -> Counter[tuple[int, ...]]:
    return Counter(map(tuple, codes.tolist()))


def test_load_encoded_hashes_the_raw_patient_ids(tmp_path: Path) -> None:
    """The polars path hands bounding Categorical ids, numbered in order of first
    appearance; bounding hashes the raw ids' text, so the same rows in another
    order, or after another patient, keep the same choice."""
    rng = np.random.default_rng(5)
    n = 3000
    df = pl.DataFrame({"pid": [f"id-{p}" for p in rng.integers(0, 600, n)],
                       "a": rng.integers(0, 3, n).astype(str), "b": rng.integers(0, 4, n).astype(str)})
    extra = pl.DataFrame({"pid": ["new"] * 3, "a": ["0", "1", "2"], "b": ["3", "3", "3"]})
    df.write_csv(tmp_path / "t.csv")
    df.sample(fraction=1.0, shuffle=True, seed=1).write_csv(tmp_path / "shuffled.csv")
    pl.concat([extra, df]).write_csv(tmp_path / "extra.csv")
    secret = b"known"
    kept = _rows(load_encoded(tmp_path / "t.csv", SCHEMA, secret).codes)
    assert kept == _rows(load_encoded(tmp_path / "shuffled.csv", SCHEMA, secret).codes)
    added = _rows(load_encoded(tmp_path / "extra.csv", SCHEMA, secret).codes) - kept
    assert added.total() == 2 and set(added) <= {(0, 3), (1, 3), (2, 3)}
    # the same choice as bounding the raw table directly (codes are the category positions)
    direct = bound_contributions(df.with_columns(pl.col("a", "b").cast(pl.Int64)), "pid", 2, secret)
    assert kept == _rows(direct.select("a", "b").to_numpy())
    assert kept != _rows(load_encoded(tmp_path / "t.csv", SCHEMA, b"another").codes)
