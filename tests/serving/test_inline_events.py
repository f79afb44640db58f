"""Inline histories without pandas (``serving/inline_events.py``) against the pandas path.

The oracle is :func:`serving.inline_events.pandas_inline_history`: the request path as it
was, ``normalize_events`` on a frame of the rows.  The fast path must give exactly its
``EventColumns`` (every column, dtype, order, sign of zero) or exactly its error (loc,
message, code), or decline (None) so that the pandas path answers.  The property test
also checks that it declines rarely on the inputs it is meant for.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, note, settings
from hypothesis import strategies as st

from features.ingest import _clean_categorical, _parse_numeric, _parse_timestamps
from features.schema import EVENT_TYPES
from serving.app import create_app
from serving.inline_events import (
    _exact_number,
    _lowered,
    _Unsure,
    _value,
    fast_inline_history,
    inline_history,
    pandas_inline_history,
)
from serving.iso_stamps import SHAPES, parse_iso_ns
from serving.schemas import EventIn, RequestError
from serving.settings import ServingSettings
from serving.store import EventColumns
from tests.serving.bundle_factory import AS_OF as SERVE_AS_OF
from tests.serving.bundle_factory import save_tiny_bundle

CID = "c1"
LOC: list[str | int] = ["body"]
AS_OF = int(pd.Timestamp("2024-03-15T00:00:00Z").value)


def _events(rows: list[dict[str, Any]]) -> list[EventIn]:
    return [EventIn.model_validate(r) for r in rows]


def _outcome(call: Callable[[], EventColumns | None]) -> tuple[Any, ...] | None:
    """Everything observable of a result, or of the error it raised."""
    try:
        cols = call()
    except RequestError as exc:
        return ("error", exc.loc, exc.msg, exc.type)
    if cols is None:
        return None
    value = np.asarray(cols.value)
    return (
        "ok",
        cols.time.dtype.str,
        cols.time.tolist(),
        type(cols.channel).__name__,
        [(type(c).__name__, c) for c in cols.channel],
        type(cols.event_type).__name__,
        [(type(t).__name__, t) for t in cols.event_type],
        value.dtype.str,
        np.isnan(value).tolist(),
        np.where(np.isnan(value), 0.0, value).tolist(),
        np.signbit(value).tolist(),
    )


def _check(rows: list[dict[str, Any]], as_of: int = AS_OF) -> tuple[Any, ...] | None:
    """Assert the fast path agrees with the oracle; return its outcome (None: declined)."""
    events = _events(rows)
    expected = _outcome(lambda: pandas_inline_history(events, as_of, LOC))
    fast = _outcome(lambda: fast_inline_history(events, CID, as_of, LOC))
    if fast is not None:
        assert fast == expected
        assert _outcome(lambda: inline_history(events, CID, as_of, LOC)) == expected
    return fast


def _row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": CID,
        "timestamp": "2024-03-01T10:00:00Z",
        "channel": "email",
        "event_type": "open",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


# ---------------------------------------------------------------------------- property
_DIGITS = st.text("0123456789", min_size=1, max_size=12)


@st.composite
def _timestamps(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from([None, "", "  ", "garbage", "2024-03-05T12:34:56.Z"]))
    if kind == 1:
        return draw(st.text(st.sampled_from("0123456789-:T Z+.tz"), max_size=26))
    year = draw(st.sampled_from([2024] * 8 + [1970, 1677, 1678, 2261, 2262, 1500, 2300, 1, 9999]))
    month = draw(st.sampled_from([3] * 6 + [1, 2, 12, 0, 13]))
    day = draw(st.sampled_from([1, 5, 14, 15, 16, 29, 30, 31, 0, 32]))
    text = draw(
        st.sampled_from([f"{year:04d}-{month:02d}-{day:02d}", f"{year}{month:02d}{day:02d}"])
    )
    if draw(st.integers(0, 5)):
        hour = draw(st.sampled_from([0, 10, 12, 23, 24]))
        minute = draw(st.sampled_from([0, 30, 59, 60]))
        text += draw(st.sampled_from("T T tT ")) + f"{hour:02d}:{minute:02d}"
        if draw(st.integers(0, 4)):
            text += ":" + f"{draw(st.sampled_from([0, 7, 59, 60])):02d}"
            if draw(st.booleans()):
                text += "." + draw(_DIGITS)
        text += draw(
            st.sampled_from(
                ["", "", "Z", "z", "+00:00", "+01:00", "-05:30", "+0130", "-2359", "+23:59",
                 "+24:00", "+01", " +01:00", "+01:60"]
            )
        )  # fmt: skip
    return draw(st.sampled_from(["", "", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


_CLEAN_STAMPS = st.builds(
    lambda d, h, m, f, z: f"2024-03-{d:02d}T{h:02d}:{m:02d}:00{f}{z}",
    st.sampled_from([1, 10, 14, 15, 16]),
    st.sampled_from([0, 12, 23]),
    st.sampled_from([0, 30]),
    st.sampled_from(["", ".5", ".123456"]),
    st.sampled_from(["Z", "", "+01:00"]),
)


_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: f"{x:.2f}"),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(
        ["1e5", "1E+05", "-0", "-0.0", "0", "+.5", "5.", ".", "5e", "1_000", "0x10", "abc", "nan",
         "inf", "-inf", "Infinity", " 3.5 ", "", "  ", "0.30000000000000004", "1.0000000000000001",
         "12345678901234567890", "0e500", "1e-400", "0.0000000000000000000000001", "٣"]
    ),
)  # fmt: skip
_CLEAN_VALUES = st.sampled_from([None, None, None, 0.0, 1.0, 12.5, 49.99, "3.25", " 7 ", "", 1e16])
_VALUES = st.one_of(
    _CLEAN_VALUES,
    _CLEAN_VALUES,
    _CLEAN_VALUES,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0.1 + 0.2, 1e-7, float("nan")]),
    _NUMBER_TEXT,
)
_PROPENSITIES = st.one_of(
    st.sampled_from([None, None, 0.5, 1.0, "0.25", 1e-7, 0.0, "0", 2.0, "1.5 ", -0.5]),
    st.sampled_from([None, None, 0.5, 1.0, "0.25", 1e-7, 0.0, "0", 2.0, "1.5 ", -0.5]),
    st.floats(-0.5, 1.5),
    st.sampled_from([-0.0, 0.9999999, 1.0000000000000002, float("inf"), float("nan")]),
    st.sampled_from(["-0", "0.30000000000000004", "1e-3", " 0.2 ", "x", "-0.1",
                     "0.000000000000000000000000001", "1.00000000000000000001"]),
    _NUMBER_TEXT,
)  # fmt: skip
_CASED_TYPES = st.sampled_from(sorted(EVENT_TYPES)).flatmap(
    lambda t: st.sampled_from([t, t.upper(), t.title(), f" {t} "])
)
_ROWS = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.sampled_from([CID] * 12 + [f" {CID} ", f"{CID}\t", None, None, "c2"]),
        "timestamp": st.one_of(_CLEAN_STAMPS, _CLEAN_STAMPS, _CLEAN_STAMPS, _timestamps()),
        "channel": st.one_of(
            st.sampled_from(["email", "Email", " SMS ", "web", "", " ", None, "straße", "ΣMS"]),
            st.text(max_size=4),
        ),
        "event_type": st.one_of(
            _CASED_TYPES,
            _CASED_TYPES,
            st.sampled_from(["foo", "", " ", None, "CLIC\u212a", "Ｏpen", "ΣENT"]),
        ),
        "action": st.sampled_from(["email_promo", "Email_Promo", "", " ", None, "ωmega"]),
        "value": _VALUES,
        "propensity": _PROPENSITIES,
        "event_id": st.sampled_from([None, "", " ", "e1", " e1", "e2", "e3", "ü4"]),
        "decision_id": st.sampled_from([None, "d1", " ", "δ"]),
    },
)
# Most rows valid, so that lists get past their first row and reach sorting and de-dup.
_VALID_ROWS = st.fixed_dictionaries(
    {
        "customer_id": st.just(CID),
        "timestamp": _CLEAN_STAMPS,
        "channel": st.sampled_from(["email", "web", "SMS"]),
        "event_type": _CASED_TYPES.filter(lambda t: t.strip().lower() != "sent"),
    },
    optional={
        "value": st.one_of(st.none(), st.sampled_from([1.0, 12.5, "3.25", 0.0])),
        "propensity": st.sampled_from([0.5, 1.0, "0.25"]),
        "event_id": st.sampled_from(["e1", "e2", "e3", "e4", None]),
    },
)
# Valid rows with one field dropped or blanked, or an out-of-unit propensity: errors the
# fast path must word itself (nothing here is a reason to hand over to pandas).
_BROKEN_ROWS = st.tuples(
    _VALID_ROWS,
    st.sampled_from(["customer_id", "channel", "event_type", "timestamp", "action"]),
    st.sampled_from([..., None, "", " \t"]),
    st.sampled_from([None, None, 0.0, "0", 1.5, " 2 ", -0.25, 1e-7]),
).map(
    lambda t: {
        **{k: v for k, v in t[0].items() if k != t[1]},
        **({} if t[2] is ... else {t[1]: t[2]}),
        **({} if t[3] is None else {"propensity": t[3]}),
        **({"event_type": "sent"} if t[1] == "action" else {}),
    }
)
_AS_OF = st.sampled_from(
    [AS_OF, AS_OF + 12 * 3600 * 10**9, int(pd.Timestamp("2262-01-01").value), -(2**62)]
)


def test_fast_path_equals_pandas_on_random_histories() -> None:
    counts = {"fast": 0, "declined": 0, "valid": 0, "error": 0}

    @settings(derandomize=True, max_examples=260, deadline=None, database=None)
    @given(
        st.one_of(
            st.lists(_VALID_ROWS, max_size=12),  # histories: sorting, de-dup, the cut
            st.lists(st.one_of(_ROWS, _BROKEN_ROWS, _VALID_ROWS, _VALID_ROWS), max_size=8),
        ),
        _AS_OF,
    )
    def check(rows: list[dict[str, Any]], as_of: int) -> None:
        note(repr(rows))
        fast = _check(rows, as_of)
        counts["declined" if fast is None else "fast"] += 1
        counts["valid"] += fast is not None and fast[0] == "ok" and len(fast[2]) > 0
        counts["error"] += fast is not None and fast[0] == "error"

    check()
    # Sanity floors, not targets: the fast path must answer a fair share (it declines on
    # garbage timestamps and odd numbers, which many random rows carry), including valid
    # histories and errors.  (Hypothesis does not draw uniformly: keep them loose.)
    assert counts["fast"] >= 0.5 * (counts["fast"] + counts["declined"]), counts
    assert counts["valid"] >= 40 and counts["error"] >= 40, counts


# ---------------------------------------------------------------------------- examples
@pytest.mark.parametrize(
    "stamp",
    [
        "2024-03-05",
        "2024-03-05T12:34",
        "2024-03-05 12:34:56",
        "2024-03-05T12:34:56Z",
        "2024-03-05T12:34:56.1Z",
        "2024-03-05T12:34:56.123456789",
        "2024-03-05T12:34:56.123+01:00",
        "2024-03-05T12:34:56-0530",
        " 2024-03-05T23:59:59.999999-23:59 ",
        "2024-02-29T00:00:00Z",
        "1678-01-01T00:00:00+23:59",
        "2261-12-31T23:59:59.999999999-23:59",
    ],
)
def test_common_iso_forms_take_the_fast_path(stamp: str) -> None:
    rows = [_row(timestamp=stamp), _row(timestamp="2024-03-01T00:00:00Z", event_type="visit")]
    fast = _check(rows, as_of=int(pd.Timestamp("2262-04-01").value))
    assert fast is not None and fast[0] == "ok" and len(fast[2]) == 2


@pytest.mark.parametrize(
    ("rows", "loc", "msg"),
    [
        ([_row(customer_id=None)], 0, "missing customer_id"),
        ([_row(), _row(channel="  ")], 1, "missing channel"),
        ([_row(), _row(channel=...)], 1, "missing channel"),
        ([_row(), _row(event_type=...)], 1, "missing event_type"),
        ([_row(event_type=" ")], 0, "missing event_type"),
        ([_row(), _row(), _row(timestamp=...)], 2, "missing timestamp"),
        ([_row(event_type="sent")], 0, "sent without action"),
        ([_row(event_type=" Nope ")], 0, "unknown event_type: ' Nope '"),
        ([_row(event_type="SENT", action=" ")], 0, "sent without action"),
        ([_row(timestamp=" ")], 0, "missing timestamp"),
        ([_row(propensity=0)], 0, "propensity must be in (0, 1], got '0.0'"),
        ([_row(propensity="1.5 ")], 0, "propensity must be in (0, 1], got '1.5 '"),
        ([_row(propensity=-1e-7)], 0, "propensity must be in (0, 1], got '-1e-07'"),
        (
            [
                _row(),
                _row(
                    customer_id=None, channel=None, event_type="sent", timestamp=None, propensity=2
                ),
            ],
            1,
            "missing customer_id; missing channel; sent without action; missing timestamp; "
            "propensity must be in (0, 1], got '2.0'",
        ),  # fmt: skip
        ([_row(channel=None), _row(event_type=None)], 0, "missing channel"),
    ],
)
def test_errors_are_the_first_bad_row_with_pandas_words(
    rows: list[dict[str, Any]], loc: int, msg: str
) -> None:
    fast = _check(rows)
    assert fast == ("error", ["body", "events", loc], msg, "event_invalid")


def test_duplicates_order_ties_and_the_as_of_cut() -> None:
    rows = [
        _row(timestamp="2024-03-02T00:00:00Z", event_id="a", channel="web"),
        _row(timestamp="2024-03-01T00:00:00Z", event_id=" b", channel="sms"),
        _row(timestamp="2024-03-02T00:00:00Z", event_id="a ", channel="app"),  # duplicate
        _row(timestamp="2024-03-01T01:00:00+01:00", channel="push"),  # ties with row 1
        _row(timestamp="2024-03-01T00:00:00Z", event_id="b", channel="chat"),  # duplicate
        _row(timestamp="2024-03-15T00:00:00Z", channel="store"),  # at as_of: cut
        _row(timestamp="2024-03-14T23:59:59.999999999Z", channel="ads", value="7"),
    ]
    fast = _check(rows)
    assert fast is not None and fast[0] == "ok"
    assert [c for _, c in fast[4]] == ["sms", "push", "web", "ads"]


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "garbage"},
        {"timestamp": "1500-01-01T00:00:00Z"},  # out of range: pandas' verdict varies
        {"timestamp": "2024-03-05T12:34:56.1234567891Z"},  # more than ns
        {"timestamp": "2024-02-30T00:00:00Z"},
        {"timestamp": "20240305"},
        {"value": float("inf")},
        {"value": -0.0},
        {"value": "-0"},
        {"value": 0.1 + 0.2},  # 17 significant digits
        {"value": "1_000"},
        {"propensity": "nan"},
        {"customer_id": "c2"},
    ],
)
def test_what_the_fast_path_cannot_vouch_for_goes_to_pandas(change: dict[str, Any]) -> None:
    assert _check([_row(), _row(**change)]) is None


def test_empty_history() -> None:
    assert _check([]) is not None


def test_non_ascii_text_is_lower_cased_as_pandas_does() -> None:
    rows = [_row(channel="ΣMΑΣ"), _row(channel="Straße", event_id="ü"), _row(channel="İ")]
    fast = _check(rows)
    assert fast is not None and fast[0] == "ok"


# ---------------------------------------------------------------------------- the parts
def test_strip_and_lower_match_pandas_on_every_code_point() -> None:
    # Each code point at both ends (strip) and after a capital sigma (final-sigma rule).
    # Planes 0, 1 and 14 hold every whitespace and cased character; the others are CJK,
    # unassigned or private use.
    points = [*range(0xD800), *range(0xE000, 0x20000), *range(0xE0000, 0xE1000)]
    texts = [f"{chr(c)}aΣ{chr(c)}" for c in points]
    texts += ["AΣ", "ΣA Σ", "İ", " ", ""]
    column = pd.Series(texts, dtype=object)
    for lower in (False, True):
        cleaned = _clean_categorical(column, lower=lower)
        codes = np.asarray(cleaned.codes)
        expected = np.asarray(cleaned.categories, dtype=object)[codes].tolist()
        expected = [None if code < 0 else e for code, e in zip(codes, expected, strict=True)]
        mine = _lowered(texts) if lower else [t.strip() or None for t in texts]
        assert mine == expected


def test_exact_numbers_match_pandas() -> None:
    rng = random.Random(0)
    texts = []
    for _ in range(20_000):
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 10)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 10)))
        text = (
            rng.choice(["", "-", "+"])
            + whole
            + (("." + frac) if frac or rng.random() < 0.3 else "")
        )
        if rng.random() < 0.3:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 30))
        texts.append(text)
    texts += [repr(rng.uniform(-1e6, 1e6)) for _ in range(2000)]
    texts += [repr(rng.random() * 10.0 ** rng.randint(-30, 30)) for _ in range(2000)]
    parsed = _parse_numeric(pd.Series(texts, dtype=object))
    fast = 0
    for text, value, bad in zip(texts, parsed.values, parsed.bad, strict=True):
        try:
            mine = _exact_number(text)
        except _Unsure:
            continue
        fast += 1
        assert not bad and (mine, np.signbit(mine)) == (value, np.signbit(value)), text
    assert fast > 10_000


def test_json_floats_are_read_back_as_pandas_does() -> None:
    """pandas turns a float of an object column into its str() and parses that back."""
    rng = random.Random(2)
    floats = [round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)) for _ in range(5000)]
    floats += [rng.random() * 10.0 ** rng.randint(-25, 25) for _ in range(5000)]
    for column in (floats, [*floats, "text"]):  # float64 categories, then object ones
        parsed = _parse_numeric(pd.Series(column, dtype=object))
        answered = 0
        for v, value in zip(floats, parsed.values, strict=False):
            try:
                mine = _value(v)
            except _Unsure:
                continue
            answered += 1
            assert (mine, np.signbit(mine)) == (value, np.signbit(value)), v
        assert answered > 5_000


def test_iso_stamps_match_pandas() -> None:
    rng = random.Random(1)
    stamps = []
    for _ in range(20_000):
        year = rng.choice([rng.randint(1678, 2261)] * 4 + [1677, 2262, rng.randint(0, 9999)])
        text = f"{year:04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
        if rng.random() < 0.9:
            text += rng.choice("T ") + f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}"
            if rng.random() < 0.8:
                text += f":{rng.randint(0, 60):02d}"
                if rng.random() < 0.5:
                    text += "." + str(rng.randint(0, 10**9 - 1)).zfill(9)[: rng.randint(1, 9)]
            text += rng.choice(
                ["", "Z", f"+{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}",
                 f"-{rng.randint(0, 24):02d}{rng.randint(0, 60):02d}"]
            )  # fmt: skip
        stamps.append(text)
    expected = _parse_timestamps(pd.Series(stamps, dtype=object), None)
    ok = ~expected.unparseable & ~expected.out_of_range
    answered = 0
    for i, stamp in enumerate(stamps):
        mine = parse_iso_ns([stamp])
        if mine is not None:
            answered += 1
            assert ok[i] and mine[0] == expected.values[i].astype(np.int64), stamp
        else:  # declined: outside the grammar, invalid, or near the ends of the ns range
            assert not ok[i] or stamp[:4] in ("1677", "2262"), stamp
    assert answered > 5_000
    # All at once (many shapes): the same values.
    keep = ok & np.array([s[:4] not in ("1677", "2262") for s in stamps])
    good = [s for s, k in zip(stamps, keep, strict=True) if k]
    values = expected.values[keep].astype(np.int64)
    got = parse_iso_ns(good)
    assert got is not None and got.tolist() == values.tolist()
    assert len(SHAPES) == 133
    assert parse_iso_ns(["2024-03-05T12:00:00\n2024"]) is None


# ---------------------------------------------------------------------------- over HTTP
def test_inline_errors_over_http(tmp_path: Path) -> None:
    """The 422s of bad inline rows: the row's position, pandas' words, ``event_invalid``;
    in a batch, under the request's position; another customer's row, as before."""
    settings = ServingSettings(
        model=save_tiny_bundle(tmp_path / "model", "test-1"),
        store_path=tmp_path / "store.db",
        decision_log_path=tmp_path / "decisions.db",
        seed=7,
    )
    good = _row(event_type="sent", action="email_promo", propensity=0.5)
    bad = _row(channel=" ", propensity="1.5")
    with TestClient(create_app(settings)) as client:
        post = lambda path, body: client.post(path, json=body)  # noqa: E731
        one = {"customer_id": CID, "as_of": SERVE_AS_OF, "events": [good, good]}
        ok = post("/v1/recommendations", one)
        assert ok.status_code == 200, ok.text
        r = post("/v1/recommendations", {**one, "events": [good, bad]})
        assert r.status_code == 422
        assert r.json()["detail"] == [
            {
                "loc": ["body", "events", 1],
                "msg": "missing channel; propensity must be in (0, 1], got '1.5'",
                "type": "event_invalid",
            }
        ]
        r = post("/v1/recommendations:batch", {"requests": [{**one, "events": [bad]}]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "requests", 0, "events", 0]
        r = post("/v1/recommendations", {**one, "events": [good, _row(customer_id="c9")]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "events", 1, "customer_id"]
