"""The business reward of served decisions: the decision export made ready for OPE.

``touchpoint decisions`` joins the events to the decision log (``serving.decision_rewards``:
``executed``, ``converted``, ...).  Serving cannot go further, because the churn label is
training's (``training.labels``), and the serving package never imports training.  This
module adds the remaining columns. The reward is then exactly what the policy ranks by
and what offline evaluation scores (computed by ``training.evaluation.rewards``):

    reward = conversion_value · converted − churn_cost · churned − cost(action)

with the values of the catalog.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.schema import NO_ACTION
from serving.policy import action_costs
from training.evaluation import rewards
from training.labels import LabelWindows, label_decisions

__all__ = ["BUSINESS_REWARD_COLUMNS", "with_business_reward"]

#: The columns :func:`with_business_reward` adds, in order.
BUSINESS_REWARD_COLUMNS = ("churned", "censored", "action_cost", "reward")


def with_business_reward(
    table: pd.DataFrame, events: pd.DataFrame, catalog: Catalog
) -> pd.DataFrame:
    """``table`` (a decision export with ``converted``) plus :data:`BUSINESS_REWARD_COLUMNS`.

    - ``churned``: the training churn label at the decision time, under the catalog's
      horizons: an explicit ``churn`` event, or the start of a long enough gap without
      inbound activity.
    - ``censored``: the label windows run past the last event. ``converted`` and
      ``churned`` may still change, so the row has no reward yet.
    - ``action_cost``: the catalog's cost of the chosen action. It is 0 for ``none``, and
      NaN for an action this catalog does not hold.
    - ``reward``: the formula of the module docstring. It is NaN when censored or when the
      cost is unknown.
    """
    out = table.copy()
    n = len(out)
    churned = np.zeros(n, dtype=bool)
    censored = np.ones(n, dtype=bool)  # no events: nothing is known yet
    if n and len(events):
        labels = label_decisions(
            events, out[["customer_id", "decision_time"]], LabelWindows.from_catalog(catalog)
        )
        churned = labels["churn"].to_numpy().astype(bool)
        censored = labels["censored"].to_numpy()
    actions = (NO_ACTION, *catalog.action_ids)
    # the catalog's costs by action code, and NaN in one more slot for unknown actions
    costs = np.append(action_costs(catalog, actions), np.nan)
    code_of = {action: code for code, action in enumerate(actions)}
    codes = out["action"].astype(str).map(code_of).fillna(len(actions)).to_numpy(dtype=np.int64)
    action_cost = costs[codes]
    reward = rewards(
        out["converted"].to_numpy(dtype=np.float64),
        churned.astype(np.float64),
        codes,
        costs,
        conversion_value=catalog.objective.conversion_value,
        churn_cost=catalog.objective.churn_cost,
    )
    out["churned"] = churned
    out["censored"] = censored
    out["action_cost"] = action_cost
    out["reward"] = np.where(censored, np.nan, reward)
    return out
