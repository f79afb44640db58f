"""Joining the outcome to logged decisions: the decision log becomes bandit feedback.

A decision (``serving.decision_log``) records the context, the action chosen and its exact
propensity; what happened next arrives later as ordinary events (CONTRACT §1).  Two links
tie them together:

* an event that carries the decision's ``decision_id``: the CRM's ``sent`` when it
  executed the recommendation, or any outcome it attributes to it;
* the customer's own purchases in the conversion window after the decision time,
  ``(decision_time, decision_time + conversion_days]``, which is how the models' labels
  are defined (``training.labels``) and so what the policy's value is measured in.

The result has one row per decision and adds ``executed`` (a ``sent`` of the chosen
action carries the decision id), ``executed_other_action`` (a ``sent`` carrying the id
executed another action: the CRM overrode the decision, so the logged propensity does not
describe what was done and the row is not bandit feedback for the chosen action),
``outcome_events`` (events carrying it), ``converted`` (a purchase carries it or falls in
the window) and ``conversion_value`` (the sum of those purchases' values).
Features are not copied into the log: they are recomputed exactly, point in time, from
``customer_id`` and ``decision_time`` with the feature pipeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.counters import NS_PER_DAY, to_ns

__all__ = ["REWARD_COLUMNS", "join_rewards"]

REWARD_COLUMNS = (
    "executed",
    "executed_other_action",
    "outcome_events",
    "converted",
    "conversion_value",
)


def join_rewards(
    decisions: pd.DataFrame, events: pd.DataFrame, *, conversion_days: int = 14
) -> pd.DataFrame:
    """``decisions`` (``DecisionLog.frame()``) plus :data:`REWARD_COLUMNS`.

    ``events`` is a canonical event table (``features.ingest``); only events after each
    decision count, so joining early (before the window has passed) under-counts and the
    caller should wait ``conversion_days`` after the last decision it exports.
    """
    if conversion_days <= 0:
        raise ValueError(f"conversion_days must be positive, got {conversion_days}")
    out = decisions.copy()
    n = len(out)
    executed = np.zeros(n, dtype=bool)
    other_action = np.zeros(n, dtype=bool)
    outcome_events = np.zeros(n, dtype=np.int64)
    converted = np.zeros(n, dtype=bool)
    conversion_value = np.zeros(n, dtype=np.float64)
    if n == 0 or len(events) == 0:
        return _with_rewards(
            out, executed, other_action, outcome_events, converted, conversion_value
        )
    row_of = pd.Series(np.arange(n), index=out["decision_id"].astype(str).to_numpy())
    decision_ns = to_ns(out["decision_time"])

    # 1. Events that name the decision.
    linked = events[events["decision_id"].notna()]
    if len(linked):
        ids = linked["decision_id"].astype(str).to_numpy()
        rows = row_of.reindex(ids).to_numpy()
        known = ~np.isnan(rows)
        rows = rows[known].astype(np.int64)
        etype = linked["event_type"].astype(str).to_numpy()[known]
        np.add.at(outcome_events, rows, 1)
        sent = etype == "sent"
        # A send of no action (None) or of another action than the chosen one is not the
        # decision executed.
        sent_action = linked["action"].astype(object).to_numpy()[known][sent]
        chosen = out["action"].astype(str).to_numpy()[rows[sent]]
        same = np.array([a == c for a, c in zip(sent_action, chosen, strict=True)], dtype=bool)
        executed[rows[sent][same]] = True
        other_action[rows[sent][~same]] = True
        bought = rows[etype == "purchase"]
        value = linked["value"].to_numpy(dtype=np.float64, na_value=np.nan)[known]
        linked_purchase = pd.DataFrame(
            {"row": bought, "event_id": _event_keys(linked)[known][etype == "purchase"],
             "value": value[etype == "purchase"]}
        )  # fmt: skip
    else:
        linked_purchase = pd.DataFrame({"row": [], "event_id": [], "value": []})

    # 2. The customer's purchases in the window after the decision.
    purchases = events[events["event_type"].astype(str) == "purchase"]
    in_window = pd.DataFrame({"row": [], "event_id": [], "value": []})
    if len(purchases):
        p = pd.DataFrame(
            {
                "customer_id": purchases["customer_id"].astype(str).to_numpy(),
                "ts": to_ns(purchases["timestamp"]),
                "event_id": _event_keys(purchases),
                "value": purchases["value"].to_numpy(dtype=np.float64, na_value=np.nan),
            }
        )
        d = pd.DataFrame(
            {
                "row": np.arange(n),
                "customer_id": out["customer_id"].astype(str).to_numpy(),
                "t0": decision_ns,
            }
        )
        pairs = d.merge(p, on="customer_id", how="inner")
        horizon = pairs["t0"] + conversion_days * NS_PER_DAY
        window = (pairs["ts"] > pairs["t0"]) & (pairs["ts"] <= horizon)
        in_window = pairs.loc[window, ["row", "event_id", "value"]]

    # A purchase both linked and in the window counts once.
    both = pd.concat([linked_purchase, in_window], ignore_index=True).drop_duplicates(
        ["row", "event_id"]
    )
    if len(both):
        rows = both["row"].to_numpy(dtype=np.int64)
        converted[rows] = True
        np.add.at(conversion_value, rows, np.nan_to_num(both["value"].to_numpy(np.float64)))
    return _with_rewards(out, executed, other_action, outcome_events, converted, conversion_value)


def _with_rewards(out: pd.DataFrame, *columns: np.ndarray) -> pd.DataFrame:
    """``out`` with :data:`REWARD_COLUMNS`, given in that order."""
    for name, values in zip(REWARD_COLUMNS, columns, strict=True):
        out[name] = values
    return out


def _event_keys(events: pd.DataFrame) -> np.ndarray:
    """An identity per event row: its ``event_id``, else its position in ``events``."""
    ids = events["event_id"].astype(object).to_numpy()
    positions = np.asarray([f"#{i}" for i in events.index], dtype=object)
    missing = pd.isna(ids)
    return np.where(missing, positions, ids.astype(str)).astype(object)
