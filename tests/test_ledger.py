"""The privacy-budget ledger (dpsynth.privacy.ledger) on SQLite and PostgreSQL.

Every test that takes the ``ledger`` or ``ledger_url`` fixture runs once per
backend module: ``sqlite`` always, ``postgres`` on the throwaway server from
tests/pg_fixture.py (fixture ``pg_url``; those runs are marked ``postgres``).
``core`` (state machine, budget policy, versioning), ``records`` and ``urls``
are covered through them and by the tests of their own below.
"""

from __future__ import annotations

import functools
import math
import multiprocessing as mp
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpsynth.privacy.ledger as ledger_pkg
from dpsynth.errors import BudgetError, StorageError, UsageError
from dpsynth.privacy.accountant import ApproxDP, Budget, epsilon_for, rho_for
from dpsynth.privacy.ledger import (
    COUNTED_STATUSES,
    SCHEMA_VERSION,
    STATUSES,
    ChargeRecord,
    DatasetSummary,
    Ledger,
    open_ledger,
    redact_url,
)
from dpsynth.privacy.ledger.core import _TRANSITIONS
from dpsynth.privacy.ledger.urls import parse_ledger_url

DELTA = 1e-6
META = {"engine": "aim", "dpsynth_version": "0.1.0", "schema_hash": "sha256:abc"}


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # absolute path -> sqlite:////tmp/...


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _sqlite_url(tmp_path / "ledger.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(ledger_url: str):
    with open_ledger(ledger_url) as led:
        yield led


def reserve_eps(led: Ledger, release_id: str, eps: float, dataset: str = "ds") -> ChargeRecord:
    return led.reserve(dataset, release_id, ApproxDP(eps, DELTA), **META)


def init(led: Ledger, total_eps: float, dataset: str = "ds", delta: float = DELTA) -> DatasetSummary:
    return led.init_dataset(dataset, ApproxDP(total_eps, delta))


def at_rho(rho: float) -> ApproxDP:
    """The (epsilon, DELTA) whose rho is ``rho`` (up to the conversion's rounding)."""
    return ApproxDP.of(Budget(rho), DELTA)


# ------------------------------------------------------------------ lifecycle & budget


def test_lifecycle(ledger: Ledger) -> None:
    s = init(ledger, 2.0)
    assert s.total_rho == pytest.approx(rho_for(2.0, DELTA))
    assert s.spent_rho == 0 and s.remaining_epsilon == pytest.approx(2.0, rel=1e-6)
    assert (s.total, s.spent, s.remaining) == (Budget(s.total_rho), Budget(0.0), s.total)
    c = reserve_eps(ledger, "r1", 0.5)
    assert c.status == "reserved" and c.input_hash is None
    assert c.requested == ApproxDP(0.5, DELTA) and c.cost == ApproxDP(0.5, DELTA).rho
    c = ledger.mark_spent("r1", input_hash="sha256:in")
    assert (c.status, c.input_hash) == ("spent", "sha256:in")
    c = ledger.mark_released("r1")
    assert c.status == "released" and c.engine == "aim" and c.schema_hash == "sha256:abc"
    s = ledger.summary("ds")
    assert [x.release_id for x in s.charges] == ["r1"]
    assert s.spent_rho == pytest.approx(rho_for(0.5, DELTA))
    assert s.spent_epsilon == pytest.approx(epsilon_for(rho_for(0.5, DELTA), DELTA))
    assert s.spent == c.cost and s.remaining == Budget(s.total_rho - c.rho)
    assert s.remaining_epsilon == s.remaining.epsilon(DELTA)
    assert [d.dataset_id for d in ledger.datasets()] == ["ds"]
    d = s.to_dict()
    assert d["charges"][0]["status"] == "released" and d["spent_epsilon"] == s.spent_epsilon


def test_tables_persist_and_reopen(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        init(led, 1.0)
        reserve_eps(led, "r1", 0.3)
    with open_ledger(ledger_url) as led:  # second open sees version table, no re-create
        assert [c.release_id for c in led.summary("ds").charges] == ["r1"]
        assert led.backend == ledger_url.partition(":")[0]


def test_newer_schema_version_refused(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    _raw_sql(ledger_url, "INSERT INTO ledger_schema_version (version, applied_at) "
                         f"VALUES ({SCHEMA_VERSION + 1}, CURRENT_TIMESTAMP)")
    with pytest.raises(StorageError, match="newer than this dpsynth understands"):
        open_ledger(ledger_url)


def test_closed_ledger_refuses(ledger_url: str) -> None:
    led = open_ledger(ledger_url)
    led.close()
    led.close()  # idempotent
    with pytest.raises(StorageError, match="is closed"):
        led.datasets()


def test_init_idempotent_totals_set_once(ledger: Ledger) -> None:
    init(ledger, 1.0)
    init(ledger, 1.0)
    with pytest.raises(UsageError, match="set once"):
        init(ledger, 2.0)
    with pytest.raises(UsageError, match="set once"):
        init(ledger, 1.0, delta=1e-7)
    with pytest.raises(UsageError, match=r"total must be an ApproxDP \(epsilon, delta\), not Budget"):
        ledger.init_dataset("ds2", Budget(1.0))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="total must be an ApproxDP"):
        ledger.init_dataset("ds2", 1.0)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="dataset id must be a non-empty string"):
        ledger.init_dataset(" ", ApproxDP(1.0, DELTA))
    assert [d.dataset_id for d in ledger.datasets()] == ["ds"]


def test_unknown_dataset_refused(ledger: Ledger) -> None:
    with pytest.raises(BudgetError, match="dpsynth ledger init"):
        reserve_eps(ledger, "r1", 0.1, dataset="nope")
    with pytest.raises(UsageError, match="dpsynth ledger init"):
        ledger.summary("nope")


def test_reserve_takes_an_approxdp(ledger: Ledger) -> None:
    init(ledger, 1.0)
    with pytest.raises(UsageError, match="budget must be an ApproxDP"):
        ledger.reserve("ds", "r1", rho_for(0.1, DELTA), **META)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="budget must be an ApproxDP"):
        ledger.reserve("ds", "r1", Budget(0.01), **META)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="release id must be at most 200 printable"):
        ledger.reserve("ds", "r\n1", ApproxDP(0.1, DELTA), **META)
    assert ledger.summary("ds").charges == ()
    c = ledger.reserve("ds", "r1", ApproxDP(0.1, DELTA), **META)
    assert (c.epsilon, c.delta, c.rho) == (0.1, DELTA, ApproxDP(0.1, DELTA).rho.rho)


