"""Challenger against champion: both policies graded by the same reward estimates.

A doubly robust value is ``mean(q(x, π(x)) + 1{a = π(x)} / p · (r − q(x, a)))``.  When
each policy is graded with its own model's ``q``, a model that believes in its own
choices grades them up: the correction term removes that only on the few rows where the
logged action is the policy's, and only as far as the propensities are right.  So the
challenger and the champion are valued here on the same test decision points, with the
same rewards (the challenger's catalog: today's objective) and the same ``q``: the mean of
the two models' predictions.  Neither model's beliefs favour its own policy more than the
other's, as in the Open Bandit Pipeline, where one reward model serves every policy.
``touchpoint train --formulation compare`` grades its candidates on validation the same
way (:func:`grade_policies`: the mean of all the candidates' estimates).

Measured on the default world (docs/TRAINING.md, "The champion comparison"): with its own
``q``, the split fit (truth 0.565 of the oracle) beat the refit before the test period
(truth 0.700) by DR, −33.91 against −34.16; graded by either model's ``q`` for both, the
refit won, as the truth says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from serving.engine import DecisionEngine
from training import ope
from training.evaluation import LoggedRounds, one_hot, rewards

__all__ = ["PolicyComparison", "compare_with_champion", "grade_policies"]


@dataclass(frozen=True)
class PolicyComparison:
    """DR values of the two policies on the same rows, with the same rewards and ``q``."""

    challenger: float
    champion: float


def compare_with_champion(
    challenger: DecisionEngine,
    champion: DecisionEngine,
    rounds: LoggedRounds,
    champion_X: np.ndarray,
    *,
    n_bootstrap: int = 50,
    seed: int = 0,
) -> PolicyComparison | None:
    """Both policies' DR values on ``rounds`` (the challenger's test decision points;
    ``champion_X`` holds the same rows in the champion's feature spec).

    None when the two serve different action sets: their policies are not comparable.
    """
    values = grade_policies(
        {"challenger": (challenger, rounds.X), "champion": (champion, champion_X)},
        rounds,
        reference=challenger,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    if values is None:
        return None
    return PolicyComparison(challenger=values["challenger"], champion=values["champion"])


def grade_policies(
    graded: Mapping[str, tuple[DecisionEngine, np.ndarray]],
    rounds: LoggedRounds,
    *,
    reference: DecisionEngine,
    n_bootstrap: int = 50,
    seed: int = 0,
) -> dict[str, float] | None:
    """DR value of each engine's greedy policy on ``rounds``, all graded by the mean of
    the engines' reward estimates.

    ``graded`` maps a name to an engine and the rows of ``rounds`` in its feature spec.
    ``reference`` decides the action order of ``rounds`` and the rewards (its catalog's
    values and costs).  None when an engine serves another action set.
    """
    k = len(reference.actions)
    value, cost = reference.conversion_value, reference.churn_cost
    policies, estimates = {}, []
    for name, (engine, X) in graded.items():
        if set(engine.actions) != set(reference.actions):
            return None
        # the engine's column for each of the reference's actions, and back
        columns = np.array([engine.actions.index(a) for a in reference.actions])
        scored = engine.score(X, rounds.decision_time)
        costs = np.empty(k)
        costs[columns] = reference.costs  # the reference's costs, in the engine's order
        estimates.append(scored.q_values(value, cost, costs)[:, columns])
        policies[name] = one_hot(np.argsort(columns)[scored.greedy()], k)
    table = ope.evaluate_policies(
        policies,
        action=rounds.action,
        reward=rewards(
            rounds.conversion,
            rounds.churn,
            rounds.action,
            reference.costs,
            conversion_value=value,
            churn_cost=cost,
        ),
        pscore=rounds.pscore,
        estimated_rewards=np.mean(estimates, axis=0),
        estimators=("dr",),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return {str(name): float(v) for name, v in table.set_index("policy")["value"].items()}
