"""Offline evaluation of the exact serving policy on held-out decision points.

- Model quality per target and per logged action: AUC, log-loss, Brier, ECE.
- Uplift per action against no action: Qini coefficient and AUUC, on the rows that got
  that action or nothing, weighted by the logging propensities (the log is not randomized).
- Policy value by IPS, SNIPS and DR with bootstrap intervals, for the new policy and the
  baselines: the logging policy, a random eligible action, the best single action (chosen
  on the validation part, never on test) and no action.

The policy scored here is :class:`serving.engine.DecisionEngine`, the same object that
answers HTTP requests and batch campaigns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import NO_ACTION
from serving.engine import DecisionEngine, ScoredRows
from training import ope, uplift_metrics
from training.models import classification_metrics


@dataclass(frozen=True)
class LoggedRounds:
    """Held-out decision points as logged bandit feedback."""

    X: np.ndarray
    decision_time: pd.Series
    action: np.ndarray  # logged action codes
    conversion: np.ndarray
    churn: np.ndarray
    pscore: np.ndarray  # P(logged action | x) under the logging policy
    logging_dist: np.ndarray  # (n, n_actions) logging policy's distribution


def logged_rounds(
    X: np.ndarray,
    decision_time: pd.Series,
    action: np.ndarray,
    conversion: np.ndarray,
    churn: np.ndarray,
    idx: np.ndarray,
    logging_dist: np.ndarray,
) -> LoggedRounds:
    """The rows ``idx`` of a labelled decision table as logged feedback, with the logging
    policy's distribution on those rows (``logging_dist``, one row each, in ``idx``'s order;
    :func:`training.propensity.cross_fitted_distribution`)."""
    if logging_dist.shape[0] != len(idx):
        raise ValueError(
            f"logging_dist has {logging_dist.shape[0]} rows for {len(idx)} decision points"
        )
    return LoggedRounds(
        X=X[idx],
        decision_time=decision_time.iloc[idx].reset_index(drop=True),
        action=action[idx],
        conversion=conversion[idx],
        churn=churn[idx],
        pscore=logging_dist[np.arange(len(idx)), action[idx]],
        logging_dist=logging_dist,
    )


def none_weight(rounds: LoggedRounds) -> float:
    """The mean of ``1{a = none} / p(none | x)`` over the rounds (``none`` is code 0).

    Whatever the policy, its expectation under the right propensities is 1, since no action
    is possible everywhere; far from 1, the propensities misweigh every estimate.  Logged
    as ``propensity.none_weight``.
    """
    return float(((rounds.action == 0) / rounds.logging_dist[:, 0]).mean())


def rewards(
    conversion: np.ndarray,
    churn: np.ndarray,
    action: np.ndarray,
    costs: np.ndarray,
    *,
    conversion_value: float,
    churn_cost: float,
) -> np.ndarray:
    """The business reward of a decision: what the objective in the catalog says it is worth."""
    return conversion_value * conversion - churn_cost * churn - costs[action]


def one_hot(codes: np.ndarray, n_actions: int) -> np.ndarray:
    out = np.zeros((len(codes), n_actions))
    out[np.arange(len(codes)), codes] = 1.0
    return out


def baseline_policies(
    scored: ScoredRows, logging_dist: np.ndarray, best_single: int
) -> dict[str, np.ndarray]:
    """Action distributions of the new policy and every baseline, on the same rows."""
    n, k = scored.scores.shape
    eligible = scored.eligible.copy()
    eligible[:, 0] = True
    single = np.where(eligible[:, best_single], best_single, 0)
    return {
        "model": one_hot(scored.greedy(), k),
        "logging": logging_dist,
        "random_eligible": eligible / eligible.sum(axis=1, keepdims=True),
        f"best_single ({scored.actions[best_single]})": one_hot(single, k),
        "no_action": one_hot(np.zeros(n, dtype=np.int64), k),
    }


def choose_best_single_action(
    engine: DecisionEngine, rounds: LoggedRounds, *, seed: int = 0
) -> int:
    """The one action that, sent to everybody eligible, has the highest DR value."""
    scored = engine.score(rounds.X, rounds.decision_time)
    r = _rewards(engine, rounds)
    q = scored.q_values(engine.conversion_value, engine.churn_cost, engine.costs)
    best, best_value = 0, -np.inf
    eligible = scored.eligible
    for code in range(1, len(engine.actions)):
        dist = one_hot(np.where(eligible[:, code], code, 0), len(engine.actions))
        value = ope.dr(
            action=rounds.action,
            reward=r,
            pscore=rounds.pscore,
            action_dist=dist,
            estimated_rewards=q,
        )
        if value > best_value:
            best, best_value = code, value
    return best


def policy_value_table(
    engine: DecisionEngine,
    rounds: LoggedRounds,
    *,
    best_single: int,
    n_bootstrap: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """IPS / SNIPS / DR of the new policy and the baselines, with bootstrap intervals."""
    scored = engine.score(rounds.X, rounds.decision_time)
    policies = baseline_policies(scored, rounds.logging_dist, best_single)
    return ope.evaluate_policies(
        policies,
        action=rounds.action,
        reward=_rewards(engine, rounds),
        pscore=rounds.pscore,
        estimated_rewards=scored.q_values(engine.conversion_value, engine.churn_cost, engine.costs),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def model_quality(engine: DecisionEngine, rounds: LoggedRounds) -> dict[str, float]:
    """Metrics per target overall and per logged action: ``conversion.auc``, ``churn.email_promo.ece``…"""
    out: dict[str, float] = {}
    for target, scorer, y in (
        ("conversion", engine.bundle.conversion, rounds.conversion),
        ("churn", engine.bundle.churn, rounds.churn),
    ):
        p = scorer.predict_logged(rounds.X, rounds.action)
        for key, value in classification_metrics(y, p).items():
            out[f"{target}.{key}"] = value
        for code, action in enumerate(engine.actions):
            rows = rounds.action == code
            if rows.sum() < 30 or y[rows].min() == y[rows].max():
                continue
            for key, value in classification_metrics(y[rows], p[rows]).items():
                out[f"{target}.{action}.{key}"] = value
    return out


def uplift_quality(
    engine: DecisionEngine, rounds: LoggedRounds
) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Qini coefficient and AUUC per action against no action, and the Qini curves."""
    scored = engine.score(rounds.X, rounds.decision_time)
    metrics: dict[str, float] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for code, action in enumerate(engine.actions):
        if action == NO_ACTION:
            continue
        rows = (rounds.action == code) | (rounds.action == 0)
        treated = (rounds.action[rows] == code).astype(int)
        if treated.sum() < 30 or (1 - treated).sum() < 30:
            continue
        y = rounds.conversion[rows]
        uplift = scored.p_conversion[rows, code] - scored.p_conversion[rows, 0]
        dist = rounds.logging_dist[rows]
        # Within the two-arm subset, P(treated | x) = p(a) / (p(a) + p(none)).
        p_treat = dist[:, code] / (dist[:, code] + dist[:, 0])
        p_treat = np.clip(p_treat, 0.01, 0.99)
        try:
            metrics[f"uplift.{action}.qini"] = uplift_metrics.qini_auc_score(
                y, treated, uplift, propensity=p_treat
            )
            metrics[f"uplift.{action}.auuc"] = uplift_metrics.uplift_auc_score(
                y, treated, uplift, propensity=p_treat
            )
            curves[action] = uplift_metrics.qini_curve(y, treated, uplift, propensity=p_treat)
        except ValueError:
            continue  # one outcome class only in this subset: no curve to draw
    return metrics, curves


def _rewards(engine: DecisionEngine, rounds: LoggedRounds) -> np.ndarray:
    return rewards(
        rounds.conversion,
        rounds.churn,
        rounds.action,
        engine.costs,
        conversion_value=engine.conversion_value,
        churn_cost=engine.churn_cost,
    )


def summarize_policy_table(table: pd.DataFrame) -> Mapping[str, float]:
    """Flatten the policy table into MLflow metric names (``policy.model.dr`` …)."""
    out: dict[str, float] = {}
    for policy, estimator, value, low, high in zip(
        table["policy"].astype(str),
        table["estimator"].astype(str),
        table["value"].to_numpy(dtype=float),
        table["ci_low"].to_numpy(dtype=float),
        table["ci_high"].to_numpy(dtype=float),
        strict=True,
    ):
        name = policy.split(" ")[0]
        out[f"policy.{name}.{estimator}"] = float(value)
        out[f"policy.{name}.{estimator}.ci_low"] = float(low)
        out[f"policy.{name}.{estimator}.ci_high"] = float(high)
    return out