def test_overspend_refused_with_epsilons(ledger: Ledger) -> None:
    init(ledger, 1.0)
    reserve_eps(ledger, "r1", 0.8)
    with pytest.raises(BudgetError) as e:
        reserve_eps(ledger, "r2", 0.8)
    msg = str(e.value)
    remaining = epsilon_for(rho_for(1.0, DELTA) - rho_for(0.8, DELTA), DELTA)
    assert "epsilon 0.8" in msg and f"{remaining:.6g}" in msg and "remaining" in msg
    assert msg == (
        f"release 'r2' refused: it asks for epsilon 0.8 at delta 1e-06 (rho "
        f"{rho_for(0.8, DELTA):.6g}; epsilon {epsilon_for(rho_for(0.8, DELTA), DELTA):.6g} at "
        f"the dataset's delta 1e-06) but dataset 'ds' has only epsilon {remaining:.6g} "
        f"remaining at delta 1e-06 (rho {rho_for(1.0, DELTA) - rho_for(0.8, DELTA):.6g} of "
        f"{rho_for(1.0, DELTA):.6g}; total epsilon 1)"
    )
    assert e.value.exit_code == 4
    assert [c.release_id for c in ledger.summary("ds").charges] == ["r1"]  # nothing inserted


def test_exact_total_allowed(ledger: Ledger) -> None:
    init(ledger, 1.0)
    reserve_eps(ledger, "all", 1.0)
    s = ledger.summary("ds")
    assert s.remaining_rho == 0 and s.remaining_epsilon == 0
    with pytest.raises(BudgetError):
        reserve_eps(ledger, "more", 1e-3)


