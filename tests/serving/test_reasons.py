"""Reasons explain each action's conversion uplift over no action (serving.reasons)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from features.catalog import load_catalog
from features.spec import FeatureSpec
from serving.bundle import Bundle, load_bundle, save_bundle
from serving.reasons import contributions, explain
from serving.scoring import OutcomeScorer
from tests.serving.bundle_factory import ACTIONS, history

CATALOG = load_catalog(None)


def _booster(X: np.ndarray, y: np.ndarray, categorical: list[int] | None = None) -> lgb.Booster:
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1}
    data = lgb.Dataset(X, y, categorical_feature=categorical or "auto")
    return lgb.train(params, data, num_boost_round=15)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A shared_offset bundle whose offset depends on the action and on feature 0."""
    spec = FeatureSpec.from_data(history(), None, channels=CATALOG.channels)
    n = spec.n_features
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, n))
    action = rng.integers(0, len(ACTIONS), 600).astype(float)
    y = (0.3 * X[:, 1] + 2 * (action > 0) * X[:, 0] + rng.normal(size=600) > 0).astype(float)
    scorer = OutcomeScorer(
        "shared_offset",
        ACTIONS,
        {
            "base": _booster(X, y),
            "offset": _booster(np.column_stack([X, action]), y, categorical=[n]),
        },
    )
    folder = save_bundle(
        tmp_path_factory.mktemp("reasons"),
        model_version="r1",
        spec=spec,
        catalog=CATALOG,
        conversion=scorer,
        churn=scorer,
    )
    return load_bundle(folder)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_action_contributions_add_up_to_the_uplift_in_log_odds(bundle: Bundle) -> None:
    """SHAP is additive, so an action's contributions decompose exactly its log-odds over
    none: the base model, common to every action, drops out."""
    x = np.random.default_rng(1).normal(size=bundle.spec.n_features)
    codes = list(range(1, len(ACTIONS)))
    _, contrib = contributions(bundle, x, codes)
    logit = _logit(bundle.conversion.predict_raw(x[None, :]))[0]
    np.testing.assert_allclose(contrib.sum(axis=1), logit[codes] - logit[0], atol=1e-9)


def test_reasons_name_features_of_the_uplift(bundle: Bundle) -> None:
    """An action's reasons are about its uplift; an action the model cannot tell from no
    action at all (the same leaf in every tree) has none."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.normal(size=bundle.spec.n_features)
        codes = list(range(len(ACTIONS)))
        reasons = explain(bundle, x, codes)
        _, contrib = contributions(bundle, x, codes)
        assert reasons[0]
        assert not any("over no action" in text for text in reasons[0])
        for code in codes[1:]:
            assert all(text.endswith(")") and "over no action" in text for text in reasons[code])
            features = contrib[code, :-1]
            if np.abs(contrib[code]).max() < 1e-12:
                assert reasons[code] == []
            elif np.abs(features).max() > 1e-12:  # a feature moves the uplift: it is named
                best = bundle.spec.feature_names[int(np.argmax(np.abs(features)))]
                assert reasons[code][0].startswith(f"{best}=")
            else:  # nothing but the action itself differs from none
                assert reasons[code] and reasons[code][0].startswith("action=")
