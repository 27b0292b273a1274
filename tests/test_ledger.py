"""The privacy-budget ledger (dpsynth.privacy.ledger) on SQLite and PostgreSQL.

PostgreSQL tests use the throwaway server from tests/pg_fixture.py (fixture
``pg_url``) and are marked ``postgres``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpsynth.errors import BudgetError, StorageError, UsageError
from dpsynth.privacy.accountant import epsilon_for, rho_for
from dpsynth.privacy.ledger import COUNTED_STATUSES, Ledger, open_ledger, redact_url

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


def reserve_eps(led: Ledger, release_id: str, eps: float, dataset: str = "ds") -> object:
    return led.reserve(dataset, release_id, rho_for(eps, DELTA), eps, DELTA, **META)


# ------------------------------------------------------------------ lifecycle & budget


def test_lifecycle(ledger: Ledger) -> None:
    s = ledger.init_dataset("ds", 2.0, DELTA)
    assert s.total_rho == pytest.approx(rho_for(2.0, DELTA))
    assert s.spent_rho == 0 and s.remaining_epsilon == pytest.approx(2.0, rel=1e-6)
    c = reserve_eps(ledger, "r1", 0.5)
    assert c.status == "reserved" and c.input_hash is None  # type: ignore[attr-defined]
    c = ledger.mark_spent("r1", input_hash="sha256:in")
    assert (c.status, c.input_hash) == ("spent", "sha256:in")
    c = ledger.mark_released("r1")
    assert c.status == "released" and c.engine == "aim" and c.schema_hash == "sha256:abc"
    s = ledger.summary("ds")
    assert [x.release_id for x in s.charges] == ["r1"]
    assert s.spent_rho == pytest.approx(rho_for(0.5, DELTA))
    assert s.spent_epsilon == pytest.approx(epsilon_for(rho_for(0.5, DELTA), DELTA))
    assert [d.dataset_id for d in ledger.datasets()] == ["ds"]
    d = s.to_dict()
    assert d["charges"][0]["status"] == "released" and d["spent_epsilon"] == s.spent_epsilon


def test_tables_persist_and_reopen(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.init_dataset("ds", 1.0, DELTA)
        reserve_eps(led, "r1", 0.3)
    with open_ledger(ledger_url) as led:  # second open sees version table, no re-create
        assert [c.release_id for c in led.summary("ds").charges] == ["r1"]


def test_init_idempotent_totals_set_once(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 1.0, DELTA)
    ledger.init_dataset("ds", 1.0, DELTA)
    with pytest.raises(UsageError, match="set once"):
        ledger.init_dataset("ds", 2.0, DELTA)
    with pytest.raises(UsageError, match="set once"):
        ledger.init_dataset("ds", 1.0, 1e-7)
    with pytest.raises(UsageError):
        ledger.init_dataset("ds2", -1.0, DELTA)
    with pytest.raises(UsageError):
        ledger.init_dataset("ds2", 1.0, 1.5)


def test_unknown_dataset_refused(ledger: Ledger) -> None:
    with pytest.raises(BudgetError, match="dpsynth ledger init"):
        reserve_eps(ledger, "r1", 0.1, dataset="nope")
    with pytest.raises(UsageError, match="dpsynth ledger init"):
        ledger.summary("nope")


def test_overspend_refused_with_epsilons(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 1.0, DELTA)
    reserve_eps(ledger, "r1", 0.8)
    with pytest.raises(BudgetError) as e:
        reserve_eps(ledger, "r2", 0.8)
    msg = str(e.value)
    remaining = epsilon_for(rho_for(1.0, DELTA) - rho_for(0.8, DELTA), DELTA)
    assert "epsilon 0.8" in msg and f"{remaining:.6g}" in msg and "remaining" in msg
    assert e.value.exit_code == 4
    assert [c.release_id for c in ledger.summary("ds").charges] == ["r1"]  # nothing inserted


def test_exact_total_allowed(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 1.0, DELTA)
    reserve_eps(ledger, "all", 1.0)
    s = ledger.summary("ds")
    assert s.remaining_rho == 0 and s.remaining_epsilon == 0
    with pytest.raises(BudgetError):
        ledger.reserve("ds", "more", 1e-6, 1e-3, DELTA, **META)


def test_exact_total_in_parts(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 1.0, DELTA)
    total = ledger.summary("ds").total_rho
    for i in range(3):  # three thirds sum to the total up to rounding
        ledger.reserve("ds", f"r{i}", total / 3, 0.5, DELTA, **META)
    with pytest.raises(BudgetError):
        ledger.reserve("ds", "r3", total * 1e-6, 1e-3, DELTA, **META)


def test_duplicate_release_id_refused_in_any_status(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 5.0, DELTA)
    ledger.init_dataset("other", 5.0, DELTA)
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
    ledger.init_dataset("ds", 1.0, DELTA)
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
    ledger.init_dataset("ds", 1.0, DELTA)
    reserve_eps(ledger, "r1", 0.8)
    assert ledger.summary("ds").spent_rho == pytest.approx(rho_for(0.8, DELTA))


def test_forward_only_transitions(ledger: Ledger) -> None:
    ledger.init_dataset("ds", 5.0, DELTA)
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
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


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
        led.init_dataset("ds", 1.0, DELTA)
        reserve_eps(led, "r1", 0.5)
        led.mark_spent("r1")
        led.mark_released("r1")
    with pytest.raises(Exception, match=r"append-only|only move forward|set once|cannot be"):
        _raw_sql(ledger_url, sql)
    with open_ledger(ledger_url) as led:
        c = led.charge("r1")
        assert (c.status, c.rho) == ("released", rho_for(0.5, DELTA))


def test_zcdp_composition(ledger: Ledger) -> None:
    total, e = 2.0, 0.7
    ledger.init_dataset("ds", total, DELTA)
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
        led.init_dataset("ds", 1.0, DELTA)
    assert (tmp_path / "rel.db").is_file()


def test_sqlite_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        open_ledger(_sqlite_url(p))


def test_redact_url() -> None:
    assert redact_url("postgresql://u:s3cr%40t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"


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

_op = st.one_of(
    st.tuples(st.just("reserve"), st.floats(0.01, 0.6)),
    st.tuples(st.sampled_from(["spent", "released", "failed"]), st.integers(0, 30)),
)


_EXPECTED_MOVE = {  # (status, operation) -> new status; anything else is refused
    ("reserved", "spent"): "spent",
    ("reserved", "failed"): "cancelled",
    ("spent", "released"): "released",
    ("spent", "failed"): "spent-failed",
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(total_eps=st.floats(0.2, 3.0), ops=st.lists(_op, max_size=25))
def test_property_counted_never_exceeds_total(total_eps: float, ops: list) -> None:
    with tempfile.TemporaryDirectory() as d, open_ledger(_sqlite_url(Path(d) / "l.db")) as led:
        total = led.init_dataset("ds", total_eps, DELTA).total_rho
        model: dict[str, tuple[float, str]] = {}
        for n, (kind, arg) in enumerate(ops):
            if kind == "reserve":
                counted = math.fsum(r for r, st_ in model.values() if st_ in COUNTED_STATUSES)
                fits = math.fsum([counted, arg * total]) <= total * (1 + 1e-9)
                try:
                    led.reserve("ds", f"r{n}", arg * total, 0.1, DELTA, **META)
                    assert fits
                    model[f"r{n}"] = (arg * total, "reserved")
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


def _worker(url: str, i: int, each_rho: float, barrier, results) -> None:  # type: ignore[no-untyped-def]
    ok = refused = dup_ok = 0
    try:
        with open_ledger(url) as led:
            barrier.wait(timeout=60)
            try:  # everyone races for the same release id on a roomy dataset
                led.reserve("roomy", "shared", 1e-6, 1e-3, DELTA, **META)
                dup_ok += 1
            except BudgetError:
                pass
            for j in range(TRIES):
                try:
                    led.reserve("ds", f"w{i}-{j}", each_rho, 0.1, DELTA, **META)
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
        total = led.init_dataset("ds", 1.0, DELTA).total_rho
        led.init_dataset("roomy", 10.0, DELTA)
    each = total / SHARE
    expected = math.floor(total / each * (1 + 1e-9))
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
