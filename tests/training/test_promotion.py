"""The champion comparison grades both policies by the same reward estimates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.bundle import load_bundle
from serving.engine import DecisionEngine
from tests.serving.bundle_factory import AS_OF, save_tiny_bundle
from training import ope
from training.evaluation import LoggedRounds, one_hot, policy_value_table, rewards
from training.promotion import compare_with_champion


def _engine(folder: Path, version: str, seed: int) -> DecisionEngine:
    bundle = load_bundle(save_tiny_bundle(folder / version, version))
    if seed:  # another model: the same layout, boosters fitted on other random data
        other = load_bundle(save_tiny_bundle(folder / f"{version}-other", version))
        rng = np.random.default_rng(seed)
        for scorer in (other.conversion, other.churn):
            booster = scorer.boosters["all"]
            X = rng.normal(size=(300, booster.num_feature()))
            X[:, -1] = rng.integers(0, len(bundle.actions), 300)
            y = (X[:, 1] - 0.4 * X[:, -1] + rng.normal(size=300) > 0).astype(float)
            params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 10, "verbose": -1}
            scorer.boosters["all"] = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
        bundle = dataclasses.replace(bundle, conversion=other.conversion, churn=other.churn)
    return DecisionEngine(bundle)


def _rounds(engine: DecisionEngine, n: int = 600, seed: int = 0) -> LoggedRounds:
    """Logged rounds on rows where every action is allowed, actions drawn uniformly."""
    rng = np.random.default_rng(seed)
    k = len(engine.actions)
    X = rng.normal(size=(n, len(engine.feature_names)))
    cols = engine.contact_columns
    for c in range(len(cols.channels)):
        if cols.consent[c] >= 0:
            X[:, cols.consent[c]] = 1.0
        X[:, cols.unsubscribed[c]] = 0.0
        X[:, cols.sends_in_window[c]] = 0.0
        X[:, cols.days_since[c]] = np.nan
    X[:, cols.total_in_window] = 0.0
    action = rng.integers(0, k, n)
    return LoggedRounds(
        X=X,
        decision_time=pd.Series(pd.Timestamp(AS_OF), index=range(n)),
        action=action,
        conversion=(rng.random(n) < 0.2).astype(float),
        churn=(rng.random(n) < 0.05).astype(float),
        pscore=np.full(n, 1.0 / k),
        logging_dist=np.full((n, k), 1.0 / k),
    )


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecisionEngine, DecisionEngine]:
    folder = tmp_path_factory.mktemp("promotion")
    return _engine(folder, "a", 0), _engine(folder, "b", 7)


def test_against_itself_it_is_the_runs_own_dr(engines: tuple) -> None:
    a, _ = engines
    rounds = _rounds(a)
    result = compare_with_champion(a, a, rounds, rounds.X)
    assert result is not None
    table = policy_value_table(a, rounds, best_single=0, n_bootstrap=10)
    own = float(table.query("policy == 'model' and estimator == 'dr'")["value"].iloc[0])
    assert result.challenger == result.champion == pytest.approx(own, rel=1e-12)


def test_both_policies_are_graded_by_the_mean_of_both_models(engines: tuple) -> None:
    a, b = engines
    rounds = _rounds(a, seed=1)
    result = compare_with_champion(a, b, rounds, rounds.X)
    assert result is not None
    k = len(a.actions)
    reward = rewards(rounds.conversion, rounds.churn, rounds.action, a.costs,
                     conversion_value=a.conversion_value, churn_cost=a.churn_cost)  # fmt: skip
    scored = {name: e.score(rounds.X, rounds.decision_time) for name, e in (("a", a), ("b", b))}
    q = {n: s.q_values(a.conversion_value, a.churn_cost, a.costs) for n, s in scored.items()}
    assert np.abs(q["a"] - q["b"]).max() > 0.1  # two different models
    policies = {n: one_hot(s.greedy(), k) for n, s in scored.items()}
    assert (policies["a"] != policies["b"]).any()

    def dr(policy: str, by: str) -> float:
        table = ope.evaluate_policies(
            {policy: policies[policy]}, action=rounds.action, reward=reward,
            pscore=rounds.pscore, estimated_rewards=q[by], estimators=("dr",), n_bootstrap=5,
        )  # fmt: skip
        return float(table["value"].iloc[0])

    # DR is linear in q: graded by the mean is the mean of the two gradings.
    assert result.challenger == pytest.approx((dr("a", "a") + dr("a", "b")) / 2, rel=1e-9)
    assert result.champion == pytest.approx((dr("b", "a") + dr("b", "b")) / 2, rel=1e-9)
    # Which one is the challenger does not change how either is graded.
    swapped = compare_with_champion(b, a, rounds, rounds.X)
    assert swapped is not None
    assert (swapped.challenger, swapped.champion) == pytest.approx(
        (result.champion, result.challenger), rel=1e-9
    )


def test_other_action_sets_are_not_compared(engines: tuple) -> None:
    a, b = engines
    fewer = dataclasses.replace(b.bundle, actions=b.actions[:-1])
    assert compare_with_champion(a, DecisionEngine(fewer), _rounds(a), _rounds(a).X) is None