def test_exact_total_in_parts(ledger: Ledger) -> None:
    total = init(ledger, 1.0).total_rho
    third = at_rho(total / 3)
    for i in range(3):  # three thirds sum to the total up to rounding
        ledger.reserve("ds", f"r{i}", third, **META)
    assert ledger.summary("ds").spent_rho == pytest.approx(total, rel=1e-12)
    with pytest.raises(BudgetError):
        ledger.reserve("ds", "r3", at_rho(total * 1e-6), **META)


def test_duplicate_release_id_refused_in_any_status(ledger: Ledger) -> None:
    init(ledger, 5.0)
    init(ledger, 5.0, dataset="other")
    reserve_eps(ledger, "r1", 0.1)
    with pytest.raises(BudgetError, match="must not spend twice"):
        reserve_eps(ledger, "r1", 0.1)
    with pytest.raises(BudgetError, match="must not spend twice"):  # ids are global
        reserve_eps(ledger, "r1", 0.1, dataset="other")
    ledger.mark_failed("r1", "schema did not load")
    assert ledger.charge("r1").status == "cancelled"
    with pytest.raises(BudgetError, match="must not spend twice"):
        reserve_eps(ledger, "r1", 0.1)


def test_cancelled_does_not_count_spent_failed_does(ledger: Ledger) -> None:
    init(ledger, 1.0)
    rho = rho_for(0.8, DELTA)  # 0.66 of the total: two of them do not fit
    reserve_eps(ledger, "early-fail", 0.8)
    c = ledger.mark_failed("early-fail", "bad option")
    assert (c.status, c.detail) == ("cancelled", "bad option")
    assert ledger.summary("ds").spent_rho == 0
    reserve_eps(ledger, "late-fail", 0.8)
    ledger.mark_spent("late-fail")
    assert ledger.mark_failed("late-fail", "crash after read").status == "spent-failed"
    s = ledger.summary("ds")
    assert s.spent_rho == pytest.approx(rho)
    assert {c.release_id: c.counted for c in s.charges} == {
        "early-fail": False,
        "late-fail": True,
    }
    with pytest.raises(BudgetError):
        reserve_eps(ledger, "again", 0.8)


def test_reserved_counts(ledger: Ledger) -> None:
    """A job that crashed after reserving (no status update) still holds its budget."""
    init(ledger, 1.0)
    reserve_eps(ledger, "r1", 0.8)
    assert ledger.summary("ds").spent_rho == pytest.approx(rho_for(0.8, DELTA))


def test_forward_only_transitions(ledger: Ledger) -> None:
    init(ledger, 5.0)
    reserve_eps(ledger, "r1", 0.1)
    with pytest.raises(StorageError, match="only move forward"):
        ledger.mark_released("r1")  # reserved -> released skips spent
    ledger.mark_spent("r1")
    with pytest.raises(StorageError, match="only move forward"):
        ledger.mark_spent("r1")
    ledger.mark_released("r1")
    for bad in (ledger.mark_spent, ledger.mark_released):
        with pytest.raises(StorageError):
            bad("r1")
    with pytest.raises(StorageError):
        ledger.mark_failed("r1", "too late")
    reserve_eps(ledger, "r2", 0.1)
    ledger.mark_failed("r2", "x")  # cancelled is final
    with pytest.raises(StorageError):
        ledger.mark_spent("r2")
    with pytest.raises(StorageError, match="no charge"):
        ledger.mark_spent("never-reserved")
    assert ledger.charge("r1").status == "released"


