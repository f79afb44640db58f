"""Numpy machinery of the feature pipeline: canonical event arrays, exact per-customer
time lookups and running-total counters.

Design (docs/FEATURES.md, "How it is computed"):

* Events become flat numpy arrays sorted by (customer, time, event type, channel); the
  tie-break makes every feature independent of the input row order.
* A decision at time ``t`` sees the events of its customer at positions
  ``[start, idx)`` where ``idx`` = number of the customer's events with ``timestamp < t``.
  ``idx`` comes from one ``np.searchsorted`` over a composite int64 key
  ``customer * S + (time - customer's first time) // unit`` (see :class:`EventArrays`).
* Counts over any window are differences of exclusive running totals (one ``cumsum`` per
  counter row, rows contiguous): ``count[a, b) = cum[b] - cum[a]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.spec import TRANSITIONS, FeatureSpec

__all__ = [
    "EventArrays",
    "CounterLayout",
    "customer_event_arrays",
    "prepare_events",
    "to_ns",
    "map_customers",
]

NS_PER_HOUR = 3_600 * 10**9
NS_PER_DAY = 24 * NS_PER_HOUR
#: Purchase values are summed as int64 in units of 1/VALUE_SCALE, so sums are exact and
#: identical whatever precedes a customer in a chunk (offline == online, bit for bit).
VALUE_SCALE = 10_000
#: Upper bound of the composite lookup keys (headroom below 2**63 for the clipping).
KEY_BUDGET = 2**62

TYPE_CODE: dict[str, int] = {t: i for i, t in enumerate(schema.EVENT_TYPE_ORDER)}
N_TYPES = len(schema.EVENT_TYPE_ORDER)
SENT, OPEN, CLICK = TYPE_CODE["sent"], TYPE_CODE["open"], TYPE_CODE["click"]
PURCHASE, UNSUBSCRIBE = TYPE_CODE["purchase"], TYPE_CODE["unsubscribe"]
_FAMILY_CODE = {"outbound": 0, "response": 1, "inbound": 2, "purchase": 3}


def _family(event_type: str) -> int:
    if event_type in schema.OUTBOUND_TYPES:
        return 0
    if event_type in schema.RESPONSE_TYPES:
        return 1
    return 3 if event_type == "purchase" else 2


#: Event family by type code, shifted by one so that code -1 (unknown type) maps to -1.
FAMILY_BY_TYPE = np.array([-1] + [_family(t) for t in schema.EVENT_TYPE_ORDER], dtype=np.int8)
#: Inbound flag by type code (shifted by one like FAMILY_BY_TYPE).
INBOUND_BY_TYPE = np.array(
    [False] + [t in schema.INBOUND_TYPES for t in schema.EVENT_TYPE_ORDER], dtype=bool
)
#: Transition index by ``family(prev) * 4 + family(next)``, -1 when not a tracked pair.
TRANSITION_BY_PAIR = np.full(16, -1, dtype=np.int8)
for _i, (_, _a, _b) in enumerate(TRANSITIONS):
    TRANSITION_BY_PAIR[_FAMILY_CODE[_a] * 4 + _FAMILY_CODE[_b]] = _i


def to_ns(values: pd.Series | pd.Index | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) as int64 from any datetime column; naive = UTC."""
    ser = values if isinstance(values, pd.Series) else pd.Series(values)
    if ser.dtype.kind != "M":  # strings or objects: parse (ISO-8601, naive = UTC)
        ser = pd.Series(pd.to_datetime(ser, utc=True, format="ISO8601"))
    arr = ser.array
    if arr.unit != "ns":
        arr = arr.as_unit("ns")
    # asi8 of a tz-aware array is already UTC epoch time.
    out = np.asarray(arr.asi8, dtype=np.int64)
    if out.size and (out == np.iinfo(np.int64).min).any():
        raise ValueError("times must not be missing (NaT)")
    return out


def _codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Category codes (-1 = missing) and the categories of a column (any dtype)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.array
        return np.asarray(cat.codes), cat.categories
    codes, uniques = pd.factorize(col)
    return codes, pd.Index(uniques)


