"""Outcomes joined to logged decisions (serving.decision_rewards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.decision_log import OPE_COLUMNS, DecisionLog, DecisionRecord
from serving.decision_rewards import REWARD_COLUMNS, join_rewards
from tests.conftest import make_events


def _decisions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "decision_id": ["d1", "d2", "d3"],
            "customer_id": ["c1", "c1", "c2"],
            "decision_time": pd.to_datetime(
                ["2024-03-01 12:00", "2024-03-20 12:00", "2024-03-01 12:00"], utc=True
            ),
            "action": ["email_promo", "none", "sms_offer"],
            "propensity": [0.9, 0.05, 0.9],
            "model_version": ["v1"] * 3,
        }
    )


def _events() -> pd.DataFrame:
    events = make_events(
        [
            ("c1", "2024-03-01 11:00", "web", "purchase", None, 99.0),  # before d1: not counted
            ("c1", "2024-03-01 13:00", "email", "sent", "email_promo"),  # executes d1
            ("c1", "2024-03-05 10:00", "web", "purchase", None, 40.0),  # in d1's window
            ("c1", "2024-03-15 12:00:01", "web", "purchase", None, 7.0),  # just past 14 days
            ("c2", "2024-03-02 09:00", "sms", "sent", "sms_offer"),  # not linked: no id
            ("c2", "2024-04-20 09:00", "web", "purchase", None, 15.0),  # linked, late
        ]
    )
    events["decision_id"] = [None, "d1", None, None, None, "d3"]
    return events


def test_rewards_follow_links_and_the_conversion_window() -> None:
    out = join_rewards(_decisions(), _events(), conversion_days=14)
    assert list(out.columns) == [*OPE_COLUMNS, *REWARD_COLUMNS]
    got = out.set_index("decision_id")
    assert got.loc["d1", "executed"] and got.loc["d1", "outcome_events"] == 1
    assert not out["executed_other_action"].any()
    assert got.loc["d1", "converted"] and got.loc["d1", "conversion_value"] == pytest.approx(40.0)
    # d2 (none, 20 March): no purchase in its window and nothing linked to it.
    assert not got.loc["d2", "converted"] and got.loc["d2", "conversion_value"] == 0.0
    # d3: the send carries no id (not executed as far as we know), but a purchase names it.
    assert not got.loc["d3", "executed"] and got.loc["d3", "outcome_events"] == 1
    assert got.loc["d3", "converted"] and got.loc["d3", "conversion_value"] == pytest.approx(15.0)


def test_a_send_of_another_action_does_not_execute_the_decision() -> None:
    """The CRM overrode d1 (email_promo) with an sms, and sent something for d2 (none):
    neither is the decision executed, so neither is bandit feedback for its action."""
    events = make_events(
        [
            ("c1", "2024-03-01 13:00", "sms", "sent", "sms_offer"),
            ("c1", "2024-03-20 13:00", "email", "sent", "email_promo"),
            ("c2", "2024-03-01 13:00", "sms", "sent", "sms_offer"),
        ]
    )
    events["decision_id"] = ["d1", "d2", "d3"]
    got = join_rewards(_decisions(), events).set_index("decision_id")
    assert got["executed"].to_dict() == {"d1": False, "d2": False, "d3": True}
    assert got["executed_other_action"].to_dict() == {"d1": True, "d2": True, "d3": False}
    assert (got["outcome_events"] == 1).all()


def test_a_purchase_linked_and_in_the_window_counts_once() -> None:
    events = _events()
    events.loc[events["value"] == 40.0, "decision_id"] = "d1"
    got = join_rewards(_decisions(), events).set_index("decision_id")
    assert got.loc["d1", "conversion_value"] == pytest.approx(40.0)
    assert got.loc["d1", "outcome_events"] == 2


def test_no_events_and_bad_window() -> None:
    out = join_rewards(_decisions(), _events().iloc[:0])
    assert not out["converted"].any() and (out["outcome_events"] == 0).all()
    with pytest.raises(ValueError, match="conversion_days"):
        join_rewards(_decisions(), _events(), conversion_days=0)


def test_export_parquet_with_rewards(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.db")
    try:
        decisions = _decisions()
        log.append(
            [
                DecisionRecord(
                    decision_id=str(r.decision_id),
                    decision_time=r.decision_time,
                    customer_id=str(r.customer_id),
                    model_version="v1",
                    action=str(r.action),
                    propensity=float(r.propensity),
                    candidates=[],
                    suppressed=[],
                )
                for r in decisions.itertuples()
            ]
        )
        path = log.export_parquet(tmp_path / "ope.parquet", _events())
    finally:
        log.close()
    table = pd.read_parquet(path)
    assert len(table) == 3
    np.testing.assert_array_equal(
        table.sort_values("decision_id")["converted"].to_numpy(), [True, False, True]
    )