def _raw_sql(url: str, sql: str) -> None:
    """Run ``sql`` on the ledger's database directly, as someone editing it by hand."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(sql)


def _refused_edit(url: str) -> type[Exception]:
    """What a trigger's refusal raises to a hand-made connection: the driver's own type."""
    if url.startswith("sqlite"):
        return sqlite3.IntegrityError  # RAISE(ABORT, ...)
    import psycopg

    return psycopg.errors.RaiseException  # RAISE EXCEPTION (SQLSTATE P0001)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM charges",
        "UPDATE charges SET status = 'reserved'",
        "UPDATE charges SET rho = rho / 2",
        "UPDATE datasets SET total_rho = total_rho * 2",
        "DELETE FROM datasets",
    ],
)
def test_database_guards_append_only(ledger_url: str, sql: str) -> None:
    """Triggers enforce the rules even for someone editing the tables by hand."""
    with open_ledger(ledger_url) as led:
        init(led, 1.0)
        reserve_eps(led, "r1", 0.5)
        led.mark_spent("r1")
        led.mark_released("r1")
    with pytest.raises(_refused_edit(ledger_url),
                       match=r"append-only|only move forward|set once|cannot be"):
        _raw_sql(ledger_url, sql)
    with open_ledger(ledger_url) as led:
        c = led.charge("r1")
        assert (c.status, c.rho) == ("released", rho_for(0.5, DELTA))


_RAW_CHARGE = (
    "INSERT INTO charges (release_id, dataset_id, rho, epsilon, delta, engine, dpsynth_version, "
    "schema_hash, input_hash, status, created_at, updated_at, detail) VALUES ('{rid}', 'ds', "
    "0.001, 0.1, 1e-6, 'aim', '0.1.0', 'sha256:abc', NULL, '{status}', CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP, NULL)"
)


def test_triggers_enforce_the_state_machine(ledger_url: str) -> None:
    """Each backend's triggers allow exactly the status moves core._TRANSITIONS allows."""
    with open_ledger(ledger_url) as led:
        init(led, 1.0)
    refused = _refused_edit(ledger_url)
    expected = {}
    for old in STATUSES:
        for new in STATUSES:
            rid = f"{old}->{new}"
            _raw_sql(ledger_url, _RAW_CHARGE.format(rid=rid, status=old))
            update = f"UPDATE charges SET status = '{new}' WHERE release_id = '{rid}'"
            if new in _TRANSITIONS[old]:
                _raw_sql(ledger_url, update)
                expected[rid] = new
            else:
                with pytest.raises(refused, match="only move forward"):
                    _raw_sql(ledger_url, update)
                expected[rid] = old
    # four legal moves: reserved -> spent | cancelled, spent -> released | spent-failed
    assert sum(len(moves) for moves in _TRANSITIONS.values()) == 4
    with open_ledger(ledger_url) as led:
        assert {c.release_id: c.status for c in led.summary("ds").charges} == expected


def test_zcdp_composition(ledger: Ledger) -> None:
    total, e = 2.0, 0.7
    init(ledger, total)
    reserve_eps(ledger, "a", e)
    reserve_eps(ledger, "b", e)
    s = ledger.summary("ds")
    expected_rho = rho_for(total, DELTA) - 2 * rho_for(e, DELTA)
    assert s.remaining_rho == pytest.approx(expected_rho, rel=1e-12)
    assert s.remaining_epsilon == pytest.approx(epsilon_for(expected_rho, DELTA), rel=1e-9)
    # zCDP composes better than adding epsilons: more than total - 2e remains.
    assert s.remaining_epsilon > total - 2 * e


# ------------------------------------------------------------------ URLs and errors


def test_bad_urls() -> None:
    bad = ("", "mysql://u:Hunter2@h/db", "sqlite://", "sqlite:///", "postgresql://u:Hunter2@h:x/db")
    for url in bad:
        with pytest.raises(StorageError) as e:
            open_ledger(url)
        assert "Hunter2" not in str(e.value) and e.value.exit_code == 6


def test_sqlite_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_ledger(_sqlite_url(tmp_path / "no" / "ledger.db"))


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_ledger("sqlite:///rel.db") as led:
        init(led, 1.0)
    assert (tmp_path / "rel.db").is_file()


def test_sqlite_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        open_ledger(_sqlite_url(p))


