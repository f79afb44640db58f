"""Off-policy estimators of a policy's value from logged bandit feedback.

The record each estimator needs is the one the Open Bandit Pipeline (OBP) fixes for a
decision log: for every round ``i`` the ``action`` that was taken, the ``reward`` that
followed and ``pscore``, the probability with which the *logging* policy chose that
action. An evaluation policy is given as ``action_dist``: its probability of every
action in every logged context (one-hot rows for a deterministic policy).

Estimators (formulas as in ``obp.ope``; ``w_i = pi_e(a_i|x_i) / pi_b(a_i|x_i)``):

- IPS   ``V = mean_i( w_i * r_i )``
- SNIPS ``V = sum_i( w_i * r_i ) / sum_i( w_i )``
- DR    ``V = mean_i( sum_a pi_e(a|x_i) q(x_i, a) + w_i * (r_i - q(x_i, a_i)) )``

Confidence intervals come from a nonparametric bootstrap over rounds; see
``docs/EVALUATION.md`` for assumptions and how to read the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "ESTIMATORS",
    "PolicyEstimate",
    "dr",
    "effective_sample_size",
    "estimate_policy_value",
    "evaluate_policies",
    "importance_weights",
    "ips",
    "snips",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ESTIMATORS: Final[tuple[str, ...]] = ("ips", "snips", "dr")

#: Tolerance on ``action_dist`` rows summing to one (OBP checks the same property).
ROW_SUM_TOL: Final[float] = 1e-6

#: Bootstrap work is done in chunks of about this many gathered values, which keeps the
#: index matrix near 32 MB (int32) whatever the log size.
_CHUNK_ELEMENTS: Final[int] = 8_000_000


# --------------------------------------------------------------------------- validation


def _as_1d(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {array.shape}")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")


def _validate_action(action: npt.ArrayLike) -> IntArray:
    array = _as_1d(action, "action")
    if array.size == 0:
        raise ValueError("action is empty: there are no logged rounds to evaluate")
    if not np.issubdtype(array.dtype, np.integer):
        # Float labels such as 1.0 usually mean a lossy round-trip through a data frame
        # with missing values; refuse rather than silently truncate.
        raise ValueError(f"action must hold integer action indices, got dtype {array.dtype}")
    if (array < 0).any():
        raise ValueError("action contains negative indices; expected integers in [0, n_actions)")
    return array.astype(np.int64, copy=False)


def _validate_reward(reward: npt.ArrayLike, n: int) -> FloatArray:
    array = _as_1d(reward, "reward")
    if array.shape[0] != n:
        raise ValueError(
            f"reward must have one value per round: expected {n}, got {array.shape[0]}"
        )
    _check_finite(array, "reward")
    return array.astype(np.float64, copy=False)


def _validate_pscore(pscore: npt.ArrayLike, n: int) -> FloatArray:
    array = _as_1d(pscore, "pscore")
    if array.shape[0] != n:
        raise ValueError(
            f"pscore must have one value per round: expected {n}, got {array.shape[0]}"
        )
    _check_finite(array, "pscore")
    outside = (array <= 0.0) | (array > 1.0)
    if outside.any():
        raise ValueError(
            f"pscore must lie in (0, 1]: {int(outside.sum())} value(s) outside "
            f"(min={array.min():.6g}, max={array.max():.6g}). A zero propensity means the "
            "logging policy could not take the action, so no weight can correct for it."
        )
    return array.astype(np.float64, copy=False)


def _validate_action_dist(
    action_dist: npt.ArrayLike, n: int, name: str = "action_dist"
) -> FloatArray:
    array = np.asarray(action_dist)
    # OBP's action_dist is (n_rounds, n_actions, len_list); a single slot is accepted.
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (n_rounds, n_actions), got {array.shape}")
    if array.shape[0] != n:
        raise ValueError(f"{name} must have one row per round: expected {n}, got {array.shape[0]}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no action columns")
    _check_finite(array, name)
    if (array < 0).any():
        raise ValueError(f"{name} contains negative probabilities")
    row_sums = array.sum(axis=1)
    off = np.abs(row_sums - 1.0) > ROW_SUM_TOL
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{name} rows must sum to 1 (tol {ROW_SUM_TOL:g}): {int(off.sum())} row(s) do not, "
            f"e.g. row {first} sums to {row_sums[first]:.8g}"
        )
    return array.astype(np.float64, copy=False)


def _validate_estimated_rewards(
    estimated_rewards: npt.ArrayLike, shape: tuple[int, ...]
) -> FloatArray:
    array = np.asarray(estimated_rewards)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.shape != shape:
        raise ValueError(
            f"estimated_rewards must have the shape of action_dist {shape}, got {array.shape}"
        )
    _check_finite(array, "estimated_rewards")
    return array.astype(np.float64, copy=False)


def _validate_max_weight(max_weight: float | None) -> None:
    if max_weight is not None and not (np.isfinite(max_weight) and max_weight > 0):
        raise ValueError(f"max_weight must be a positive finite number or None, got {max_weight!r}")


@dataclass(frozen=True)
class _Log:
    """Validated logged feedback, shared by every estimator and policy."""

    action: IntArray
    reward: FloatArray
    pscore: FloatArray


def _validate_log(action: npt.ArrayLike, reward: npt.ArrayLike, pscore: npt.ArrayLike) -> _Log:
    checked_action = _validate_action(action)
    n = checked_action.shape[0]
    return _Log(checked_action, _validate_reward(reward, n), _validate_pscore(pscore, n))


def _check_action_range(action: IntArray, n_actions: int) -> None:
    if int(action.max()) >= n_actions:
        raise ValueError(
            f"action contains index {int(action.max())}, outside [0, {n_actions}) "
            "given by the columns of action_dist"
        )


# ----------------------------------------------------------------- per-round quantities


def _weights(log: _Log, dist: FloatArray, max_weight: float | None) -> FloatArray:
    weights = dist[np.arange(log.action.shape[0]), log.action] / log.pscore
    if max_weight is not None:
        # Clipping (OBP's ``lambda_``) trades bias for variance: rounds the evaluation
        # policy likes far more than the logger did stop dominating the estimate.
        weights = np.minimum(weights, max_weight)
    return weights


def _round_terms(
    estimator: str,
    log: _Log,
    dist: FloatArray,
    q_hat: FloatArray | None,
    max_weight: float | None,
) -> tuple[FloatArray, FloatArray | None, FloatArray]:
    """Return ``(numerator, denominator, weights)`` per round.

    Every estimator here is ``sum(numerator) / sum(denominator)``; a ``None`` denominator
    means "divide by the number of rounds". Expressing them this way lets the bootstrap
    resample SNIPS's normaliser together with its numerator instead of freezing it at the
    full-sample value.
    """
    weights = _weights(log, dist, max_weight)
    if estimator == "ips":
        return weights * log.reward, None, weights
    if estimator == "snips":
        return weights * log.reward, weights, weights
    if estimator == "dr":
        if q_hat is None:
            raise ValueError("estimated_rewards is required for the 'dr' estimator")
        rows = np.arange(log.action.shape[0])
        direct = np.einsum("ij,ij->i", dist, q_hat)
        residual = log.reward - q_hat[rows, log.action]
        return direct + weights * residual, None, weights
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def _ratio(numerator: FloatArray, denominator: FloatArray | None) -> float:
    if denominator is None:
        return float(numerator.mean())
    total = float(denominator.sum())
    if total == 0.0:
        # The evaluation policy puts zero mass on every logged action: no logged round
        # carries information about it.
        return float("nan")
    return float(numerator.sum()) / total


def _prepare(
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    estimated_rewards: npt.ArrayLike | None,
    max_weight: float | None,
) -> tuple[_Log, FloatArray, FloatArray | None]:
    _validate_max_weight(max_weight)
    log = _validate_log(action, reward, pscore)
    dist = _validate_action_dist(action_dist, log.action.shape[0])
    _check_action_range(log.action, dist.shape[1])
    q_hat = None
    if estimated_rewards is not None:
        q_hat = _validate_estimated_rewards(estimated_rewards, dist.shape)
    return log, dist, q_hat


# ------------------------------------------------------------------------ point values


def importance_weights(
    *,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    max_weight: float | None = None,
) -> FloatArray:
    """Importance weights ``w_i = pi_e(a_i|x_i) / pi_b(a_i|x_i)``, optionally clipped.

    Parameters
    ----------
    action : array of int, shape (n,)
        Logged action index per round.
    pscore : array of float, shape (n,)
        Logging policy's probability of the logged action, in (0, 1].
    action_dist : array of float, shape (n, n_actions)
        Evaluation policy's action probabilities per round.
    max_weight : float, optional
        Clip weights at this value (``None``: no clipping).

    Returns
    -------
    numpy.ndarray
        Weights, shape (n,).
    """
    checked_action = _validate_action(action)
    n = checked_action.shape[0]
    log = _Log(checked_action, np.zeros(n), _validate_pscore(pscore, n))
    _validate_max_weight(max_weight)
    dist = _validate_action_dist(action_dist, n)
    _check_action_range(log.action, dist.shape[1])
    return _weights(log, dist, max_weight)


def effective_sample_size(weights: npt.ArrayLike) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of importance weights.

    It equals ``n`` when all weights are equal (the evaluation policy is the logging
    policy) and falls towards 1 as a few rounds carry all the weight. A small value warns
    that the estimate rests on few customers, whatever its confidence interval says.
    """
    w = np.asarray(weights, dtype=np.float64)
    squares = float(np.dot(w, w))
    if squares == 0.0:
        return 0.0
    return float(w.sum()) ** 2 / squares


