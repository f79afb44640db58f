"""Inline histories (``events`` in a recommendation request) without pandas.

The contract for inline events is ``features.ingest.normalize_events``: the same checks,
reasons and typing as a file.  That is a vectorized pandas pipeline, built for millions of
rows, whose fixed cost (~30–45 ms) dwarfs a 100-event request.  :func:`inline_history` reads
the rows with list comprehensions and one vectorized timestamp parse instead, and returns
the same :class:`~serving.store.EventColumns` (same values, dtypes and order), or raises
the same :class:`RequestError` (the first bad row, with its reasons in the ingestion's
order and words).

It answers only when it is *certain* to agree with the pandas path, and otherwise hands
the whole request to that path (:func:`pandas_inline_history`, also the tests' oracle):

- timestamps: the grammar of ``serving/iso_stamps.py`` (``YYYY-MM-DD``, optionally with
  ``[T ]HH:MM[:SS[.f{1,9}]]`` and ``Z`` / ``±HH:MM`` / ``±HHMM``, years 1678–2261);
- numbers: plain decimals (``[+-]digits[.digits][e±n]``) that every correct parser rounds
  alike: at most 17 digits, an integer mantissa below 2**53 and a decimal exponent within
  ±22 (pandas' ``precise_xstrtod`` is then exact), and no negative zero (pandas folds
  ``-0.0`` into ``0.0`` when both occur, and reads ``"-0"`` as the int 0); JSON numbers
  are read back from their ``str()``, as pandas does;
- text: stripped with ``str.strip`` (what pandas' Arrow strip removes, on every code
  point), lower-cased with ``str.lower`` in ASCII and with Arrow's ``utf8_lower`` (what
  pandas calls) otherwise.

Anything else (a timestamp outside that grammar, garbage or out of range; a number that
does not parse or is ``inf``; a value that is not ``str``/``float``/None; events of two
customers) is rare and usually an error, and gets pandas' answer at pandas' cost.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from typing import Final, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.counters import to_ns
from features.ingest import IngestError, normalize_events
from features.schema import EVENT_TYPES
from serving.iso_stamps import parse_iso_ns
from serving.schemas import EventIn, RequestError
from serving.store import EventColumns

__all__ = [
    "events_input_frame",
    "fast_inline_history",
    "inline_history",
    "pandas_inline_history",
]

_NUMBER: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]{1,4}))?", re.ASCII)
#: ``0.xxx`` with a non-zero digit among the first three: pandas keeps >= 14 significant
#: digits of it, so a value well inside (0, 1) stays inside whatever the rounding.
_UNIT_FRACTION: Final = re.compile(r"0?\.0{0,2}[1-9][0-9]*", re.ASCII)
_MANTISSA_LIMIT: Final = 2**53


class _Unsure(Exception):
    """The fast path cannot vouch for pandas' answer: use the pandas path."""


# ---------------------------------------------------------------------------- fields
def _check_texts(columns: Sequence[Sequence[object]]) -> bool:
    """Every value is None or a str that Arrow can hold (one join, in C); all ASCII?"""
    present = [x for column in columns for x in column if x is not None]
    try:
        joined = "".join(present)  # type: ignore[arg-type]
    except TypeError:  # not a str (a model built without validation): pandas decides
        raise _Unsure from None
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")  # a lone surrogate: Arrow raises, so pandas would
    except UnicodeEncodeError:
        raise _Unsure from None
    return False


def _lowered(column: Sequence[str | None], all_ascii: bool = False) -> list[str | None]:
    """``_clean_categorical(lower=True)``: stripped, lower-cased, None when empty."""
    stripped = [None if x is None else x.strip() or None for x in column]
    present = [x for x in stripped if x is not None]
    if all_ascii or "".join(present).isascii():
        return [None if x is None else x.lower() for x in stripped]
    # pandas lower-cases in Arrow, which is not str.lower outside ASCII (final sigma...)
    lowered = iter(pc.utf8_lower(pa.array(present, type=pa.string())).to_pylist())
    return [None if x is None else next(lowered) for x in stripped]


