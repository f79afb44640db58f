"""Off-policy estimators: known answers, hand-computed cases, bootstrap and validation."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.ope import (
    PolicyEstimate,
    dr,
    effective_sample_size,
    estimate_policy_value,
    evaluate_policies,
    importance_weights,
    ips,
    snips,
)

# --------------------------------------------------------------- a bandit with a truth

N_CONTEXTS = 20
N_ACTIONS = 4


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _world(seed: int = 7) -> dict[str, np.ndarray]:
    """A contextual bandit small enough to know exactly.

    Contexts are one of 20 customer types with known frequencies; the expected reward of
    every (type, action) is a known table; the logging policy is a known softmax that
    gives every action at least a few percent.
    """
    rng = np.random.default_rng(seed)
    context_prob = rng.dirichlet(np.full(N_CONTEXTS, 5.0))
    q_true = rng.uniform(0.02, 0.4, size=(N_CONTEXTS, N_ACTIONS))
    logging = 0.8 * _softmax(rng.normal(scale=1.0, size=(N_CONTEXTS, N_ACTIONS))) + 0.2 / N_ACTIONS
    # Evaluation policies: mostly greedy on the truth (stochastic), and a deterministic
    # one that always picks the action a noisy model ranks first.
    greedy = np.eye(N_ACTIONS)[q_true.argmax(axis=1)]
    stochastic = 0.7 * greedy + 0.3 / N_ACTIONS
    noisy_scores = q_true + rng.normal(scale=0.05, size=q_true.shape)
    deterministic = np.eye(N_ACTIONS)[noisy_scores.argmax(axis=1)]
    return {
        "context_prob": context_prob,
        "q_true": q_true,
        "logging": logging,
        "stochastic": stochastic,
        "deterministic": deterministic,
    }


def _true_value(world: dict[str, np.ndarray], policy: np.ndarray) -> float:
    # V(pi) = sum_x p(x) sum_a pi(a|x) q(x, a): exact, no sampling.
    return float(world["context_prob"] @ (policy * world["q_true"]).sum(axis=1))


def _log(world: dict[str, np.ndarray], n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    context = rng.choice(N_CONTEXTS, size=n, p=world["context_prob"])
    probs = world["logging"][context]
    action = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    reward = (rng.random(n) < world["q_true"][context, action]).astype(np.float64)
    return {
        "context": context,
        "action": action,
        "reward": reward,
        "pscore": probs[np.arange(n), action],
    }


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    return _world()


@pytest.mark.parametrize("policy_name", ["stochastic", "deterministic"])
def test_estimators_recover_the_exact_value_of_a_known_bandit(
    world: dict[str, np.ndarray], policy_name: str
) -> None:
    log = _log(world, n=20_000, seed=11)
    policy = world[policy_name]
    truth = _true_value(world, policy)
    # An imperfect reward model: the truth plus noise, as a fitted model would be.
    rng = np.random.default_rng(3)
    q_hat = np.clip(world["q_true"] + rng.normal(scale=0.05, size=world["q_true"].shape), 0, 1)

    for estimator in ("ips", "snips", "dr"):
        est = estimate_policy_value(
            estimator,
            action=log["action"],
            reward=log["reward"],
            pscore=log["pscore"],
            action_dist=policy[log["context"]],
            estimated_rewards=q_hat[log["context"]],
            n_bootstrap=500,
            seed=1,
        )
        assert abs(est.value - truth) < 4 * est.std_error, (estimator, est, truth)
        assert est.ci_low <= truth <= est.ci_high, (estimator, est, truth)
        assert est.ci_low < est.value < est.ci_high


def test_bootstrap_interval_covers_the_truth_about_as_often_as_it_claims(
    world: dict[str, np.ndarray],
) -> None:
    # What a 95% interval means: over repeated logs, ~95% of intervals contain the truth.
    policy = world["stochastic"]
    truth = _true_value(world, policy)
    covered = 0
    reps = 200
    for rep in range(reps):
        log = _log(world, n=1_000, seed=1_000 + rep)
        est = estimate_policy_value(
            "snips",
            action=log["action"],
            reward=log["reward"],
            pscore=log["pscore"],
            action_dist=policy[log["context"]],
            n_bootstrap=200,
            seed=rep,
        )
        covered += est.ci_low <= truth <= est.ci_high
    assert 0.88 <= covered / reps <= 1.0


# ------------------------------------------------------------- hand-computed examples

# Four rounds, three actions.
ACTION = np.array([0, 1, 2, 1])
REWARD = np.array([1.0, 0.5, 1.0, 0.0])
PSCORE = np.array([0.5, 0.25, 0.25, 0.5])
ACTION_DIST = np.array(
    [
        [0.5, 0.25, 0.25],
        [0.0, 1.0, 0.0],
        [0.2, 0.3, 0.5],
        [0.5, 0.5, 0.0],
    ]
)
Q_HAT = np.array(
    [
        [0.8, 0.2, 0.4],
        [0.1, 0.6, 0.3],
        [0.5, 0.5, 0.9],
        [0.2, 0.4, 0.0],
    ]
)
LOGGED: dict[str, Any] = {
    "action": ACTION,
    "reward": REWARD,
    "pscore": PSCORE,
    "action_dist": ACTION_DIST,
}


def test_importance_weights_by_hand() -> None:
    # w_i = pi_e(a_i|x_i) / pscore_i = 0.5/0.5, 1.0/0.25, 0.5/0.25, 0.5/0.5
    weights = importance_weights(action=ACTION, pscore=PSCORE, action_dist=ACTION_DIST)
    np.testing.assert_allclose(weights, [1.0, 4.0, 2.0, 1.0])


def test_ips_by_hand() -> None:
    # (1*1.0 + 4*0.5 + 2*1.0 + 1*0.0) / 4 = 5 / 4
    assert ips(**LOGGED) == pytest.approx(1.25)


def test_snips_by_hand() -> None:
    # (1*1.0 + 4*0.5 + 2*1.0 + 1*0.0) / (1 + 4 + 2 + 1) = 5 / 8
    assert snips(**LOGGED) == pytest.approx(0.625)


def test_dr_by_hand() -> None:
    # direct_i = sum_a pi_e(a|x_i) q(x_i, a)
    direct = [
        0.5 * 0.8 + 0.25 * 0.2 + 0.25 * 0.4,  # 0.55
        1.0 * 0.6,  # 0.60
        0.2 * 0.5 + 0.3 * 0.5 + 0.5 * 0.9,  # 0.70
        0.5 * 0.2 + 0.5 * 0.4,  # 0.30
    ]
    # correction_i = w_i * (r_i - q(x_i, a_i))
    correction = [
        1.0 * (1.0 - 0.8),  # 0.2
        4.0 * (0.5 - 0.6),  # -0.4
        2.0 * (1.0 - 0.9),  # 0.2
        1.0 * (0.0 - 0.4),  # -0.4
    ]
    expected = sum(d + c for d, c in zip(direct, correction, strict=True)) / 4  # 1.75 / 4
    assert expected == pytest.approx(0.4375)
    assert dr(**LOGGED, estimated_rewards=Q_HAT) == pytest.approx(expected)


def test_clipping_by_hand() -> None:
    # max_weight=2 turns the weights 1, 4, 2, 1 into 1, 2, 2, 1.
    # IPS: (1*1.0 + 2*0.5 + 2*1.0 + 1*0.0) / 4 = 1.0; SNIPS: 4 / 6.
    assert ips(**LOGGED, max_weight=2.0) == pytest.approx(1.0)
    assert snips(**LOGGED, max_weight=2.0) == pytest.approx(4.0 / 6.0)
    # A cap above every weight changes nothing.
    assert ips(**LOGGED, max_weight=100.0) == pytest.approx(ips(**LOGGED))


def test_snips_equals_ips_when_weights_average_one() -> None:
    # Weights 0.5/0.25=2, 0.4/0.8=0.5, 0.6/0.6=1, 0.25/0.5=0.5: mean exactly 1.
    logged: dict[str, Any] = {
        "action": np.array([0, 1, 0, 1]),
        "reward": np.array([1.0, 3.0, 2.0, 4.0]),
        "pscore": np.array([0.25, 0.8, 0.6, 0.5]),
        "action_dist": np.array([[0.5, 0.5], [0.6, 0.4], [0.6, 0.4], [0.75, 0.25]]),
    }
    # IPS = (2*1 + 0.5*3 + 1*2 + 0.5*4) / 4 = 7.5 / 4; SNIPS = 7.5 / 4 as well.
    assert ips(**logged) == pytest.approx(7.5 / 4)
    assert snips(**logged) == pytest.approx(ips(**logged))


def test_logging_policy_evaluated_on_itself_has_unit_weights() -> None:
    rng = np.random.default_rng(0)
    n = 500
    dist = rng.dirichlet(np.ones(3), size=n)
    action = (rng.random(n)[:, None] > np.cumsum(dist, axis=1)).sum(axis=1)
    reward = rng.random(n)
    pscore = dist[np.arange(n), action]
    # Every weight is 1, so IPS = SNIPS = the plain average reward, and ESS = n.
    assert ips(action=action, reward=reward, pscore=pscore, action_dist=dist) == pytest.approx(
        reward.mean()
    )
    est = estimate_policy_value(
        "snips", action=action, reward=reward, pscore=pscore, action_dist=dist, n_bootstrap=50
    )
    assert est.value == pytest.approx(reward.mean())
    assert est.effective_sample_size == pytest.approx(n)


def test_dr_with_a_perfect_reward_model_gets_no_variance_from_the_weights() -> None:
    rng = np.random.default_rng(5)
    n, k = 2_000, 3
    q_true = rng.uniform(size=(n, k))
    action = rng.integers(0, k, size=n)
    reward = q_true[np.arange(n), action]  # noise-free: q is exactly the reward
    policy = rng.dirichlet(np.ones(k), size=n)
    uniform = np.full(n, 1.0 / k)
    skewed = rng.uniform(0.01, 1.0, size=n)  # wildly different (wrong) propensities

    common: dict[str, Any] = {
        "action": action,
        "reward": reward,
        "action_dist": policy,
        "n_bootstrap": 200,
    }
    a = estimate_policy_value("dr", pscore=uniform, estimated_rewards=q_true, **common)
    b = estimate_policy_value("dr", pscore=skewed, estimated_rewards=q_true, **common)
    direct_method = float((policy * q_true).sum(axis=1).mean())
    # Every residual r - q is zero, so the weights multiply zero: the estimate, and its
    # bootstrap spread, are those of the reward model alone whatever the propensities.
    assert a.value == pytest.approx(direct_method)
    assert b.value == pytest.approx(direct_method)
    assert a.std_error == pytest.approx(b.std_error)
    ips_skewed = estimate_policy_value("ips", pscore=skewed, **common)
    assert ips_skewed.std_error > 5 * a.std_error


# ---------------------------------------------------------------------- bootstrap API


def test_policy_estimate_is_frozen_and_reproducible() -> None:
    est = estimate_policy_value("ips", **LOGGED, n_bootstrap=200, seed=3)
    again = estimate_policy_value("ips", **LOGGED, n_bootstrap=200, seed=3)
    assert isinstance(est, PolicyEstimate)
    assert est == again
    assert est.n == 4
    assert est.estimator == "ips"
    assert est.ci_low <= est.value <= est.ci_high
    # (1 + 4 + 2 + 1)^2 / (1 + 16 + 4 + 1) = 64 / 22
    assert est.effective_sample_size == pytest.approx(64 / 22)
    with pytest.raises(FrozenInstanceError):
        est.value = 0.0  # type: ignore[misc]


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[5.0, np.zeros(9)]) == pytest.approx(1)
    assert effective_sample_size(np.zeros(3)) == 0.0


def test_evaluate_policies_table_matches_single_estimates(world: dict[str, np.ndarray]) -> None:
    log = _log(world, n=3_000, seed=2)
    ctx = log["context"]
    policies = {
        "model": world["stochastic"][ctx],
        "always_first": np.eye(N_ACTIONS)[np.zeros(len(ctx), dtype=int)],
    }
    common: dict[str, Any] = {
        "action": log["action"],
        "reward": log["reward"],
        "pscore": log["pscore"],
        "estimated_rewards": world["q_true"][ctx],
        "n_bootstrap": 300,
        "seed": 9,
    }
    table = evaluate_policies(policies, **common)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "policy",
        "estimator",
        "value",
        "ci_low",
        "ci_high",
        "std_error",
        "ess",
        "n",
    ]
    assert list(zip(table["policy"], table["estimator"], strict=True)) == [
        (p, e) for p in policies for e in ("ips", "snips", "dr")
    ]
    for row in table.itertuples():
        estimator, policy = str(row.estimator), str(row.policy)
        single = estimate_policy_value(estimator, action_dist=policies[policy], **common)
        assert row.value == pytest.approx(single.value, rel=1e-12)
        assert row.ci_low == pytest.approx(single.ci_low, rel=1e-9)
        assert row.ci_high == pytest.approx(single.ci_high, rel=1e-9)
        assert row.ess == pytest.approx(single.effective_sample_size)

    only_ips = evaluate_policies(
        policies,
        action=log["action"],
        reward=log["reward"],
        pscore=log["pscore"],
        estimators=("ips",),
        n_bootstrap=50,
    )
    assert list(only_ips["estimator"]) == ["ips", "ips"]


@pytest.mark.slow
def test_doubly_robust_on_a_large_log_matches_its_formula() -> None:
    """200k rounds, 1,000 bootstrap samples: the point estimate is the DR formula computed
    here independently, and the bootstrap interval brackets it.  (How long this takes is a
    benchmark question, not a test's: it was a timed assertion that failed under load.)"""
    rng = np.random.default_rng(0)
    n, k = 200_000, 5
    action = rng.integers(0, k, size=n)
    dist = rng.dirichlet(np.ones(k), size=n)
    q_hat = rng.random((n, k))
    reward = rng.random(n)
    pscore = np.full(n, 1.0 / k)
    est = estimate_policy_value(
        "dr",
        action=action,
        reward=reward,
        pscore=pscore,
        action_dist=dist,
        estimated_rewards=q_hat,
        n_bootstrap=1_000,
    )
    rows = np.arange(n)
    per_round = (dist * q_hat).sum(axis=1) + dist[rows, action] / pscore * (
        reward - q_hat[rows, action]
    )
    assert est.value == pytest.approx(per_round.mean(), rel=1e-12)
    assert est.ci_low < est.value < est.ci_high
    assert est.std_error == pytest.approx(per_round.std() / np.sqrt(n), rel=0.15)
    assert est.n == n


# --------------------------------------------------------------------------- validation


def _bad(**changes: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {**LOGGED, "estimated_rewards": Q_HAT}
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"reward": np.array([1.0, 0.0, 1.0])}, "reward"),
        ({"reward": np.array([1.0, np.nan, 1.0, 0.0])}, "reward"),
        ({"reward": np.array([[1.0, 0.0, 1.0, 0.0]])}, "reward"),
        ({"pscore": np.array([0.5, 0.0, 0.25, 0.5])}, "pscore"),
        ({"pscore": np.array([0.5, 1.5, 0.25, 0.5])}, "pscore"),
        ({"pscore": np.array([0.5, np.inf, 0.25, 0.5])}, "pscore"),
        ({"pscore": np.array([0.5, 0.25, 0.25])}, "pscore"),
        ({"action": np.array([0, 1, 3, 1])}, "action"),
        ({"action": np.array([0, -1, 2, 1])}, "action"),
        ({"action": np.array([0.0, 1.0, 2.0, 1.0])}, "action"),
        ({"action": np.array([], dtype=int)}, "action"),
        ({"action_dist": ACTION_DIST * 0.9}, "action_dist"),
        ({"action_dist": ACTION_DIST[:3]}, "action_dist"),
        ({"action_dist": ACTION_DIST[:, 0]}, "action_dist"),
        ({"action_dist": np.where(ACTION_DIST == 0.0, np.nan, ACTION_DIST)}, "action_dist"),
        (
            {"action_dist": np.array([[1.2, -0.2, 0.0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])},
            "action_dist",
        ),
        ({"estimated_rewards": Q_HAT[:, :2]}, "estimated_rewards"),
        ({"estimated_rewards": np.where(Q_HAT == 0.0, np.nan, Q_HAT)}, "estimated_rewards"),
        ({"estimated_rewards": None}, "estimated_rewards"),
        ({"max_weight": 0.0}, "max_weight"),
    ],
)
def test_validation_names_the_bad_input(changes: dict[str, Any], name: str) -> None:
    # ``\b`` stops "action" from matching a message about "action_dist".
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        estimate_policy_value("dr", **_bad(**changes), n_bootstrap=10)


