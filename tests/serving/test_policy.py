"""Expected values, ranking, exploration and exact propensities."""

from __future__ import annotations

import numpy as np
import pytest

from features.catalog import Exploration
from serving.policy import (
    action_distribution,
    expected_values,
    greedy,
    in_control_group,
    ranking,
    sample_actions,
    treated_distribution,
)


def test_expected_value_is_relative_to_no_action() -> None:
    p_conv = np.array([[0.10, 0.15, 0.12]])
    p_churn = np.array([[0.05, 0.07, 0.04]])
    costs = np.array([0.0, 0.5, 1.0])
    ev = expected_values(p_conv, p_churn, costs, conversion_value=50.0, churn_cost=200.0)
    # a1: 50*0.05 - 200*0.02 - 0.5 = 2.5 - 4 - 0.5 = -2.0 ; a2: 50*0.02 + 200*0.01 - 1 = 2.0
    np.testing.assert_allclose(ev, [[0.0, -2.0, 2.0]])


def test_ranking_puts_ineligible_last_and_none_wins_ties() -> None:
    scores = np.array([[0.0, 3.0, 1.0, 0.0]])
    eligible = np.array([[True, False, True, True]])
    assert ranking(scores, eligible)[0].tolist() == [2, 0, 3, 1]
    assert greedy(np.zeros((1, 3)), np.ones((1, 3), dtype=bool))[0] == 0


@pytest.mark.parametrize("method", ["epsilon", "softmax"])
def test_distribution_is_exact_and_respects_eligibility(method: str) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 5))
    scores[:, 0] = 0
    eligible = rng.random((200, 5)) < 0.6
    exploration = Exploration(method=method, epsilon=0.2, temperature=0.5, control_share=0.1)
    probs = action_distribution(scores, eligible, exploration)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    blocked = ~eligible
    blocked[:, 0] = False
    assert np.all(probs[blocked] == 0)
    assert np.all(probs[:, 0] >= 0.1 - 1e-12)  # the control group share is always on none
    treated = treated_distribution(probs, 0.1)
    np.testing.assert_allclose(treated.sum(axis=1), 1.0)


def test_epsilon_greedy_probabilities_match_their_formula() -> None:
    scores = np.array([[0.0, 2.0, 1.0, 5.0]])
    eligible = np.array([[True, True, True, False]])
    exploration = Exploration(method="epsilon", epsilon=0.3, temperature=1.0, control_share=0.0)
    probs = action_distribution(scores, eligible, exploration)[0]
    np.testing.assert_allclose(probs, [0.1, 0.1 + 0.7, 0.1, 0.0])


def test_sampling_frequencies_match_the_propensities() -> None:
    probs = np.tile([0.5, 0.3, 0.2], (100_000, 1))
    draws = sample_actions(probs, np.random.default_rng(1))
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.01)


def test_control_group_is_stable_and_of_the_right_size() -> None:
    ids = [f"c{i}" for i in range(20000)]
    first, second = in_control_group(ids, 0.05), in_control_group(ids, 0.05)
    assert np.array_equal(first, second)
    assert abs(first.mean() - 0.05) < 0.01
    assert not in_control_group(ids, 0.0).any()
