"""Several boosters written as one: the mean of their raw scores over a wider matrix."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from training.booster_average import average_boosters

NAMES = [f"f{j}" for j in range(7)] + ["action_code"]


def _members(n: int) -> tuple[list[lgb.Booster], np.ndarray]:
    """Members on 7 features and a categorical action, trained for different numbers of
    rounds with bagging, init scores and different seeds; their matrix."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8))
    X[:, 7] = rng.integers(0, 5, 3000)
    y = (X[:, 1] + (X[:, 7] == 2) * X[:, 4] + rng.normal(size=3000) > 0.5).astype(float)
    members = [
        lgb.train(
            {
                "objective": "binary",
                "verbose": -1,
                "num_leaves": 7,
                "seed": s,
                "bagging_fraction": 0.7,
                "bagging_freq": 1,
                "feature_fraction": 0.6,
            },
            lgb.Dataset(
                X, y, feature_name=NAMES, categorical_feature=[7], init_score=np.full(3000, -0.3)
            ),
            10 + 5 * s,
        )  # fmt: skip
        for s in range(n)
    ]
    return members, X


def test_raw_score_is_the_members_mean() -> None:
    members, X = _members(3)
    merged = average_boosters(members)
    expected = np.mean([m.predict(X, raw_score=True) for m in members], axis=0)
    np.testing.assert_allclose(merged.predict(X, raw_score=True), expected, atol=1e-12)
    assert merged.num_trees() == 10 + 15 + 20
    assert merged.feature_name() == NAMES
    splits = merged.feature_importance("split")
    assert splits.tolist() == np.sum([m.feature_importance("split") for m in members], 0).tolist()


def test_merged_model_survives_a_round_trip_through_its_text() -> None:
    members, X = _members(2)
    merged = average_boosters(members)
    again = lgb.Booster(model_str=merged.model_to_string())
    np.testing.assert_array_equal(
        again.predict(X, raw_score=True), merged.predict(X, raw_score=True)
    )
    assert "[seed: 0]" in merged.model_to_string()  # the first member's parameters


def test_one_member_is_the_member_itself() -> None:
    members, X = _members(1)
    np.testing.assert_array_equal(
        average_boosters(members).predict(X, raw_score=True),
        members[0].predict(X, raw_score=True),
    )


def test_no_members_and_members_of_other_features_are_refused() -> None:
    members, X = _members(1)
    with pytest.raises(ValueError, match="at least one member"):
        average_boosters([])
    other = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(X[:, :3], (X[:, 1] > 0).astype(float)),
        3,
    )
    with pytest.raises(ValueError, match="features differ"):
        average_boosters([members[0], other])
