"""``touchpoint evaluate``: the policy value of a trained bundle on a (new) log.

The log's decision points are featurized with the bundle's own spec and labelled; the best
single action is chosen on the earlier half of them (by time) and the bundle's policy is
evaluated off-policy on the later half, next to the same baselines as in training.  Each
half's logging propensities are cross-fitted on its own rows, as in training
(``training/propensity.py``).  When the log comes from the simulator, the true value is
added.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.pipeline import build_feature_table
from features.schema import NO_ACTION
from serving.engine import DecisionEngine
from training.datasets import SplitError
from training.evaluation import (
    LoggedRounds,
    choose_best_single_action,
    logged_rounds,
    none_weight,
    policy_value_table,
    summarize_policy_table,
)
from training.labels import LabelWindows, label_decisions
from training.propensity import cross_fitted_distribution


def evaluate_bundle(
    engine: DecisionEngine,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    *,
    n_bootstrap: int = 500,
    seed: int = 0,
    ground_truth: pd.DataFrame | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The OPE table of the bundle's policy and the baselines, and headline metrics."""
    bundle = engine.bundle
    spec = bundle.spec
    progress(f"building {spec.n_features} features with the bundle's spec")
    table = build_feature_table(events, customers, spec)
    table = table[table["action"].astype(str).isin(engine.actions)].reset_index(drop=True)
    labels = label_decisions(events, table, LabelWindows.from_catalog(bundle.catalog))
    keep = ~labels["censored"].to_numpy()
    table, labels = table.loc[keep].reset_index(drop=True), labels.loc[keep].reset_index(drop=True)
    if len(table) < 200:
        raise SplitError(
            f"only {len(table)} labelled decision points in the log; evaluation needs more "
            "history after the decisions (the label window must fit in the log)"
        )
    order = np.argsort(table["decision_time"].to_numpy(), kind="stable")
    fit_idx, eval_idx = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    codes = pd.Categorical(table["action"].astype(str), categories=engine.actions).codes
    codes = codes.astype(np.int64)
    X = table[list(spec.feature_names)].to_numpy(dtype=np.float64)
    conversion = labels["conversion"].to_numpy(dtype=np.float64)
    churn = labels["churn"].to_numpy(dtype=np.float64)
    customer_ids = table["customer_id"].to_numpy()

    def rounds(idx: np.ndarray, which: str) -> LoggedRounds:
        progress(f"propensity on the {len(idx):,} {which} decision points, cross-fitted")
        dist, _rounds = cross_fitted_distribution(
            X[idx], codes[idx], customer_ids[idx], n_actions=len(engine.actions), seed=seed
        )
        return logged_rounds(X, table["decision_time"], codes, conversion, churn, idx, dist)

    best = choose_best_single_action(engine, rounds(fit_idx, "earlier"), seed=seed)
    evaluated = rounds(eval_idx, "later")
    progress(f"off-policy evaluation on {len(eval_idx):,} later decision points")
    result = policy_value_table(
        engine, evaluated, best_single=best, n_bootstrap=n_bootstrap, seed=seed
    )
    metrics = dict(summarize_policy_table(result))
    metrics["propensity.none_weight"] = none_weight(evaluated)
    if ground_truth is not None:
        from training.truth import simulated_truth

        truth, _ = simulated_truth(
            engine,
            events,
            customers,
            ground_truth,
            bundle.catalog,
            best_single=engine.actions[best] if best else NO_ACTION,
        )
        metrics.update(truth)
    return result, metrics
