"""Fitting the outcome models: P(conversion | x, a) and P(churn | x, a).

Each outcome gets an :class:`serving.scoring.OutcomeScorer` (the serving-side object), fit
here with LightGBM's native API and early stopping on the validation part.  Probabilities
are checked for calibration on held-out validation folds; Platt scaling is kept only when it
lowers the Brier score there (trees trained with early stopping are often already close to
calibrated, and an unneeded calibrator only adds noise).  Not isotonic regression: its
steps would flatten the small differences between actions that the policy lives on.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from serving.engagement import ENGAGEMENT_COLUMN, EngagementModel
from serving.scoring import (
    OFFSET_SCALES,
    Calibration,
    Formulation,
    OffsetScale,
    OutcomeScorer,
    clip_probability,
)
from training.booster_average import average_boosters
from training.effect_features import OffsetInteractions, offset_params
from training.offset_bagging import OFFSET_MEMBERS, member_params, member_seed
from training.round_callbacks import StopWhenSet

#: LightGBM defaults, chosen for ~100k–1M rows on 2 cores; overridable from the CLI.
DEFAULT_PARAMS: Mapping[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    # Each tree sees half of the 170 features: column-wise histograms cost in proportion to
    # the features used.  With the patience of 20, on 200k synthetic rows (bench_training's
    # generator): 28.4 instead of 36.6 CPU s, validation log-loss +0.05% (conversion) and
    # +0.16% (churn).
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 127,
    "num_threads": 2,
    # Column-wise histograms: what LightGBM's automatic test chose on 800k × 170 anyway, so
    # the same trees (checked on 1M rows: row-wise, col-wise and 1 or 2 threads gave the same
    # bits), without the ~2 s test per booster and without it depending on the load.
    "force_col_wise": True,
    "verbose": -1,
}
DEFAULT_ROUNDS = 1000
#: Rounds without a better validation loss before a booster stops.  20 rather than 50:
#: 30 rounds fewer for each of the four boosters of ``shared_offset`` (~30 s of the 1M
#: benchmark at its old 0.21–0.32 s per round); measured with ``feature_fraction`` above.
DEFAULT_EARLY_STOPPING = 20
#: The per-action boosters of the ``offset`` formulation learn a small correction to the
#: pooled base, so they are kept small and strongly regularized.
OFFSET_PARAMS: Mapping[str, Any] = {
    "learning_rate": 0.03,
    "num_leaves": 7,
    "min_data_in_leaf": 300,
    "lambda_l2": 10.0,
    "feature_fraction": 0.9,
}
#: The base booster of ``shared_offset`` learns the outcome without the action; the offset
#: on top of it learns what the policy needs.  Twice the learning rate of DEFAULT_PARAMS
#: halves the base's rounds (1M benchmark: conversion 159 → 72, churn 137 → 57) and the
#: offset takes a few more (116 → 141, 126 → 100): the conversion chain, which decides
#: when training ends, 56.5 → 40.3 s on a quiet machine (docs/BENCHMARKS.md).  Validation log-loss +0.08% / +0.12%; bench_policy's
#: oracle fraction on worlds 0 / 1 / 2 went 0.560 / 0.528 / 0.464 → 0.567 / 0.498 / 0.533
#: (mean 0.517 → 0.533, inside the LightGBM seed's ±0.045).  ``bagging_fraction`` 0.5 for
#: the base instead cost more than it saved: the offset then took 222 rounds.
SHARED_BASE_PARAMS: Mapping[str, Any] = {"learning_rate": 0.1}
#: The shared offset booster sees every row, so it can afford a little more capacity; the
#: action code is its categorical column, so its splits are about how actions differ.
SHARED_OFFSET_PARAMS: Mapping[str, Any] = {
    # Not the base's 0.5: with it, half the trees could not split on the action code, and
    # the action code is what this booster is for.
    "feature_fraction": 0.8,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 300,
    "lambda_l2": 10.0,
    "cat_smooth": 50.0,
    "min_data_per_group": 200,
}
#: With the engagement column (serving/engagement.py), the shared offset's trees are
#: smaller: how each action works is then mostly a function of one column, its
#: engagement, and small trees of the action and one feature (pairwise) fit it with less
#: noise.  Measured with ``bench/bench_policy.py`` (docs/TRAINING.md, "Engagement"):
#: mean oracle fraction over fourteen (world, seed) pairs 0.710 with 15 leaves, 0.737
#: with 7, 0.750 with 4 (better than 15 on 9 of 14, the worst case 0.568 -> 0.689); 3 and
#: 31 leaves lost.  Without the column the offset keeps 15 (7 lost there, docs/TRAINING.md).
ENGAGEMENT_OFFSET_PARAMS: Mapping[str, Any] = {"num_leaves": 4}
#: The shared offset on the probability scale (serving/scoring.py): least squares on the
#: base's probabilities, so an action's effect is a change of probability that does not
#: grow or shrink with the base's ``p (1 - p)`` as a log-odds shift's does.  Least squares
#: weighs every row alike, where the log-odds' hessians ``p (1 - p)`` weigh the rare
#: positives, so its leaves need more rows for the same noise: 1000 rather than 300.
#: Measured with ``bench/bench_policy.py`` (docs/TRAINING.md, "The offset's scale"): mean
#: oracle fraction over fourteen (world, seed) pairs 0.755 with 300, 0.770 with 1000
#: (0.750 on the log-odds).
#: A probability-scale offset trains on at most this many training rows: above it, on a
#: uniform seeded sample of them, unweighted (least squares on a uniform sample stays
#: unbiased).  On the 1M benchmark all 800k rows made the conversion offset alone take
#: 155 s (937 rounds); the simulated worlds have fewer rows (world 0: 242k) and are not
#: sampled.
PROBABILITY_OFFSET_MAX_ROWS = 300_000
PROBABILITY_OFFSET_PARAMS: Mapping[str, Any] = {
    "objective": "regression",
    "metric": "l2",
    "min_data_in_leaf": 1000,
}
#: Share of each outcome's negative rows its boosters train on (see :func:`negative_sample`).
#: 0.3 on the 1M benchmark: the boosters train on ~37% (conversion) and ~34% (churn) of
#: the 800k rows.  On 200k synthetic rows the fit took 36.6 instead of 75.8 CPU s, for a
#: validation log-loss 0.25% (conversion) and 0.13% (churn) worse; on bench_policy's
#: worlds 0 and 1 the oracle fraction stayed within its seed-to-seed spread (±0.05).
NEGATIVE_KEEP = 0.3
#: An action needs this many training rows for a model (or an offset) of its own.
MIN_ACTION_ROWS = 50


@dataclass(frozen=True)
class SideJobSignals:
    """What :func:`fit_outcome_models` tells its ``side_job``: two events to poll between
    rounds (e.g. from a LightGBM callback) and the thread counts it may use.

    LightGBM 4 keeps one thread count for the whole process, and every call that takes a
    ``num_threads`` (a dataset, a booster, a prediction) sets it; a booster training in
    another Python thread then sizes its per-thread buffers by one count and runs its
    parallel loops with the other, which can crash the process (a segfault in an OpenMP
    worker; LightGBM's docs: do not change ``num_threads`` while another job trains).
    So until ``chains_done`` is set, every LightGBM call of the job passes exactly
    ``chain_threads``.
    """

    #: Set once every outcome chain has finished: their cores are free, and the job may use
    #: ``num_threads`` LightGBM threads for its remaining rounds.
    chains_done: threading.Event
    #: Set once another job has failed (an outcome chain): the caller gets that job's error,
    #: so whatever the side job would still fit is lost; it should stop at its next round.
    failed: threading.Event
    #: LightGBM threads of the whole fit (``num_threads`` of the outcome models' parameters).
    num_threads: int
    #: LightGBM threads each chain trains with: the job's count until ``chains_done``.
    chain_threads: int


@dataclass
class FitReport:
    """What fitting one outcome model learned about itself, for logs and MLflow."""

    best_iterations: dict[str, int] = field(default_factory=dict)
    calibrated: bool = False
    valid_brier_raw: float = float("nan")
    valid_brier_calibrated: float = float("nan")
    #: Boosters averaged in the shared offset (training/offset_bagging.py); 1 elsewhere.
    offset_members: int = 1


def fit_outcome_model(
    X_train: np.ndarray,
    a_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    a_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    actions: tuple[str, ...],
    formulation: Formulation = "single",
    params: Mapping[str, Any] | None = None,
    num_rounds: int = DEFAULT_ROUNDS,
    early_stopping: int = DEFAULT_EARLY_STOPPING,
    seed: int = 0,
    feature_names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    negative_keep: float | None = None,
    offset_features: Sequence[str] | None = None,
    offset_members: int | None = None,
    offset_interactions: OffsetInteractions = "free",
    engagement: EngagementModel | None = None,
    offset_scale: OffsetScale = "log_odds",
) -> tuple[OutcomeScorer, FitReport]:
    """Fit one outcome (conversion or churn) for every action, then decide on calibration.

    ``a_*`` are action codes (index into ``actions``; ``none`` is 0).  ``single`` and
    ``shared_offset`` are :func:`fit_outcome_models` with one outcome (``negative_keep``,
    ``offset_features``, ``offset_members``, ``offset_interactions``, ``engagement`` and
    ``offset_scale``: see there);
    ``offset`` and ``per_action`` train on every row.
    """
    if formulation in ("single", "shared_offset"):
        # One code path for these two: fit_outcome_models with a single outcome.
        return fit_outcome_models(
            X_train,
            a_train,
            {"y": y_train},
            X_valid,
            a_valid,
            {"y": y_valid},
            actions=actions,
            formulation=formulation,
            params=params,
            num_rounds=num_rounds,
            early_stopping=early_stopping,
            seed=seed,
            feature_names=feature_names,
            progress=progress,
            negative_keep=negative_keep,
            offset_features=offset_features,
            offset_members=offset_members,
            offset_interactions=offset_interactions,
            engagement=engagement,
            offset_scale=offset_scale,
        )["y"]
    if (
        offset_features is not None
        or offset_interactions != "free"
        or engagement is not None
        or offset_scale != "log_odds"
    ):
        raise ValueError(
            "offset_features, offset_interactions, engagement and a probability offset_scale "
            "apply to shared_offset only"
        )
    p = _params(params, seed)
    report = FitReport()
    boosters: dict[str, lgb.Booster] = {}
    if formulation == "offset":
        names = feature_names or _names(X_train.shape[1])
        boosters["base"] = _train(
            X_train, y_train, X_valid, y_valid, p, num_rounds, early_stopping, names, []
        )
        report.best_iterations["base"] = boosters["base"].best_iteration
        base_tr = np.asarray(boosters["base"].predict(X_train, raw_score=True), dtype=np.float64)
        base_va = np.asarray(boosters["base"].predict(X_valid, raw_score=True), dtype=np.float64)
        offset_params = {**p, **OFFSET_PARAMS}
        for code, action in enumerate(actions):
            tr, va = a_train == code, a_valid == code
            if tr.sum() < MIN_ACTION_ROWS or va.sum() < MIN_ACTION_ROWS // 5:
                # Too little evidence for this action: no offset, i.e. the base alone.
                boosters[action] = _zero_booster(X_train[:MIN_ACTION_ROWS], names)
                report.best_iterations[action] = 0
                continue
            boosters[action] = _train(
                X_train[tr],
                y_train[tr],
                X_valid[va],
                y_valid[va],
                offset_params,
                num_rounds,
                early_stopping,
                names,
                [],
                init=(base_tr[tr], base_va[va]),
            )
            report.best_iterations[action] = boosters[action].best_iteration
    else:
        names = feature_names or _names(X_train.shape[1])
        for code, action in enumerate(actions):
            tr, va = a_train == code, a_valid == code
            if tr.sum() < MIN_ACTION_ROWS or y_train[tr].min() == y_train[tr].max():
                raise ValueError(
                    f"per_action formulation: action {action!r} has {int(tr.sum())} training "
                    "rows or a single outcome class; use the offset or single formulation"
                )
            # Early stopping needs both classes in validation; fall back to the train rows.
            has_valid = va.sum() >= 20 and y_valid[va].min() != y_valid[va].max()
            boosters[action] = _train(
                X_train[tr],
                y_train[tr],
                X_valid[va] if has_valid else X_train[tr],
                y_valid[va] if has_valid else y_train[tr],
                p,
                num_rounds,
                early_stopping,
                names,
                [],
            )
            report.best_iterations[action] = boosters[action].best_iteration
            if progress:
                progress(f"  {action}: {boosters[action].best_iteration} rounds")
    scorer = OutcomeScorer(formulation=formulation, actions=actions, boosters=boosters)
    raw_valid = scorer.predict_logged(X_valid, a_valid)
    calibration, report = _choose_calibration(raw_valid, y_valid, report, seed)
    scorer.calibration = calibration
    return scorer, report


def fit_outcome_models(
    X_train: np.ndarray,
    a_train: np.ndarray,
    y_train: Mapping[str, np.ndarray],
    X_valid: np.ndarray,
    a_valid: np.ndarray,
    y_valid: Mapping[str, np.ndarray],
    *,
    actions: tuple[str, ...],
    formulation: Formulation = "single",
    params: Mapping[str, Any] | None = None,
    num_rounds: int = DEFAULT_ROUNDS,
    early_stopping: int = DEFAULT_EARLY_STOPPING,
    seed: int = 0,
    feature_names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    negative_keep: float | None = None,
    offset_features: Sequence[str] | None = None,
    offset_members: int | None = None,
    offset_interactions: OffsetInteractions = "free",
    engagement: EngagementModel | None = None,
    offset_scale: OffsetScale = "log_odds",
    side_job: Callable[[SideJobSignals], object] | None = None,
) -> dict[str, tuple[OutcomeScorer, FitReport]]:
    """Fit several outcomes (e.g. ``{"conversion": y_c, "churn": y_ch}``) on the same rows.

    Gives the same models as one :func:`fit_outcome_model` call per outcome (tested to the
    last bit in tests/training/test_models_speed.py), only faster: LightGBM's bins depend on
    the feature values and the dataset parameters, not on the labels, the weights or the
    init scores, so for ``single`` and ``shared_offset`` X (train and validation) is binned
    once, the action column is binned on its own and added to it, and every booster trains
    on its own rows of those bins (on 800k + 200k rows × 170 features binning X takes ~8 s).
    The outcomes train side by side, one worker thread each with its share of
    ``num_threads``, each on its own copy of its rows' bins; an outcome's boosters take
    their init scores and the calibration its inputs from the scores LightGBM kept while
    training (:func:`_scores_at_best_iteration`), not from predicting again.
    ``offset`` and ``per_action`` fit on per-action subsets, binned per subset; they fall
    back to one :func:`fit_outcome_model` call per outcome.

    ``negative_keep`` (default :data:`NEGATIVE_KEEP`; ``single`` and ``shared_offset``):
    each outcome's boosters train on all of its positive rows and a seeded random share
    ``negative_keep`` of its negative rows, weighted ``1 / negative_keep`` (except a
    probability-scale offset, which trains on every row, up to a cap: see
    ``offset_scale``).  The validation rows (early stopping, calibration) are all kept,
    unweighted.

    ``offset_features`` (``shared_offset`` only; default: every feature): the features the
    offset booster may split on besides the action (``training.effect_features``).
    ``offset_interactions`` (``shared_offset`` only): ``pairwise`` lets each branch of an
    offset tree split on the action and one other feature only; ``free`` (the default
    here; ``touchpoint train``'s is ``pairwise``) does not restrict them.

    ``engagement`` (``shared_offset`` only; serving/engagement.py): the offset booster
    reads each row's engagement under its logged action as a column between the features
    and the action code (:data:`~serving.engagement.ENGAGEMENT_COLUMN`, one of its
    allowed features), and the scorers carry the model to score every candidate.

    ``offset_scale`` (``shared_offset`` only; default ``log_odds``; ``touchpoint train``'s
    is :data:`~training.train.OFFSET_SCALE`): ``probability`` trains the offset booster by
    least squares on the base's probabilities (:data:`PROBABILITY_OFFSET_PARAMS`), so
    ``p(x, a) = sigmoid(base(x)) + offset(x, a)`` (serving/scoring.py), on every training
    row up to :data:`PROBABILITY_OFFSET_MAX_ROWS` (a uniform sample above; the base keeps
    its negative sample and scores the offset's rows); not with a bag.

    ``offset_members`` (``shared_offset`` only; default :data:`~training.offset_bagging.
    OFFSET_MEMBERS`, 1): with more than one, the offset is the average of this many
    boosters, the early-stopped one and ``offset_members - 1`` more for as many rounds,
    each on its own negative subsample (``training/offset_bagging.py``), saved as one
    booster; the calibration is then chosen on the average's validation scores.

    ``side_job``: other work to run before returning (``training.train`` passes the
    propensity model's fit; its result is the caller's to keep, e.g. a fitted object).  In
    ``single`` and ``shared_offset`` it waits in the pool for the first outcome to finish
    and then runs on that thread: the shorter chain leaves a core idle while the longer
    one trains, and the job fills it instead of adding its time before (1M benchmark,
    quiet machine: the churn chain ends ~14 s before the conversion chain, and the ~16 s
    propensity model ends ~3 s after it).  It is called with a :class:`SideJobSignals`.
    Give it one chain's threads (``chain_threads``, the only count it may pass to LightGBM
    while a chain trains: see :class:`SideJobSignals`) until ``chains_done`` is set, and
    then ``num_threads``: on a small log the chains end long before the job (README demo,
    ~244k rows: ~6 s against ~11 s), and one thread would leave the other core idle.
    (``offset`` and ``per_action`` run it first, alone, with ``chains_done`` already set.)

    A failure anywhere stops the rest early, and the first error is the one raised here
    (a job stopped because of it never is): once a job has failed, the side job does not
    start if it is still queued, the chains stop before their next round, and a running
    side job should stop at its next round when ``failed`` is set.  On 1M rows a failed
    chain used to be raised only after the other chain and the ~17 s job had finished.
    """
    if set(y_train) != set(y_valid):
        raise ValueError(f"outcomes differ: train {sorted(y_train)}, valid {sorted(y_valid)}")
    keep = NEGATIVE_KEEP if negative_keep is None else negative_keep
    if offset_features is not None and formulation != "shared_offset":
        raise ValueError("offset_features applies to the shared_offset formulation only")
    if offset_interactions != "free" and formulation != "shared_offset":
        raise ValueError("offset_interactions applies to the shared_offset formulation only")
    if engagement is not None and formulation != "shared_offset":
        raise ValueError("engagement applies to the shared_offset formulation only")
    if offset_scale not in OFFSET_SCALES:
        raise ValueError(f"offset_scale must be one of {OFFSET_SCALES}, got {offset_scale!r}")
    if offset_scale != "log_odds" and formulation != "shared_offset":
        raise ValueError("a probability offset_scale applies to the shared_offset formulation only")
    members = OFFSET_MEMBERS if offset_members is None else offset_members
    if members < 1:
        raise ValueError(f"offset_members must be at least 1, got {members}")
    if members > 1 and offset_scale != "log_odds":
        raise ValueError(
            "an offset bag (offset_members > 1) averages its members on the log-odds: "
            "use offset_scale log_odds with it"
        )
    if formulation not in ("single", "shared_offset"):
        if side_job is not None:
            # Alone, before the outcome models: every thread is free from the start.
            threads = int(_params(params, seed)["num_threads"])
            alone = SideJobSignals(threading.Event(), threading.Event(), threads, threads)
            alone.chains_done.set()
            side_job(alone)
        return {
            outcome: fit_outcome_model(
                X_train,
                a_train,
                y_train[outcome],
                X_valid,
                a_valid,
                y_valid[outcome],
                actions=actions,
                formulation=formulation,
                params=params,
                num_rounds=num_rounds,
                early_stopping=early_stopping,
                seed=seed,
                feature_names=feature_names,
                progress=progress,
            )
            for outcome in y_train
        }
    p = _params(params, seed)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    rows = {outcome: negative_sample(y, keep, seed) for outcome, y in y_train.items()}
    names = feature_names or _names(X_train.shape[1])
    shared = _SharedDatasets(X_train, X_valid, p, names)
    say(f"  binned X (train and valid): {time.perf_counter() - started:.1f} s")
    # One worker thread per outcome, each with its share of the LightGBM threads (trees do
    # not depend on the thread count: tests/training/test_models_speed.py).
    threads = max(1, int(p["num_threads"]) // len(y_train))
    chains: dict[str, list[_Stage]] = {outcome: [] for outcome in y_train}
    # shared_offset with a bag (training/offset_bagging.py): per outcome, the datasets of
    # the members past the first.
    more: dict[str, list[tuple[_Stage, RowSample]]] = {outcome: [] for outcome in y_train}
    if formulation == "shared_offset":
        for outcome in y_train:
            train, valid = shared.copy(rows[outcome], y_train[outcome], y_valid[outcome])
            base_params = {**p, **SHARED_BASE_PARAMS, "num_threads": threads}
            chains[outcome].append(_Stage("base", base_params, train, valid))
        key = "offset"
        with_action_params = shared_offset_params(
            p, names, offset_features, offset_interactions, engagement is not None, offset_scale
        )
    else:
        key, with_action_params = "all", p
    if engagement is not None:
        threads_all = int(p["num_threads"])
        shared.add_column(
            ENGAGEMENT_COLUMN,
            engagement.logged(X_train, a_train, threads_all),
            engagement.logged(X_valid, a_valid, threads_all),
            with_action_params,
        )
    shared.add_action(a_train, a_valid, with_action_params)
    # A probability-scale offset trains on every row (up to PROBABILITY_OFFSET_MAX_ROWS),
    # unweighted: least squares weighs every row alike, so the negative sample's 1/keep
    # weights multiply the noise of its leaves (the log-odds' hessians put the weight on
    # the rare positives instead).  Measured on the simulator (docs/TRAINING.md, "The
    # offset's scale").
    offset_rows = (
        uniform_rows(len(X_train), PROBABILITY_OFFSET_MAX_ROWS, seed)
        if offset_scale == "probability"
        else None
    )
    for outcome in y_train:
        sample = rows[outcome] if offset_rows is None else offset_rows
        train, valid = shared.copy(sample, y_train[outcome], y_valid[outcome])
        stage_params = {**with_action_params, "num_threads": threads}
        stage = _Stage(key, stage_params, train, valid, offset_scale)
        if offset_rows is not None and (rows[outcome].rows is not None or sample.rows is not None):
            # Not the base's rows: the base scores them anew.
            stage.init_rows_from, stage.init_rows = X_train, sample.rows
        chains[outcome].append(stage)
        for j in range(1, members if formulation == "shared_offset" else 1):
            # Copied here, not in the chains' threads: copy() sets the shared labels.
            sample = negative_sample(y_train[outcome], keep, member_seed(seed, j))
            train, valid = shared.copy(sample, y_train[outcome], y_valid[outcome])
            params_j = member_params(stage.params, seed, j)
            more[outcome].append((_Stage(f"offset member {j}", params_j, train, valid), sample))
    del shared
    say(f"  datasets of each booster (action column added): {time.perf_counter() - started:.1f} s")

    signals = SideJobSignals(threading.Event(), threading.Event(), int(p["num_threads"]), threads)
    lock = threading.Lock()
    running = [len(y_train)]  # chains not finished yet
    errors: list[BaseException] = []  # the first job's error; the others stopped because of it

    def failing(error: BaseException) -> None:
        with lock:
            if not signals.failed.is_set():
                errors.append(error)
                signals.failed.set()

    def fit_chain(outcome: str) -> tuple[dict[str, lgb.Booster], np.ndarray, dict[str, int]]:
        try:
            boosters, raw_valid = _fit_chain(
                chains[outcome], num_rounds, early_stopping, say, outcome, stop=signals.failed
            )
            rounds = {k: b.best_iteration for k, b in boosters.items()}
            if more[outcome]:
                boosters["offset"], raw_valid = _bag_offset(
                    boosters, raw_valid, chains[outcome][-1], more[outcome], X_train,
                    say, outcome, stop=signals.failed,
                )  # fmt: skip
            chain = boosters, raw_valid, rounds
        except BaseException as error:
            failing(error)  # before this worker takes the queued side job
            raise
        with lock:
            running[0] -= 1
            if running[0] == 0:
                signals.chains_done.set()
        return chain

    def run_side_job() -> object:
        if signals.failed.is_set():
            return None  # a chain failed: its error is raised, the job's result would be lost
        try:
            return side_job(signals) if side_job is not None else None
        except BaseException as error:
            failing(error)
            raise

    with ThreadPoolExecutor(max_workers=len(y_train)) as pool:
        futures = [pool.submit(fit_chain, outcome) for outcome in y_train]
        # Queued behind the chains: it starts on the first worker they free.
        side = pool.submit(run_side_job) if side_job is not None else None
    # (Leaving the pool waited for every job.)
    if errors:
        raise errors[0]
    chained = {outcome: f.result() for outcome, f in zip(y_train, futures, strict=True)}
    if side is not None:
        side.result()
    fitted = {}
    for outcome, (boosters, raw_valid, rounds) in chained.items():
        report = FitReport(best_iterations=rounds, offset_members=1 + len(more[outcome]))
        scorer = OutcomeScorer(
            formulation=formulation,
            actions=actions,
            boosters=boosters,
            engagement=engagement,
            offset_scale=offset_scale,
        )
        scorer.calibration, report = _choose_calibration(raw_valid, y_valid[outcome], report, seed)
        fitted[outcome] = (scorer, report)
    say(f"  boosters and calibration choice: {time.perf_counter() - started:.1f} s")
    return fitted


def shared_offset_params(
    params: Mapping[str, Any],
    feature_names: Sequence[str],
    offset_features: Sequence[str] | None,
    offset_interactions: OffsetInteractions,
    engagement: bool,
    offset_scale: OffsetScale = "log_odds",
) -> dict[str, Any]:
    """The LightGBM parameters of the shared offset booster on ``[X, action]`` (``[X,
    engagement, action]`` with an engagement column, one more allowed feature): ``params``,
    :data:`SHARED_OFFSET_PARAMS` (and :data:`ENGAGEMENT_OFFSET_PARAMS`, and
    :data:`PROBABILITY_OFFSET_PARAMS` on the probability scale), the restriction to
    ``offset_features`` and ``offset_interactions``.  The fit and the refit alike."""
    names, allowed = list(feature_names), offset_features
    smaller: Mapping[str, Any] = {}
    if engagement:
        names = [*names, ENGAGEMENT_COLUMN]
        allowed = None if allowed is None else [*allowed, ENGAGEMENT_COLUMN]
        smaller = ENGAGEMENT_OFFSET_PARAMS
    restrict = offset_params(names, allowed, offset_interactions)
    scale = PROBABILITY_OFFSET_PARAMS if offset_scale == "probability" else {}
    return {**params, **SHARED_OFFSET_PARAMS, **smaller, **scale, **restrict}


@dataclass
class _Stage:
    """One booster of an outcome: its name, parameters and own training and validation
    datasets (copies, so that the outcomes can train at the same time)."""

    key: str
    params: Mapping[str, Any]
    train: lgb.Dataset
    valid: lgb.Dataset
    #: How it adds to the previous stage's scores (its init scores): their log-odds, or
    #: their probabilities (a probability-scale shared offset).
    adds_to: OffsetScale = "log_odds"
    #: When its training rows are not the previous stage's (a probability-scale offset
    #: against the base's negative sample): the features they are rows ``init_rows`` of
    #: (None: all of them), which the previous stage's booster then scores anew.
    init_rows_from: np.ndarray | None = None
    init_rows: np.ndarray | None = None


def _fit_chain(
    stages: list[_Stage],
    num_rounds: int,
    early_stopping: int,
    say: Callable[[str], None],
    outcome: str,
    stop: threading.Event | None = None,
) -> tuple[dict[str, lgb.Booster], np.ndarray]:
    """Train an outcome's boosters in turn, each from the previous one's scores (the offset
    on top of the base; the rows are the same); return them and the last one's validation
    scores: the uncalibrated predictions of the logged actions.  ``stop``: raise
    :class:`~training.round_callbacks.FitStopped` before the next round once it is set
    (another job failed)."""
    boosters: dict[str, lgb.Booster] = {}
    scores: tuple[np.ndarray, np.ndarray] | None = None  # the previous stage's probabilities
    previous: lgb.Booster | None = None
    valid_scores = np.empty(0)
    for stage in stages:
        started = time.perf_counter()
        if scores is not None:
            to_init = _logit if stage.adds_to == "log_odds" else np.asarray
            train_init = scores[0]
            if stage.init_rows_from is not None and previous is not None:
                threads = int(stage.params["num_threads"])  # the chain's (SideJobSignals)
                raw = previous.predict(stage.init_rows_from, raw_score=True, num_threads=threads)
                train_init = expit(np.asarray(raw, dtype=np.float64))
                if stage.init_rows is not None:
                    train_init = train_init[stage.init_rows]
            stage.train.set_init_score(to_init(train_init))
            stage.valid.set_init_score(to_init(scores[1]))
        booster, train_scores, valid_scores = _boost(
            stage.params, stage.train, stage.valid, num_rounds, early_stopping, stop
        )
        if stage.adds_to == "probability":
            # Least squares' scores are the sum base + offset, not kept inside (0, 1).
            train_scores = clip_probability(train_scores)
            valid_scores = clip_probability(valid_scores)
        boosters[stage.key] = previous = booster
        scores = (train_scores, valid_scores)
        elapsed = time.perf_counter() - started
        say(f"  {outcome} {stage.key}: {booster.best_iteration} rounds, {elapsed:.1f} s")
    return boosters, valid_scores


def _bag_offset(
    boosters: dict[str, lgb.Booster],
    raw_valid: np.ndarray,
    first: _Stage,
    more: list[tuple[_Stage, RowSample]],
    X_train: np.ndarray,
    say: Callable[[str], None],
    outcome: str,
    stop: threading.Event | None = None,
) -> tuple[lgb.Booster, np.ndarray]:
    """The shared offset as a bag (training/offset_bagging.py): ``boosters["offset"]``
    (early-stopped on ``first``'s datasets) and one member per stage of ``more``, each for
    as many rounds on its own negative sample, over the base's init scores.  Returns the
    bag as one booster and its validation probabilities (the mean of the members'
    log-odds; ``raw_valid``: the first member's)."""
    started = time.perf_counter()
    rounds = boosters["offset"].best_iteration
    # The members' negative samples differ from the base's: score every training row.
    threads = int(first.params["num_threads"])
    base_raw = boosters["base"].predict(X_train, raw_score=True, num_threads=threads)
    base_raw = np.asarray(base_raw, dtype=np.float64)
    valid_init = first.valid.get_init_score()
    members, logits = [boosters["offset"]], [_logit(raw_valid)]
    for stage, sample in more:
        stage.train.set_init_score(base_raw if sample.rows is None else base_raw[sample.rows])
        stage.valid.set_init_score(valid_init)
        booster, _train_scores, valid_scores = _boost(
            stage.params, stage.train, stage.valid, rounds, None, stop
        )
        members.append(booster)
        logits.append(_logit(valid_scores))
    elapsed = time.perf_counter() - started
    say(f"  {outcome} offset: {len(members)} members of {rounds} rounds, {elapsed:.1f} s")
    return average_boosters(members), expit(np.mean(logits, axis=0))


@dataclass(frozen=True)
class RowSample:
    """The training rows one outcome's boosters see, and their weights (``None``: all rows,
    unweighted)."""

    rows: np.ndarray | None
    weights: np.ndarray | None


def uniform_rows(n: int, max_rows: int, seed: int) -> RowSample:
    """All ``n`` rows, or a seeded uniform sample of ``max_rows`` of them (in order),
    unweighted."""
    if n <= max_rows:
        return RowSample(rows=None, weights=None)
    rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    return RowSample(rows=rows, weights=None)


def negative_sample(y: np.ndarray, keep: float, seed: int) -> RowSample:
    """Every positive row and each negative row with probability ``keep``, weighted
    ``1 / keep`` (Horvitz-Thompson).

    The weighted sums of the gradients and hessians, and so the fitted base rate, estimate
    the full data's without bias; the positives, which carry most of the information on a
    rare outcome, are all kept.  The draw depends only on ``seed`` and the row count, not on
    the other outcomes, so an outcome's model does not change with what it is fit alongside.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"negative_keep must be in (0, 1], got {keep}")
    if keep == 1:
        return RowSample(rows=None, weights=None)
    draw = np.random.default_rng(seed).random(len(y))
    rows = np.flatnonzero((y > 0) | (draw < keep))
    weights = np.where(y[rows] > 0, 1.0, 1.0 / keep)
    return RowSample(rows=rows, weights=weights)


def _scores_at_best_iteration(booster: lgb.Booster) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities LightGBM kept for the booster's training and validation rows while
    it trained, at its best iteration (init scores included).

    Predicting these rows again from the raw features cost 14 s of the 1M benchmark (the
    base boosters' scores as the offsets' init scores, 8.5 s; the validation predictions for
    the calibration choice, 5.5 s).  LightGBM updates every training row's score each round
    (the out-of-bag rows of bagging too), so they are at hand.  The rounds past the best one
    (the early-stopping patience) are rolled back first: no prediction or saved model uses
    them (LightGBM stops at ``best_iteration``), and rolling back subtracts their trees from
    the kept scores.  Equal to ``predict`` to ~1e-15 (tests/training/test_models_speed.py).
    """
    # (No best iteration, 0, when it trained without early stopping: every round is kept.)
    while 0 < booster.best_iteration < booster.current_iteration():
        booster.rollback_one_iter()
    # Booster.__inner_predict (private, so mypy does not know it): LightGBM's scores of
    # dataset 0 (training) or 1 (the first validation set), converted by the objective
    # (probabilities), in a buffer it reuses, hence the copies.
    inner_predict = getattr(booster, "_Booster__inner_predict")  # noqa: B009
    train = np.array(inner_predict(data_idx=0), dtype=np.float64)
    valid = np.array(inner_predict(data_idx=1), dtype=np.float64)
    return train, valid


def _logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities (the binary objective's raw scores, back from its sigmoid)."""
    # Finite even where the sigmoid rounded to 0 or 1 (raw scores beyond ±36).
    p = np.clip(p, np.finfo(np.float64).tiny, 1 - np.finfo(np.float64).epsneg)
    return np.log(p) - np.log1p(-p)


class _SharedDatasets:
    """X binned once (a training and a validation LightGBM ``Dataset``), for several boosters.

    Built with the boosters' own parameters, so that ``lgb.train`` finds nothing to change:
    a booster whose dataset parameters (``max_bin``, …) differ would need the data binned
    again, and with ``free_raw_data`` LightGBM raises instead of quietly re-binning.  (A
    larger ``min_data_in_leaf`` than the one binned with is accepted: LightGBM's feature
    pre-filter only drops features that cannot be split at the smaller one.)  Each booster
    trains on a row subset of these bins (``Dataset.subset`` copies bins, it does not bin).
    """

    def __init__(
        self, X: np.ndarray, Xv: np.ndarray, params: Mapping[str, Any], names: list[str]
    ) -> None:
        self.train_set = lgb.Dataset(X, feature_name=names, params=dict(params)).construct()
        self.valid_set = lgb.Dataset(
            Xv, reference=self.train_set, feature_name=names, params=dict(params)
        ).construct()

    def add_action(self, a: np.ndarray, av: np.ndarray, params: Mapping[str, Any]) -> None:
        """Add the action code as the last, categorical column.

        Binning one column costs far less than binning [X, action] again (on 800k + 200k
        rows: ~0.3 s against 12.5 s), and X's bins are the same either way: LightGBM bins
        every feature on its own, from the same seeded sample of rows.
        """
        self.add_column("action_code", a, av, params, categorical=True)

    def add_column(
        self,
        name: str,
        values: np.ndarray,
        values_valid: np.ndarray,
        params: Mapping[str, Any],
        *,
        categorical: bool = False,
    ) -> None:
        """Add one column after the others (binned on its own, as :meth:`add_action`)."""

        def column(v: np.ndarray, reference: lgb.Dataset | None) -> lgb.Dataset:
            return lgb.Dataset(
                np.asarray(v, dtype=np.float64)[:, None],
                reference=reference,
                feature_name=[name],
                categorical_feature=[0] if categorical else [],
                params=dict(params),
            ).construct()

        train = column(values, None)
        with warnings.catch_warnings():
            # The raw data was freed once binned (free_raw_data), which is all these say.
            warnings.filterwarnings("ignore", message="Cannot add features from")
            warnings.filterwarnings("ignore", message="Resetting categorical features")
            self.train_set.add_features_from(train)
            self.valid_set.add_features_from(column(values_valid, train))

    def copy(
        self, sample: RowSample, y: np.ndarray, yv: np.ndarray
    ) -> tuple[lgb.Dataset, lgb.Dataset]:
        """One booster's own training rows (with their labels and weights) and validation
        set, copied from these bins: a booster keeps pointers to its datasets' labels and
        init scores, so boosters that train at the same time cannot share them."""
        self.train_set.set_label(y)  # a subset copies its rows' labels from here
        self.valid_set.set_label(yv)
        every_row = list(range(self.train_set.num_data()))
        train = self.train_set.subset(every_row if sample.rows is None else sample.rows.tolist())
        train.construct()
        if sample.weights is not None:
            train.set_weight(sample.weights)
        valid = self.valid_set.subset(list(range(self.valid_set.num_data()))).construct()
        return train, valid


def _boost(
    params: Mapping[str, Any],
    train: lgb.Dataset,
    valid: lgb.Dataset,
    num_rounds: int,
    early_stopping: int | None,
    stop: threading.Event | None = None,
) -> tuple[lgb.Booster, np.ndarray, np.ndarray]:
    """A booster with early stopping (``early_stopping`` None: ``num_rounds`` rounds, the
    members of an offset bag), and its probabilities of the training and the validation
    rows at its best iteration (:func:`_scores_at_best_iteration`)."""
    if early_stopping is None:
        callbacks: list[Callable[[lgb.callback.CallbackEnv], None]] = []
        if stop is not None:
            callbacks.append(StopWhenSet(stop, "outcome"))
        booster = lgb.train(
            dict(params), train, num_rounds, valid_sets=[valid], valid_names=["valid"],
            callbacks=callbacks, keep_training_booster=True,
        )  # fmt: skip
    else:
        booster = _early_stopped(
            params, train, valid, num_rounds, early_stopping, keep=True, stop=stop
        )
    train_scores, valid_scores = _scores_at_best_iteration(booster)
    # What lgb.train does without keep_training_booster: keep the model, release the
    # training state (its bins, gradients and scores).
    booster.model_from_string(booster.model_to_string()).free_dataset()
    return booster, train_scores, valid_scores


def _train(
    X: np.ndarray,
    y: np.ndarray,
    Xv: np.ndarray,
    yv: np.ndarray,
    params: Mapping[str, Any],
    num_rounds: int,
    early_stopping: int,
    names: list[str],
    categorical: list[int],
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> lgb.Booster:
    init_train, init_valid = init if init is not None else (None, None)
    train = lgb.Dataset(
        X, y, feature_name=names, categorical_feature=categorical or "auto", init_score=init_train
    )
    valid = lgb.Dataset(Xv, yv, reference=train, init_score=init_valid)
    return _early_stopped(params, train, valid, num_rounds, early_stopping)


def _early_stopped(
    params: Mapping[str, Any],
    train: lgb.Dataset,
    valid: lgb.Dataset,
    num_rounds: int,
    early_stopping: int,
    *,
    keep: bool = False,
    stop: threading.Event | None = None,
) -> lgb.Booster:
    """``lgb.train`` stopping after ``early_stopping`` rounds without a better validation
    loss; ``keep``: keep the training state (LightGBM's ``keep_training_booster``);
    ``stop``: raise :class:`~training.round_callbacks.FitStopped` before the next round
    once it is set (a callback that only reads the event: the trees are the same)."""
    callbacks: list[Callable[[lgb.callback.CallbackEnv], None]]
    callbacks = [lgb.early_stopping(early_stopping, verbose=False)]
    if stop is not None:
        callbacks.append(StopWhenSet(stop, "outcome"))
    return lgb.train(
        dict(params),
        train,
        num_boost_round=num_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=callbacks,
        keep_training_booster=keep,
    )


def _choose_calibration(
    p: np.ndarray, y: np.ndarray, report: FitReport, seed: int
) -> tuple[Calibration | None, FitReport]:
    """Cross-fit Platt scaling on two validation folds; keep it only if Brier improves."""
    rng = np.random.default_rng(seed)
    fold = rng.random(len(p)) < 0.5
    calibrated = np.empty_like(p)
    for part in (fold, ~fold):
        calibrated[part] = _fit_platt(p[~part], y[~part]).apply(p[part])
    report.valid_brier_raw = float(brier_score_loss(y, p))
    report.valid_brier_calibrated = float(brier_score_loss(y, calibrated))
    if report.valid_brier_calibrated >= report.valid_brier_raw:
        return None, report
    report.calibrated = True
    return _fit_platt(p, y), report


def _fit_platt(p: np.ndarray, y: np.ndarray) -> Calibration:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(q / (1 - q))[:, None]
    model = LogisticRegression(C=1e6).fit(logit, y.astype(int))
    slope = max(float(model.coef_[0, 0]), 1e-3)  # a monotone map, never a flipped one
    return Calibration(slope=slope, intercept=float(model.intercept_[0]))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: mean |observed rate − mean prediction|, weighted by size."""
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    return float(
        sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins if len(b)) / max(len(p), 1)
    )


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, log-loss, Brier and ECE of probabilities ``p`` for labels ``y``."""
    both = 0 < y.sum() < len(y)
    eps = 1e-7
    return {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "logloss": float(log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "rate": float(y.mean()),
    }


def _params(params: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    p = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    if p.get("force_row_wise"):  # LightGBM refuses both
        p.pop("force_col_wise", None)
    return p


def _names(n: int) -> list[str]:
    return [f"f{i}" for i in range(n)]


def _zero_booster(X: np.ndarray, names: list[str]) -> lgb.Booster:
    """A booster whose raw score is 0 everywhere: no offset for a rarely logged action."""
    y = np.zeros(len(X))
    y[0] = 1.0
    data = lgb.Dataset(X, y, feature_name=names, init_score=np.zeros(len(X)))
    booster = lgb.train(
        {
            "objective": "binary",
            "learning_rate": 1e-12,
            "num_leaves": 2,
            "verbose": -1,
            "min_data_in_leaf": 1,
            "num_threads": 1,
        },
        data,
        num_boost_round=1,
    )
    return booster
