"""Contact rules: each rule suppresses what it should, in order, and nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import load_catalog
from serving.contact_policy import (
    RULES,
    ContactState,
    in_quiet_hours,
    suppression_codes,
)

POLICY = load_catalog(None).contact_policy


def _state(**overrides: np.ndarray) -> ContactState:
    base = {
        "consent": np.array([[True, True]]),
        "unsubscribed": np.array([[False, False]]),
        "sends_in_window": np.array([[0, 0]]),
        "hours_since_send": np.array([[np.inf, np.inf]]),
        "total_in_window": np.array([0]),
    }
    base.update(overrides)
    return ContactState(channels=("email", "sms"), **base)


def _codes(state: ContactState, quiet: bool = False) -> list[str]:
    codes = suppression_codes(state, [None, "email", "sms"], POLICY, np.array([quiet]))[0]
    return ["ok" if c == 0 else RULES[c - 1] for c in codes]


def test_each_rule() -> None:
    assert _codes(_state()) == ["ok", "ok", "ok"]
    assert _codes(_state(consent=np.array([[True, False]]))) == ["ok", "ok", "consent"]
    assert _codes(_state(unsubscribed=np.array([[True, False]]))) == ["ok", "unsubscribed", "ok"]
    assert _codes(_state(hours_since_send=np.array([[3.0, 100.0]]))) == ["ok", "cooldown", "ok"]
    capped = _state(sends_in_window=np.array([[POLICY.max_per_channel, 0]]))
    assert _codes(capped) == ["ok", "channel_cap", "ok"]
    full = _state(total_in_window=np.array([POLICY.max_total]))
    assert _codes(full) == ["ok", "total_cap", "total_cap"]
    # sms is a quiet-hours channel in the default catalog, email is not.
    assert _codes(_state(), quiet=True) == ["ok", "ok", "quiet_hours"]


def test_first_failing_rule_names_the_suppression() -> None:
    state = _state(
        consent=np.array([[False, True]]),
        unsubscribed=np.array([[True, True]]),
    )
    assert _codes(state) == ["ok", "consent", "unsubscribed"]


def test_quiet_hours_wrap_past_midnight() -> None:
    times = pd.Series(
        pd.to_datetime(
            ["2026-01-01 22:00", "2026-01-01 07:59", "2026-01-01 08:00", "2026-01-01 20:59"],
            utc=True,
        )
    )
    assert in_quiet_hours(POLICY, times).tolist() == [True, True, False, False]


def test_single_timestamp_path_agrees_with_the_series_path() -> None:
    times = pd.date_range("2026-01-01", periods=48, freq="30min", tz="UTC")
    series = in_quiet_hours(POLICY, pd.Series(times))
    scalar = np.array([in_quiet_hours(POLICY, t)[0] for t in times])
    assert np.array_equal(series, scalar)
    naive = in_quiet_hours(POLICY, pd.Timestamp("2026-01-01 23:00"))
    assert naive.tolist() == [True]