def test_point_estimators_validate_too() -> None:
    with pytest.raises(ValueError, match=r"^pscore\b"):
        ips(**{**LOGGED, "pscore": np.array([0.5, 0.0, 0.25, 0.5])})
    with pytest.raises(ValueError, match=r"^action_dist\b"):
        snips(**{**LOGGED, "action_dist": ACTION_DIST * 2})
    with pytest.raises(ValueError, match=r"^estimated_rewards\b"):
        dr(**LOGGED, estimated_rewards=Q_HAT.T)


def test_argument_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^estimator\b"):
        estimate_policy_value("ipw", **LOGGED)
    with pytest.raises(ValueError, match=r"^n_bootstrap\b"):
        estimate_policy_value("ips", **LOGGED, n_bootstrap=1)
    with pytest.raises(ValueError, match=r"^alpha\b"):
        estimate_policy_value("ips", **LOGGED, alpha=1.5)
    table_inputs: dict[str, Any] = {"action": ACTION, "reward": REWARD, "pscore": PSCORE}
    with pytest.raises(ValueError, match=r"^policies\b"):
        evaluate_policies({}, **table_inputs)
    with pytest.raises(ValueError, match=r"^estimators\b"):
        evaluate_policies({"p": ACTION_DIST}, **table_inputs, estimators=("ips", "dm"))
    with pytest.raises(ValueError, match=r"^estimated_rewards\b"):
        evaluate_policies({"p": ACTION_DIST}, **table_inputs)
    with pytest.raises(ValueError, match=r"^policies\['bad'\]"):
        evaluate_policies({"bad": ACTION_DIST * 0.5}, **table_inputs, estimators=("ips",))
