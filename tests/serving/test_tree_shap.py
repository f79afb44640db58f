"""The table-based SHAP values (serving.tree_shap) equal LightGBM's ``pred_contrib``."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

import serving.tree_shap as tree_shap
from serving.scoring import OutcomeScorer
from serving.tree_shap import compile_shap

# Both compute the same sums in a different order: equal to rounding, far below the 0.01
# that reasons show.
ATOL = 1e-12


def _data(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Six numeric columns (NaN and exact zeros in them) and a categorical last column."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 7))
    X[:, :6][rng.random((n, 6)) < 0.1] = np.nan
    X[:, 1][rng.random(n) < 0.3] = 0.0
    X[:, 6] = rng.integers(0, 8, n)
    logit = X[:, 0] - np.nan_to_num(X[:, 1]) * 2 + (X[:, 6] % 3 == 0) * 1.5 - np.abs(X[:, 2])
    y = (np.nan_to_num(logit) + rng.logistic(size=n) > 0).astype(float)
    return X, y


def _train(params: dict[str, object], rounds: int = 25, seed: int = 0) -> lgb.Booster:
    X, y = _data(seed)
    base = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1}
    data = lgb.Dataset(X, y, categorical_feature=[6])
    return lgb.train({**base, **params, "seed": seed}, data, num_boost_round=rounds)


def _rows(seed: int, n: int = 60) -> np.ndarray:
    """Rows that reach every kind of branch: NaN, zero, tiny values, unseen and negative
    categories, NaN categories."""
    X, _ = _data(seed + 100, n)
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
        {"num_leaves": 31, "min_data_in_leaf": 5},  # deep paths that repeat features
    ],
    ids=["default", "zero_as_missing", "no_missing", "shallow", "deep"],
)
def test_equal_to_pred_contrib(params: dict[str, object]) -> None:
    booster = _train(params)
    shap = compile_shap(booster)
    assert shap is not None
    X = _rows(1)
    expected = booster.predict(X, pred_contrib=True)
    got = shap.contrib(X)
    np.testing.assert_allclose(got, expected[:, :-1], rtol=0, atol=ATOL)
    # Not trivially zero: the rows are explained, and differently.
    assert np.abs(got).sum(axis=1).min() > 0.01
    assert len({tuple(np.round(r, 6)) for r in got}) > len(X) // 2


def test_best_iteration_is_respected() -> None:
    booster = _train({}, rounds=30)
    booster.best_iteration = 9
    X = _rows(2)
    shap = compile_shap(booster)
    assert shap is not None
    expected = booster.predict(X, pred_contrib=True)  # stops at best_iteration too
    assert not np.allclose(expected, booster.predict(X, pred_contrib=True, num_iteration=30))
    np.testing.assert_allclose(shap.contrib(X), expected[:, :-1], rtol=0, atol=ATOL)


def test_unsuitable_forests_fall_back_to_pred_contrib(monkeypatch: pytest.MonkeyPatch) -> None:
    booster = _train({"num_leaves": 31, "min_data_in_leaf": 5})
    monkeypatch.setattr(tree_shap, "MAX_PATH_FEATURES", 2)
    assert compile_shap(booster) is None
    scorer = OutcomeScorer("single", ("none", "a"), {"all": booster})
    X = _rows(3)
    np.testing.assert_array_equal(
        scorer.contributions("all", X), booster.predict(X, pred_contrib=True)[:, :-1]
    )


def test_linear_trees_are_left_to_pred_contrib() -> None:
    X, y = _data(5)
    X = np.nan_to_num(X[:, :6])
    params = {"objective": "binary", "linear_tree": True, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
    assert compile_shap(booster) is None


def test_scorer_uses_the_tables() -> None:
    booster = _train({})
    scorer = OutcomeScorer("single", ("none", "a"), {"all": booster})
    X = _rows(4)
    np.testing.assert_allclose(
        scorer.contributions("all", X),
        booster.predict(X, pred_contrib=True)[:, :-1],
        rtol=0,
        atol=ATOL,
    )
    assert scorer._shap["all"] is not None


def test_wrong_width_is_an_error() -> None:
    shap = compile_shap(_train({}))
    assert shap is not None
    with pytest.raises(ValueError, match=r"\(n, 7\)"):
        shap.contrib(np.zeros((2, 6)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_request_rows_equal_one_row_at_a_time(seed: int) -> None:
    """A request explains one customer under several actions: rows equal but in one
    column, which the loop evaluates and tabulates once where they agree.  Each row's values
    must be exactly those it gets alone, and LightGBM's."""
    booster = _train({"num_leaves": 31, "min_data_in_leaf": 5}, seed=seed)
    shap = compile_shap(booster)
    assert shap is not None
    customers = _rows(seed + 10, 8)
    for x in customers:
        X = np.repeat(x[None, :], 5, axis=0)
        X[:, 6] = [0, 1, 5, 1, np.nan]  # the "action" column; one value twice, one NaN
        together = shap.contrib(X)
        alone = np.vstack([shap.contrib(row[None, :]) for row in X])
        np.testing.assert_array_equal(together, alone)
        expected = booster.predict(X, pred_contrib=True)[:, :-1]
        np.testing.assert_allclose(together, expected, rtol=0, atol=ATOL)
        np.testing.assert_array_equal(together[1], together[3])
    # The categorical column moves the explanation (so the shared work is really shared
    # between rows that differ, not only between copies).
    X = np.repeat(customers[2][None, :], 2, axis=0)
    X[:, 6] = [0, 1]
    got = shap.contrib(X)
    assert np.abs(got[0] - got[1]).max() > 1e-3