def ips(
    *,
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    max_weight: float | None = None,
) -> float:
    """Inverse propensity scoring (OBP ``InverseProbabilityWeighting``).

    ``V = (1/n) * sum_i w_i * r_i`` with ``w_i = pi_e(a_i|x_i) / pscore_i``.
    Unbiased when ``pscore`` is the true logging probability and the logging policy gives
    positive probability to every action the evaluation policy may take.

    Parameters
    ----------
    action : array of int, shape (n,)
        Logged action index per round.
    reward : array of float, shape (n,)
        Observed reward per round.
    pscore : array of float, shape (n,)
        Logging policy's probability of the logged action, in (0, 1].
    action_dist : array of float, shape (n, n_actions)
        Evaluation policy's action probabilities per round; rows sum to 1.
    max_weight : float, optional
        Clip importance weights at this value. ``None`` (default) keeps the estimator
        unbiased; a finite value lowers variance at the cost of a downward-biased
        weight on the rounds the evaluation policy favours most.

    Returns
    -------
    float
        Estimated policy value (mean reward per round under the evaluation policy).
    """
    log, dist, _ = _prepare(action, reward, pscore, action_dist, None, max_weight)
    return _ratio(*_round_terms("ips", log, dist, None, max_weight)[:2])


def snips(
    *,
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    max_weight: float | None = None,
) -> float:
    """Self-normalised IPS (OBP ``SelfNormalizedInverseProbabilityWeighting``).

    ``V = sum_i w_i r_i / sum_i w_i``. Slightly biased, consistent, and usually far less
    variable than IPS; it stays within the range of observed rewards. Equals IPS when the
    weights average exactly 1. Parameters as in :func:`ips`.

    Returns
    -------
    float
        Estimated policy value; NaN if every weight is zero.
    """
    log, dist, _ = _prepare(action, reward, pscore, action_dist, None, max_weight)
    return _ratio(*_round_terms("snips", log, dist, None, max_weight)[:2])


