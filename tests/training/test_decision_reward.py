"""The decision export's business reward: the churn label and the catalog's values."""

from __future__ import annotations

import math

import pandas as pd

from features.catalog import load_catalog
from serving.decision_rewards import join_rewards
from tests.conftest import make_events
from training.decision_reward import BUSINESS_REWARD_COLUMNS, with_business_reward


def _decisions(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """What ``DecisionLog.frame()`` gives: ``(decision_id, customer_id, time, action)``."""
    return pd.DataFrame(
        {
            "decision_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "decision_time": pd.to_datetime([r[2] for r in rows], utc=True),
            "action": [r[3] for r in rows],
            "propensity": 0.5,
            "model_version": "v1",
        }
    )


def test_reward_is_the_catalog_objective_of_the_outcomes() -> None:
    catalog = load_catalog(None)
    weekly = [
        ("c2", f"2024-{m:02d}-{d:02d} 09:00", "web", "visit")
        for m in (3, 4, 5, 6)
        for d in (2, 9, 16, 23)
    ]
    events = make_events(
        [
            ("c1", "2024-03-03 10:00", "web", "purchase", None, 25.0),  # then silent: churns
            *weekly,  # c2 keeps visiting: no churn
            ("c9", "2024-06-30 12:00", "web", "visit"),  # the data run to the end of June
        ]
    )
    decisions = _decisions(
        [
            ("d1", "c1", "2024-03-01 12:00", "email_promo"),
            ("d2", "c2", "2024-03-01 12:00", "none"),
            ("d3", "c2", "2024-03-01 12:00", "retired_offer"),  # not in this catalog
            ("d4", "c1", "2024-06-20 12:00", "email_promo"),  # windows past the data's end
        ]
    )
    table = with_business_reward(join_rewards(decisions, events), events, catalog)
    assert tuple(table.columns[-4:]) == BUSINESS_REWARD_COLUMNS
    assert table["converted"].tolist() == [True, False, False, False]
    assert table["churned"].tolist()[:3] == [True, False, False]
    assert table["censored"].tolist() == [False, False, False, True]
    cost = {a.id: a.cost for a in catalog.actions}["email_promo"]
    objective = catalog.objective
    assert table["action_cost"].iloc[0] == cost and table["action_cost"].iloc[1] == 0.0
    assert math.isnan(table["action_cost"].iloc[2])
    assert table["reward"].iloc[0] == objective.conversion_value - objective.churn_cost - cost
    assert table["reward"].iloc[1] == 0.0
    assert math.isnan(table["reward"].iloc[2]) and math.isnan(table["reward"].iloc[3])


def test_no_events_means_nothing_is_known_yet() -> None:
    decisions = _decisions([("d1", "c1", "2024-03-01 12:00", "none")])
    empty = make_events([])
    table = with_business_reward(join_rewards(decisions, empty), empty, load_catalog(None))
    assert table["censored"].tolist() == [True] and math.isnan(table["reward"].iloc[0])
