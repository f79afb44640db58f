"""The shared-Dataset fit (``fit_outcome_models``) gives the same models as
``fit_outcome_model`` once per outcome, and it bins X only once; adding the action column
to X's bins gives the same trees as binning [X, action] from scratch.

"Same" means the same bits: the same LightGBM model text (trees, thresholds, leaf
values, parameters; only ``num_threads`` differs, as the outcomes train side by side, one
thread each), the same best iterations, the same calibration and the same predictions.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from training.models import (
    DEFAULT_PARAMS,
    RowSample,
    _boost,
    _params,
    _SharedDatasets,
    _train,
    fit_outcome_model,
    fit_outcome_models,
    negative_sample,
)

ACTIONS = ("none", "email_promo", "email_content", "sms_offer", "push_reminder", "phone_call")
OUTCOMES = ("conversion", "churn")
FIT_KW: dict[str, Any] = {"actions": ACTIONS, "num_rounds": 200, "early_stopping": 10, "seed": 3}


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Features with NaNs and small-integer codes, a logged action, two outcomes whose
    action effects differ, so the offset booster has something to learn."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 30))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[:, -3:] = rng.integers(0, 5, (n, 3))
    a = np.where(rng.random(n) < 0.5, 0, rng.integers(1, len(ACTIONS), n)).astype(np.int64)
    effect = np.array([0.0, 0.4, 0.2, -0.1, 0.3, 0.5])
    Z = np.nan_to_num(X)
    logit = {
        "conversion": -2 + Z[:, 0] + 0.5 * Z[:, 1] + effect[a] * (Z[:, 2] > 0),
        "churn": -2.5 - 0.7 * Z[:, 3] + 0.3 * effect[a],
    }
    y = {k: (rng.random(n) < 1 / (1 + np.exp(-v))).astype(np.float64) for k, v in logit.items()}
    return X, a, y


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    X, a, y = _data(6000, 0)
    tr, va = slice(0, 4500), slice(4500, None)
    return {
        "train": (X[tr], a[tr], {k: v[tr] for k, v in y.items()}),
        "valid": (X[va], a[va], {k: v[va] for k, v in y.items()}),
        "query": _data(1000, 1)[:2],
    }


def _assert_same(one: tuple, shared: tuple, X: np.ndarray, a: np.ndarray) -> None:
    (s1, r1), (s2, r2) = one, shared
    assert r1 == r2  # best iterations, calibrated, both Brier scores
    assert list(s1.boosters) == list(s2.boosters)
    for key in s1.boosters:
        one_text, shared_text = (s.boosters[key].model_to_string() for s in (s1, s2))
        assert _without_threads(one_text) == _without_threads(shared_text), key
    assert s1.calibration == s2.calibration
    assert s1.threads == s2.threads == 1  # the serving default, after a 2-thread batch
    np.testing.assert_array_equal(s1.predict(X), s2.predict(X))
    np.testing.assert_array_equal(s1.predict_logged(X, a), s2.predict_logged(X, a))


@pytest.mark.parametrize(
    ("formulation", "negative_keep"),
    [("shared_offset", 1.0), ("shared_offset", 0.4), ("single", 1.0), ("offset", 1.0)],
)
def test_shared_datasets_give_identical_models(
    data: dict, formulation: str, negative_keep: float
) -> None:
    """Fitting the outcomes together changes nothing in any of them, with or without the
    negative subsample (each outcome draws its own rows)."""
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    kw = {**FIT_KW, "formulation": formulation, "negative_keep": negative_keep}
    shared = fit_outcome_models(X, a, y, Xv, av, yv, **kw)
    assert list(shared) == list(OUTCOMES)
    for outcome in OUTCOMES:
        one = fit_outcome_model(X, a, y[outcome], Xv, av, yv[outcome], **kw)
        _assert_same(one, shared[outcome], *data["query"])
        # Early stopping did stop, and the offset booster learned something.
        assert min(shared[outcome][1].best_iterations.values()) > 0
        assert max(shared[outcome][1].best_iterations.values()) < FIT_KW["num_rounds"]


def test_each_matrix_is_binned_once(data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """shared_offset, two outcomes: X and the action column, train and valid: four Datasets
    built from data (``fit_outcome_model`` twice builds eight); X is not binned again with
    the action column."""
    built: list[tuple[int, int]] = []
    lazy_init = lgb.Dataset._lazy_init

    def counting(self: lgb.Dataset, data: Any, **kwargs: Any) -> Any:
        built.append(np.shape(data))
        return lazy_init(self, data, **kwargs)

    monkeypatch.setattr(lgb.Dataset, "_lazy_init", counting)
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    fit_outcome_models(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)
    n, nv, d = len(X), len(Xv), X.shape[1]
    assert sorted(built) == sorted([(n, d), (nv, d), (n, 1), (nv, 1)])


def test_action_column_added_to_bins_gives_the_same_trees(data: dict) -> None:
    """``single`` on X's bins plus the separately binned action column grows the same
    trees as a Dataset binned from [X, action] in one go."""
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    fits = fit_outcome_models(
        X, a, y, Xv, av, yv, formulation="single", negative_keep=1.0, **FIT_KW
    )
    names = [*(f"f{i}" for i in range(X.shape[1])), "action_code"]
    for outcome in OUTCOMES:
        direct = _train(
            np.column_stack([X, a]),
            y[outcome],
            np.column_stack([Xv, av]),
            yv[outcome],
            _params(None, FIT_KW["seed"]),
            FIT_KW["num_rounds"],
            FIT_KW["early_stopping"],
            names,
            [X.shape[1]],
        )
        booster = fits[outcome][0].boosters["all"]
        assert booster.best_iteration == direct.best_iteration > 0
        assert _trees(booster.model_to_string()) == _trees(direct.model_to_string())


def test_shared_datasets_refuse_to_be_binned_again(data: dict) -> None:
    """A booster whose dataset parameters differ would need new bins: an error, not a
    silent second binning."""
    (X, _a, y), (Xv, _av, yv) = data["train"], data["valid"]
    params = {**DEFAULT_PARAMS, "seed": 0}
    shared = _SharedDatasets(X, Xv, params, [f"f{i}" for i in range(X.shape[1])])
    every_row = RowSample(rows=None, weights=None)
    _boost(params, *shared.copy(every_row, y["churn"], yv["churn"]), 5, 5)
    with pytest.raises(lgb.basic.LightGBMError):
        train, valid = shared.copy(every_row, y["churn"], yv["churn"])
        _boost({**params, "max_bin": 63}, train, valid, 5, 5)


def test_outcomes_must_match(data: dict) -> None:
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    with pytest.raises(ValueError, match="outcomes differ"):
        fit_outcome_models(X, a, y, Xv, av, {"conversion": yv["conversion"]}, **FIT_KW)


def _without_threads(model_text: str) -> str:
    """A LightGBM model's text without its ``num_threads`` parameter line."""
    lines = model_text.splitlines()
    assert sum(line.startswith("[num_threads: ") for line in lines) == 1
    return "\n".join(line for line in lines if not line.startswith("[num_threads: "))


