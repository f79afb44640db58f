"""Refit the ``shared_offset`` boosters on more labelled decision points.

The time split trains on the first part of the labelled span only: the validation part,
the test part and the two gaps as long as the label window take the rest (on the default
simulation 243k of 718k labelled rows).  Once early stopping on validation has chosen
each booster's number of rounds, the same boosters refit on more rows with
:data:`REFIT_ROUNDS_MULTIPLIER` times those rounds (more data supports more rounds) learn
the action effects from more data.  Which rows:

- **before the test period** (:func:`pre_test_rows`; ``touchpoint train --refit
  pre-test``): the training part, the first gap and the validation part, about twice the
  training part.  Their labels all end before the test period starts (the second gap is
  the label window), so the test figures of the refit model (off-policy estimates, the
  champion comparison) stay out of sample.  The validation rows are in the refit, so it
  keeps the calibration chosen for the split fit, whose inputs were out of sample;
- **every labelled row** (``bench/bench_policy.py --refit all`` only): three times the
  training part, and the largest gain, but no rows are left out: its figures on the test
  period would not be out of sample, and evaluation would have to use the split fit.
  That is a planning decision, which is why ``touchpoint train`` does not offer it.

Measured in docs/TRAINING.md ("What limits the policy").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit

from serving.engagement import ENGAGEMENT_COLUMN, EngagementModel
from serving.scoring import OffsetScale, OutcomeScorer
from training.booster_average import average_boosters
from training.datasets import TimeSplit
from training.effect_features import OffsetInteractions
from training.models import (
    NEGATIVE_KEEP,
    SHARED_BASE_PARAMS,
    FitReport,
    RowSample,
    _names,
    _params,
    negative_sample,
    shared_offset_params,
)
from training.offset_bagging import member_params, member_seed

__all__ = ["REFIT_ROUNDS_MULTIPLIER", "pre_test_rows", "refit_outcomes", "refit_shared_offset"]

#: Rounds of a refit booster, per round early stopping chose on the time split.
REFIT_ROUNDS_MULTIPLIER = 1.2


def pre_test_rows(decision_time: pd.Series, split: TimeSplit) -> np.ndarray:
    """Positions of the rows decided before the validation part ends: the training part,
    the first gap and validation.  The second gap is the label window, so none of their
    labels sees the test period."""
    return np.flatnonzero((decision_time < split.valid_end).to_numpy())


def refit_shared_offset(
    X: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
    report: FitReport,
    *,
    actions: tuple[str, ...],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
    negative_keep: float | None = None,
    offset_features: Sequence[str] | None = None,
    offset_interactions: OffsetInteractions = "free",
    rows: np.ndarray | None = None,
    engagement: EngagementModel | None = None,
    offset_scale: OffsetScale = "log_odds",
) -> OutcomeScorer:
    """The ``shared_offset`` scorer of one outcome refit on the rows ``rows`` (default:
    all) of ``X``, ``a`` (action codes), ``y``, with the rounds of ``report`` (the split
    fit's, see the module docstring) times :data:`REFIT_ROUNDS_MULTIPLIER`; same
    parameters, negative subsample, offset features and interactions, and offset bag
    (``report.offset_members`` boosters, training/offset_bagging.py) and engagement model
    (the split fit's: it is not refit) as :func:`training.models.fit_outcome_models`; pass
    the split fit's ``offset_scale`` (its scorer's) too.
    Uncalibrated.  ``rows`` spares the caller a copy of ``X`` (1.4 GB at 1M rows × 170
    features)."""
    missing = {"base", "offset"} - set(report.best_iterations)
    if missing:
        raise ValueError(
            f"the split fit's report has no rounds for {sorted(missing)}: refit_shared_offset "
            "needs the report of a shared_offset fit"
        )
    if report.offset_members > 1 and offset_scale != "log_odds":
        raise ValueError("an offset bag averages its members on the log-odds: use log_odds")
    rounds = {
        key: max(1, round(report.best_iterations[key] * REFIT_ROUNDS_MULTIPLIER))
        for key in ("base", "offset")
    }
    p = _params(params, seed)
    names = list(feature_names or _names(X.shape[1]))
    rows = np.arange(len(y)) if rows is None else rows
    keep = NEGATIVE_KEEP if negative_keep is None else negative_keep
    sample = negative_sample(y[rows], keep, seed)
    rows_0 = rows if sample.rows is None else rows[sample.rows]
    Xs, ys = X[rows_0], y[rows_0]
    base = lgb.train(
        {**p, **SHARED_BASE_PARAMS},
        lgb.Dataset(Xs, ys, weight=sample.weights, feature_name=names),
        rounds["base"],
    )
    params_0 = shared_offset_params(
        p, names, offset_features, offset_interactions, engagement is not None, offset_scale
    )
    fit = _OffsetFit(base, rounds, names, engagement, int(p["num_threads"]), offset_scale)
    # Member 0 on the base's rows, as before bagging; the others each on their own
    # negative sample (training/offset_bagging.py), one at a time: each is a copy of X.
    # On the probability scale the offset takes every row, as in the split fit.
    if offset_scale == "probability" and sample.rows is not None:
        del Xs
        Xs, ys, rows_0, sample = X[rows], y[rows], rows, RowSample(rows=None, weights=None)
    members = [fit(params_0, Xs, a[rows_0], ys, sample)]
    del Xs
    for j in range(1, report.offset_members):
        sample_j = negative_sample(y[rows], keep, member_seed(seed, j))
        rows_j = rows if sample_j.rows is None else rows[sample_j.rows]
        params_j = member_params(params_0, seed, j)
        members.append(fit(params_j, X[rows_j], a[rows_j], y[rows_j], sample_j))
    offset = members[0] if len(members) == 1 else average_boosters(members)
    return OutcomeScorer(
        formulation="shared_offset",
        actions=actions,
        boosters={"base": base, "offset": offset},
        engagement=engagement,
        offset_scale=offset_scale,
    )


@dataclass(frozen=True)
class _OffsetFit:
    """Fits one offset booster over the refit base's scores, with the engagement column
    when there is an engagement model."""

    base: lgb.Booster
    rounds: Mapping[str, int]
    names: list[str]
    engagement: EngagementModel | None
    threads: int
    offset_scale: OffsetScale

    def __call__(
        self,
        params: Mapping[str, Any],
        Xs: np.ndarray,
        a_s: np.ndarray,
        ys: np.ndarray,
        sample: RowSample,
    ) -> lgb.Booster:
        """One offset booster on the rows ``Xs`` (a negative sample)."""
        columns, names = [Xs], list(self.names)
        if self.engagement is not None:
            columns.append(self.engagement.logged(Xs, a_s, self.threads)[:, None])
            names.append(ENGAGEMENT_COLUMN)
        with_action = lgb.Dataset(
            np.column_stack([*columns, a_s.astype(np.float64)]),
            ys,
            weight=sample.weights,
            init_score=self._init_scores(Xs),
            feature_name=[*names, "action_code"],
            categorical_feature=[len(names)],
        )
        return lgb.train(dict(params), with_action, self.rounds["offset"])

    def _init_scores(self, Xs: np.ndarray) -> np.ndarray:
        """The base's scores the offset adds to: its log-odds, or its probabilities."""
        raw = np.asarray(self.base.predict(Xs, raw_score=True), dtype=np.float64)
        return raw if self.offset_scale == "log_odds" else expit(raw)


def refit_outcomes(
    X: np.ndarray,
    a: np.ndarray,
    y: Mapping[str, np.ndarray],
    reports: Mapping[str, FitReport],
    **kwargs: Any,
) -> dict[str, OutcomeScorer]:
    """:func:`refit_shared_offset` of several outcomes (``y`` and ``reports`` by name),
    one after the other; ``kwargs``: the rest of its arguments (``rows``, ``params``...).

    Not side by side as :func:`training.models.fit_outcome_models` trains them: on the 1M
    benchmark (``bench/bench_training.py --refit``) two outcomes at one LightGBM thread
    each took 58.4 s (96.8 CPU s), one after the other at two 53.9 and 57.8 s (96.9 and
    103.9 CPU s), and their copies of the rows at the same time raised the peak RSS from
    4.6 to 6.1 GB.
    """
    return {
        name: refit_shared_offset(X, a, target, reports[name], **kwargs)
        for name, target in y.items()
    }