def dr(
    *,
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    estimated_rewards: npt.ArrayLike,
    max_weight: float | None = None,
) -> float:
    """Doubly robust estimator (OBP ``DoublyRobust``).

    ``V = (1/n) * sum_i [ sum_a pi_e(a|x_i) q(x_i, a) + w_i * (r_i - q(x_i, a_i)) ]``:
    the reward model's prediction for the evaluation policy, corrected by the
    importance-weighted residual on the logged action. Unbiased if either the
    propensities or the reward model ``q`` are correct; with a good ``q`` the residuals
    are small, so the weights add little variance.

    Parameters
    ----------
    estimated_rewards : array of float, shape (n, n_actions)
        Reward model ``q(x_i, a)`` for every round and action (fitted on other data
        than the rounds evaluated, or cross-fitted, to avoid optimistic bias).
    action, reward, pscore, action_dist, max_weight
        As in :func:`ips`.

    Returns
    -------
    float
        Estimated policy value.
    """
    log, dist, q_hat = _prepare(action, reward, pscore, action_dist, estimated_rewards, max_weight)
    return _ratio(*_round_terms("dr", log, dist, q_hat, max_weight)[:2])


# ---------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class PolicyEstimate:
    """A policy value with its bootstrap confidence interval.

    Attributes
    ----------
    estimator : str
        ``"ips"``, ``"snips"`` or ``"dr"``.
    value : float
        Point estimate on the full log.
    ci_low, ci_high : float
        Percentile bootstrap interval at level ``1 - alpha``.
    n : int
        Number of logged rounds.
    effective_sample_size : float
        Kish ESS of the (clipped) importance weights.
    std_error : float
        Standard deviation of the bootstrap replicates.
    alpha : float
        One minus the interval's nominal coverage.
    n_bootstrap : int
        Number of bootstrap replicates.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float
    std_error: float
    alpha: float
    n_bootstrap: int


def _bootstrap_ratios(
    terms: Sequence[tuple[FloatArray, FloatArray | None]],
    *,
    n_bootstrap: int,
    seed: int,
) -> FloatArray:
    """Bootstrap replicates of ``sum(num[idx]) / sum(den[idx])`` for several statistics.

    One index matrix per chunk is drawn and reused for every statistic, so statistics
    computed together see the same resamples (common random numbers: differences between
    policies are then less noisy than the intervals of each).

    Returns an array of shape (len(terms), n_bootstrap).
    """
    n = terms[0][0].shape[0]
    rng = np.random.default_rng(seed)
    # Distinct per-round columns; ``None`` denominators become the resample size n.
    columns: list[FloatArray] = []
    for numerator, denominator in terms:
        columns.append(numerator)
        if denominator is not None:
            columns.append(denominator)
    chunk = max(1, min(n_bootstrap, _CHUNK_ELEMENTS // n))
    index_dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    # Few columns: gathering values by index is cheapest. Many columns (a policy table):
    # turn each resample into per-round counts once and get every sum from one matrix
    # product, so the cost no longer grows with the number of policies and estimators.
    use_counts = len(columns) > 2
    stacked = np.column_stack(columns) if use_counts else None
    sums = np.empty((len(columns), n_bootstrap), dtype=np.float64)
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=index_dtype)
        if stacked is not None:
            offsets = (np.arange(stop - start, dtype=np.int64) * n)[:, None]
            counts = np.bincount((idx + offsets).ravel(), minlength=(stop - start) * n)
            sums[:, start:stop] = (counts.reshape(stop - start, n).astype(np.float64) @ stacked).T
        else:
            for j, column in enumerate(columns):
                sums[j, start:stop] = column[idx].sum(axis=1)

    out = np.empty((len(terms), n_bootstrap), dtype=np.float64)
    j = 0
    for i, (_, denominator) in enumerate(terms):
        if denominator is None:
            out[i] = sums[j] / n
            j += 1
        else:
            num, den = sums[j], sums[j + 1]
            j += 2
            positive = den > 0
            out[i] = np.where(positive, num / np.where(positive, den, 1.0), np.nan)
    return out


def _check_bootstrap_args(n_bootstrap: int, alpha: float) -> None:
    if (
        isinstance(n_bootstrap, bool)
        or not isinstance(n_bootstrap, int | np.integer)
        or n_bootstrap < 2
    ):
        raise ValueError(f"n_bootstrap must be an integer >= 2, got {n_bootstrap!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _summarise(
    estimator: str,
    value: float,
    replicates: FloatArray,
    weights: FloatArray,
    alpha: float,
) -> PolicyEstimate:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        low = high = std = float("nan")
    else:
        low, high = (float(q) for q in np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0]))
        std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return PolicyEstimate(
        estimator=estimator,
        value=value,
        ci_low=low,
        ci_high=high,
        n=int(weights.shape[0]),
        effective_sample_size=effective_sample_size(weights),
        std_error=std,
        alpha=alpha,
        n_bootstrap=int(replicates.shape[0]),
    )


def estimate_policy_value(
    estimator: str,
    *,
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    estimated_rewards: npt.ArrayLike | None = None,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PolicyEstimate:
    """Estimate a policy's value with a percentile bootstrap confidence interval.

    Rounds are resampled with replacement ``n_bootstrap`` times (seeded
    ``numpy.random.Generator``) and the estimator is recomputed on each resample,
    including SNIPS's normaliser. The reward model ``estimated_rewards`` and the
    propensities are held fixed, so the interval reflects sampling noise of the log, not
    uncertainty in fitting ``q`` or a propensity model.

    Parameters
    ----------
    estimator : {"ips", "snips", "dr"}
        Which estimator to use.
    action, reward, pscore, action_dist, max_weight
        As in :func:`ips`.
    estimated_rewards : array of float, shape (n, n_actions), optional
        Reward model predictions; required for ``"dr"``, ignored otherwise.
    n_bootstrap : int, default 1000
        Number of bootstrap replicates.
    alpha : float, default 0.05
        The interval has nominal coverage ``1 - alpha``.
    seed : int, default 0
        Seed of the resampling generator.

    Returns
    -------
    PolicyEstimate
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    _check_bootstrap_args(n_bootstrap, alpha)
    if estimator == "dr" and estimated_rewards is None:
        raise ValueError("estimated_rewards is required for the 'dr' estimator")
    q_input = estimated_rewards if estimator == "dr" else None
    log, dist, q_hat = _prepare(action, reward, pscore, action_dist, q_input, max_weight)
    numerator, denominator, weights = _round_terms(estimator, log, dist, q_hat, max_weight)
    replicates = _bootstrap_ratios([(numerator, denominator)], n_bootstrap=n_bootstrap, seed=seed)
    return _summarise(estimator, _ratio(numerator, denominator), replicates[0], weights, alpha)


