"""The history store: raw touchpoints and customer attributes, read back per customer.

The service computes features from *raw events* with the bundle's feature code, so the
store keeps events exactly as the canonical event table holds them (CONTRACT §1) and
never anything model-specific: a new model needs no migration.

:class:`HistoryStore` is the interface the app depends on; :class:`SQLiteHistoryStore` is
the implementation shipped (one file, WAL mode, good for one host).  A PostgreSQL or
Redis store implements the same seven methods and the engine never notices.

Idempotence
-----------
Every stored row has a ``dedup_key``, UNIQUE: its ``event_id`` when it has one (CONTRACT
§1), otherwise ``"h:"`` + a 64-bit hash of its content (customer, time, channel, type,
action, value, propensity, decision id) and its occurrence number among identical rows
of the same call.  Re-loading the same file is therefore harmless even without event ids,
while two identical rows inside one file are both kept.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.counters import to_ns
from features.schema import EVENT_COLUMNS
from serving.sqlite_connections import SQLiteConnections

log = logging.getLogger("touchpoint.serving.store")

__all__ = ["EventColumns", "HistoryStore", "SQLiteConnections", "SQLiteHistoryStore"]

#: The event type whose events the contact rules read at any age.
UNSUBSCRIBE = "unsubscribe"

#: Rows per executemany call of a bulk load.
CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class EventColumns:
    """One customer's events as plain columns, in time order: what the features read.

    The request path uses this instead of a DataFrame: building one per request cost more
    than computing the features (docs/SERVING.md, "Speed").
    """

    time: np.ndarray  # int64, ns since the epoch (UTC)
    channel: Sequence[str]
    event_type: Sequence[str]
    value: np.ndarray  # float64, NaN when the event has no value

    def __len__(self) -> int:
        return len(self.time)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str, float | None]]) -> EventColumns:
        """From ``(ts_ns, channel, event_type, value)`` rows."""
        if not rows:
            return cls(np.zeros(0, dtype=np.int64), (), (), np.zeros(0, dtype=np.float64))
        ts, channel, event_type, value = zip(*rows, strict=True)
        return cls(
            time=np.array(ts, dtype=np.int64),
            channel=channel,
            event_type=event_type,
            value=np.array(value, dtype=np.float64),  # None becomes NaN
        )

    def with_opt_outs(self, opt_outs: EventColumns) -> EventColumns:
        """These events plus the ``opt_outs`` (unsubscribes) they do not already hold, in
        time order; on equal times these events come first (a stable merge)."""
        if not len(opt_outs):
            return self  # the usual case: no opt-out, no work
        held = {
            (int(t), c)
            for t, c, e in zip(self.time.tolist(), self.channel, self.event_type, strict=True)
            if e == UNSUBSCRIBE
        }
        new = [
            i
            for i, (t, c) in enumerate(zip(opt_outs.time.tolist(), opt_outs.channel, strict=True))
            if (int(t), c) not in held
        ]
        if not new:
            return self
        times = np.concatenate([self.time, opt_outs.time[new]])
        order = np.argsort(times, kind="stable")
        channel = [*self.channel, *(opt_outs.channel[i] for i in new)]
        event_type = [*self.event_type, *(opt_outs.event_type[i] for i in new)]
        return EventColumns(
            time=times[order],
            channel=[channel[i] for i in order.tolist()],
            event_type=[event_type[i] for i in order.tolist()],
            value=np.concatenate([self.value, opt_outs.value[new]])[order],
        )

    @classmethod
    def from_frame(cls, events: pd.DataFrame) -> EventColumns:
        """From a canonical event table (one customer's rows, any order)."""
        return cls(
            time=to_ns(events["timestamp"]),
            channel=[str(c) for c in events["channel"].tolist()],
            event_type=[str(t) for t in events["event_type"].tolist()],
            value=events["value"].to_numpy(dtype=np.float64, na_value=np.nan),
        )


@runtime_checkable
class HistoryStore(Protocol):
    """What the service needs from a history store."""

    def recent_events(self, customer_id: str, before: int, since: int | None) -> EventColumns:
        """The columns the features need of the customer's events with
        ``since <= ts < before`` (ns since the epoch, UTC; ``since=None``: no lower bound).

        This is the request path: keep it fast.
        """
        ...

    def unsubscribes(self, customer_id: str, before: int) -> EventColumns:
        """The customer's ``unsubscribe`` events with ``ts < before``, however old.

        Opt-outs never expire, so the contact rules must see every one of them, also when
        the features read a shorter window of history or the request brings its own.
        Also on the request path: keep it fast (an index of the unsubscribes alone).
        """
        ...

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The stored attributes of one customer, or None when it is unknown."""
        ...

    def add(self, events: pd.DataFrame) -> tuple[int, int]:
        """Store canonical events; return ``(accepted, duplicates)``."""
        ...

    def load_customers(self, customers: pd.DataFrame) -> int:
        """Insert or replace customer rows; return how many."""
        ...

    def quarantine(self, rejected: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """Keep rows that failed validation, each ``(row as received, reason)``: bad input
        is refused, never lost."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id  TEXT    NOT NULL,
    ts           INTEGER NOT NULL,          -- ns since the epoch, UTC
    channel      TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    action       TEXT,
    value        REAL,
    propensity   REAL,
    event_id     TEXT,
    decision_id  TEXT,
    dedup_key    TEXT    NOT NULL UNIQUE
);
-- The request path reads a customer's history from this index alone (it covers the
-- columns of _SELECT_RECENT, in its order): one contiguous run of pages per customer,
-- whatever order the events arrived in.  Through an index of (customer_id, ts) and the
-- table, a store filled in time order (as /v1/events fills it) spread each customer's
-- ~100 rows over ~100 table pages.
CREATE INDEX IF NOT EXISTS events_customer_history
    ON events (customer_id, ts, seq, channel, event_type, value);
