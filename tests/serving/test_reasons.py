"""Reasons explain each action's score: its uplift over no action (serving.reasons)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from features.catalog import load_catalog
from features.spec import FeatureSpec
from serving.bundle import Bundle, load_bundle, save_bundle
from serving.reasons import _ZERO, _top_columns, contributions, explain
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
    X = rng.normal(size=(3000, n))
    action = rng.integers(0, len(ACTIONS), 3000).astype(float)
    y = (0.3 * X[:, 1] + 2 * (action > 0) * X[:, 0] + rng.normal(size=3000) > 0).astype(float)
    # Churn depends on feature 2 and, for actions, on feature 3: other reasons than conversion.
    y_churn = (X[:, 2] - 2 * (action > 0) * X[:, 3] + rng.normal(size=3000) > 0).astype(float)
    churn = OutcomeScorer(
        "shared_offset",
        ACTIONS,
        {
            "base": _booster(X, y_churn),
            "offset": _booster(np.column_stack([X, action]), y_churn, categorical=[n]),
        },
    )
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
        churn=churn,
    )
    return load_bundle(folder)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_action_contributions_add_up_to_the_uplift_in_log_odds(bundle: Bundle) -> None:
    """SHAP is additive, so an action's contributions decompose exactly its log-odds over
    none, and none's its log-odds over ``versus``, for each outcome: the base model,
    common to every action, drops out."""
    x = np.random.default_rng(1).normal(size=bundle.spec.n_features)
    codes = list(range(len(ACTIONS)))
    for scorer in (bundle.conversion, bundle.churn):
        _, contrib = contributions(scorer, x, codes, versus=3)
        logit = _logit(scorer.predict_raw(x[None, :]))[0]
        uplift = logit - logit[0]
        uplift[0] = logit[0] - logit[3]
        np.testing.assert_allclose(contrib.sum(axis=1), uplift, atol=1e-9)


def test_reasons_rank_both_outcomes_by_their_effect_on_the_score(bundle: Bundle) -> None:
    """The first reason is the feature with the largest effect on the score, whichever
    outcome it acts through; an action the models cannot tell from no action has none."""
    # (The weights use each code's own probabilities, as the service passes them.)
    rng = np.random.default_rng(2)
    objective = bundle.catalog.objective
    codes = list(range(len(ACTIONS)))
    seen = set()
    for _ in range(8):
        x = rng.normal(size=bundle.spec.n_features)
        pc = bundle.conversion.predict(x[None, :])[0]
        pch = bundle.churn.predict(x[None, :])[0]
        reasons = explain(bundle, x, codes, p_conversion=pc, p_churn=pch, versus=2)
        _, conv = contributions(bundle.conversion, x, codes, versus=2)
        _, churn = contributions(bundle.churn, x, codes, versus=2)
        # `none` is explained against the action it beats, here code 2.
        assert all(t.endswith(")") and f"over {ACTIONS[2]} (" in t for t in reasons[0])
        assert explain(bundle, x, [0])[0] == []  # nothing to compare with: no reasons
        seen |= {o for o in ("conversion", "churn") for r in reasons for t in r if f" {o} " in t}
        for code in codes[1:]:
            effect_conv = objective.conversion_value * pc[code] * (1 - pc[code]) * conv[code]
            effect_churn = objective.churn_cost * pch[code] * (1 - pch[code]) * churn[code]
            features = np.abs(np.concatenate([effect_conv[:-1], effect_churn[:-1]]))
            if max(np.abs(conv[code]).max(), np.abs(churn[code]).max()) < 1e-12:
                assert reasons[code] == []
                continue
            assert all("over no action" in t for t in reasons[code])
            if features.max() > 0:
                best = int(np.argmax(features))
                outcome = "conversion" if best < len(effect_conv) - 1 else "churn"
                name = bundle.spec.feature_names[best % (len(effect_conv) - 1)]
                assert reasons[code][0].startswith(f"{name}=")
                assert f" {outcome} odds over no action" in reasons[code][0]
            else:
                assert reasons[code][0].startswith("action=")
    assert seen == {"conversion", "churn"}  # both kinds of reason occur


def _top_columns_reference(
    logodds: np.ndarray, weight: np.ndarray, top: int
) -> list[list[tuple[int, int]]]:
    """The plain numpy ranking the compiled ``_top_columns`` replaced (one stable argsort)."""
    m, _, n_col = logodds.shape
    present = np.abs(logodds) >= _ZERO
    size = np.abs(weight[:, :, None] * logodds)
    features = np.where(present[:, :, :-1], size[:, :, :-1], -1.0).reshape(m, -1)
    order = np.argsort(-features, axis=1, kind="stable")[:, :top]
    own = np.where(present[:, :, -1], size[:, :, -1], -1.0)
    picked = []
    for i in range(m):
        chosen = [divmod(int(k), n_col - 1) for k in order[i] if features[i, k] >= 0]
        if not chosen and own[i].max() >= 0:
            chosen = [(int(np.argmax(own[i])), n_col - 1)]
        picked.append(chosen)
    return picked


def test_top_columns_equal_a_stable_sort() -> None:
    """Ties (equal sizes, zero weights), absent contributions and rows where only the
    action column moves: the compiled pick equals the stable argsort, pair for pair."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        m, n_col = int(rng.integers(1, 6)), int(rng.integers(2, 12))
        logodds = rng.choice([0.0, 0.5, -0.5, 0.25, 1e-13, 2.0], size=(m, 2, n_col))
        logodds[rng.random(logodds.shape) < 0.3] = rng.normal(size=1)[0]
        if trial % 5 == 0:
            logodds[:, :, :-1] = 0.0  # only the action's own column is left
        weight = rng.choice([0.0, 1.0, -2.0, 0.5], size=(m, 2))
        top = int(rng.integers(1, 5))
        assert _top_columns(logodds, weight, top) == _top_columns_reference(logodds, weight, top)
