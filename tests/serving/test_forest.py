"""Compiled trees (serving.forest) give LightGBM's raw scores bit for bit, and the
request path's ``OutcomeScorer.predict_row`` gives ``predict``'s probabilities."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

import serving.forest as forest_module
from serving.forest import compile_forest, concatenate
from serving.scoring import Calibration, OutcomeScorer, _RowLogits
from tests.serving.test_tree_shap import _data, _train


def _rows(booster: lgb.Booster, seed: int, n: int = 400) -> np.ndarray:
    """Random rows, and rows on every threshold and a hair either side of it, plus NaN,
    zero, tiny, negative and unseen categories."""
    rng = np.random.default_rng(seed)
    X, _ = _data(seed + 100, n)
    cuts = booster.trees_to_dataframe()
    for f in range(6):
        t = cuts.loc[cuts["split_feature"] == f"Column_{f}", "threshold"].to_numpy(float)
        if t.size:
            on = rng.choice(t, n // 4)
            X[: n // 4, f] = np.where(rng.random(n // 4) < 0.5, on, np.nextafter(on, np.inf))
    X[0, :] = np.nan
    X[1, 1] = 0.0
    X[2, 1] = 1e-40  # read as zero by LightGBM's dense reader
    X[3, 6] = -1.0
    X[4, 6] = 11.0  # a category never seen in training
    X[5, 6] = -0.5  # truncates to category 0, as in LightGBM
    return X


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"zero_as_missing": True},
        {"use_missing": False},
        {"max_depth": 3, "num_leaves": 8},
        {"num_leaves": 63, "min_data_in_leaf": 5},
    ],
    ids=["default", "zero_as_missing", "no_missing", "shallow", "deep"],
)
def test_raw_scores_equal_lightgbm_bit_for_bit(params: dict[str, object]) -> None:
    booster = _train(params)
    forest = compile_forest(booster)
    assert forest is not None
    X = _rows(booster, 1)
    expected = booster.predict(X, raw_score=True)
    got = forest.raw(X)
    np.testing.assert_array_equal(got, expected)
    assert np.unique(got).size > len(X) // 4  # the rows take many different paths


def test_best_iteration_is_respected() -> None:
    booster = _train({}, rounds=30)
    booster.best_iteration = 9
    forest = compile_forest(booster)
    assert forest is not None and forest.n_trees == 9
    X = _rows(booster, 2)
    np.testing.assert_array_equal(forest.raw(X), booster.predict(X, raw_score=True))


def test_single_leaf_trees_add_their_constant() -> None:
    X, y = _data(3, 200)
    y[:] = 0.0
    y[:3] = 1.0  # too little signal for a split: every tree is a single leaf
    booster = lgb.train(
        {"objective": "binary", "min_data_in_leaf": 500, "verbose": -1},
        lgb.Dataset(X, y),
        num_boost_round=3,
    )
    forest = compile_forest(booster)
    assert forest is not None and forest.nodes.shape[0] == 0
    np.testing.assert_array_equal(forest.raw(X[:5]), booster.predict(X[:5], raw_score=True))


def test_a_misread_forest_is_left_to_lightgbm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe rows catch a reading that differs from LightGBM's in one threshold's last
    bit: the guard compares before the forest is used."""
    booster = _train({})
    flatten = forest_module._flatten

    def off_by_one_bit(trees: list[dict[str, object]], n: int) -> forest_module.Forest:
        forest = flatten(trees, n)
        numeric = np.flatnonzero(forest.nodes[:, forest_module.CATEGORICAL] == 0)
        forest.thresholds[numeric[0]] = np.nextafter(forest.thresholds[numeric[0]], -np.inf)
        return forest

    monkeypatch.setattr(forest_module, "_flatten", off_by_one_bit)
    assert compile_forest(booster) is None
    assert compile_forest(booster, check=False) is not None


