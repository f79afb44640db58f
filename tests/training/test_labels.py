"""Conversion and churn labels, and right-censoring, on hand-built histories."""

from __future__ import annotations

import numpy as np
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


def test_conversion_before_send_stops_at_the_next_send() -> None:
    events = _log(
        # a: the decision is a send; its own send is not "the next send".  Buys on day 2,
        # before the next send on day 4: converted before the send.
        ("a", "2026-01-01 10:00", "email", "sent", "email_promo"),
        ("a", "2026-01-03 10:00", "web", "purchase", None, 20.0),
        ("a", "2026-01-05 10:00", "sms", "sent", "sms_offer"),
        # b: the next send (day 2) comes before the purchase (day 5): converted, but not
        # before the send.
        ("b", "2026-01-01 10:00", "email", "sent", "email_promo"),
        ("b", "2026-01-03 10:00", "sms", "sent", "sms_offer"),
        ("b", "2026-01-06 10:00", "web", "purchase", None, 20.0),
        # c: a no-send moment, no send afterwards, a purchase on day 9.
        ("c", "2026-01-10 10:00", "web", "purchase", None, 20.0),
        # d: the purchase is at the very millisecond of the next send: not before it.
        ("d", "2026-01-04 12:00", "push", "sent", "push_reminder"),
        ("d", "2026-01-04 12:00", "app", "purchase", None, 20.0),
        # e: no send, a purchase on day 15: outside the horizon for both labels.
        ("e", "2026-01-16 10:00", "web", "purchase", None, 20.0),
    )
    dec = _decisions(
        ("a", "2026-01-01 10:00"),
        ("b", "2026-01-01 10:00"),
        ("c", "2026-01-01 10:00"),
        ("d", "2026-01-01 12:00"),
        ("e", "2026-01-01 10:00"),
    )
    labels = label_decisions(events, dec, W)
    assert labels["conversion"].tolist() == [1, 1, 1, 1, 0]
    assert labels["conversion_before_send"].tolist() == [1, 0, 1, 0, 0]
    assert labels["next_send_days"].tolist() == [4.0, 2.0, float("inf"), 3.0, float("inf")]


def test_conversion_before_send_never_exceeds_conversion() -> None:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2026-01-01")
    rows: list[tuple] = []
    for cid in ("a", "b", "c"):
        for _ in range(40):
            ts = start + pd.Timedelta(hours=float(rng.uniform(0, 24 * 120)))
            if rng.random() < 0.5:
                rows.append((cid, ts, "email", "sent", "email_promo"))
            else:
                rows.append((cid, ts, "web", "purchase", None, 10.0))
    dec = _decisions(*[(c, f"2026-02-{d:02d}") for c in ("a", "b", "c") for d in range(1, 28)])
    labels = label_decisions(_log(*rows), dec, W)
    assert (labels["conversion_before_send"] <= labels["conversion"]).all()
    assert labels["conversion_before_send"].sum() > 0
    assert (labels["conversion_before_send"] < labels["conversion"]).any()
    assert (labels["next_send_days"] > 0).all()


def test_churn_before_send_needs_the_churn_to_start_before_the_next_send() -> None:
    def active(cid: str) -> list[tuple]:  # a visit every 3 days: no inactivity gap
        days = pd.date_range("2026-03-02", "2026-06-30", freq="3D")
        return [(cid, str(d.date()), "web", "visit") for d in days]

    events = _log(
        # f: explicit churn on day 4, after the next send on day 2.
        *active("f"),
        ("f", "2026-03-03 10:00", "email", "sent", "email_promo"),
        ("f", "2026-03-05 10:00", "web", "churn"),
        # g: explicit churn before the next send.
        *active("g"),
        ("g", "2026-03-02 12:00", "web", "churn"),
        ("g", "2026-03-03 10:00", "email", "sent", "email_promo"),
        # h: visits until day 9, then silent: the inactivity gap starts after the next send
        # (day 3) but inside the 30-day horizon.
        *[("h", f"2026-03-{d:02d}", "web", "visit") for d in (2, 5, 8, 10)],
        ("h", "2026-03-04 10:00", "sms", "sent", "sms_offer"),
        # i: the same silence with no send afterwards.
        *[("i", f"2026-03-{d:02d}", "web", "visit") for d in (2, 5, 8, 10)],
    )
    dec = _decisions(*[(c, "2026-03-01 10:00") for c in "fghi"])
    labels = label_decisions(events, dec, W)
    assert labels["churn"].tolist() == [1, 1, 1, 1]
    assert labels["churn_before_send"].tolist() == [0, 1, 0, 1]
