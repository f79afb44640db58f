"""Point-in-time correctness: nothing at or after a decision time leaks into its features."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import schema
from features.pipeline import compute_features
from features.reference import reference_features
from features.spec import FeatureSpec
from features.stages import StageRules

CHANNELS = ("email", "sms", "web")
SPEC = FeatureSpec(
    channels=("email", "sms"),
    windows_days=(1, 7),
    sequence_length=4,
    token_vocabulary=("email:open", "email:sent", "sms:sent", "web:purchase", "web:visit"),
    consent_channels=("sms",),
    stage_rules=StageRules(recent_purchase_days=2, advocacy_days=5, loyalty_days=8,
                           loyalty_min_purchases=2),
)  # fmt: skip
BASE = pd.Timestamp("2024-03-01", tz="UTC").value
SECOND = 10**9
# Times on a coarse grid (many exact ties) plus sub-second offsets (ties broken by ns).
GRID = st.integers(0, 10 * 24 * 3600 // 7200).map(lambda k: k * 7200 * SECOND)
JITTER = st.sampled_from([0, 0, 1, 999, 500_000_000])

event = st.tuples(
    st.sampled_from(["a", "b"]),
    st.builds(lambda g, j: BASE + g + j, GRID, JITTER),
    st.sampled_from(CHANNELS),
    st.sampled_from(schema.EVENT_TYPE_ORDER),
    st.sampled_from([np.nan, 10.0, 25.5]),
)
events_st = st.lists(event, min_size=0, max_size=25)


def frame(rows: list[tuple[str, int, str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "ts", "channel", "event_type", "value"])
    out = pd.DataFrame(
        {
            "customer_id": pd.Categorical(df["customer_id"], categories=["a", "b"]),
            "timestamp": pd.to_datetime(df["ts"].astype("int64"), unit="ns", utc=True),
            "channel": pd.Categorical(df["channel"], categories=list(CHANNELS)),
            "event_type": pd.Categorical(
                df["event_type"], categories=list(schema.EVENT_TYPE_ORDER)
            ),
            "action": pd.Categorical([None] * len(df), categories=["x"]),
            "value": df["value"].astype("float64"),
            "propensity": np.nan,
            "event_id": None,
            "decision_id": None,
        }
    )
    return out.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def features_at(rows: list[tuple[str, int, str, str, float]], t: int) -> np.ndarray:
    decisions = pd.DataFrame(
        {"customer_id": ["a"], "decision_time": pd.to_datetime([t], unit="ns", utc=True)}
    )
    out = compute_features(frame(rows), decisions, None, spec=SPEC)
    return out[list(SPEC.feature_names)].to_numpy()


@st.composite
def log_and_time(draw: st.DrawFn) -> tuple[list[tuple[str, int, str, str, float]], int]:
    rows = draw(events_st)
    own = [r[1] for r in rows if r[0] == "a"]
    if own and draw(st.booleans()):
        t = draw(st.sampled_from(own))  # exactly at an event time
    else:
        t = BASE + draw(GRID) + draw(JITTER)
    return rows, t


SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(log_and_time(), st.lists(event, min_size=1, max_size=6), st.data())
def test_future_events_never_change_features(
    lt: tuple[list[tuple[str, int, str, str, float]], int],
    extra: list[tuple[str, int, str, str, float]],
    data: st.DataObject,
) -> None:
    rows, t = lt
    before = features_at(rows, t)
    # Added at or after t (including exactly at t), for the decision's customer.
    shift = data.draw(st.lists(st.sampled_from([0, 0, 1, 3600 * SECOND]), min_size=len(extra),
                               max_size=len(extra)))  # fmt: skip
    added = [("a", t + s, c, e, v) for (_, _, c, e, v), s in zip(extra, shift, strict=True)]
    np.testing.assert_array_equal(features_at(rows + added, t), before)
    # Removed: everything of the customer at or after t.
    kept = [r for r in rows if not (r[0] == "a" and r[1] >= t)]
    np.testing.assert_array_equal(features_at(kept, t), before)
    # Changed: type, channel and value of every event at or after t.
    changed = [
        (c, ts, "sms", "purchase", 99.0) if c == "a" and ts >= t else (c, ts, ch, e, v)
        for c, ts, ch, e, v in rows
    ]
    np.testing.assert_array_equal(features_at(changed, t), before)


@SETTINGS
@given(log_and_time())
def test_other_customers_never_change_features(
    lt: tuple[list[tuple[str, int, str, str, float]], int],
) -> None:
    rows, t = lt
    own = [r for r in rows if r[0] == "a"]
    np.testing.assert_array_equal(features_at(rows, t), features_at(own, t))


@settings(derandomize=True, max_examples=40, deadline=None)
@given(events_st, st.lists(st.builds(lambda g, j: BASE + g + j, GRID, JITTER), min_size=1,
                           max_size=4))  # fmt: skip
def test_matches_reference_with_ties(
    rows: list[tuple[str, int, str, str, float]], times: list[int]
) -> None:
    own = [r[1] for r in rows]
    stamps = times + own[:4]  # also exactly at event times
    decisions = pd.DataFrame(
        {
            "customer_id": ["a", "b"] * len(stamps),
            "decision_time": pd.to_datetime(np.repeat(stamps, 2), unit="ns", utc=True),
        }
    )
    log = frame(rows)
    got = compute_features(log, decisions, None, spec=SPEC)[list(SPEC.feature_names)]
    want = reference_features(log, decisions, None, SPEC)
    np.testing.assert_allclose(got.to_numpy(np.float64), want.to_numpy(), rtol=2e-6, atol=1e-4)


def test_event_exactly_at_decision_time_is_excluded() -> None:
    t = BASE + 3600 * SECOND
    rows = [("a", BASE, "email", "sent", np.nan)]
    base = features_at(rows, t)
    at_t = features_at([*rows, ("a", t, "web", "purchase", 10.0)], t)
    np.testing.assert_array_equal(at_t, base)
    just_before = features_at([*rows, ("a", t - 1, "web", "purchase", 10.0)], t)
    col = list(SPEC.feature_names).index("n_purchase_total")
    assert just_before[0, col] == 1 and base[0, col] == 0