def test_linear_trees_are_left_to_lightgbm() -> None:
    X, y = _data(5)
    X = np.nan_to_num(X[:, :6])
    params = {"objective": "binary", "linear_tree": True, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
    assert compile_forest(booster) is None


def test_concatenated_forests_keep_each_booster_s_trees() -> None:
    a, b = _train({}, rounds=7, seed=1), _train({"max_depth": 3}, rounds=5, seed=2)
    fa, fb = compile_forest(a), compile_forest(b)
    assert fa is not None and fb is not None
    joined, ranges = concatenate([fa, fb])
    assert ranges.tolist() == [[0, 7], [7, 12]]
    X = _rows(a, 4, n=50)
    for booster, (first, end) in zip((a, b), ranges, strict=True):
        got = [forest_module.tree_sum(x, first, end, *joined.arrays()) for x in X]
        np.testing.assert_array_equal(got, booster.predict(X, raw_score=True))


# ------------------------------------------------------------------ OutcomeScorer
ACTIONS = ("none", "email", "sms", "push")


def _scorer(
    formulation: str, calibrated: bool, actions: tuple[str, ...] = ACTIONS
) -> OutcomeScorer:
    """A scorer of 6 features (+ the action code where the formulation takes it)."""
    X, y = _data(6)
    X = X[:, :6]
    rng = np.random.default_rng(6)
    codes = rng.integers(0, len(actions), len(X)).astype(float)
    # Actions that work: sms converts half of the rest, push loses a third.
    y = np.where((codes == 2) & (rng.random(len(X)) < 0.5), 1.0, y)
    y = np.where((codes == 3) & (rng.random(len(X)) < 0.3), 0.0, y)
    with_action = np.column_stack([X, codes])
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 0}
    data_action = lgb.Dataset(with_action, y, categorical_feature=[6])

    def fit(data: lgb.Dataset, rounds: int = 10, init: np.ndarray | None = None) -> lgb.Booster:
        if init is not None:
            data.set_init_score(init)
        return lgb.train(params, data, num_boost_round=rounds)

    if formulation == "single":
        boosters = {"all": fit(data_action)}
    elif formulation == "per_action":
        boosters = {
            a: fit(lgb.Dataset(X[codes == i], y[codes == i])) for i, a in enumerate(actions)
        }
    else:
        base = fit(lgb.Dataset(X, y))
        init = base.predict(X, raw_score=True)
        if formulation == "shared_offset":
            boosters = {"base": base, "offset": fit(data_action, 5, init)}
        else:
            boosters = {"base": base}
            for i, a in enumerate(actions):
                rows = codes == i
                boosters[a] = fit(lgb.Dataset(X[rows], y[rows]), 5, init[rows])
    calibration = Calibration(slope=0.9, intercept=-0.1) if calibrated else None
    return OutcomeScorer(formulation, actions, boosters, calibration)  # type: ignore[arg-type]


@pytest.mark.parametrize("calibrated", [False, True], ids=["raw", "calibrated"])
@pytest.mark.parametrize("formulation", ["single", "per_action", "offset", "shared_offset"])
def test_predict_row_equals_predict(formulation: str, calibrated: bool) -> None:
    scorer = _scorer(formulation, calibrated)
    X, _ = _data(7, 300)
    X = X[:, :6]
    X[0] = np.nan
    got = np.array([scorer.predict_row(x) for x in X])
    np.testing.assert_array_equal(got, scorer.predict(X))
    # The offset formulations take the compiled trees; the others LightGBM's sigmoid.
    compiled = formulation in ("offset", "shared_offset")
    assert isinstance(scorer._row_logits, _RowLogits) == compiled
    # Actions matter: the rows are scored under each action, not once.
    assert (np.ptp(got, axis=1) > 0).mean() > 0.5


def test_predict_row_without_compiled_trees_uses_lightgbm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scorer = _scorer("shared_offset", calibrated=True)
    monkeypatch.setattr("serving.scoring.compile_forest", lambda booster: None)
    X, _ = _data(8, 50)
    X = X[:, :6]
    got = np.array([scorer.predict_row(x) for x in X])
    assert scorer._row_logits is False
    np.testing.assert_array_equal(got, scorer.predict(X))


def test_shared_offset_with_more_actions_than_one_walk_carries() -> None:
    """Over 64 actions the shared offset trees are walked once per action (the walk for
    all actions at once carries them in a 64-bit mask): the same probabilities."""
    actions = ("none", *(f"action_{i}" for i in range(1, 70)))
    scorer = _scorer("shared_offset", True, actions)
    X, _ = _data(8, 200)
    X = X[:, :6]
    X[0] = np.nan
    got = np.array([scorer.predict_row(x) for x in X])
    assert got.shape == (200, 70)
    np.testing.assert_array_equal(got, scorer.predict(X))
    assert isinstance(scorer._row_logits, _RowLogits)
    assert (np.ptp(got, axis=1) > 0).mean() > 0.5
