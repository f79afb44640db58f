"""A model of the logging policy: P(logged action | features) on the decision-point table.

Off-policy estimators need the probability with which the logged action was chosen.  A
log's own ``propensity`` column is the probability of the sender's decision at that moment,
but our decision-point table *samples* the no-send moments (the sender never logs those),
so on this table the right denominator is the probability of each action among decision
points with those features.  That is what this model estimates.

It is fitted on the rows it scores, cross-fitted (:func:`cross_fitted_distribution`): on
the log being evaluated, as the Open Bandit Pipeline estimates a log's propensities, and
never on an earlier period.  The decision table's logging policy drifts over time: the
sampled no-send moments are spread evenly over each customer's span while the sends thin
out, and features such as ``days_since_first_event`` grow with the calendar, so a model of
the training period scores the test period out of its range.  Fitted on the training
period, the mean weight ``1{a = none} / p(none | x)`` of the test rows (1 for a right
model) was 1.08 (world 0) and 1.10 (world 2), and the IPS value of "no action" −39.3
against a SNIPS of −36.5 and a DR of −34.7; cross-fitted on the test rows, 1.01, and
−35.2, −34.9 and −34.7 (docs/TRAINING.md, "Off-policy estimates next to the truth").

Where every decision point carries a logged propensity (Hillstrom's randomized arms,
``training/hillstrom.py``), those are used and no model is fitted.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from training.datasets import SplitError
from training.round_callbacks import Flag, StopWhenSet

#: Propensities are clipped from below: a tiny estimated probability makes one round
#: dominate IPS, and an estimate that small is mostly noise anyway.
MIN_PROPENSITY = 1e-3

#: Folds of :func:`cross_fitted_distribution`: each row is scored by a model fitted on the
#: other half of the customers.  Two, as in the double machine learning literature, so
#: each model still sees half the rows (propensities need far fewer than outcomes do).
CROSS_FIT_FOLDS = 2

#: Share of a fold model's customers held out for its early stopping.
CROSS_FIT_VALID_SHARE = 0.2

#: At most this many (seeded) rows fit each fold's model: just above what the default
#: world's folds fit on (~31k rows for the test part, ~21k for validation), so a larger
#: log's propensities are fitted as those every figure in docs/ was measured with.  On 1M
#: decision points, 100k rows a fold (one model's cap) made the four fold fits take 28.5 s
#: and end ~15 s after the outcome models; with this cap they end with them
#: (docs/BENCHMARKS.md).  Not far fewer: on world 0's test part, folds capped at 15k rows
#: raised the log-loss from 1.568 to 1.595.
CROSS_FIT_MAX_ROWS = 32_000

#: Rounds without a better validation loss before the model stops.  10 rather than 20: the
#: same best round (so the same model) on the 1M benchmark table (28) and on bench_policy's
#: worlds 0 and 1 (27, 28), for 10 rounds × 11 trees less, ~15% of its CPU time.
EARLY_STOPPING = 10

_PARAMS: Mapping[str, Any] = {
    "objective": "multiclass",
    "learning_rate": 0.15,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "max_bin": 63,
    "num_threads": 2,
    # Column-wise histograms.  LightGBM's automatic choice here was row-wise, and with
    # feature_fraction that copies the row-wise bins' feature subset for every tree (11 per
    # round); col-wise skips that copy and the ~2 s test.
    "force_col_wise": True,
    "verbose": -1,
}


class PropensityModel:
    """Multiclass LightGBM of the logged action given the features (sklearn-style)."""

    def __init__(
        self,
        *,
        n_actions: int,
        num_rounds: int = 100,
        max_rows: int = 100_000,
        max_valid_rows: int = 50_000,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        self.n_actions = n_actions
        self.num_rounds = num_rounds
        self.max_rows = max_rows
        self.max_valid_rows = max_valid_rows
        self.seed = seed
        #: LightGBM threads; the model does not depend on them (force_col_wise).
        self.num_threads = num_threads
        #: The round (0-based) from which the last fit trained with ``threads_then`` threads;
        #: ``None``: all of it with ``num_threads``.
        self.thread_switch_round_: int | None = None

    def fit(
        self,
        X: np.ndarray,
        a: np.ndarray,
        X_valid: np.ndarray,
        a_valid: np.ndarray,
        *,
        more_threads: Flag | None = None,
        threads_then: int = 2,
        stop: Flag | None = None,
    ) -> PropensityModel:
        """Fit on (a seeded subset of) the rows, early-stopped on (a subset of) validation.

        ``more_threads``: once it is set (checked before each round), the remaining rounds
        train with ``threads_then`` LightGBM threads instead of ``num_threads``;
        ``fit_outcome_models`` sets it when its outcome chains have finished and their cores
        are free.  The model is the same to the bit, whenever the switch comes (tested).
        ``stop``: once it is set, raise before the next round (``fit_outcome_models`` sets
        it when another job failed; that job's error is what its caller gets).
        """
        params = {
            **_PARAMS,
            "num_class": self.n_actions,
            "seed": self.seed,
            "num_threads": self.num_threads,
        }
        # A multiclass model costs one tree per class per round; a seeded subset keeps it to
        # seconds, and propensities need far fewer rows than outcomes do.
        X, a = _subset(X, a, self.max_rows, self.seed)
        # Early stopping only needs the validation loss to rank rounds; scoring 200k rows
        # × 11 classes every round cost more than the estimate needs.
        X_valid, a_valid = _subset(X_valid, a_valid, self.max_valid_rows, self.seed + 1)
        train = lgb.Dataset(X, a)
        valid = lgb.Dataset(X_valid, a_valid, reference=train)
        callbacks: list[Callable[[lgb.callback.CallbackEnv], None]]
        callbacks = [lgb.early_stopping(EARLY_STOPPING, verbose=False)]
        if stop is not None:
            callbacks.append(StopWhenSet(stop, "propensity"))
        switch = None if more_threads is None else _MoreThreadsWhenSet(more_threads, threads_then)
        if switch is not None:
            callbacks.append(switch)
        self.thread_switch_round_ = None
        self.booster_ = lgb.train(
            params,
            train,
            num_boost_round=self.num_rounds,
            valid_sets=[valid],
            callbacks=callbacks,
        )
        self.thread_switch_round_ = None if switch is None else switch.switched_at
        return self

    def predict_proba(self, X: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """P(action | x) for every row; ``num_threads`` LightGBM threads (default: the
        model's).  Beside a booster training in another thread, pass that booster's count
        (training/models.py, SideJobSignals): LightGBM's thread count is one per process."""
        threads = self.num_threads if num_threads is None else num_threads
        p = np.asarray(self.booster_.predict(X, num_threads=threads), dtype=np.float64)
        p = np.clip(p, MIN_PROPENSITY, 1.0)
        return p / p.sum(axis=1, keepdims=True)

    def pscore(self, X: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Probability of each row's logged action."""
        return self.predict_proba(X)[np.arange(len(a)), a]


def cross_fitted_distribution(
    X: np.ndarray,
    a: np.ndarray,
    groups: np.ndarray,
    *,
    n_actions: int,
    seed: int = 0,
    folds: int = CROSS_FIT_FOLDS,
    num_threads: int = 2,
    more_threads: Flag | None = None,
    threads_then: int = 2,
    stop: Flag | None = None,
) -> tuple[np.ndarray, list[int]]:
    """P(action | x) for every row of a log, each row scored by a model that never saw its
    customer: ``(distribution (n, n_actions), best rounds of each fold's model)``.

    ``groups`` (one value per row, a customer id) decide the folds: all of a customer's
    rows fall in the same one, so a model cannot score a row by having memorized that
    customer's other rows.  Each fold's model is a :class:`PropensityModel` fitted on the
    other folds' customers and early-stopped on :data:`CROSS_FIT_VALID_SHARE` of them.
    ``more_threads``, ``threads_then`` and ``stop`` are passed to every fit (see
    :meth:`PropensityModel.fit`).
    """
    n = len(a)
    if len(X) != n or len(groups) != n:
        raise ValueError(f"X, a and groups need one row each: {len(X)}, {n}, {len(groups)}")
    rng = np.random.default_rng(seed)
    _, customer = np.unique(groups, return_inverse=True)
    n_customers = int(customer.max()) + 1 if n else 0
    if n_customers < 2 * folds:
        raise SplitError(
            f"cross-fitting the logging propensities needs at least {2 * folds} customers "
            f"among the {n:,} decision points evaluated; they come from {n_customers}"
        )
    fold = (rng.permutation(n_customers) % folds)[customer]
    held_out = (rng.random(n_customers) < CROSS_FIT_VALID_SHARE)[customer]
    dist = np.empty((n, n_actions))
    rounds: list[int] = []
    for k in range(folds):
        fit_rows, valid_rows = (fold != k) & ~held_out, (fold != k) & held_out
        if not fit_rows.any() or not valid_rows.any():
            # A log of a few customers, all on one side: fit and stop on all of them.
            fit_rows = valid_rows = fold != k
        model = PropensityModel(
            n_actions=n_actions,
            max_rows=CROSS_FIT_MAX_ROWS,
            seed=seed + k,
            num_threads=num_threads,
        )
        model.fit(
            X[fit_rows],
            a[fit_rows],
            X[valid_rows],
            a[valid_rows],
            more_threads=more_threads,
            threads_then=threads_then,
            stop=stop,
        )
        scored = fold == k
        # The fit's thread count until ``more_threads`` is set, as its rounds had: another
        # count here could crash a booster training beside it (SideJobSignals).
        switched = more_threads is not None and more_threads.is_set()
        dist[scored] = model.predict_proba(X[scored], threads_then if switched else num_threads)
        rounds.append(int(model.booster_.best_iteration))
    return dist, rounds


class _MoreThreadsWhenSet:
    """LightGBM callback, before each round: once ``more_threads`` is set, move to
    ``threads`` LightGBM threads for the remaining rounds.

    It only reads its flag and sets the thread count, so the trees are the ones of a fit
    without it.
    """

    before_iteration = True

    def __init__(self, more_threads: Flag, threads: int) -> None:
        self.more_threads = more_threads
        self.threads = threads
        self.switched_at: int | None = None

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if (
            self.switched_at is None
            and self.more_threads.is_set()
            and _set_lightgbm_threads(self.threads)
        ):
            self.switched_at = env.iteration


def _set_lightgbm_threads(n: int) -> bool:
    """Make LightGBM's next parallel loops use ``n`` threads; False if this build can't.

    LightGBM 4 keeps one thread count for the whole process (``LGBM_DEFAULT_NUM_THREADS``,
    set from ``num_threads`` when a booster is created or its parameters reset, read again
    by each parallel loop), so a booster that is training takes the new count up from its
    next tree.  Not ``Booster.reset_parameter({"num_threads": n})``, which sets the count
    the same way: it also draws the tree's feature sample (``feature_fraction``) once more
    (ColSampler::SetConfig), so every later tree changed (LightGBM 4.7: the trees from the
    switch on differed).  The library's exported ``OMP_SET_NUM_THREADS``, which
    ``reset_parameter`` calls, sets the count alone.  Only call it while no other booster
    trains: it sets theirs too.
    """
    setter = getattr(lgb.basic._LIB, "OMP_SET_NUM_THREADS", None)
    if setter is None:
        return False
    setter(ctypes.c_int(n))
    return True


def _subset(
    X: np.ndarray, a: np.ndarray, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_rows`` rows, a seeded random subset (in their original order)."""
    if len(X) <= max_rows:
        return X, a
    keep = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
    return X[keep], a[keep]
