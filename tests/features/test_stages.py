"""Journey-stage rules on hand-built histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.stages import StageRules, assign_stages, stage_at

AS_OF = pd.Timestamp("2024-12-31", tz="UTC")


def history(*events: tuple[float, str, str], customer: str = "c") -> pd.DataFrame:
    """Events as (days before AS_OF, channel, event_type)."""
    rows = [
        (customer, AS_OF - pd.Timedelta(days=d), ch, typ, 10.0 if typ == "purchase" else np.nan)
        for d, ch, typ in events
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "channel", "event_type", "value"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.as_unit("ns")
    for col in ("customer_id", "channel", "event_type"):
        df[col] = df[col].astype("category")
    df["action"] = pd.Categorical([None] * len(df), categories=["x"])
    for col in ("propensity",):
        df[col] = np.nan
    df["event_id"] = None
    df["decision_id"] = None
    df = df[list(schema.EVENT_COLUMNS)]
    return df.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def stage(events: pd.DataFrame, rules: StageRules | None = None, at: pd.Timestamp = AS_OF) -> str:
    out = stage_at(events, at, rules)
    assert len(out) == 1
    return str(out["stage"].iloc[0])


def test_awareness_only_outbound_and_opens() -> None:
    assert stage(history((10, "email", "sent"), (9, "email", "open"))) == "awareness"


def test_pre_awareness_before_first_event() -> None:
    events = history((10, "email", "sent"))
    assert stage(events, at=AS_OF - pd.Timedelta(days=20)) == "pre-awareness"
    # The first event itself is not visible at its own timestamp.
    assert stage(events, at=AS_OF - pd.Timedelta(days=10)) == "pre-awareness"


@pytest.mark.parametrize("typ", ["visit", "click", "support"])
def test_consideration(typ: str) -> None:
    assert stage(history((10, "email", "sent"), (5, "web", typ))) == "consideration"


def test_purchase_then_usage() -> None:
    events = history((40, "web", "visit"), (20, "web", "purchase"))
    assert stage(events) == "purchase"
    assert stage(events, at=AS_OF + pd.Timedelta(days=15)) == "usage"


def test_advocacy_needs_a_purchase_and_a_recent_review() -> None:
    assert stage(history((100, "web", "purchase"), (10, "review", "review"))) == "advocacy"
    assert stage(history((100, "web", "visit"), (10, "review", "review"))) == "consideration"
    old = history((300, "web", "purchase"), (200, "review", "referral"))
    assert stage(old) == "usage"


def test_loyalty_three_purchases_in_a_year() -> None:
    events = history((300, "web", "purchase"), (200, "store", "purchase"), (100, "app", "purchase"))
    assert stage(events) == "loyalty"
    spread = history((500, "web", "purchase"), (200, "web", "purchase"), (100, "web", "purchase"))
    assert stage(spread) == "usage"


def test_thresholds_are_configurable() -> None:
    two = history((100, "web", "purchase"), (50, "web", "purchase"))
    assert stage(two) == "usage"
    assert stage(two, StageRules(loyalty_min_purchases=2)) == "loyalty"
    recent = history((20, "web", "purchase"))
    assert stage(recent, StageRules(recent_purchase_days=10)) == "usage"
    review = history((100, "web", "purchase"), (10, "review", "review"))
    assert stage(review, StageRules(advocacy_days=5)) == "usage"
    assert stage(review, StageRules(advocacy_min_purchases=2)) == "usage"
    support = history((5, "chat", "support"))
    assert stage(support, StageRules(consideration_types=("visit",))) == "awareness"


def test_stage_at_many_customers_and_times() -> None:
    events = pd.concat(
        [
            history((10, "email", "sent"), customer="a"),
            history((5, "web", "purchase"), customer="b"),
        ]
    )
    for col in ("customer_id", "channel", "event_type"):
        events[col] = events[col].astype(str).astype("category")
    times = [AS_OF - pd.Timedelta(days=7), AS_OF]
    out = stage_at(events, times)
    assert list(out.columns) == ["customer_id", "time", "stage_code", "stage"]
    got = {(r.customer_id, r.time): r.stage for r in out.itertuples()}
    assert got[("a", times[0])] == "awareness" and got[("b", times[0])] == "pre-awareness"
    assert got[("b", times[1])] == "purchase"


def test_assign_stages_vectorized() -> None:
    codes = assign_stages(
        n_events=np.array([0, 2, 3, 4, 5, 6, 9]),
        n_consideration=np.array([0, 0, 1, 1, 1, 1, 1]),
        n_purchases=np.array([0, 0, 0, 1, 1, 1, 3]),
        n_purchases_before_recent=np.array([0, 0, 0, 0, 1, 1, 0]),
        n_advocacy_recent=np.array([0, 0, 0, 0, 0, 1, 0]),
        n_purchases_loyalty=np.array([0, 0, 0, 1, 1, 1, 3]),
        rules=StageRules(),
    )
    assert [schema.STAGES[c] for c in codes] == list(schema.STAGES)


def test_from_dict() -> None:
    rules = StageRules.from_dict({"loyalty_days": 180, "advocacy_types": ["review"]})
    assert rules.loyalty_days == 180.0 and rules.advocacy_types == ("review",)
    assert StageRules.from_dict(rules.to_dict()) == rules
    assert StageRules.from_dict(None) == StageRules()
    with pytest.raises(ValueError, match="loyality_days"):
        StageRules.from_dict({"loyality_days": 10})
    with pytest.raises(ValueError, match="unknown event types"):
        StageRules.from_dict({"consideration_types": ["browse"]})
    with pytest.raises(ValueError, match="positive"):
        StageRules(loyalty_days=0)
    with pytest.raises(ValueError, match="integer"):
        StageRules(loyalty_min_purchases=0)
