"""Challenger against champion: both policies graded by the same reward estimates.

A doubly robust value is ``mean(q(x, π(x)) + 1{a = π(x)} / p · (r − q(x, a)))``.  When
each policy is graded with its own model's ``q``, a model that believes in its own
choices grades them up: the correction term removes that only on the few rows where the
logged action is the policy's, and only as far as the propensities are right.  So the
challenger and the champion are valued here on the same test decision points, with the
same rewards (the challenger's catalog: today's objective) and the same ``q``: the mean of
the two models' predictions.  Neither model's beliefs favour its own policy more than the
other's, as in the Open Bandit Pipeline, where one reward model serves every policy.

Measured on the default world (docs/TRAINING.md, "The champion comparison"): with its own
``q``, the split fit (truth 0.565 of the oracle) beat the refit before the test period
(truth 0.700) by DR, −33.91 against −34.16; graded by either model's ``q`` for both, the
refit won, as the truth says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.engine import DecisionEngine
from training import ope
from training.evaluation import LoggedRounds, one_hot, rewards

__all__ = ["PolicyComparison", "compare_with_champion"]


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
    if set(champion.actions) != set(challenger.actions):
        return None
    # column of the champion's scores for each of the challenger's actions, and back
    to_champion = np.array([champion.actions.index(a) for a in challenger.actions])
    to_challenger = np.argsort(to_champion)
    mine = challenger.score(rounds.X, rounds.decision_time)
    theirs = champion.score(champion_X, rounds.decision_time)
    value, cost = challenger.conversion_value, challenger.churn_cost
    q_mine = mine.q_values(value, cost, challenger.costs)
    q_theirs = (
        value * theirs.p_conversion[:, to_champion]
        - cost * theirs.p_churn[:, to_champion]
        - challenger.costs[None, :]
    )
    k = len(challenger.actions)
    table = ope.evaluate_policies(
        {
            "challenger": one_hot(mine.greedy(), k),
            "champion": one_hot(to_challenger[theirs.greedy()], k),
        },
        action=rounds.action,
        reward=rewards(
            rounds.conversion,
            rounds.churn,
            rounds.action,
            challenger.costs,
            conversion_value=value,
            churn_cost=cost,
        ),
        pscore=rounds.pscore,
        estimated_rewards=(q_mine + q_theirs) / 2,
        estimators=("dr",),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    values = table.set_index("policy")["value"]
    return PolicyComparison(
        challenger=float(values["challenger"]), champion=float(values["champion"])
    )