def _exact_number(text: str) -> float:
    """The float pandas reads from ``text`` (stripped, non-empty), when it is certain."""
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise _Unsure
    sign, whole, frac, exp = m.groups()
    frac = frac or ""
    digits = whole + frac
    if not digits or len(digits) > 17:
        raise _Unsure
    exponent = (int(exp) if exp else 0) - len(frac)
    mantissa = int(digits)
    if not -22 <= exponent <= 22 or mantissa >= _MANTISSA_LIMIT:
        raise _Unsure
    if mantissa == 0 and sign == "-":
        raise _Unsure  # pandas reads "-0" as the int 0, and folds -0.0 into a 0.0 beside it
    return float(text)


def _value(raw: object) -> float:
    """The ``value`` column of one row: NaN when absent."""
    if raw is None:
        return np.nan
    if type(raw) is float:
        if raw != raw:  # NaN is a missing value to pd.Categorical
            return np.nan
        if math.isinf(raw):
            raise _Unsure  # "value is not a number"
        # pandas reads the float back from its str(): exact when that string is simple
        # (and never -0.0, which pd.Categorical folds into 0.0 when both occur).
        return _exact_number(str(raw))
    if type(raw) is not str:
        raise _Unsure
    text = raw.strip()
    return _exact_number(text) if text else np.nan


def _propensity_out_of_unit(raw: object) -> bool:
    """Whether a given propensity is outside (0, 1]; False when absent."""
    if raw is None:
        return False
    if type(raw) is float:
        if raw != raw:
            return False
        if 1e-6 < raw < 0.999999:  # inside whatever the rounding of its str()
            return False
        if math.isinf(raw):
            raise _Unsure  # "not a number"
        p = _exact_number(str(raw))
    elif type(raw) is str:
        text = raw.strip()
        if not text:
            return False
        try:
            p = _exact_number(text)
        except _Unsure:
            if _UNIT_FRACTION.fullmatch(text) and 1e-3 < float(text) < 0.999999:
                return False
            raise
    else:
        raise _Unsure
    return not 0.0 < p <= 1.0


# ---------------------------------------------------------------------------- rows
def fast_inline_history(
    events: Sequence[EventIn], customer_id: str, as_of_ns: int, loc: Sequence[str | int]
) -> EventColumns | None:
    """The inline history without pandas, or None when only pandas can say for sure.

    Every row is read (so that a row the fast path cannot judge, even after a bad one,
    sends the request to pandas); the first bad row then raises :class:`RequestError`
    with the reasons ``normalize_events`` would give, in its order.  Valid rows are
    de-duplicated by ``event_id`` (first wins), sorted by time (ties in input order) and
    cut at ``as_of`` (strictly before), as the pandas path does.
    """
    try:
        return _fast(events, customer_id, as_of_ns, loc)
    except _Unsure:
        return None


def _fast(
    events: Sequence[EventIn], customer_id: str, as_of_ns: int, loc: Sequence[str | int]
) -> EventColumns:
    n = len(events)
    if not n:
        empty = np.zeros(0)
        return EventColumns(empty.astype(np.int64), [], [], empty)
    # Column by column: list comprehensions run far fewer bytecodes than a loop of rows
    # (and strip() inline, not in a helper: a call per value is a third of the time).
    (customers, channels, types, actions, stamps, values, props, ids, decisions) = zip(
        *map(_COLUMNS, events), strict=True
    )
    all_ascii = _check_texts((customers, channels, types, actions, stamps, ids, decisions))
    cust = [None if c is None else c.strip() or None for c in customers]
    if not {customer_id, None}.issuperset(cust):
        raise _Unsure  # two customers: pandas would sort by customer first
    channel = _lowered(channels, all_ascii)
    etype = _lowered(types, all_ascii)
    stamp = [None if t is None else t.strip() or None for t in stamps]
    missing_stamp = None in stamp
    # All rows at once; a missing one makes the request an error (below), but the others
    # must still be certain.
    present = [t for t in stamp if t is not None] if missing_stamp else cast("list[str]", stamp)
    time = parse_iso_ns(present)
    if time is None:
        raise _Unsure
    nan = np.nan
    value = [nan if v is None else _value(v) for v in values]
    out_of_unit = [p is not None and _propensity_out_of_unit(p) for p in props]
    sent_without_action = [
        t == "sent" and (a is None or not a.strip()) for t, a in zip(etype, actions, strict=True)
    ]
    if (
        missing_stamp
        or None in cust
        or None in channel
        or None in etype
        or not _EVENT_TYPES.issuperset(etype)  # (None is in it: missing is not unknown)
        or True in out_of_unit
        or True in sent_without_action
    ):
        for i, e in enumerate(events):
            reasons = _reasons(
                e, cust[i], channel[i], etype[i], sent_without_action[i], stamp[i], out_of_unit[i]
            )
            if reasons:
                raise RequestError([*loc, "events", i], reasons, "event_invalid")

    order = np.argsort(time, kind="stable")  # ties keep input order, as Arrow's sort does
    event_id = [None if x is None else x.strip() or None for x in ids]
    distinct = set(event_id)
    distinct.discard(None)
    if len(distinct) < n - event_id.count(None):  # duplicates: the first row wins
        seen: set[str] = set()
        first = np.ones(n, dtype=bool)
        for i, x in enumerate(event_id):
            if x is not None:
                first[i] = x not in seen
                seen.add(x)
        order = order[first[order]]
    order = order[time[order] < as_of_ns]
    idx = order.tolist()
    return EventColumns(
        time=time[order],
        channel=[channel[i] for i in idx],  # no None left
        event_type=[etype[i] for i in idx],
        value=np.array(value, dtype=np.float64)[order],
    )