def test_redact_url() -> None:
    assert redact_url("postgresql://u:s3cr%40t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"
    assert redact_url("postgresql://u:pw@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"
    assert redact_url("postgresql://u:pw@[::1/db") == "postgresql://***@[::1/db"  # unparseable


def test_parse_ledger_url() -> None:
    u = parse_ledger_url("  sqlite:////abs/l.db ")
    assert (u.backend, u.safe, u.target) == ("sqlite", "sqlite:////abs/l.db", "/abs/l.db")
    assert parse_ledger_url("sqlite:///rel.db").target == "rel.db"
    u = parse_ledger_url("postgres://u:Hunter2@h:5432/db")
    assert (u.backend, u.safe) == ("postgresql", "postgres://u:***@h:5432/db")
    assert u.target == "postgres://u:Hunter2@h:5432/db" and "Hunter2" not in repr(u)
    with pytest.raises(StorageError, match="no database name"):
        parse_ledger_url("postgresql://u:Hunter2@h:5432/")
    with pytest.raises(StorageError, match="no ledger URL given"):
        parse_ledger_url(None)


def test_public_api() -> None:
    """The package's public surface is exactly this; backends stay internal."""
    assert sorted(ledger_pkg.__all__) == [
        "COUNTED_STATUSES", "ChargeRecord", "DatasetSummary", "Ledger", "SCHEMA_VERSION",
        "STATUSES", "open_ledger", "redact_url",
    ]
    for name in ledger_pkg.__all__:
        assert getattr(ledger_pkg, name) is not None
    assert set(STATUSES) - COUNTED_STATUSES == {"cancelled"}


def test_pg_unreachable_hides_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pytest.importorskip("psycopg")
    with pytest.raises(StorageError) as e:
        open_ledger(f"postgresql://dp:Sup3r-S3cret@127.0.0.1:{port}/ledger")
    assert "Sup3r-S3cret" not in str(e.value) and "***" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_pg_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(StorageError, match=r"dpsynth\[postgres\]") as e:
        open_ledger("postgresql://dp:Sup3r-S3cret@127.0.0.1:5432/ledger")
    assert "Sup3r-S3cret" not in str(e.value)


@pytest.mark.postgres
def test_pg_foreign_tables_refused(pg_url: str) -> None:
    _raw_sql(pg_url, "CREATE TABLE datasets (x int)")
    with pytest.raises(StorageError, match="did not create"):
        open_ledger(pg_url)


# ------------------------------------------------------------------ property test

# Epsilons come from short lists so their rhos can be cached (each conversion
# takes ~0.1 s); the ledger itself converts every reservation afresh.
_TOTAL_EPS = (0.3, 0.7, 1.0, 1.5, 3.0)
_CHARGE_EPS = (0.03, 0.1, 0.2, 0.35, 0.5, 0.8)


@functools.cache
def _rho(eps: float) -> float:
    return rho_for(eps, DELTA)


_op = st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from(_CHARGE_EPS)),
    st.tuples(st.sampled_from(["spent", "released", "failed"]), st.integers(0, 30)),
)


