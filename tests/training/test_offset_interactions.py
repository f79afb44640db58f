"""Pairwise offset trees: each branch splits on the action and at most one other feature."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from training.effect_features import offset_interaction_constraints, offset_params
from training.models import fit_outcome_model
from training.refit import refit_shared_offset

ACTIONS = ("none", "email_promo", "sms_offer")
NAMES = ["attr_age", "ch_sms_open_rate", "n_sent_7d", "noise_a", "noise_b"]
EFFECTS = NAMES[:3]
ACTION_COLUMN = len(NAMES)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sms works where attr_age > 0 and where ch_sms_open_rate > 0 (each adds to the
    log-odds), email where n_sent_7d is high; noise_a drives conversion for every action."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    a = rng.integers(0, 3, n)
    sms = 0.8 * (X[:, 0] > 0) + 0.8 * (X[:, 1] > 0)
    effect = np.where(a == 2, sms, 0.0) + np.where(a == 1, 0.5 * X[:, 2], 0.0)
    logit = -2 + 1.5 * X[:, 3] + effect
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, a, y


def _branch_features(booster: lgb.Booster) -> list[set[int]]:
    """The split features of every root-to-leaf path of every tree."""
    paths: list[set[int]] = []

    def walk(node: dict[str, Any], seen: frozenset[int]) -> None:
        if "split_feature" not in node:  # a leaf
            paths.append(set(seen))
            return
        here = seen | {int(node["split_feature"])}
        walk(node["left_child"], here)
        walk(node["right_child"], here)

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"], frozenset())
    return paths


@pytest.fixture(scope="module")
def pairwise() -> tuple:
    X, a, y = _data(12000, 0)
    Xv, av, yv = _data(4000, 1)
    scorer, report = fit_outcome_model(
        X, a, y, Xv, av, yv, actions=ACTIONS, formulation="shared_offset",
        feature_names=NAMES, offset_features=EFFECTS, offset_interactions="pairwise",
    )  # fmt: skip
    return X, a, y, scorer, report


def test_constraints_pair_each_allowed_feature_with_the_action() -> None:
    assert offset_interaction_constraints(["a", "b", "c"], ["a", "c"]) == [[0, 3], [2, 3]]
    assert offset_interaction_constraints(["a", "b"], None) == [[0, 2], [1, 2]]
    with pytest.raises(ValueError, match="not in the feature spec: \\['d'\\]"):
        offset_interaction_constraints(["a", "b"], ["d"])


def test_offset_params_combine_the_feature_restriction_and_the_interactions() -> None:
    assert offset_params(["a", "b"], ["b"], "free") == {"feature_contri": [0.0, 1.0, 1.0]}
    assert offset_params(["a", "b"], None, "free") == {}
    assert offset_params(["a", "b"], ["b"], "pairwise") == {
        "feature_contri": [0.0, 1.0, 1.0],
        "interaction_constraints": [[1, 2]],
    }
    with pytest.raises(ValueError, match="pairwise or free, got 'all'"):
        offset_params(["a"], None, "all")  # type: ignore[arg-type]


def test_every_offset_branch_uses_the_action_and_one_feature_at_most(pairwise: tuple) -> None:
    _, _, _, scorer, _ = pairwise
    paths = _branch_features(scorer.boosters["offset"])
    assert paths
    allowed = {NAMES.index(name) for name in EFFECTS}
    for path in paths:
        others = path - {ACTION_COLUMN}
        assert len(others) <= 1 and others <= allowed, path
    # It does use what it may: the action and every effect feature.
    used = set().union(*paths)
    assert used == allowed | {ACTION_COLUMN}
    # The base is not constrained: some of its branches combine several features.
    assert max(len(path) for path in _branch_features(scorer.boosters["base"])) > 2


def test_free_offset_trees_combine_features(pairwise: tuple) -> None:
    X, a, y, _, _ = pairwise
    Xv, av, yv = _data(4000, 1)
    free, _ = fit_outcome_model(
        X, a, y, Xv, av, yv, actions=ACTIONS, formulation="shared_offset",
        feature_names=NAMES, offset_features=EFFECTS, offset_interactions="free",
    )  # fmt: skip
    paths = _branch_features(free.boosters["offset"])
    assert max(len(path - {ACTION_COLUMN}) for path in paths) >= 2


def test_pairwise_offset_finds_each_additive_effect(pairwise: tuple) -> None:
    _, _, _, scorer, _ = pairwise
    X, _, _ = _data(4000, 2)
    p = scorer.predict_raw(X)
    sms, email = p[:, 2] - p[:, 0], p[:, 1] - p[:, 0]
    for column in (0, 1):  # each of sms's two conditions raises its effect
        assert sms[X[:, column] > 0.5].mean() > sms[X[:, column] < -0.5].mean() + 0.03
    assert email[X[:, 2] > 0.5].mean() > email[X[:, 2] < -0.5].mean() + 0.03
    # noise_a moves the outcome, not the effects: the offset never splits on it.
    splits = scorer.boosters["offset"].feature_importance("split")
    assert splits[NAMES.index("noise_a")] == 0


def test_refit_keeps_the_pairwise_trees(pairwise: tuple) -> None:
    X, a, y, _, report = pairwise
    refit = refit_shared_offset(
        X, a, y, report, actions=ACTIONS, feature_names=NAMES, offset_features=EFFECTS,
        offset_interactions="pairwise",
    )  # fmt: skip
    for path in _branch_features(refit.boosters["offset"]):
        assert len(path - {ACTION_COLUMN}) <= 1, path


def test_interactions_need_the_shared_offset_formulation() -> None:
    X, a, y = _data(500, 0)
    for formulation in ("single", "offset"):
        with pytest.raises(ValueError, match="shared_offset"):
            fit_outcome_model(
                X, a, y, X, a, y, actions=ACTIONS, formulation=formulation,  # type: ignore[arg-type]
                offset_interactions="pairwise",
            )  # fmt: skip


def test_train_config_passes_the_interactions_to_the_shared_offset_only() -> None:
    from training.train import TrainConfig, _offset_interactions

    assert TrainConfig().offset_interactions == "pairwise"  # the default, by measurement
    assert _offset_interactions(TrainConfig(), "shared_offset") == "pairwise"
    assert _offset_interactions(TrainConfig(), "single") == "free"
    free = TrainConfig(offset_interactions="free")
    assert _offset_interactions(free, "shared_offset") == "free"