def _category_table(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Category codes (int64, -1 = missing) and the category strings of a column."""
    codes, cats = _codes(col)
    return codes.astype(np.int64), [str(c) for c in cats]


def _vocab_tables(
    spec: FeatureSpec, channel_names: tuple[str, ...], type_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables from category codes, memoized on the spec (repeated calls reuse them).

    Returns type code by type category, spec channel index by channel category, channel
    rank (name order) by channel category, token code by (channel category, type code);
    every table has one extra trailing entry for code -1 (missing).
    """
    cache: dict[Any, Any] = spec._cache
    key = ("vocab", channel_names, type_names)
    hit = cache.get(key)
    if hit is not None:
        return hit
    type_table = np.array([TYPE_CODE.get(t, -1) for t in type_names] + [-1], dtype=np.int8)
    chan_pos = {c: i for i, c in enumerate(spec.channels)}
    other = len(spec.channels)
    ch_table = np.array([chan_pos.get(c, other) for c in channel_names] + [other], np.int16)
    ch_rank = np.empty(len(channel_names) + 1, dtype=np.int64)
    ch_rank[np.argsort(np.array([*channel_names, "\uffff"], dtype=object), kind="stable")] = (
        np.arange(len(channel_names) + 1)
    )
    vocab = {t: i + 1 for i, t in enumerate(spec.token_vocabulary)}
    other_tok = spec.other_token_code
    tok_table = np.full((len(channel_names) + 1, N_TYPES + 1), other_tok, dtype=np.int32)
    for ci, cname in enumerate(channel_names):
        for ti, tname in enumerate(schema.EVENT_TYPE_ORDER):
            tok_table[ci, ti] = vocab.get(f"{cname}:{tname}", other_tok)
    if len(cache) > 256:  # open vocabularies: keep the memo bounded
        cache.clear()
    out = (type_table, ch_table, ch_rank, tok_table)
    cache[key] = out
    return out


@dataclass(frozen=True)
class CounterLayout:
    """Rows of the running-total matrix (one row per counter, rows contiguous).

    Row order is chosen so that the rows needed at window boundaries (type counts, sends
    and inbound per channel) are one leading block.
    """

    n_channels: int

    @property
    def send(self) -> int:  # sends per channel
        return N_TYPES

    @property
    def inbound(self) -> int:  # inbound events per channel
        return N_TYPES + self.n_channels

    @property
    def windowed(self) -> int:  # rows [0, windowed) are looked up at window starts
        return N_TYPES + 2 * self.n_channels

    @property
    def open(self) -> int:
        return self.windowed

    @property
    def click(self) -> int:
        return self.windowed + self.n_channels

    @property
    def unsub(self) -> int:
        return self.windowed + 2 * self.n_channels

    @property
    def consideration(self) -> int:
        return self.windowed + 3 * self.n_channels

    @property
    def advocacy(self) -> int:
        return self.consideration + 1

    @property
    def inbound_all(self) -> int:
        return self.consideration + 2

    @property
    def transitions(self) -> int:
        return self.consideration + 3

    @property
    def n_rows(self) -> int:
        return self.transitions + len(TRANSITIONS)


@dataclass
class EventArrays:
    """A canonical event table as flat arrays sorted by (customer, time, type, channel).

    Serving can build this directly from its own store and call
    :func:`features.pipeline.compute_feature_matrix` without pandas.

    Attributes
    ----------
    customer_ids : ndarray of object (str)
        Customer id of each customer code (only customers that have events).
    code : ndarray of int64
        Customer code of each event, non-decreasing.
    time : ndarray of int64
        Event time in ns since the epoch (UTC), non-decreasing within a customer.
    etype : ndarray of int8
        Index into ``schema.EVENT_TYPE_ORDER`` (-1 for an unknown type).
    channel : ndarray of int16
        Index into ``spec.channels``; ``len(spec.channels)`` for any other channel.
    token : ndarray of int32
        Token code (``FeatureSpec.token_code``).
    value : ndarray of float64
        The ``value`` column (NaN when absent).
    order : ndarray of int64 or None
        Row of the input table of each sorted event (None: the input was already sorted).
    """

    customer_ids: np.ndarray
    code: np.ndarray
    time: np.ndarray
    etype: np.ndarray
    channel: np.ndarray
    token: np.ndarray
    value: np.ndarray
    order: np.ndarray | None = None
    _unit: int = field(default=0, init=False, repr=False)

    @property
    def n_events(self) -> int:
        return int(self.code.size)

    @property
    def n_customers(self) -> int:
        """Customers with events; code ``n_customers`` is the "unknown customer" (no events)."""
        return len(self.customer_ids)

    @cached_property
    def starts(self) -> np.ndarray:
        """Segment bounds: customer ``c`` owns events ``[starts[c], starts[c + 1])``."""
        return np.searchsorted(self.code, np.arange(self.n_customers + 2), side="left")

    @cached_property
    def _key_parts(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        starts = self.starts
        first = np.zeros(self.n_customers + 1, dtype=np.int64)
        if self.n_events:
            first[: self.n_customers] = self.time[starts[: self.n_customers]]
        rel = self.time - first[self.code]
        max_rel = int(rel.max()) if rel.size else 0
        # The finest time unit for which code * S + rel // unit cannot overflow int64.  With
        # unit > 1, events in the same quantum as a query are resolved exactly afterwards.
        n_codes = self.n_customers + 1
        unit = max(1, -(-(n_codes * (max_rel + 2)) // KEY_BUDGET))
        span = max_rel // unit + 2
        keys = self.code * span + rel // unit
        return first, keys, unit, span

    def lookup(
        self, qcode: np.ndarray, qtime: np.ndarray, lo: int = 0, hi: int | None = None
    ) -> np.ndarray:
        """Global position ``idx`` such that the customer's events before ``qtime`` are
        ``[starts[qcode], idx)`` (strictly before: an event at ``qtime`` is excluded).

        ``qcode`` may be ``n_customers`` (a customer without events).  ``[lo, hi)`` may
        narrow the search to a range of events that holds every queried customer.
        """
        first, keys, unit, span = self._key_parts
        rel = qtime - first[qcode]
        # Clipping keeps the key inside the customer's block: below its first event -> start,
        # beyond its last -> end.  (span - 1) * unit exceeds every event's offset.
        q = np.clip(rel, 0, (span - 1) * unit) // unit
        hi = keys.size if hi is None else hi
        idx = lo + np.searchsorted(keys[lo:hi], qcode * span + q, side="left")
        if unit > 1 and idx.size:
            # Events in the query's quantum sort at or after idx; step over those strictly
            # earlier than qtime (exact, since times are sorted within a customer).
            time = self.time
            last = max(time.size - 1, 0)
            end = self.starts[qcode + 1]
            active = np.flatnonzero((idx < end) & (time[np.minimum(idx, last)] < qtime))
            while active.size:
                idx[active] += 1
                pos = idx[active]
                keep = (pos < end[active]) & (time[np.minimum(pos, last)] < qtime[active])
                active = active[keep]
        return idx


def prepare_events(events: pd.DataFrame, spec: FeatureSpec) -> EventArrays:
    """Canonical event table -> :class:`EventArrays` (sorted, coded for ``spec``).

    The input need not be sorted; rows are ordered by (customer, timestamp, event type in
    ``schema.EVENT_TYPE_ORDER``, channel name), so same-time ties are resolved the same way
    whatever the input row order.
    """
    n = len(events)
    cust_raw, cust_cats = _codes(events["customer_id"])
    cust_codes = cust_raw.astype(np.int64)
    time = to_ns(events["timestamp"]) if n else np.zeros(0, dtype=np.int64)
    type_col, ch_col = events["event_type"], events["channel"]
    type_codes, type_cats = _codes(type_col)
    ch_codes, ch_cats = _codes(ch_col)
    # Slices of one categorical share its dtype object: memoize the tables on it.
    memo_key = ("dtypes", id(type_col.dtype), id(ch_col.dtype))
    memo = spec._cache.get(memo_key)
    if memo is not None and memo[0] is type_col.dtype and memo[1] is ch_col.dtype:
        tables = memo[2]
    else:
        tables = _vocab_tables(
            spec, tuple(str(c) for c in ch_cats), tuple(str(t) for t in type_cats)
        )
        if isinstance(type_col.dtype, pd.CategoricalDtype) and isinstance(
            ch_col.dtype, pd.CategoricalDtype
        ):
            spec._cache[memo_key] = (type_col.dtype, ch_col.dtype, tables)
    type_table, ch_table, ch_rank, tok_table = tables
    etype = type_table[type_codes]
    channel = ch_table[ch_codes]
    token = tok_table[ch_codes, etype]  # code -1 -> the trailing "other" row / column
    if "value" in events:
        value = events["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        value = np.full(n, np.nan)

    # Deterministic tie-break among same-customer same-time events: event type, then the
    # channel's name (its rank among the category names, which do not depend on row order).
    tiebreak = (etype.astype(np.int64) + 1) * ch_rank.size + ch_rank[ch_codes]

    order: np.ndarray | None = None
    if n > 1:
        dc = np.diff(cust_codes)
        dt = np.diff(time)
        same = dc == 0
        in_order = bool((dc >= 0).all() and (dt[same] >= 0).all())
        if in_order:
            tie = same & (dt == 0)
            in_order = not bool((np.diff(tiebreak)[tie] < 0).any())
        if not in_order:
            order = np.lexsort((tiebreak, time, cust_codes))
            cust_codes, time, etype = cust_codes[order], time[order], etype[order]
            channel, token, value = channel[order], token[order], value[order]

    # Compact the customer codes to the customers present (a slice of a big categorical
    # keeps all categories; a slice of a few customers must not pay for them).
    if n:
        run_start = np.flatnonzero(np.r_[True, cust_codes[1:] != cust_codes[:-1]])
        present = cust_codes[run_start]
        lengths = np.diff(np.r_[run_start, n])
        code = np.repeat(np.arange(present.size, dtype=np.int64), lengths)
        if present.size <= 32:
            names = [str(cust_cats[int(i)]) for i in present]
        else:
            names = [str(c) for c in cust_cats.take(present)]
        customer_ids = np.array(names, dtype=object)
    else:
        code = np.zeros(0, dtype=np.int64)
        customer_ids = np.zeros(0, dtype=object)
    return EventArrays(
        customer_ids=customer_ids,
        code=code,
        time=time,
        etype=etype,
        channel=channel,
        token=token,
        value=value,
        order=order,
    )


def customer_event_arrays(
    spec: FeatureSpec,
    customer_id: str,
    time: np.ndarray,
    channel: Sequence[str],
    event_type: Sequence[str],
    value: np.ndarray,
) -> EventArrays:
    """:func:`prepare_events` for ONE customer's events given as plain columns, no pandas.

    The request path of the service reads a few hundred rows from its store; building a
    DataFrame and factorizing it cost milliseconds, this costs tens of microseconds.  The
    result is the same as ``prepare_events`` on the equivalent table (a test checks it),
    including the tie-break of same-time events: event type order, then channel name.
    """
    n = len(time)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return EventArrays(
            customer_ids=np.zeros(0, dtype=object),
            code=empty,
            time=empty,
            etype=np.zeros(0, dtype=np.int8),
            channel=np.zeros(0, dtype=np.int16),
            token=np.zeros(0, dtype=np.int32),
            value=np.zeros(0, dtype=np.float64),
        )
    coded = _online_codes(spec)
    get = coded.get
    # One dict lookup per event: (channel, type) -> (type code, channel index, token).
    pairs = zip(channel, event_type, strict=True)
    triples = [get(pair) or coded.add(spec, *pair) for pair in pairs]
    table = np.array(triples, dtype=np.int32).reshape(n, 3)
    etype = table[:, 0].astype(np.int8)
    chan = table[:, 1].astype(np.int16)
    token = table[:, 2]
    t = np.asarray(time, dtype=np.int64)
    val = np.asarray(value, dtype=np.float64)
    dt = np.diff(t)
    if (dt < 0).any() or (dt == 0).any():
        # Same tie-break as prepare_events: time, then type code, then channel name.
        names = np.asarray(channel, dtype=object)
        _, name_rank = np.unique(names, return_inverse=True)
        order = np.lexsort((name_rank, etype, t))
        t, etype, chan, token, val = t[order], etype[order], chan[order], token[order], val[order]
    return EventArrays(
        customer_ids=np.array([customer_id], dtype=object),
        code=np.zeros(n, dtype=np.int64),
        time=t,
        etype=etype,
        channel=chan,
        token=token,
        value=val,
    )


class _OnlineCodes(dict[tuple[str, str], tuple[int, int, int]]):
    """``(channel, event type) -> (type code, channel index, token code)``, filled lazily.

    Memoized on the spec, so each pair is worked out once per model; the number of pairs is
    bounded by the vocabularies (an unknown channel maps like any "other" channel).
    """

    def add(self, spec: FeatureSpec, channel: str, event_type: str) -> tuple[int, int, int]:
        if len(self) > 4096:  # open vocabularies: keep the memo bounded
            self.clear()
        type_code = TYPE_CODE.get(event_type, -1)
        chan_pos = {c: i for i, c in enumerate(spec.channels)}
        vocab = spec._cache.get("online_token_vocab")
        if vocab is None:
            vocab = spec._cache["online_token_vocab"] = {
                tok: i + 1 for i, tok in enumerate(spec.token_vocabulary)
            }
        token = vocab.get(f"{channel}:{event_type}", spec.other_token_code)
        out = (type_code, chan_pos.get(channel, len(spec.channels)), token)
        self[(channel, event_type)] = out
        return out


def _online_codes(spec: FeatureSpec) -> _OnlineCodes:
    hit = spec._cache.get("online_codes")
    if hit is None:
        hit = spec._cache["online_codes"] = _OnlineCodes()
    return hit


def map_customers(ids: pd.Series, customer_ids: np.ndarray | pd.Index) -> np.ndarray:
    """Position of each id in ``customer_ids``; ids not there get ``len(customer_ids)``."""
    n_known = len(customer_ids)
    if len(ids) <= 32 and n_known <= 1024:
        # A few ids: a dict beats building pandas hash tables.
        known = {c: i for i, c in enumerate(customer_ids)}
        return np.array([known.get(str(x), n_known) for x in ids.tolist()], dtype=np.int64)
    index = pd.Index(customer_ids, dtype=object)
    if isinstance(ids.dtype, pd.CategoricalDtype) and len(ids) > len(ids.cat.categories):
        # Map each category once, then expand by code.
        codes, cats = _codes(ids)
        table = np.append(index.get_indexer(pd.Index([str(c) for c in cats])), -1)
        pos = table[codes]
    else:
        values = pd.Index(np.asarray(ids.astype(str), dtype=object), dtype=object)
        pos = index.get_indexer(values)
    pos = np.asarray(pos, dtype=np.int64)
    pos[pos < 0] = n_known
    return pos