def evaluate_policies(
    policies: Mapping[str, npt.ArrayLike],
    *,
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    pscore: npt.ArrayLike,
    estimated_rewards: npt.ArrayLike | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Value of several policies by several estimators, as one table.

    All policies and estimators share the same bootstrap resamples (same ``seed``), so
    each row equals what :func:`estimate_policy_value` returns for it, and the log is
    resampled once rather than once per row.

    Parameters
    ----------
    policies : mapping of str to array, shape (n, n_actions)
        Policy name to its ``action_dist`` (e.g. ``{"model": ..., "logging": ...,
        "always_email": ...}``).
    action, reward, pscore, estimated_rewards, max_weight, n_bootstrap, alpha, seed
        As in :func:`estimate_policy_value`; ``estimated_rewards`` is needed only when
        ``"dr"`` is among ``estimators``.
    estimators : sequence of str, default ("ips", "snips", "dr")
        Estimators to compute for every policy.

    Returns
    -------
    pandas.DataFrame
        One row per (policy, estimator) in input order, columns ``policy, estimator,
        value, ci_low, ci_high, std_error, ess, n``.
    """
    if len(policies) == 0:
        raise ValueError("policies is empty: pass at least one action_dist")
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown or len(estimators) == 0:
        raise ValueError(
            f"estimators must be a non-empty subset of {ESTIMATORS}, got {tuple(estimators)!r}"
        )
    _check_bootstrap_args(n_bootstrap, alpha)
    if "dr" in estimators and estimated_rewards is None:
        raise ValueError("estimated_rewards is required for the 'dr' estimator")
    _validate_max_weight(max_weight)
    log = _validate_log(action, reward, pscore)
    n = log.action.shape[0]

    q_hat: FloatArray | None = None
    rows: list[tuple[str, str]] = []
    terms: list[tuple[FloatArray, FloatArray | None]] = []
    weights_per_row: list[FloatArray] = []
    for policy_name, raw_dist in policies.items():
        dist = _validate_action_dist(raw_dist, n, name=f"policies[{policy_name!r}]")
        _check_action_range(log.action, dist.shape[1])
        # q is a model of the world, not of a policy: validate it once (per shape).
        if (
            "dr" in estimators
            and estimated_rewards is not None
            and (q_hat is None or q_hat.shape != dist.shape)
        ):
            q_hat = _validate_estimated_rewards(estimated_rewards, dist.shape)
        for name in estimators:
            numerator, denominator, weights = _round_terms(name, log, dist, q_hat, max_weight)
            rows.append((policy_name, name))
            terms.append((numerator, denominator))
            weights_per_row.append(weights)

    replicates = _bootstrap_ratios(terms, n_bootstrap=n_bootstrap, seed=seed)
    records = []
    for (policy_name, name), (numerator, denominator), weights, boot in zip(
        rows, terms, weights_per_row, replicates, strict=True
    ):
        result = _summarise(name, _ratio(numerator, denominator), boot, weights, alpha)
        records.append(
            {
                "policy": policy_name,
                "estimator": name,
                "value": result.value,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "std_error": result.std_error,
                "ess": result.effective_sample_size,
                "n": result.n,
            }
        )
    return pd.DataFrame.from_records(
        records,
        columns=["policy", "estimator", "value", "ci_low", "ci_high", "std_error", "ess", "n"],
    )
