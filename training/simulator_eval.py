"""Scoring policies against the simulator's ground truth (re-exported by the simulator).

The value of giving action ``a`` to customer ``i`` is
``conversion_value * p_conversion - churn_cost * p_churn - cost(a)`` (``cost(none) = 0``),
read from the ground truth at ``as_of``.  A choice that is not eligible for the customer
(no consent, or unsubscribed from the channel) cannot be delivered: it counts as ``none``
and costs nothing.  Customers missing from ``choices`` get ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.schema import NO_ACTION

#: Observed attributes the default attribute policy groups by (tenure is banded).
DEFAULT_GROUP_BY = ("age_band", "region", "device", "loyalty_member", "tenure_band")


def expected_values(ground_truth: pd.DataFrame, catalog: dict[str, Any]) -> pd.DataFrame:
    """Wide table (customer × action, ``none`` first) of expected values; NaN = ineligible.

    Parameters
    ----------
    ground_truth
        The simulator's ground truth (long format).
    catalog
        The catalog dict (objective values and action costs).

    Returns
    -------
    pandas.DataFrame
        Index ``customer_id``, one column per action in ground-truth order.
    """
    obj = catalog.get("objective") or {}
    conv_value = float(obj.get("conversion_value", 0.0))
    churn_cost = float(obj.get("churn_cost", 0.0))
    costs = {str(a["id"]): float(a.get("cost", 0.0)) for a in catalog["actions"]}
    costs[NO_ACTION] = 0.0
    unknown = set(ground_truth["action"].astype(str)) - set(costs)
    if unknown:
        raise ValueError(f"ground truth has actions not in the catalog: {sorted(unknown)}")
    gt = ground_truth
    value = (
        conv_value * gt["p_conversion"].to_numpy()
        - churn_cost * gt["p_churn"].to_numpy()
        - gt["action"].astype(str).map(costs).to_numpy(dtype=float)
    )
    if "eligible" in gt.columns:
        value = np.where(gt["eligible"].to_numpy(dtype=bool), value, np.nan)
    actions = list(dict.fromkeys(gt["action"].astype(str)))
    wide = pd.DataFrame(
        {
            "customer_id": gt["customer_id"].astype(str),
            "action": gt["action"].astype(str),
            "v": value,
        }
    ).pivot(index="customer_id", columns="action", values="v")
    return wide[actions]


def _chosen_values(wide: pd.DataFrame, choices: pd.Series) -> np.ndarray:
    chosen = choices.astype(object).reindex(wide.index).fillna(NO_ACTION).astype(str)
    unknown = set(chosen) - set(wide.columns)
    if unknown:
        raise ValueError(f"choices contain unknown actions: {sorted(unknown)}")
    col = wide.columns.get_indexer(pd.Index(chosen.to_numpy()))
    values = wide.to_numpy()[np.arange(len(wide)), col]
    # An ineligible action is never delivered: the customer effectively gets "none".
    return np.where(np.isnan(values), wide[NO_ACTION].to_numpy(), values)


def policy_value(ground_truth: pd.DataFrame, choices: pd.Series, catalog: dict[str, Any]) -> float:
    """Mean expected value per held-out customer of the policy ``choices``.

    Parameters
    ----------
    ground_truth
        The simulator's ground truth.
    choices
        ``customer_id`` → action id (``"none"`` allowed); missing customers get ``none``.
    catalog
        The catalog dict the world was simulated with.

    Returns
    -------
    float
        ``mean(conversion_value * p_conversion - churn_cost * p_churn - cost)``.
    """
    return float(_chosen_values(expected_values(ground_truth, catalog), choices).mean())


def oracle_choices(ground_truth: pd.DataFrame, catalog: dict[str, Any]) -> pd.Series:
    """Per customer, the eligible action (or ``none``) with the highest expected value."""
    wide = expected_values(ground_truth, catalog)
    best = np.nanargmax(wide.to_numpy(), axis=1)
    return pd.Series(wide.columns.to_numpy()[best], index=wide.index, name="action")


def oracle_fraction(
    ground_truth: pd.DataFrame, choices: pd.Series, catalog: dict[str, Any]
) -> float:
    """Share of the oracle's uplift over ``none`` that ``choices`` achieves.

    ``(V(choices) - V(none)) / (V(oracle) - V(none))``: 1 for the oracle, 0 for doing
    nothing, negative for a policy worse than doing nothing.
    """
    wide = expected_values(ground_truth, catalog)
    v_none = float(wide[NO_ACTION].mean())
    v_oracle = float(np.nanmax(wide.to_numpy(), axis=1).mean())
    v_policy = float(_chosen_values(wide, choices).mean())
    if v_oracle - v_none <= 0:
        raise ValueError("the oracle has no uplift over 'none': oracle_fraction is undefined")
    return (v_policy - v_none) / (v_oracle - v_none)


def best_single_action_choices(ground_truth: pd.DataFrame, catalog: dict[str, Any]) -> pd.Series:
    """The one action (possibly ``none``) that is best when given to every customer."""
    wide = expected_values(ground_truth, catalog)
    filled = wide.apply(lambda c: c.fillna(wide[NO_ACTION]))
    best = str(filled.mean().idxmax())
    return pd.Series(best, index=wide.index, name="action")


def attribute_policy_choices(
    ground_truth: pd.DataFrame,
    customers: pd.DataFrame,
    catalog: dict[str, Any],
    by: Sequence[str] = DEFAULT_GROUP_BY,
) -> pd.Series:
    """Best action per group of observed static attributes (an in-sample upper bound).

    Within a group, actions are ranked by their mean expected value over the group's
    customers (an ineligible customer counting as ``none``); each customer gets the highest-ranked action
    they are eligible for (consent flags are observed too), or ``none`` when it ranks
    higher.  ``tenure_band`` (0–11, 12–35, 36+ months) is derived from
    ``tenure_months`` when asked for.
    """
    wide = expected_values(ground_truth, catalog)
    cust = customers.assign(customer_id=customers["customer_id"].astype(str)).set_index(
        "customer_id"
    )
    if "tenure_band" in by and "tenure_band" not in cust.columns:
        cust["tenure_band"] = pd.cut(
            cust["tenure_months"], [-1, 11, 35, np.inf], labels=["0-11", "12-35", "36+"]
        ).astype(str)
    keys = cust.loc[wide.index, list(by)]
    # Ineligible customers count as "none" in the group means: the ranking reflects what
    # the action is worth to the group as a whole, which is less noisy in small groups.
    filled = wide.apply(lambda c: c.fillna(wide[NO_ACTION]))
    group_mean = filled.groupby([keys[c] for c in by], observed=True).mean()
    index = pd.MultiIndex.from_frame(keys) if len(by) > 1 else pd.Index(keys[by[0]])
    per_customer = group_mean.reindex(index).to_numpy()
    scores = np.where(np.isnan(wide.to_numpy()), -np.inf, per_customer)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    best = scores.argmax(axis=1)
    return pd.Series(wide.columns.to_numpy()[best], index=wide.index, name="action")