#: The fields of an event, in the order _fast unpacks them.
_COLUMNS: Final = operator.attrgetter(
    "customer_id",
    "channel",
    "event_type",
    "action",
    "timestamp",
    "value",
    "propensity",
    "event_id",
    "decision_id",
)
_EVENT_TYPES: Final = frozenset(EVENT_TYPES) | {None}


def _reasons(
    e: EventIn,
    customer: str | None,
    channel: str | None,
    etype: str | None,
    sent_without_action: bool,
    stamp: str | None,
    out_of_unit: bool,
) -> str:
    """The quarantine reason of one row, as ``_normalize_events`` words and orders it."""
    reasons = []
    if customer is None:
        reasons.append("missing customer_id")
    if channel is None:
        reasons.append("missing channel")
    if etype is None:
        reasons.append("missing event_type")
    elif etype not in _EVENT_TYPES:
        reasons.append(f"unknown event_type: '{e.event_type}'")
    if sent_without_action:
        reasons.append("sent without action")
    if stamp is None:
        reasons.append("missing timestamp")
    # (unparseable / out-of-range timestamps and bad numbers never get here: _Unsure)
    if out_of_unit:
        reasons.append(f"propensity must be in (0, 1], got '{e.propensity}'")
    return "; ".join(reasons)


# ---------------------------------------------------------------------------- pandas
def events_input_frame(events: Sequence[EventIn]) -> pd.DataFrame:
    """The rows as the frame ``normalize_events`` reads (object columns, raw values)."""
    columns = list(EventIn.model_fields)
    records = [e.model_dump() for e in events]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.astype(object)


def pandas_inline_history(
    events: Sequence[EventIn], as_of_ns: int, loc: Sequence[str | int]
) -> EventColumns:
    """The inline history through ``normalize_events``: the reference semantics."""
    try:
        result = normalize_events(events_input_frame(events))
    except IngestError as exc:
        raise RequestError([*loc, "events"], str(exc)) from None
    if len(result.quarantine):
        row, reason = result.quarantine.iloc[0][["row", "reason"]]
        raise RequestError([*loc, "events", int(row) - 1], str(reason), "event_invalid")
    valid = result.events
    return EventColumns.from_frame(valid[to_ns(valid["timestamp"]) < as_of_ns])


def inline_history(
    events: Sequence[EventIn], customer_id: str, as_of_ns: int, loc: Sequence[str | int]
) -> EventColumns:
    """The customer's inline history strictly before ``as_of_ns``, or the first bad row's
    :class:`RequestError`: the fast path when it is sure, the pandas path otherwise."""
    fast = fast_inline_history(events, customer_id, as_of_ns, loc)
    return pandas_inline_history(events, as_of_ns, loc) if fast is None else fast