-- the index of stores written before: a prefix of the one above
DROP INDEX IF EXISTS events_customer_time;
-- opt-outs of any age, without scanning a long history (HistoryStore.unsubscribes)
CREATE INDEX IF NOT EXISTS events_unsubscribes ON events (customer_id, ts)
    WHERE event_type = 'unsubscribe';
-- rows POST /v1/events refused: kept with the reason (HistoryStore.quarantine)
CREATE TABLE IF NOT EXISTS quarantine (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  INTEGER NOT NULL,          -- ns since the epoch, UTC
    reason       TEXT    NOT NULL,
    event        TEXT    NOT NULL           -- JSON object: the row as received
);
CREATE TABLE IF NOT EXISTS customers (
    customer_id  TEXT PRIMARY KEY,
    attributes   TEXT NOT NULL              -- JSON object
);
"""

_INSERT = (
    "INSERT OR IGNORE INTO events (customer_id, ts, channel, event_type, action, value, "
    "propensity, event_id, decision_id, dedup_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_RECENT = (
    "SELECT ts, channel, event_type, value FROM events "
    "WHERE customer_id = ? AND ts < ? AND ts >= ? ORDER BY ts, seq"
)
_SELECT_UNSUBSCRIBES = (
    "SELECT ts, channel, event_type, value FROM events "
    "WHERE customer_id = ? AND event_type = 'unsubscribe' AND ts < ? ORDER BY ts, seq"
)
_SELECT_ALL = (
    "SELECT customer_id, ts, channel, event_type, action, value, propensity, event_id, "
    "decision_id FROM events ORDER BY seq"
)
_SELECT = (
    "SELECT customer_id, ts, channel, event_type, action, value, propensity, event_id, "
    "decision_id FROM events WHERE customer_id = ? AND ts < ? AND ts >= ? ORDER BY ts, seq"
)


def _text_list(col: pd.Series) -> list[str | None]:
    values = col.astype(object).where(col.notna(), None).tolist()
    return [None if v is None else str(v) for v in values]


def _float_list(col: pd.Series) -> list[float | None]:
    arr = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return [None if np.isnan(v) else float(v) for v in arr.tolist()]


def dedup_keys(events: pd.DataFrame) -> list[str]:
    """The UNIQUE key of each canonical event row (see the module docstring)."""
    n = len(events)
    if n == 0:
        return []
    content = pd.DataFrame(
        {
            c: events[c].astype(object).where(events[c].notna(), None).astype(str)
            for c in ("customer_id", "channel", "event_type", "action", "decision_id")
        }
    )
    content["ts"] = to_ns(events["timestamp"])
    content["value"] = events["value"].astype("float64").to_numpy()
    content["propensity"] = events["propensity"].astype("float64").to_numpy()
    base = pd.util.hash_pandas_object(content, index=False).to_numpy()
    occurrence = pd.Series(base).groupby(base).cumcount().to_numpy()
    hashed = pd.util.hash_pandas_object(
        pd.DataFrame({"h": base, "o": occurrence}), index=False
    ).to_numpy()
    ids = events["event_id"].astype(object).tolist()
    return [
        f"id:{eid}" if eid is not None and eid == eid else f"h:{h:016x}"
        for eid, h in zip(ids, hashed.tolist(), strict=True)
    ]


def _lacks_history_index(path: Path) -> bool:
    """True for a store written by an earlier version: opening it builds the index."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        names = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    except sqlite3.Error:  # not a database: SQLiteConnections says so
        return False
    finally:
        conn.close()
    return "events_customer_time" in names and "events_customer_history" not in names