@pytest.mark.parametrize(
    "params",
    [{}, {"zero_as_missing": True}, {"num_leaves": 31, "min_data_in_leaf": 5}],
    ids=["default", "zero_as_missing", "deep"],
)
@pytest.mark.parametrize("columns", [(1,), (1, 3, 6)], ids=["numeric", "several"])
def test_rows_differing_elsewhere_equal_one_row_at_a_time(
    params: dict[str, object], columns: tuple[int, ...]
) -> None:
    """Rows that differ in a numeric column (NaN, zero, a value read as zero among its
    values), or in several columns: more nodes part the rows, and a leaf's rows can fall
    into more than two groups."""
    booster = _train(params, seed=3)
    shap = compile_shap(booster)
    assert shap is not None
    values = {
        1: [np.nan, 0.0, 1e-40, -0.3, 2.0, np.nan, 0.0],
        3: [0.5, 0.5, -1.0, np.nan, 0.5, 2.0, -1.0],
        6: [0, 1, 5, 1, np.nan, 3, 0],
    }
    for x in _rows(20, 6):
        X = np.repeat(x[None, :], 7, axis=0)
        for c in columns:
            X[:, c] = values[c]
        together = shap.contrib(X)
        alone = np.vstack([shap.contrib(row[None, :]) for row in X])
        np.testing.assert_array_equal(together, alone)
        expected = booster.predict(X, pred_contrib=True)[:, :-1]
        np.testing.assert_allclose(together, expected, rtol=0, atol=ATOL)


def test_many_categories() -> None:
    """Splits whose left categories span several 64-bit words, and codes past a split's
    largest, unseen, negative, fractional, huge or NaN."""
    rng = np.random.default_rng(7)
    n = 6000
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 200, n).astype(float)])
    code = X[:, 1].astype(int)
    logit = X[:, 0] + 2.0 * ((code % 7 == 0) | (code > 150)) - 1.0 * (code % 5 == 1)
    y = (logit + rng.logistic(size=n) > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 10, "verbose": -1}
    params |= {"max_cat_threshold": 64, "cat_smooth": 1, "min_data_per_group": 5, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[1]), num_boost_round=20)
    shap = compile_shap(booster)
    assert shap is not None
    # Some splits need more than one word.
    assert shap.category_words.size > shap.nodes[:, tree_shap._CATEGORICAL].sum()
    codes = [0, 7, 63, 64, 70, 127, 128, 151, 199, 250, 1e6, 1e12, -1, -0.5, 63.7, 1e-40]
    X = np.column_stack([np.full(len(codes) + 1, 0.3), [*codes, np.nan]])
    together = shap.contrib(X)
    alone = np.vstack([shap.contrib(row[None, :]) for row in X])
    np.testing.assert_array_equal(together, alone)
    expected = booster.predict(X, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(together, expected, rtol=0, atol=ATOL)


def test_more_rows_than_a_block() -> None:
    """The kernel takes rows in blocks of 63 (sets of rows are int64 bitmasks): a full
    block, a second one, and a short last one."""
    booster = _train({"num_leaves": 31, "min_data_in_leaf": 5})
    shap = compile_shap(booster)
    assert shap is not None
    X = np.vstack([_rows(5, 100), np.repeat(_rows(6, 8)[7:8], 50, axis=0)])
    X[100:, 6] = np.arange(50) % 9
    got = shap.contrib(X)
    alone = np.vstack([shap.contrib(row[None, :]) for row in X])
    np.testing.assert_array_equal(got, alone)
    expected = booster.predict(X, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_no_rows() -> None:
    shap = compile_shap(_train({}))
    assert shap is not None
    assert shap.contrib(np.zeros((0, 7))).shape == (0, 7)
