"""One customer's decision after the models, as one compiled call: the request path's
copy of the vectorized engine.

For a batch, :class:`serving.engine.DecisionEngine` reads the contact state off the
feature rows, applies the rules, computes expected values, ranks, and builds the
exploration distribution with a few dozen numpy operations over ``(n, n_actions)``
arrays.  For one customer each of those operations costs 1-5 µs of fixed overhead on an
array of 11 values: together ~250 µs of a ~1.4 ms request.  :func:`decide` does the
same arithmetic in one numba loop, in the same order, so the results are bit for bit
those of the vectorized code (tests/serving/test_decision_kernel.py checks it on random
rows and settings), with one exception: softmax exploration uses numba's ``exp``, which
may differ from numpy's SIMD ``exp`` in the last bit.

The engine stays the one source of truth: batch recommendation and offline evaluation
use the vectorized code, and the test above holds this copy to it.
"""

from __future__ import annotations

import numpy as np

from features.compiled import jit

__all__ = ["P_DRAW", "P_QUIET_NOW", "decide", "params_vector"]

# Positions in the float64 parameter vector (one array: numba's dispatch costs ~0.3 µs
# per argument, and these change only with the model or the request).
P_COOLDOWN_HOURS = 0
P_MAX_TOTAL = 1
P_CONVERSION_VALUE = 2
P_CHURN_COST = 3
P_EPSILON = 4
P_TEMPERATURE = 5
P_CONTROL_SHARE = 6
P_SOFTMAX = 7  # 1.0 for softmax exploration, 0.0 for epsilon-greedy
P_QUIET_NOW = 8  # 1.0 when the decision time falls inside the quiet hours
P_DRAW = 9  # the uniform draw in [0, 1) that picks the action
_N_PARAMS = 10


def params_vector(
    *,
    cooldown_hours: float,
    max_total: int,
    conversion_value: float,
    churn_cost: float,
    softmax: bool,
    epsilon: float,
    temperature: float,
    control_share: float,
) -> np.ndarray:
    """The model's part of the parameter vector; the request fills the quiet flag and
    the draw (:data:`P_QUIET_NOW`, :data:`P_DRAW`) in a copy."""
    p = np.zeros(_N_PARAMS)
    p[P_COOLDOWN_HOURS] = cooldown_hours
    p[P_MAX_TOTAL] = max_total
    p[P_CONVERSION_VALUE] = conversion_value
    p[P_CHURN_COST] = churn_cost
    p[P_EPSILON] = epsilon
    p[P_TEMPERATURE] = temperature
    p[P_CONTROL_SHARE] = control_share
    p[P_SOFTMAX] = 1.0 if softmax else 0.0
    return p


@jit(nogil=True)
def _at_least(value: float, bound: float) -> bool:
    """``int64(value) >= bound`` as numpy's ``astype(np.int64)`` reads it: truncation
    toward zero, and NaN or infinities (INT64_MIN on x86) never reach a bound."""
    if not np.isfinite(value):
        return False
    return float(np.int64(value)) >= bound


@jit(nogil=True)
def _rule(
    x: np.ndarray,
    c: int,
    days_since: np.ndarray,
    unsubscribed: np.ndarray,
    sends: np.ndarray,
    consent: np.ndarray,
    total_col: int,
    cap: float,
    quiet: bool,
    params: np.ndarray,
) -> int:
    """The first failing rule of an action on channel column ``c`` (RULES order), or 0;
    as serving.contact_policy.contact_state and suppression_codes compute it."""
    if consent[c] >= 0 and x[consent[c]] == 0.0:  # NaN (unknown) counts as given
        return 1
    if x[unsubscribed[c]] > 0.0:
        return 2
    d = x[days_since[c]]
    hours = np.inf if np.isnan(d) else d * 24.0
    if hours < params[P_COOLDOWN_HOURS]:
        return 3
    if _at_least(x[sends[c]], cap):
        return 4
    if _at_least(x[total_col], params[P_MAX_TOTAL]):
        return 5
    if quiet and params[P_QUIET_NOW] != 0.0:
        return 6
    return 0


