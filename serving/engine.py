"""The decision engine: features → contact rules → both models → expected value → ranking.

No FastAPI here: batch recommendation (``touchpoint recommend``), offline policy
evaluation (``training.evaluation``) and the HTTP service all call :class:`DecisionEngine`,
so what is evaluated is exactly what serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from features.schema import NO_ACTION
from serving.bundle import Bundle
from serving.contact_policy import (
    RULES,
    action_channels,
    action_rules,
    contact_columns,
    contact_state,
    in_quiet_hours,
    suppression_codes,
)
from serving.decision_kernel import P_DRAW, P_QUIET_NOW, decide, params_vector
from serving.policy import action_costs, action_distribution, expected_values, ranking


@dataclass(frozen=True)
class ScoredRows:
    """Everything the engine knows about a batch of decision rows; arrays are (n, n_actions)."""

    actions: tuple[str, ...]
    p_conversion: np.ndarray
    p_churn: np.ndarray
    scores: np.ndarray
    suppression: np.ndarray  # int8 rule codes, 0 = eligible (see contact_policy.RULES)

    @property
    def eligible(self) -> np.ndarray:
        return self.suppression == 0

    def ranked(self) -> np.ndarray:
        """Action codes per row, best eligible first."""
        return ranking(self.scores, self.eligible)

    def greedy(self) -> np.ndarray:
        return self.ranked()[:, 0]

    def q_values(self, conversion_value: float, churn_cost: float, costs: np.ndarray) -> np.ndarray:
        """Expected reward of each action (not relative to none), for doubly robust OPE."""
        return conversion_value * self.p_conversion - churn_cost * self.p_churn - costs[None, :]


@dataclass(frozen=True)
class RowDecision:
    """One customer's decision (:meth:`DecisionEngine.decide_row`); arrays are
    ``(n_actions,)`` in action-code order."""

    p_conversion: np.ndarray
    p_churn: np.ndarray
    scores: np.ndarray
    suppression: np.ndarray  # int8 rule codes, 0 = eligible
    probs: np.ndarray  # the exact probability of drawing each action
    order: np.ndarray  # action codes best first, ineligible ones last
    chosen: int  # the action drawn
    model_row: np.ndarray  # the feature row as the models saw it (float32 precision)
    #: Each action's engagement as the models read it (serving/engagement.py); None
    #: without an engagement model.  The reasons reuse it (serving.reasons.explain).
    engagement: np.ndarray | None = None

    @property
    def ranked(self) -> list[int]:
        """Eligible action codes, best first (no action is always among them)."""
        return [int(a) for a in self.order if self.suppression[a] == 0]


class DecisionEngine:
    """Scores and ranks the candidate actions of feature rows, under the contact rules."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.actions = bundle.actions
        if self.actions[0] != NO_ACTION:
            raise ValueError("the bundle's first action must be 'none'")
        catalog = bundle.catalog
        self.costs = action_costs(catalog, self.actions)
        self.channels = action_channels(self.actions, bundle.channel_of)
        #: The catalog's value of a conversion: what a logged conversion earns (rewards).
        self.conversion_value = catalog.objective.conversion_value
        #: What the policy weighs a conversion uplift at: the value times the bundle's
        #: conversion_effect_scale, as one send's own effect is larger than the logged
        #: label's effects (training/effect_scale.py).
        self.uplift_value = self.conversion_value * bundle.conversion_effect_scale
        self.churn_cost = catalog.objective.churn_cost
        self.feature_names = list(bundle.spec.feature_names)
        self.contact_columns = contact_columns(
            self.feature_names, channels=bundle.spec.channels, policy=catalog.contact_policy
        )
        self.action_rules = action_rules(
            bundle.spec.channels, self.channels, catalog.contact_policy
        )
        policy, exploration = catalog.contact_policy, catalog.exploration
        self._row_params = params_vector(
            cooldown_hours=policy.cooldown_hours,
            max_total=policy.max_total,
            conversion_value=self.uplift_value,
            churn_cost=self.churn_cost,
            softmax=exploration.method == "softmax",
            epsilon=exploration.epsilon,
            temperature=exploration.temperature,
            control_share=exploration.control_share,
        )
        rules = self.action_rules
        self._action_column = np.where(rules.has_channel, rules.column, -1).astype(np.int64)
        self._action_cap = rules.cap.astype(np.float64)

    @cached_property
    def channel_names(self) -> list[str]:
        """Channel of each action code as responses show it (``none`` for no action)."""
        return [c or NO_ACTION for c in self.channels]

    def score(self, X: np.ndarray, decision_time: pd.Series | pd.Timestamp | int) -> ScoredRows:
        """Score feature rows (in ``spec.feature_names`` order) decided at ``decision_time``
        (a Series, one Timestamp, or one time in ns since the epoch, UTC)."""
        X = np.asarray(X, dtype=np.float64)
        policy = self.bundle.catalog.contact_policy
        # The rules read the row as given: at decision time it is float64, so a cool-down
        # is exact to the nanosecond, where float32 days are ~10 ms coarse near 2 days and
        # could let a send 5 ms short of the cool-down through.
        state = contact_state(X, self.contact_columns)
        # The models see the precision they were trained on (the float32 feature table).
        X = X.astype(np.float32).astype(np.float64)
        quiet = in_quiet_hours(policy, decision_time)  # one value broadcasts over the rows
        codes = suppression_codes(state, self.action_rules, policy, quiet)
        # Both scorers read the same engagement (serving/engagement.py): computed once.
        engagement = self.bundle.conversion.engagement_of(X)
        p_conv = self.bundle.conversion.predict(X, engagement=engagement)
        p_churn = self.bundle.churn.predict(X, engagement=engagement)
        scores = expected_values(
            p_conv,
            p_churn,
            self.costs,
            conversion_value=self.uplift_value,
            churn_cost=self.churn_cost,
        )
        return ScoredRows(self.actions, p_conv, p_churn, scores, codes)

    def decide_row(self, x: np.ndarray, decision_time_ns: int, draw: float) -> RowDecision:
        """One customer's decision: the same rules, models, scores, ranking and
        exploration as :meth:`score` and :meth:`distribution` on a one-row batch, plus
        the action that the uniform ``draw`` picks (as ``serving.policy.sample_actions``).

        The request path: each model is one compiled call where the formulation allows
        (``OutcomeScorer.predict_row``), and after them everything is one more
        (serving.decision_kernel) instead of ~40 numpy operations on 11 values.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        X = x.astype(np.float32).astype(np.float64)[None, :]  # the models' precision
        engagement = self.bundle.conversion.engagement_of(X)
        p_conv = self.bundle.conversion.predict_row(X[0], engagement)
        p_churn = self.bundle.churn.predict_row(X[0], engagement)
        params = self._row_params.copy()
        params[P_QUIET_NOW] = float(
            in_quiet_hours(self.bundle.catalog.contact_policy, decision_time_ns)[0]
        )
        params[P_DRAW] = draw
        n = len(self.actions)
        codes = np.empty(n, dtype=np.int8)
        scores, probs = np.empty(n), np.empty(n)
        order = np.empty(n, dtype=np.int64)
        cols, rules = self.contact_columns, self.action_rules
        chosen = decide(
            x, cols.days_since, cols.unsubscribed, cols.sends_in_window, cols.consent,
            cols.total_in_window, self._action_column, self._action_cap, rules.quiet,
            self.costs, params, p_conv, p_churn, codes, scores, probs, order,
        )  # fmt: skip
        return RowDecision(
            p_conv, p_churn, scores, codes, probs, order, int(chosen), X[0],
            None if engagement is None else engagement[0],
        )  # fmt: skip

    def distribution(self, scored: ScoredRows) -> np.ndarray:
        """Exact action probabilities under the catalog's exploration settings."""
        return action_distribution(scored.scores, scored.eligible, self.bundle.catalog.exploration)

    def recommendations_frame(
        self, customer_ids: pd.Series, scored: ScoredRows, *, top_k: int
    ) -> pd.DataFrame:
        """Long table: one row per customer and rank, eligible actions only, best first."""
        order = scored.ranked()[:, :top_k]
        n = len(order)
        rows = np.repeat(np.arange(n), order.shape[1])
        codes = order.ravel()
        keep = scored.eligible[rows, codes]
        rows, codes = rows[keep], codes[keep]
        # rows is sorted, so a row's rank is its offset from the first entry of its customer.
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows) + 1
        suppressed = self._suppressed_text(scored.suppression)
        return pd.DataFrame(
            {
                "customer_id": customer_ids.to_numpy()[rows],
                "rank": rank,
                "action": np.asarray(self.actions, dtype=object)[codes],
                "channel": np.asarray(self.channel_names, dtype=object)[codes],
                "score": scored.scores[rows, codes],
                "p_conversion": scored.p_conversion[rows, codes],
                "p_churn": scored.p_churn[rows, codes],
                "suppressed": suppressed[rows],
            }
        )

    def _suppressed_text(self, codes: np.ndarray) -> np.ndarray:
        """``"sms_offer:consent;phone_call:cooldown"`` per row ('' when nothing was removed)."""
        row, action = np.nonzero(codes)
        labels = np.asarray(
            [f"{a}:{rule}" for a in self.actions for rule in RULES], dtype=object
        ).reshape(len(self.actions), len(RULES))
        parts = pd.Series(labels[action, codes[row, action] - 1], index=row)
        joined = parts.groupby(level=0).agg(";".join)
        out = np.full(len(codes), "", dtype=object)
        out[joined.index.to_numpy()] = joined.to_numpy()
        return out