_EXPECTED_MOVE = {  # (status, operation) -> new status; anything else is refused
    ("reserved", "spent"): "spent",
    ("reserved", "failed"): "cancelled",
    ("spent", "released"): "released",
    ("spent", "failed"): "spent-failed",
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(total_eps=st.sampled_from(_TOTAL_EPS), ops=st.lists(_op, max_size=25))
def test_property_counted_never_exceeds_total(total_eps: float, ops: list) -> None:
    with tempfile.TemporaryDirectory() as d, open_ledger(_sqlite_url(Path(d) / "l.db")) as led:
        total = init(led, total_eps).total_rho
        assert total == _rho(total_eps)
        model: dict[str, tuple[float, str]] = {}
        for n, (kind, arg) in enumerate(ops):
            if kind == "reserve":
                rho = _rho(arg)
                counted = [r for r, st_ in model.values() if st_ in COUNTED_STATUSES]
                fits = math.fsum([*counted, rho]) <= total * (1 + 1e-9)
                try:
                    assert reserve_eps(led, f"r{n}", arg).rho == rho
                    assert fits
                    model[f"r{n}"] = (rho, "reserved")
                except BudgetError:
                    assert not fits
            elif model:
                rid = sorted(model)[arg % len(model)]
                rho, status = model[rid]
                mark = {
                    "spent": led.mark_spent,
                    "released": led.mark_released,
                    "failed": lambda r: led.mark_failed(r, "injected"),
                }[kind]
                expected = _EXPECTED_MOVE.get((status, kind))
                if expected is None:
                    with pytest.raises(StorageError):
                        mark(rid)
                else:
                    assert mark(rid).status == expected
                    model[rid] = (rho, expected)
                assert led.charge(rid).status == model[rid][1]
            s = led.summary("ds")
            assert s.spent_rho <= s.total_rho * (1 + 1e-9)
            assert s.spent_rho == pytest.approx(
                math.fsum(r for r, st_ in model.values() if st_ != "cancelled"), abs=1e-12
            )


# ------------------------------------------------------------------ concurrency

N_PROCS, TRIES, SHARE = 8, 3, 6  # each charge is total/6: exactly 6 of 24 attempts fit


def _worker(url: str, i: int, each: ApproxDP, barrier: Any, results: Any) -> None:
    ok = refused = dup_ok = 0
    try:
        with open_ledger(url) as led:
            barrier.wait(timeout=60)
            try:  # everyone races for the same release id on a roomy dataset
                reserve_eps(led, "shared", 1e-3, dataset="roomy")
                dup_ok += 1
            except BudgetError:
                pass
            for j in range(TRIES):
                try:
                    led.reserve("ds", f"w{i}-{j}", each, **META)
                    led.mark_spent(f"w{i}-{j}")
                    ok += 1
                except BudgetError:
                    refused += 1
        results.put((i, ok, refused, dup_ok, None))
    except BaseException as exc:  # report, don't hang the parent
        results.put((i, ok, refused, dup_ok, repr(exc)))


@pytest.mark.slow
def test_concurrent_reservations_never_overspend(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        total = init(led, 1.0).total_rho
        init(led, 10.0, dataset="roomy")
    each = at_rho(total / SHARE)
    expected = math.floor(total / each.rho.rho * (1 + 1e-9))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(ledger_url, i, each, barrier, results))
        for i in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    results.close()
    results.join_thread()
    assert [o[4] for o in out] == [None] * N_PROCS
    assert sum(o[1] for o in out) == expected == SHARE
    assert sum(o[2] for o in out) == N_PROCS * TRIES - expected
    assert sum(o[3] for o in out) == 1
    with open_ledger(ledger_url) as led:
        s = led.summary("ds")
        assert s.spent_rho <= s.total_rho * (1 + 1e-9)
        assert len(s.charges) == expected and {c.status for c in s.charges} == {"spent"}
        assert [c.release_id for c in led.summary("roomy").charges] == ["shared"]


def test_mark_released_can_say_how_it_was_confirmed(ledger: Ledger) -> None:
    """`dpsynth ledger reconcile` records that a killed run's bundle was verified."""
    init(ledger, 1.0)
    reserve_eps(ledger, "r1", 0.1)
    ledger.mark_spent("r1")
    c = ledger.mark_released("r1", detail="reconciled: bundle /out/r1 verified")
    assert (c.status, c.detail) == ("released", "reconciled: bundle /out/r1 verified")
    reserve_eps(ledger, "r2", 0.1)
    ledger.mark_spent("r2")
    assert ledger.mark_released("r2").detail is None


# -- schema version 2: charge kinds and delta spent outside rho (schema drafts) ----------------

_V1_TABLES = (
    "CREATE TABLE ledger_schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    "CREATE TABLE datasets (dataset_id TEXT PRIMARY KEY, total_epsilon REAL NOT NULL, "
    "total_delta REAL NOT NULL, total_rho REAL NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE charges (release_id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL "
    "REFERENCES datasets (dataset_id), rho REAL NOT NULL, epsilon REAL NOT NULL, "
    "delta REAL NOT NULL, engine TEXT NOT NULL, dpsynth_version TEXT NOT NULL, "
    "schema_hash TEXT NOT NULL, input_hash TEXT, status TEXT NOT NULL, "
    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, detail TEXT)",
    "INSERT INTO ledger_schema_version VALUES (1, '2026-01-01T00:00:00+00:00')",
)


def test_version_1_tables_are_migrated(ledger_url: str) -> None:
    """A ledger written by the first table version keeps every charge and gains the charge
    kind (release) and extra delta (0); the new columns are guarded like the old ones."""
    total = ApproxDP(3.0, 1e-9)
    rho = total.rho.rho
    charge_rho = ApproxDP(1.0, 1e-9).rho.rho
    for sql in (*_V1_TABLES,
                f"INSERT INTO datasets VALUES ('d', 3.0, 1e-09, {rho!r}, "
                "'2026-01-01T00:00:00+00:00')",
                f"INSERT INTO charges VALUES ('old', 'd', {charge_rho!r}, 1.0, 1e-09, 'mst', "
                "'0.1', 'abc', NULL, 'released', '2026-01-01T00:00:00+00:00', "
                "'2026-01-01T00:00:00+00:00', NULL)"):
        _raw_sql(ledger_url, sql.replace(" REAL", " DOUBLE PRECISION")
                 if ledger_url.startswith("postgres") else sql)
    with open_ledger(ledger_url) as led:
        old = led.charge("old")
        assert (old.kind, old.extra_delta, old.status, old.rho) == ("release", 0.0, "released",
                                                                   charge_rho)
        led.reserve("d", "draft", ApproxDP(0.1, 1e-9), "schema-draft", "0.2", "none",
                    kind="schema-draft", extra_delta=5e-10)
        assert led.charge("draft").kind == "schema-draft"
    with open_ledger(ledger_url) as led:  # reopening finds version 2 and changes nothing
        assert [c.release_id for c in led.summary("d").charges] == ["old", "draft"]
    with pytest.raises(_refused_edit(ledger_url)):
        _raw_sql(ledger_url, "UPDATE charges SET kind = 'release' WHERE release_id = 'draft'")
    with pytest.raises(_refused_edit(ledger_url)):
        _raw_sql(ledger_url, "UPDATE charges SET extra_delta = 0 WHERE release_id = 'draft'")


def test_extra_delta_composes_with_the_total(ledger: Ledger) -> None:
    """A schema draft's delta spent outside rho shrinks the delta left for converting rho:
    spent epsilon is rho's epsilon at that smaller delta, and a charge that no longer fits
    the total once that delta is gone is refused."""
    ledger.init_dataset("d", ApproxDP(1.0, 1e-6))
    draft = ledger.reserve("d", "draft", ApproxDP(0.1, 1e-6), "schema-draft", "0.2", "none",
                           kind="schema-draft", extra_delta=5e-7)
    assert draft.rho == pytest.approx(rho_for(0.1, 5e-7))
    assert draft.rho < ApproxDP(0.1, 1e-6).rho.rho  # the rest of its delta is outside rho
    summary = ledger.summary("d")
    assert summary.spent_extra_delta == pytest.approx(5e-7)
    assert summary.total_rho == pytest.approx(rho_for(1.0, 5e-7))
    assert summary.spent_epsilon == pytest.approx(epsilon_for(draft.rho, 5e-7), rel=1e-6)
    # what a release could have had without the draft no longer fits
    left_without = ApproxDP(1.0, 1e-6).rho.rho - draft.rho
    eps_too_much = epsilon_for(left_without * 0.999, 1e-6)
    with pytest.raises(BudgetError, match="refused"):
        ledger.reserve("d", "r-big", ApproxDP(eps_too_much, 1e-6), "mst", "0.2", "h")
    fits = epsilon_for(summary.remaining_rho * 0.99, 1e-6)
    ledger.reserve("d", "r-ok", ApproxDP(fits, 1e-6), "mst", "0.2", "h")
    with pytest.raises(UsageError, match="extra delta"):
        ledger.reserve("d", "bad", ApproxDP(0.1, 1e-6), "schema-draft", "0.2", "none",
                       kind="schema-draft", extra_delta=1e-6)
    with pytest.raises(UsageError, match="charge kind"):
        ledger.reserve("d", "bad", ApproxDP(0.1, 1e-6), "x", "0.2", "none", kind="draft")