@jit(nogil=True)
def _pairwise_sum(a: np.ndarray) -> float:
    """``a.sum()`` as numpy computes it for fewer than 128 values (8 partial sums)."""
    n = a.size
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r = a[:8].copy()
    i = 8
    while i < n - (n % 8):
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[i]
        i += 1
    return res


@jit(nogil=True)
def _ranks_before(key_a: float, key_b: float) -> bool:
    """Whether sort key ``a`` sorts strictly before ``b`` in numpy's order (NaN last)."""
    if np.isnan(key_a):
        return False
    return np.isnan(key_b) or key_a < key_b


@jit(nogil=True)
def decide(
    x: np.ndarray,
    days_since: np.ndarray,
    unsubscribed: np.ndarray,
    sends: np.ndarray,
    consent: np.ndarray,
    total_col: int,
    action_column: np.ndarray,
    action_cap: np.ndarray,
    action_quiet: np.ndarray,
    costs: np.ndarray,
    params: np.ndarray,
    p_conv: np.ndarray,
    p_churn: np.ndarray,
    codes: np.ndarray,
    scores: np.ndarray,
    probs: np.ndarray,
    order: np.ndarray,
) -> int:
    """Rules, expected values, ranking, exploration and the draw for one feature row ``x``
    (float64, as decided: the rules read it at full precision).

    ``action_column[a]`` is action ``a``'s channel column in the contact arrays (-1 for
    no action).  Fills ``codes`` (int8 rule codes, 0 = eligible), ``scores``, ``probs``
    and ``order`` (action codes best first, ineligible last) and returns the action drawn
    with ``params[P_DRAW]``.
    """
    n = costs.size
    for a in range(n):
        c = action_column[a]
        if c < 0:
            codes[a] = 0  # no action is never suppressed
        else:
            codes[a] = _rule(
                x, c, days_since, unsubscribed, sends, consent, total_col,
                action_cap[a], action_quiet[a], params,
            )  # fmt: skip
    # Expected value against no action, in serving.policy.expected_values' order.
    value, cost = params[P_CONVERSION_VALUE], params[P_CHURN_COST]
    for a in range(n):
        d_conv = p_conv[a] - p_conv[0]
        d_churn = p_churn[a] - p_churn[0]
        scores[a] = value * d_conv - cost * d_churn - costs[a]
    scores[0] = 0.0
    # Ranking: a stable sort of -score, ineligible actions as -inf (serving.policy.ranking).
    keys = np.empty(n)
    for a in range(n):
        keys[a] = -scores[a] if codes[a] == 0 else np.inf
        order[a] = a
    for a in range(1, n):
        j = a
        while j > 0 and _ranks_before(keys[order[j]], keys[order[j - 1]]):
            order[j], order[j - 1] = order[j - 1], order[j]
            j -= 1
    # The treated policy over the eligible actions and none (serving.policy.action_distribution).
    if params[P_SOFTMAX] != 0.0:
        z = np.empty(n)
        for a in range(n):
            z[a] = scores[a] / params[P_TEMPERATURE] if (codes[a] == 0 or a == 0) else -np.inf
        top = z.max()
        for a in range(n):
            probs[a] = np.exp(z[a] - top)
        total = _pairwise_sum(probs)
        for a in range(n):
            probs[a] = probs[a] / total
    else:
        count = 0
        best, best_value = 0, -np.inf
        for a in range(n):
            if codes[a] == 0 or a == 0:
                count += 1
                s = scores[a]
                # np.argmax: the first maximum, and the first NaN if there is one.
                if (np.isnan(s) and not np.isnan(best_value)) or s > best_value:
                    best, best_value = a, s
        share = 1.0 / count
        for a in range(n):
            probs[a] = share * params[P_EPSILON] if (codes[a] == 0 or a == 0) else 0.0
        probs[best] += 1.0 - params[P_EPSILON]
    control = params[P_CONTROL_SHARE]
    for a in range(n):
        probs[a] = probs[a] * (1.0 - control)
    probs[0] += control
    # The draw (serving.policy.sample_actions): how many cumulative sums stay below u.
    below, running = 0, 0.0
    for a in range(n):
        running += probs[a]
        if running < params[P_DRAW]:
            below += 1
    return min(below, n - 1)
