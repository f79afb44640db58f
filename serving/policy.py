"""The decision policy: expected value per action, ranking, exploration and propensities.

For each customer and eligible action ``a``::

    score(a) = conversion_value * (p_conv(a) - p_conv(none))
             - churn_cost       * (p_churn(a) - p_churn(none))
             - cost(a)

so ``score(none) = 0`` and an action is only worth recommending when it beats leaving the
customer alone.  The engine passes ``conversion_value`` times the bundle's
``conversion_effect_scale`` (serving/engine.py, training/effect_scale.py): the uplift of
one send on its own, where the model's label sees it diluted by the follow-up sends.  The
greedy policy takes the highest score.  Exploration (epsilon-greedy or softmax over
scores) and a random control group make the policy stochastic; the probability of every
action is computed exactly, so logged decisions support unbiased off-policy evaluation
later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from features.catalog import Catalog, Exploration
from features.schema import NO_ACTION


def action_costs(catalog: Catalog, actions: Sequence[str]) -> np.ndarray:
    """Cost of each action in code order (0 for no action)."""
    return np.array([0.0 if a == NO_ACTION else catalog.action(a).cost for a in actions])


def expected_values(
    p_conversion: np.ndarray,
    p_churn: np.ndarray,
    costs: np.ndarray,
    *,
    conversion_value: float,
    churn_cost: float,
    none_index: int = 0,
) -> np.ndarray:
    """Score of every action against no action, ``(n, n_actions)``; the none column is 0."""
    d_conv = p_conversion - p_conversion[:, [none_index]]
    d_churn = p_churn - p_churn[:, [none_index]]
    ev = conversion_value * d_conv - churn_cost * d_churn - costs[None, :]
    ev[:, none_index] = 0.0
    return ev


def greedy(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Index of the best eligible action per row (ties: the lowest code, i.e. none first)."""
    masked = np.where(eligible, scores, -np.inf)
    return np.argmax(masked, axis=1)


def ranking(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Action codes per row, best first; ineligible actions sort last."""
    masked = np.where(eligible, scores, -np.inf)
    # Stable sort on the negated score keeps the lower code first among ties.
    return np.argsort(-masked, axis=1, kind="stable")


def action_distribution(
    scores: np.ndarray,
    eligible: np.ndarray,
    exploration: Exploration,
    *,
    none_index: int = 0,
) -> np.ndarray:
    """Exact probability of choosing each action, ``(n, n_actions)``; rows sum to 1.

    The distribution mixes the random control group (no action, with probability
    ``control_share``) with the treated policy: ``epsilon``-greedy (``1 - eps`` on the best
    eligible action plus ``eps`` spread evenly over the eligible ones) or ``softmax``
    (``exp(score / temperature)`` over the eligible ones).  Control membership is drawn
    independently of the customer's features, so this marginal probability is the
    propensity that off-policy evaluation needs.
    """
    n = scores.shape[0]
    eligible = eligible.copy()
    eligible[:, none_index] = True  # no action is always possible
    if exploration.method == "softmax":
        z = np.where(eligible, scores / exploration.temperature, -np.inf)
        z -= z.max(axis=1, keepdims=True)
        w = np.exp(z)
        treated = w / w.sum(axis=1, keepdims=True)
    else:
        treated = eligible / eligible.sum(axis=1, keepdims=True) * exploration.epsilon
        treated[np.arange(n), greedy(scores, eligible)] += 1.0 - exploration.epsilon
    probs = treated * (1.0 - exploration.control_share)
    probs[:, none_index] += exploration.control_share
    return probs


def treated_distribution(
    probs: np.ndarray, control_share: float, none_index: int = 0
) -> np.ndarray:
    """The distribution outside the control group, recovered from :func:`action_distribution`."""
    treated = probs.copy()
    treated[:, none_index] -= control_share
    return treated / (1.0 - control_share)


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one action per row from its distribution."""
    u = rng.random(len(probs))[:, None]
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def in_control_group(
    customer_ids: Sequence[str], share: float, salt: str = "touchpoint"
) -> np.ndarray:
    """Stable, random-looking control-group membership from a hash of the customer id.

    A hash (not a random draw per request) keeps a customer in or out of the control group
    across requests, which is what a control group means.
    """
    if share <= 0:
        return np.zeros(len(customer_ids), dtype=bool)
    out = np.empty(len(customer_ids), dtype=bool)
    for i, cid in enumerate(customer_ids):
        digest = hashlib.blake2b(f"{salt}:{cid}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2**64 < share
    return out
