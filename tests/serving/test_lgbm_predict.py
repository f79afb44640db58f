"""The C-API predictions of the request path equal ``Booster.predict`` exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest

from serving.lgbm_predict import SINGLE_ROW_MAX, predictor


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take LightGBM's default branch
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0}
    full = lgb.train(params, lgb.Dataset(X, y), num_boost_round=30)
    # Early stopping leaves best_iteration set, and Booster.predict then stops there; so
    # must the C-API path (training evaluates in-memory boosters through it).
    stopped = lgb.train(params, lgb.Dataset(X, y), num_boost_round=30)
    stopped.best_iteration = 12
    assert not np.array_equal(stopped.predict(X), full.predict(X))
    return {"full": full, "stopped": stopped}


@pytest.mark.parametrize("which", ["full", "stopped"])
@pytest.mark.parametrize("rows", [1, 10, SINGLE_ROW_MAX, SINGLE_ROW_MAX + 1, 257])
def test_equal_to_booster_predict(boosters: dict[str, lgb.Booster], which: str, rows: int) -> None:
    booster = boosters[which]
    X = np.random.default_rng(rows).normal(size=(rows, 6))
    X[0, 1] = np.nan
    np.testing.assert_array_equal(predictor(booster, "normal")(X), booster.predict(X))
    np.testing.assert_array_equal(predictor(booster, "raw")(X), booster.predict(X, raw_score=True))
    np.testing.assert_array_equal(
        predictor(booster, "contrib")(X), booster.predict(X, pred_contrib=True)
    )


def test_wrong_width_is_an_error(boosters: dict[str, lgb.Booster]) -> None:
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        predictor(boosters["full"], "raw")(np.zeros((2, 5)))


def test_empty_input(boosters: dict[str, lgb.Booster]) -> None:
    assert predictor(boosters["full"], "raw")(np.zeros((0, 6))).shape == (0,)


def test_concurrent_single_row_predictions(boosters: dict[str, lgb.Booster]) -> None:
    """Small predictions (the single-row path) from several threads at once stay exact."""
    booster = boosters["stopped"]
    predict = predictor(booster, "raw")
    batches = [np.random.default_rng(i).normal(size=(1 + i % SINGLE_ROW_MAX, 6)) for i in range(64)]

    def run(X: np.ndarray) -> np.ndarray:
        return np.concatenate([predict(X) for _ in range(50)])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, batches))
    for X, got in zip(batches, results, strict=True):
        np.testing.assert_array_equal(got, np.tile(booster.predict(X, raw_score=True), 50))
