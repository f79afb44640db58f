"""The simulator's verdict: the true value of the serving policy, next to the oracle's.

For the simulator's held-out customers, the engine recommends as a batch campaign at the
end of the history (the exact ``touchpoint recommend`` code path), and the ground truth
says what each choice is really worth.  The headline is the *oracle fraction*:
``(V(policy) - V(none)) / (V(oracle) - V(none))`` — 0 is leaving everyone alone, 1 is
knowing every customer's true response.  The oracle chooses among the actions the
customer may receive (consent, unsubscribes), like the policy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.schema import CONSENT_PREFIX, NO_ACTION
from serving.batch import recommend_batch
from serving.engine import DecisionEngine
from training.simulator_eval import expected_values

#: The campaign goes out at noon UTC on the day after the history ends, outside any
#: default quiet hours; no events exist after the end, so features equal those at the end.
CAMPAIGN_HOUR = 12


def simulated_truth(
    engine: DecisionEngine,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    ground_truth: pd.DataFrame,
    catalog: Catalog,
    *,
    best_single: str,
) -> tuple[dict[str, float], pd.DataFrame]:
    """True values of the model and the baselines on the held-out customers.

    Returns the metrics (``truth.*``) and the per-customer choices with their true values.
    """
    campaign = campaign_moment(ground_truth)
    ids = list(pd.unique(ground_truth["customer_id"].astype(str)))
    batch = recommend_batch(engine, events, customers, campaign, ids=ids, top_k=1)
    wide = expected_values(ground_truth, catalog.to_dict()).reindex(ids)
    values = wide.to_numpy(dtype=np.float64)
    col = {a: j for j, a in enumerate(wide.columns)}
    none_v = values[:, col[NO_ACTION]]

    chosen = np.asarray(engine.actions, dtype=object)[batch.scored.greedy()]
    model_v = _values_of(values, col, chosen, none_v)
    eligible_v = np.where(np.isnan(values), -np.inf, values)
    oracle_v = eligible_v.max(axis=1)
    single_v = _values_of(values, col, np.full(len(ids), best_single, dtype=object), none_v)
    # Random eligible: the average over the actions the engine would allow (none included).
    allowed = batch.scored.eligible.copy()
    allowed[:, 0] = True
    engine_cols = [col[a] for a in engine.actions]
    per_action = np.where(np.isnan(values[:, engine_cols]), none_v[:, None], values[:, engine_cols])
    random_v = (per_action * allowed).sum(axis=1) / allowed.sum(axis=1)

    gap = float(oracle_v.mean() - none_v.mean())

    def fraction(v: np.ndarray) -> float:
        return float((v.mean() - none_v.mean()) / gap) if gap > 0 else float("nan")

    metrics = {
        "truth.value.model": float(model_v.mean()),
        "truth.value.oracle": float(oracle_v.mean()),
        "truth.value.no_action": float(none_v.mean()),
        "truth.value.best_single": float(single_v.mean()),
        "truth.value.random_eligible": float(random_v.mean()),
        "truth.oracle_fraction.model": fraction(model_v),
        "truth.oracle_fraction.best_single": fraction(single_v),
        "truth.oracle_fraction.random_eligible": fraction(random_v),
        "truth.customers": float(len(ids)),
        "truth.violations": float(
            contact_violations(events, customers, ids, chosen, engine, as_of=campaign)
        ),
    }
    choices = pd.DataFrame(
        {"customer_id": ids, "action": chosen, "true_value": model_v, "oracle_value": oracle_v}
    )
    return metrics, choices


def campaign_moment(ground_truth: pd.DataFrame) -> pd.Timestamp:
    """When the campaign the truth is scored on goes out: :data:`CAMPAIGN_HOUR` UTC on the
    last day of the history, or on the day after if the history ends later that day."""
    as_of = pd.Timestamp(ground_truth["as_of"].iloc[0])
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    campaign = as_of.normalize() + pd.Timedelta(hours=CAMPAIGN_HOUR)
    if campaign < as_of:
        campaign += pd.Timedelta(days=1)
    return campaign


def _values_of(
    values: np.ndarray, col: dict[str, int], chosen: np.ndarray, none_v: np.ndarray
) -> np.ndarray:
    idx = np.array([col[a] for a in chosen])
    v = values[np.arange(len(chosen)), idx]
    return np.where(np.isnan(v), none_v, v)  # an undeliverable choice is no action


def contact_violations(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    ids: list[str],
    chosen: np.ndarray,
    engine: DecisionEngine,
    *,
    as_of: pd.Timestamp,
) -> int:
    """Choices that break consent or an unsubscribe, checked from the raw tables.

    Deliberately independent of the engine's own contact state: it reads the customers'
    consent columns and the unsubscribe events directly.
    """
    channel_of = engine.bundle.channel_of
    chans = pd.Series([channel_of.get(a) for a in chosen], index=ids, dtype=object)
    sent = chans.dropna()
    bad = pd.Series(False, index=sent.index)
    if customers is not None:
        cust = customers.set_index(customers["customer_id"].astype(str))
        for channel in sent.unique():
            column = f"{CONSENT_PREFIX}{channel}"
            if column in cust.columns:
                who = sent.index[sent == channel]
                consent = cust[column].reindex(who).astype("boolean").fillna(True)
                bad.loc[who] |= ~consent.to_numpy(dtype=bool)
    unsub = events[
        (events["event_type"].astype(str) == "unsubscribe") & (events["timestamp"] < as_of)
    ]
    pairs = set(zip(unsub["customer_id"].astype(str), unsub["channel"].astype(str), strict=True))
    bad |= pd.Series(
        [(cid, ch) in pairs for cid, ch in zip(sent.index, sent.to_numpy(), strict=True)],
        index=sent.index,
    )
    return int(bad.sum())
