"""The SQLite history store and the decision log: idempotence, point in time, round trips."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from features.schema import EVENT_COLUMNS
from serving.decision_log import OPE_COLUMNS, DecisionLog, DecisionRecord, new_decision_id
from serving.store import HistoryStore, SQLiteConnections, SQLiteHistoryStore
from tests.conftest import make_events

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _events() -> pd.DataFrame:
    return make_events(
        [
            ("c1", "2024-03-01 10:00", "email", "sent", "email_promo"),
            ("c1", "2024-03-02 10:00", "email", "open", "email_promo"),
            ("c1", "2024-03-05 10:00", "web", "purchase", None, 30.0),
            ("c2", "2024-03-03 09:00", "sms", "unsubscribe"),
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteHistoryStore]:
    s = SQLiteHistoryStore(tmp_path / "store.db")
    yield s
    s.close()


def test_store_implements_the_interface(store: SQLiteHistoryStore) -> None:
    assert isinstance(store, HistoryStore)
    mode = store._db.connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    # An accepted event survives a power cut (CONTRACT §5): the WAL is synced per commit.
    assert store._db.connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_add_is_idempotent_with_and_without_event_ids(store: SQLiteHistoryStore) -> None:
    ev = _events()
    assert store.add(ev, chunk_rows=3) == (4, 0)
    assert store.add(ev) == (0, 4)  # same content, no ids: recognized by content
    with_ids = _events()
    with_ids["event_id"] = ["e1", "e2", "e3", "e4"]
    with_ids["timestamp"] = with_ids["timestamp"] + pd.Timedelta(days=10)
    assert store.add(with_ids) == (4, 0)
    moved = with_ids.copy()
    moved["timestamp"] = moved["timestamp"] + pd.Timedelta(hours=1)
    assert store.add(moved) == (0, 4)  # same event_id: a duplicate whatever the content
    assert store.count() == 8


def test_identical_rows_in_one_batch_are_both_kept(store: SQLiteHistoryStore) -> None:
    twice = make_events(
        [("c1", "2024-03-01", "web", "visit"), ("c1", "2024-03-01", "web", "visit")]
    )
    assert store.add(twice) == (2, 0)
    assert store.add(twice) == (0, 2)


def test_history_is_strictly_before_and_canonical(store: SQLiteHistoryStore) -> None:
    store.add(_events())
    h = store.history("c1", before=pd.Timestamp("2024-03-05 10:00", tz="UTC"))
    assert list(h.columns) == list(EVENT_COLUMNS)
    assert h["event_type"].tolist() == ["sent", "open"]  # the purchase AT `before` is excluded
    assert str(h["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert h["timestamp"].is_monotonic_increasing
    assert h["action"].tolist() == ["email_promo", "email_promo"]
    since = store.history(
        "c1", before=T0 + pd.Timedelta(days=30), since=pd.Timestamp("2024-03-02", tz="UTC")
    )
    assert since["event_type"].tolist() == ["open", "purchase"]
    assert since["value"].iloc[1] == 30.0
    empty = store.history("nobody", before=T0 + pd.Timedelta(days=30))
    assert len(empty) == 0 and list(empty.columns) == list(EVENT_COLUMNS)


def test_history_reads_only_the_covering_index(store: SQLiteHistoryStore) -> None:
    """The request path's query is answered from one index, in its order: no table
    lookups (one page per row when events arrive in time order) and no sort."""
    import sqlite3

    from serving.store import _SELECT_RECENT

    conn = sqlite3.connect(store.path)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _SELECT_RECENT, ("c", 1, 0))]
    finally:
        conn.close()
    assert len(plan) == 1 and "USING COVERING INDEX events_customer_history" in plan[0], plan


def test_a_store_of_the_earlier_schema_is_indexed_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    from serving.store import _SCHEMA

    path = tmp_path / "old.db"
    old = SQLiteHistoryStore(path)
    old.add(_events())
    before = old.recent_events("c1", T0.value + 10 * 86400 * 10**9, None)
    old.close()
    conn = sqlite3.connect(path)  # back to the earlier schema's one index
    conn.executescript(
        "DROP INDEX events_customer_history;"
        "CREATE INDEX events_customer_time ON events (customer_id, ts);"
    )
    conn.close()
    assert "events_customer_time" in _SCHEMA  # the schema still drops it by name
    with caplog.at_level("INFO", logger="touchpoint.serving.store"):
        store = SQLiteHistoryStore(path)
    try:
        assert "indexing the stored events" in caplog.text
        conn = sqlite3.connect(path)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        conn.close()
        assert "events_customer_history" in names and "events_customer_time" not in names
        after = store.recent_events("c1", T0.value + 10 * 86400 * 10**9, None)
        assert after.time.tolist() == before.time.tolist() and len(after) == 3
        assert list(after.event_type) == list(before.event_type)
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level("INFO", logger="touchpoint.serving.store"):
        SQLiteHistoryStore(path).close()
    assert "indexing" not in caplog.text  # once


def test_opt_outs_of_any_age_and_merged_once(store: SQLiteHistoryStore) -> None:
    store.add(
        make_events(
            [
                ("c3", "2020-01-01 10:00", "sms", "unsubscribe"),  # years before any window
                ("c3", "2024-03-01 10:00", "email", "sent", "email_promo"),
                ("c3", "2024-03-02 10:00", "push", "unsubscribe"),
                ("c3", "2024-03-04 10:00", "email", "unsubscribe"),  # at `before`: not yet
            ]
        )
    )
    before = int(pd.Timestamp("2024-03-04 10:00", tz="UTC").value)
    opt_outs = store.unsubscribes("c3", before)
    assert list(opt_outs.channel) == ["sms", "push"]
    assert set(opt_outs.event_type) == {"unsubscribe"}
    assert len(store.unsubscribes("nobody", before)) == 0
    # The window the features read (from 2024-03-01) holds the push opt-out already: the
    # merge adds the old sms one only, in time order.
    since = int(pd.Timestamp("2024-03-01", tz="UTC").value)
    window = store.recent_events("c3", before, since)
    merged = window.with_opt_outs(opt_outs)
    assert list(merged.channel) == ["sms", "email", "push"]
    assert list(merged.event_type) == ["unsubscribe", "sent", "unsubscribe"]
    assert (merged.time[:-1] <= merged.time[1:]).all()
    assert window.with_opt_outs(store.unsubscribes("nobody", before)) is window


def test_customers_round_trip(store: SQLiteHistoryStore) -> None:
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "consent_sms": [False, True], "tier": ["gold", None]}
    )
    assert store.load_customers(customers) == 2
    got = store.customers(["c2", "c1", "unknown"]).set_index("customer_id")
    assert sorted(got.index) == ["c1", "c2"]
    assert not bool(got.loc["c1", "consent_sms"]) and bool(got.loc["c2", "consent_sms"])
    assert got.loc["c1", "tier"] == "gold"
    store.load_customers(pd.DataFrame({"customer_id": ["c1"], "consent_sms": [True]}))
    assert bool(store.customers(["c1"])["consent_sms"].iloc[0])  # replaced
    assert list(store.customers([]).columns) == ["customer_id"]


def test_concurrent_writers_lose_nothing(store: SQLiteHistoryStore) -> None:
    def write(i: int) -> None:
        rows = [(f"t{i}", f"2024-03-01 {h:02d}:00", "web", "visit") for h in range(5)]
        store.add(make_events(rows))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 30
    assert len(store.history("t3", before=T0 + pd.Timedelta(days=1))) == 5


def test_decision_log_exports_ope_table(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.db")
    records = [
        DecisionRecord(
            decision_id=f"d{i}",
            decision_time=T0 + pd.Timedelta(hours=i),
            customer_id=f"c{i}",
            model_version="v1",
            action="email_promo" if i else "none",
            propensity=0.9 if i else 0.05,
            candidates=[{"action": "none", "score": 0.0}],
            suppressed=[{"action": "sms_offer", "rule": "consent"}],
            context={"channel": "web"},
        )
        for i in range(3)
    ]
    log.append(records)
    assert log.count() == 3
    with pytest.raises(Exception, match="UNIQUE"):
        log.append(records[:1])  # append-only: a decision id is never overwritten
    out = pd.read_parquet(log.export_parquet(tmp_path / "ope" / "decisions.parquet"))
    assert tuple(out.columns) == OPE_COLUMNS
    assert out["decision_id"].tolist() == ["d0", "d1", "d2"]
    assert out["propensity"].tolist() == [0.05, 0.9, 0.9]
    assert (
        str(out["decision_time"].dtype).startswith("datetime64")
        and out["decision_time"].iloc[0] == T0
    )
    full = log.frame(full=True)
    assert '"consent"' in full["suppressed"].iloc[0]
    log.close()


@pytest.mark.skipif(fcntl is None, reason="flock needs a POSIX system")
def test_writers_of_other_processes_queue_on_the_lock_file(tmp_path: Path) -> None:
    """A write holds an exclusive flock of ``<db>-writer.lock``; a writer that finds it
    taken blocks until it is released (instead of polling SQLite's lock with sleeps).
    A second open of the file stands for another process: flock locks belong to the open
    file, so two opens exclude each other as two processes would."""
    assert fcntl is not None
    db = SQLiteConnections(tmp_path / "t.db", "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    other = os.open(db.lock_path, os.O_RDWR)
    try:
        with db.writing() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the commit
        entered = threading.Event()

        def write() -> None:
            with db.writing() as c:
                entered.set()
                c.execute("INSERT INTO t VALUES (2)")

        writer = threading.Thread(target=write)
        writer.start()
        assert not entered.wait(0.3)  # blocked while the "other process" holds the lock
        fcntl.flock(other, fcntl.LOCK_UN)
        writer.join(10)
        assert entered.is_set()
        assert [r[0] for r in db.connection().execute("SELECT x FROM t ORDER BY x")] == [1, 2]
    finally:
        os.close(other)
        db.close()


@pytest.mark.parametrize("background", [True, False])
def test_background_checkpoint_moves_the_wal_into_the_database(
    tmp_path: Path, background: bool
) -> None:
    """With a checkpoint thread, commits never checkpoint (the fsync stays off the request
    path) and the thread does; without one, SQLite's automatic checkpoint does."""
    schema = "CREATE TABLE IF NOT EXISTS t (x BLOB);"
    db = SQLiteConnections(
        tmp_path / "t.db", schema, checkpoint_seconds=0.05 if background else None
    )
    conn = db.connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (0 if background else 1000)
    size_before = (tmp_path / "t.db").stat().st_size
    for _ in range(50):
        with db.writing() as c:
            c.execute("INSERT INTO t VALUES (?)", (b"x" * 4000,))
    if background:
        deadline = time.monotonic() + 10
        while (tmp_path / "t.db").stat().st_size == size_before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "t.db").stat().st_size > size_before + 50 * 4000
    else:  # 50 commits are far below the automatic checkpoint's 1000 pages
        assert (tmp_path / "t.db").stat().st_size == size_before
    thread = db._checkpointer
    db.close()
    assert thread is None or not thread.is_alive()


def test_decision_ids_are_unique_and_sort_by_creation_time() -> None:
    ids = [new_decision_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    stamps = [i[:16] for i in ids]
    assert stamps == sorted(stamps)  # later ids sort later: the log's key grows at its end
    before = time.time_ns()
    later = new_decision_id()
    assert int(later[:16], 16) >= before
    assert len({i[16:] for i in ids}) == len(ids)  # and the random half differs
