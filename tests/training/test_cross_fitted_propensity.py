"""The evaluation propensities: cross-fitted on the rows they score, folded by customer.

Why they are not a model of the training period: on the decision table the logging
policy drifts (the no-send share grows as sends thin out), so such a model gets the later
period's weights wrong, and IPS with them.  The test of that builds a log whose no-send
share grows from one period to the next, on the same features.
"""

from __future__ import annotations

import threading
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.datasets import SplitError
from training.evaluation import logged_rounds, none_weight
from training.propensity import CROSS_FIT_FOLDS, PropensityModel, cross_fitted_distribution

N_ACTIONS = 4


def _log(n: int, none_logit: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, actions from a feature-dependent policy whose no-send share moves with
    ``none_logit``, and customer ids (10 rows each)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    logits = np.c_[none_logit + X[:, 0], X[:, 1], -X[:, 1], 0.5 * X[:, 2]]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).astype(np.int64)
    return X, a, np.repeat(np.arange(n // 10), 10)


def _mean_none_weight(dist: np.ndarray, a: np.ndarray) -> float:
    """The mean of ``1{a = none} / p(none | x)``: 1 when p(none | x) is right."""
    return float(((a == 0) / dist[:, 0]).mean())


def test_a_model_of_an_earlier_period_misweighs_a_drifted_one_and_cross_fitting_does_not() -> None:
    X0, a0, _ = _log(20_000, none_logit=0.0, seed=0)
    X1, a1, customers = _log(20_000, none_logit=0.5, seed=1)
    earlier = PropensityModel(n_actions=N_ACTIONS, seed=0).fit(
        X0[:15_000], a0[:15_000], X0[15_000:], a0[15_000:]
    )
    assert _mean_none_weight(earlier.predict_proba(X1), a1) > 1.25  # 1.37
    dist, rounds = cross_fitted_distribution(X1, a1, customers, n_actions=N_ACTIONS, seed=0)
    assert _mean_none_weight(dist, a1) == pytest.approx(1.0, abs=0.06)  # 1.01; 0.95–1.01 by seed
    assert len(rounds) == 2 and min(rounds) > 1
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)


def test_no_row_is_scored_by_a_model_that_saw_its_customer() -> None:
    """Each customer always takes one action, and the customer's id is a feature: a model
    that saw the customer would know the action; one that did not can only guess."""
    rng = np.random.default_rng(3)
    n_customers, rows_each = 40, 250  # a leaf needs 200 rows: one customer fills it
    customers = np.repeat(np.arange(n_customers), rows_each)
    a = rng.integers(0, N_ACTIONS, n_customers)[customers]
    X = np.c_[customers.astype(np.float64), rng.standard_normal(len(a))]
    model = PropensityModel(n_actions=N_ACTIONS, seed=0)
    in_sample = model.fit(X, a, X, a).pscore(X, a)
    dist, _ = cross_fitted_distribution(X, a, customers, n_actions=N_ACTIONS, seed=0)
    cross = dist[np.arange(len(a)), a]
    assert in_sample.mean() > 0.6  # memorized: the id gives the action away
    assert cross.mean() < 0.4  # about the share of the action among other customers


def test_the_same_seed_gives_the_same_distribution_and_another_seed_other_folds() -> None:
    X, a, customers = _log(4_000, none_logit=0.0, seed=4)
    first, _ = cross_fitted_distribution(X, a, customers, n_actions=N_ACTIONS, seed=7)
    again, _ = cross_fitted_distribution(X, a, customers, n_actions=N_ACTIONS, seed=7)
    other, _ = cross_fitted_distribution(X, a, customers, n_actions=N_ACTIONS, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_its_predictions_keep_the_fit_s_thread_count_until_more_threads_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LightGBM keeps one thread count per process, and a prediction sets it.  Beside an
    outcome chain training with one thread (``fit_outcome_models``' side job), a
    prediction with two crashed the process now and then (a segfault in an OpenMP worker
    of lib_lightgbm.so): until ``more_threads`` is set, the predictions take the fit's
    ``num_threads``, and ``threads_then`` after."""
    X, a, customers = _log(2_000, none_logit=0.0, seed=3)
    counts: list[int] = []
    predict = lgb.Booster.predict

    def spy(self: lgb.Booster, *args: Any, **kwargs: Any) -> Any:
        out = predict(self, *args, **kwargs)
        counts.append(int(lgb.basic._LIB.OMP_NUM_THREADS()))  # what the call left set
        return out

    monkeypatch.setattr(lgb.Booster, "predict", spy)
    flag = threading.Event()
    kw: dict[str, Any] = {"n_actions": N_ACTIONS, "more_threads": flag, "threads_then": 2}
    one, _ = cross_fitted_distribution(X, a, customers, num_threads=1, **kw)
    assert counts == [1] * CROSS_FIT_FOLDS
    counts.clear()
    flag.set()
    two, _ = cross_fitted_distribution(X, a, customers, num_threads=1, **kw)
    assert counts == [2] * CROSS_FIT_FOLDS
    np.testing.assert_array_equal(one, two)  # the same distribution either way


def test_too_few_customers_is_a_clear_error() -> None:
    X, a, _ = _log(300, none_logit=0.0, seed=5)
    with pytest.raises(SplitError, match="at least 4 customers among the 300 decision points"):
        cross_fitted_distribution(X, a, np.arange(300) % 3, n_actions=N_ACTIONS)


def test_four_customers_are_enough() -> None:
    """With two customers a fold, the early-stopping share may take none or all of them."""
    X, a, _ = _log(400, none_logit=0.0, seed=7)
    for seed in range(6):
        dist, _ = cross_fitted_distribution(
            X, a, np.arange(400) % 4, n_actions=N_ACTIONS, seed=seed
        )
        np.testing.assert_allclose(dist.sum(axis=1), 1.0)


def test_rows_must_line_up() -> None:
    X, a, customers = _log(300, none_logit=0.0, seed=6)
    with pytest.raises(ValueError, match="one row each: 300, 299, 300"):
        cross_fitted_distribution(X, a[:-1], customers, n_actions=N_ACTIONS)


def test_none_weight_is_the_mean_inverse_propensity_of_the_no_action_rows() -> None:
    dist = np.array([[0.5, 0.5], [0.25, 0.75], [0.5, 0.5], [0.8, 0.2]])
    action = np.array([0, 0, 1, 1])
    rounds = logged_rounds(
        np.zeros((6, 2)),
        pd.Series(pd.date_range("2026-01-01", periods=6, tz="UTC")),
        np.array([9, 0, 0, 1, 1, 9]),  # rows 0 and 5 are not among the rounds
        np.zeros(6),
        np.zeros(6),
        np.arange(1, 5),
        dist,
    )
    np.testing.assert_array_equal(rounds.action, action)
    np.testing.assert_array_equal(rounds.pscore, [0.5, 0.25, 0.5, 0.2])
    assert none_weight(rounds) == pytest.approx((1 / 0.5 + 1 / 0.25) / 4)


def test_logged_rounds_refuses_a_distribution_of_other_rows() -> None:
    with pytest.raises(ValueError, match="logging_dist has 3 rows for 4 decision points"):
        logged_rounds(
            np.zeros((4, 2)),
            pd.Series(pd.date_range("2026-01-01", periods=4, tz="UTC")),
            np.zeros(4, dtype=np.int64),
            np.zeros(4),
            np.zeros(4),
            np.arange(4),
            np.full((3, 2), 0.5),
        )