class SQLiteHistoryStore:
    """:class:`HistoryStore` in one SQLite file (WAL mode; safe across threads)."""

    def __init__(self, path: str | Path) -> None:
        if _lacks_history_index(Path(path)):
            log.info(
                "%s: indexing the stored events for history reads (once; about a second "
                "per million events)",
                path,
            )
        # CONTRACT §5: an accepted event is never lost, also not to a power cut; an fsync
        # per write is cheap next to ingestion (recommendations only read the store).
        self._db = SQLiteConnections(path, _SCHEMA, durable=True)
        self.path = self._db.path

    # ------------------------------------------------------------------ events
    def add(self, events: pd.DataFrame, *, chunk_rows: int = CHUNK_ROWS) -> tuple[int, int]:
        """Store canonical events (``normalize_events`` output) in chunks; duplicates skipped.

        Returns ``(accepted, duplicates)``: rows inserted, and rows whose ``event_id`` (or
        content, for rows without one) was already stored.
        """
        n = len(events)
        if n == 0:
            return 0, 0
        accepted = 0
        keys = dedup_keys(events)
        for lo in range(0, n, chunk_rows):
            part = events.iloc[lo : lo + chunk_rows]
            rows = zip(
                _text_list(part["customer_id"]),
                to_ns(part["timestamp"]).tolist(),
                _text_list(part["channel"]),
                _text_list(part["event_type"]),
                _text_list(part["action"]),
                _float_list(part["value"]),
                _float_list(part["propensity"]),
                _text_list(part["event_id"]),
                _text_list(part["decision_id"]),
                keys[lo : lo + chunk_rows],
                strict=True,
            )
            with self._db.writing() as conn:
                cur = conn.executemany(_INSERT, rows)
                accepted += max(cur.rowcount, 0)
        return accepted, n - accepted

    def recent_events(self, customer_id: str, before: int, since: int | None) -> EventColumns:
        """See :meth:`HistoryStore.recent_events`: one indexed range scan, four columns."""
        lo = np.iinfo(np.int64).min if since is None else int(since)
        rows = self._db.connection().execute(_SELECT_RECENT, (customer_id, int(before), lo))
        return EventColumns.from_rows(rows.fetchall())

    def unsubscribes(self, customer_id: str, before: int) -> EventColumns:
        """See :meth:`HistoryStore.unsubscribes`: a range scan of a partial index."""
        rows = self._db.connection().execute(_SELECT_UNSUBSCRIBES, (customer_id, int(before)))
        return EventColumns.from_rows(rows.fetchall())

    def history(
        self, customer_id: str, before: pd.Timestamp, since: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """The customer's events with ``since <= timestamp < before``, as a canonical table."""
        lo = np.iinfo(np.int64).min if since is None else _ns(since)
        rows = (
            self._db.connection().execute(_SELECT, (str(customer_id), _ns(before), lo)).fetchall()
        )
        return events_frame(rows)

    def quarantine(self, rejected: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """See :meth:`HistoryStore.quarantine`: one transaction."""
        if not rejected:
            return
        now = time.time_ns()
        # Python's JSON (NaN allowed): a refused row is kept exactly as it came.
        rows = [(now, reason, json.dumps(dict(row), default=str)) for row, reason in rejected]
        with self._db.writing() as conn:
            conn.executemany(
                "INSERT INTO quarantine (received_at, reason, event) VALUES (?, ?, ?)", rows
            )

    def quarantined(self) -> pd.DataFrame:
        """The refused rows, oldest first: ``received_at`` (UTC), ``reason``, ``event``
        (the row as received, a dict)."""
        rows = (
            self._db.connection()
            .execute("SELECT received_at, reason, event FROM quarantine ORDER BY seq")
            .fetchall()
        )
        frame = pd.DataFrame.from_records(rows, columns=["received_at", "reason", "event"])
        frame["received_at"] = pd.to_datetime(frame["received_at"].astype("int64"), utc=True)
        frame["event"] = [json.loads(e) for e in frame["event"]]
        return frame

    def iter_events(self, chunk_rows: int = 4 * CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """Every stored event, in the order stored, as canonical tables of up to
        ``chunk_rows`` rows (one read transaction: a consistent snapshot)."""
        cursor = self._db.connection().execute(_SELECT_ALL)
        try:
            while rows := cursor.fetchmany(chunk_rows):
                yield events_frame(rows)
        finally:
            cursor.close()

    def count(self) -> int:
        """Number of stored events."""
        return int(self._db.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # ------------------------------------------------------------------ customers
    def load_customers(self, customers: pd.DataFrame, *, chunk_rows: int = CHUNK_ROWS) -> int:
        """Insert or replace customer rows (``customer_id`` plus attributes)."""
        if "customer_id" not in customers:
            raise ValueError("customers table without a customer_id column")
        attrs = [c for c in customers.columns if c != "customer_id"]
        n = len(customers)
        for lo in range(0, n, chunk_rows):
            part = customers.iloc[lo : lo + chunk_rows]
            ids = _text_list(part["customer_id"])
            columns = {
                c: part[c].astype(object).where(part[c].notna(), None).tolist() for c in attrs
            }
            payload = [
                json.dumps({c: _jsonable(columns[c][i]) for c in attrs}) for i in range(len(part))
            ]
            with self._db.writing() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO customers (customer_id, attributes) VALUES (?, ?)",
                    [(cid, p) for cid, p in zip(ids, payload, strict=True) if cid is not None],
                )
        return n

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The attributes of one customer (JSON-decoded), or None when it is unknown."""
        row = (
            self._db.connection()
            .execute("SELECT attributes FROM customers WHERE customer_id = ?", (customer_id,))
            .fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))

    def customers(self, ids: Sequence[str]) -> pd.DataFrame:
        """``customer_id`` plus attributes of the known ids (unknown ids have no row)."""
        ids = [str(i) for i in ids]
        if not ids:
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        marks = ",".join("?" * len(ids))
        rows = (
            self._db.connection()
            .execute(
                f"SELECT customer_id, attributes FROM customers WHERE customer_id IN ({marks})",
                ids,
            )
            .fetchall()
        )
        records = [{"customer_id": cid, **json.loads(a)} for cid, a in rows]
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        if "customer_id" not in frame:
            frame["customer_id"] = pd.Series([], dtype=object)
        return frame

    def close(self) -> None:
        self._db.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _ns(t: pd.Timestamp) -> int:
    t = pd.Timestamp(t)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


#: The canonical event columns as Parquet types: fixed, so that a chunk whose column is
#: all missing (no ``decision_id`` yet) writes the same schema as the others.
EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("channel", pa.string()),
        ("event_type", pa.string()),
        ("action", pa.string()),
        ("value", pa.float64()),
        ("propensity", pa.float64()),
        ("event_id", pa.string()),
        ("decision_id", pa.string()),
    ]
)


def write_events_parquet(
    chunks: Iterable[pd.DataFrame], out: Path, *, progress: Callable[[int], None] | None = None
) -> int:
    """Write canonical event tables to one Parquet file, chunk by chunk; return the rows.

    Written to a temporary file next to ``out`` and renamed at the end, so an interrupted
    export never leaves a partial file under the final name.
    """
    tmp = out.with_name(f".{out.name}.partial")
    written = 0
    try:
        with pq.ParquetWriter(tmp, EVENTS_SCHEMA) as writer:
            for frame in chunks:
                writer.write_table(_arrow_table(frame))
                written += len(frame)
                if progress is not None:
                    progress(written)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A canonical event table as :data:`EVENTS_SCHEMA`, column by column (pyarrow's
    ``from_pandas`` reads tz-aware columns through an API pandas 3 deprecates)."""
    columns = []
    for field in EVENTS_SCHEMA:
        col = frame[field.name]
        values = col.dt.tz_convert(None).to_numpy() if field.name == "timestamp" else col.to_numpy()
        columns.append(pa.array(values, type=field.type, from_pandas=True))  # NaN, None -> null
    return pa.Table.from_arrays(columns, schema=EVENTS_SCHEMA)


def events_frame(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """Rows ``(customer_id, ts_ns, channel, event_type, action, value, propensity, event_id,
    decision_id)`` -> the canonical event columns, in order.

    The id and vocabulary columns are plain ``object`` strings rather than ``category``:
    building four categoricals costs ~1 ms per request, and the feature code factorizes
    any dtype (``features.counters.prepare_events``).
    """
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_COLUMNS)
    data: dict[str, Any] = {}
    for name, values in zip(EVENT_COLUMNS, cols, strict=True):
        if name == "timestamp":
            data[name] = pd.DatetimeIndex(np.asarray(values, dtype="datetime64[ns]")).tz_localize(
                "UTC"
            )
        elif name in ("value", "propensity"):
            data[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            data[name] = np.array(values, dtype=object)
    return pd.DataFrame(data, columns=list(EVENT_COLUMNS), copy=False)
