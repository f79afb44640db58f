"""Conversion and churn labels, and right-censoring, on hand-built histories."""

from __future__ import annotations

import pandas as pd

from tests.conftest import make_events
from training.labels import LabelWindows, label_decisions

W = LabelWindows(conversion_days=14, churn_days=30, inactivity_days=30)


def _decisions(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "decision_time": pd.to_datetime([r[1] for r in rows], utc=True),
        }
    )


def _log(*extra: tuple) -> pd.DataFrame:
    # A far-away customer keeps the data running to 2026-12-31 so nothing is censored.
    return make_events([("zz", "2026-12-31", "web", "visit"), *extra])


def test_conversion_within_horizon_only_and_strictly_after() -> None:
    events = _log(
        ("a", "2026-01-01 10:00", "email", "sent", "email_promo"),
        ("a", "2026-01-10", "web", "purchase", None, 20.0),
        ("b", "2026-01-01 10:00", "email", "sent", "email_promo"),
        ("b", "2026-01-16", "web", "purchase", None, 20.0),  # day 15: too late
        ("c", "2026-01-01 10:00", "web", "purchase", None, 20.0),  # at t: not after
    )
    dec = _decisions(
        ("a", "2026-01-01 10:00"), ("b", "2026-01-01 10:00"), ("c", "2026-01-01 10:00")
    )
    labels = label_decisions(events, dec, W)
    assert labels["conversion"].tolist() == [1, 0, 0]


def test_explicit_churn_and_inactivity() -> None:
    visits = [("a", f"2026-02-{d:02d}", "web", "visit") for d in range(1, 28, 5)]
    events = _log(
        *visits,
        *[("a", f"2026-03-{d:02d}", "web", "visit") for d in range(1, 30, 5)],
        *[("a", f"2026-04-{d:02d}", "web", "visit") for d in range(1, 30, 5)],
        ("b", "2026-02-01", "web", "visit"),
        ("b", "2026-02-20", "web", "churn"),
        ("c", "2026-02-01", "web", "visit"),  # then silent: inactivity
        ("d", "2026-02-01", "web", "visit"),
        ("d", "2026-04-15", "web", "visit"),  # silent for 70 days, gap starts at day 0
    )
    dec = _decisions(
        ("a", "2026-02-02"), ("b", "2026-02-02"), ("c", "2026-02-02"), ("d", "2026-02-02")
    )
    labels = label_decisions(events, dec, W)
    assert labels["churn"].tolist() == [0, 1, 1, 1]


def test_inactivity_gap_starting_inside_horizon_counts() -> None:
    # Active until day 25 after the decision, then silent for 40 days: the gap starts
    # inside the 30-day horizon.
    rows = [("a", f"2026-02-{d:02d}", "web", "visit") for d in range(2, 27, 4)]
    rows.append(("a", "2026-04-10", "web", "visit"))
    labels = label_decisions(_log(*rows), _decisions(("a", "2026-02-01")), W)
    assert labels["churn"].tolist() == [1]
    # The same gap starting after the horizon does not count.
    late = [("a", f"2026-02-{d:02d}", "web", "visit") for d in range(2, 28, 4)]
    late += [("a", f"2026-03-{d:02d}", "web", "visit") for d in range(1, 10, 4)]
    late.append(("a", "2026-05-01", "web", "visit"))
    labels = label_decisions(_log(*late), _decisions(("a", "2026-02-01")), W)
    assert labels["churn"].tolist() == [0]


def test_right_censoring_by_lookahead() -> None:
    events = make_events([("a", "2026-01-01", "web", "visit"), ("a", "2026-04-01", "web", "visit")])
    dec = _decisions(("a", "2026-01-15"), ("a", "2026-02-15"))
    labels = label_decisions(events, dec, W)
    # End of data is 2026-04-01; lookahead is 60 days.
    assert labels["censored"].tolist() == [False, True]
    assert W.lookahead_days == 60


def test_labels_ignore_other_customers() -> None:
    events = _log(
        ("a", "2026-01-01", "web", "visit"),
        ("b", "2026-01-05", "web", "purchase", None, 5.0),
    )
    labels = label_decisions(events, _decisions(("a", "2026-01-02")), W)
    assert labels["conversion"].tolist() == [0]