def _trees(model_text: str) -> str:
    """A LightGBM model's text without its parameters section."""
    return model_text.split("\nparameters:\n")[0]


def test_histogram_strategy_changes_no_tree(data: dict) -> None:
    """DEFAULT_PARAMS force column-wise histograms (a speed setting); LightGBM's automatic
    choice and forced row-wise histograms grow the same trees."""
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    shared = fit_outcome_models(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)
    for params in ({"force_col_wise": False}, {"force_row_wise": True}):
        scorer, report = fit_outcome_model(
            X,
            a,
            y["churn"],
            Xv,
            av,
            yv["churn"],
            formulation="shared_offset",
            params=params,
            **FIT_KW,
        )
        assert report == shared["churn"][1]
        for key, booster in scorer.boosters.items():
            text = shared["churn"][0].boosters[key].model_to_string()
            assert _trees(booster.model_to_string()) == _trees(text)
        np.testing.assert_array_equal(scorer.predict(X), shared["churn"][0].predict(X))


def test_scores_kept_by_lightgbm_equal_predictions(data: dict) -> None:
    """The offsets' init scores and the calibration's inputs are LightGBM's own scores of
    the training and validation rows at the best iteration (the patience rounds rolled
    back), not predictions made again: they equal those predictions."""
    (X, _a, y), (Xv, _av, yv) = data["train"], data["valid"]
    params = _params(None, FIT_KW["seed"])
    shared = _SharedDatasets(X, Xv, params, [f"f{i}" for i in range(X.shape[1])])
    sample = negative_sample(y["conversion"], 0.4, FIT_KW["seed"])
    train, valid = shared.copy(sample, y["conversion"], yv["conversion"])
    booster, train_scores, valid_scores = _boost(params, train, valid, 200, 10)
    assert 0 < booster.best_iteration == booster.current_iteration() < 200 - 10
    np.testing.assert_allclose(train_scores, booster.predict(X[sample.rows]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(valid_scores, booster.predict(Xv), rtol=0, atol=1e-12)


def test_calibration_is_chosen_on_the_predictions_of_the_logged_actions(data: dict) -> None:
    (X, a, y), (Xv, av, yv) = data["train"], data["valid"]
    fits = fit_outcome_models(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)
    for outcome, (scorer, report) in fits.items():
        scorer.calibration = None
        raw = scorer.predict_logged(Xv, av)
        assert report.valid_brier_raw == pytest.approx(brier_score_loss(yv[outcome], raw), 1e-12)
