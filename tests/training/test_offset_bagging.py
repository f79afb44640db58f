"""The shared offset as a bag of boosters, each on its own negative subsample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from training.effect_features import effect_features
from training.models import fit_outcome_model
from training.offset_bagging import OFFSET_MEMBERS, member_seed
from training.refit import REFIT_ROUNDS_MULTIPLIER, refit_shared_offset

ACTIONS = ("none", "email_promo", "sms_offer")
NAMES = ["attr_age", "ch_sms_open_rate", "n_sent_7d", "noise_a", "noise_b"]
BAG = 4  # members of the bags tested here (OFFSET_MEMBERS, the default, is 1)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rare outcome (~8%) that sms raises where attr_age > 0; noise_a is a main effect."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    a = rng.integers(0, 3, n)
    logit = -3 + 1.0 * X[:, 3] + np.where((a == 2) & (X[:, 0] > 0), 1.0, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, a, y


def _fit(seed: int, members: int | None, n: int = 20000) -> tuple:
    X, a, y = _data(n, 0)
    Xv, av, yv = _data(n // 4, 1)
    return fit_outcome_model(
        X, a, y, Xv, av, yv, actions=ACTIONS, formulation="shared_offset", feature_names=NAMES,
        offset_features=effect_features(NAMES), seed=seed, offset_members=members,
    )  # fmt: skip


def test_the_offset_holds_every_members_trees_and_the_report_counts_them() -> None:
    scorer, report = _fit(0, BAG)
    rounds = report.best_iterations["offset"]
    assert report.offset_members == BAG
    assert scorer.boosters["offset"].num_trees() == BAG * rounds
    assert scorer.boosters["base"].num_trees() == report.best_iterations["base"]
    single, single_report = _fit(0, None)  # the default: one booster
    assert single_report.offset_members == OFFSET_MEMBERS == 1
    assert single.boosters["offset"].num_trees() == single_report.best_iterations["offset"]
    # Member 0 is the early-stopped booster either way: same base, same rounds.
    assert single_report.best_iterations == report.best_iterations
    # Only the effect features and the action are split on.
    importance = scorer.boosters["offset"].feature_importance()
    splits = dict(zip([*NAMES, "action_code"], importance, strict=True))
    assert splits["noise_a"] == splits["noise_b"] == 0 and splits["action_code"] > 0


def test_calibration_is_chosen_on_the_bags_validation_scores() -> None:
    scorer, report = _fit(0, BAG)
    Xv, av, yv = _data(5000, 1)
    raw = scorer.predict_raw(Xv)[np.arange(len(av)), av]
    assert report.valid_brier_raw == pytest.approx(brier_score_loss(yv, raw), rel=1e-9)


def test_the_bag_varies_less_with_the_seed_than_one_booster() -> None:
    """What it is for: the effect estimates depend less on which negatives were drawn."""
    Xt, _, _ = _data(3000, 2)

    def uplifts(members: int) -> np.ndarray:
        out = []
        for seed in range(6):
            p = _fit(seed, members, n=8000)[0].predict(Xt)
            out.append(p[:, 2] - p[:, 0])
        return np.array(out)

    # The mean over customers of the uplift's standard deviation across six seeds (each
    # seed also draws the base's negatives, which no bag averages): 0.0073 and 0.0051.
    single, bag = uplifts(1), uplifts(BAG)
    spread_single, spread_bag = single.std(axis=0).mean(), bag.std(axis=0).mean()
    assert spread_bag < 0.8 * spread_single, (spread_bag, spread_single)
    # And the bag still finds the effect: sms helps where attr_age > 0.
    mean_bag = bag.mean(axis=0)
    assert mean_bag[Xt[:, 0] > 0.5].mean() > mean_bag[Xt[:, 0] < -0.5].mean() + 0.02


def test_members_have_distinct_seeds_and_member_0_keeps_the_runs() -> None:
    assert member_seed(7, 0) == 7
    seeds = {member_seed(s, j) for s in range(5) for j in range(BAG)}
    assert len(seeds) == 5 * BAG


def test_offset_members_must_be_positive() -> None:
    X, a, y = _data(500, 0)
    with pytest.raises(ValueError, match="offset_members must be at least 1, got 0"):
        fit_outcome_model(
            X, a, y, X, a, y, actions=ACTIONS, formulation="shared_offset", offset_members=0
        )


def test_the_refit_bags_as_many_members_for_the_refit_rounds() -> None:
    scorer, report = _fit(0, 3)
    X, a, y = _data(20000, 0)
    refit = refit_shared_offset(
        X, a, y, report, actions=ACTIONS, feature_names=NAMES,
        offset_features=effect_features(NAMES),
    )  # fmt: skip
    rounds = max(1, round(report.best_iterations["offset"] * REFIT_ROUNDS_MULTIPLIER))
    assert refit.boosters["offset"].num_trees() == 3 * rounds
    p, p_split = refit.predict(X[:2000]), scorer.predict_raw(X[:2000])
    assert np.corrcoef(p.ravel(), p_split.ravel())[0, 1] > 0.95
