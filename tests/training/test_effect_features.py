"""The shared offset booster restricted to the effect features, and the refit on more rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.datasets import make_time_split
from training.effect_features import effect_features, offset_contributions
from training.models import fit_outcome_model
from training.refit import (
    REFIT_ROUNDS_MULTIPLIER,
    pre_test_rows,
    refit_outcomes,
    refit_shared_offset,
)

ACTIONS = ("none", "email_promo", "sms_offer")
NAMES = ["attr_age", "ch_sms_open_rate", "n_sent_7d", "noise_a", "noise_b", "ch_sms_sends_7d"]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sms works on customers with a high attr_age; noise_a predicts conversion strongly
    for every action (a main effect the offset must not need)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    a = rng.integers(0, 3, n)
    logit = -2 + 1.5 * X[:, 3] + np.where((a == 2) & (X[:, 0] > 0), 1.5, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, a, y


def test_effect_features_pick_attributes_channel_rates_and_fatigue() -> None:
    names = [*NAMES, "ch_email_click_rate", "days_since_last_inbound", "consent_sms"]
    assert effect_features(names) == [
        "attr_age",
        "ch_sms_open_rate",
        "n_sent_7d",
        "ch_email_click_rate",
        "days_since_last_inbound",
    ]


def test_offset_contributions_name_unknown_features() -> None:
    assert offset_contributions(["a", "b"], ["b"]) == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="not in the feature spec: \\['c'\\]"):
        offset_contributions(["a", "b"], ["c"])


@pytest.fixture(scope="module")
def restricted() -> tuple:
    X, a, y = _data(12000, 0)
    Xv, av, yv = _data(4000, 1)
    allowed = effect_features(NAMES)
    scorer, report = fit_outcome_model(
        X, a, y, Xv, av, yv, actions=ACTIONS, formulation="shared_offset",
        feature_names=NAMES, offset_features=allowed,
    )  # fmt: skip
    return X, a, y, allowed, scorer, report


def test_restricted_offset_splits_only_on_effect_features_and_the_action(restricted: tuple) -> None:
    _, _, _, allowed, scorer, _ = restricted
    splits = dict(
        zip(
            [*NAMES, "action_code"],
            scorer.boosters["offset"].feature_importance("split"),
            strict=True,
        )
    )
    assert splits["action_code"] > 0 and splits["attr_age"] > 0
    assert all(
        count == 0 for name, count in splits.items() if name not in [*allowed, "action_code"]
    )
    # The base still uses everything: the main effect lives there.
    assert scorer.boosters["base"].feature_importance("split")[NAMES.index("noise_a")] > 0
    # And the effect is found: sms helps where attr_age > 0.
    X, _, _ = _data(2000, 2)
    p = scorer.predict(X)
    uplift = p[:, 2] - p[:, 0]
    assert uplift[X[:, 0] > 0.5].mean() > uplift[X[:, 0] < -0.5].mean() + 0.05


def test_offset_features_need_the_shared_offset_formulation() -> None:
    X, a, y = _data(500, 0)
    with pytest.raises(ValueError, match="shared_offset formulation only"):
        fit_outcome_model(
            X, a, y, X, a, y, actions=ACTIONS, formulation="single", offset_features=["attr_age"]
        )


def test_refit_uses_all_rows_with_more_rounds(restricted: tuple) -> None:
    X, a, y, allowed, scorer, report = restricted
    refit = refit_shared_offset(
        X, a, y, report, actions=ACTIONS, feature_names=NAMES, offset_features=allowed
    )
    for key in ("base", "offset"):
        expected = max(1, round(report.best_iterations[key] * REFIT_ROUNDS_MULTIPLIER))
        assert refit.boosters[key].current_iteration() == expected
    assert refit.calibration is None  # nothing is left out to fit it on
    splits = refit.boosters["offset"].feature_importance("split")
    assert splits[NAMES.index("noise_a")] == 0 and splits[NAMES.index("noise_b")] == 0
    # The same model, fit longer: it ranks like the split fit and finds the same effect.
    Xt, _, _ = _data(2000, 3)
    p, p_split = refit.predict(Xt), scorer.predict_raw(Xt)
    assert np.corrcoef(p.ravel(), p_split.ravel())[0, 1] > 0.95
    uplift = p[:, 2] - p[:, 0]
    assert uplift[Xt[:, 0] > 0.5].mean() > uplift[Xt[:, 0] < -0.5].mean() + 0.05


def test_train_config_chooses_the_offset_features() -> None:
    from features.catalog import load_catalog
    from features.spec import FeatureSpec
    from tests.serving.bundle_factory import history
    from training.train import TrainConfig, _offset_features

    spec = FeatureSpec.from_data(history(), None, channels=load_catalog(None).channels)
    effects = TrainConfig()  # the default
    chosen = _offset_features(effects, "shared_offset", spec)
    assert chosen == effect_features(spec.feature_names)
    assert chosen and "ch_email_open_rate" in chosen and "n_sent_7d" in chosen
    assert _offset_features(effects, "single", spec) is None  # no offset booster there
    assert _offset_features(TrainConfig(offset_features="all"), "shared_offset", spec) is None


def test_refit_needs_a_shared_offset_report() -> None:
    from training.models import FitReport

    X, a, y = _data(300, 0)
    report = FitReport(best_iterations={"all": 10})  # what a single-formulation fit reports
    with pytest.raises(ValueError, match="needs the report of a shared_offset fit"):
        refit_shared_offset(X, a, y, report, actions=ACTIONS, feature_names=NAMES)


def test_pre_test_rows_are_those_whose_labels_end_before_the_test_period() -> None:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    times = pd.Series(start + pd.to_timedelta(np.linspace(0, 240, 4801), unit="D"))
    split = make_time_split(times, gap_days=60)
    part = split.assign(times).to_numpy()
    rows = pre_test_rows(times, split)
    chosen = np.zeros(len(times), dtype=bool)
    chosen[rows] = True
    # Train, the first gap and validation; not the second gap or test.
    assert set(part[chosen]) == {"train", "gap", "valid"}
    assert chosen[part == "train"].all() and chosen[part == "valid"].all()
    assert not chosen[part == "test"].any()
    # Every chosen label window (the gap) closes by the start of the test period.
    assert times[chosen].max() + pd.Timedelta(days=60) <= split.test_start
    first_gap = (part == "gap") & (times < split.valid_start).to_numpy()
    assert chosen[first_gap].all() and first_gap.any()


def _model_text(scorer: object, key: str) -> str:
    """A booster's trees, without the parameters block (num_threads differs)."""
    text = scorer.boosters[key].model_to_string()  # type: ignore[attr-defined]
    return text.split("end of trees")[0]


def test_outcomes_refit_side_by_side_on_chosen_rows_as_one_by_one_on_a_copy(
    restricted: tuple,
) -> None:
    X, a, y, allowed, _scorer, report = restricted
    churn = (np.random.default_rng(5).random(len(y)) < 0.2).astype(float)
    rows = np.flatnonzero(np.arange(len(y)) % 3 != 0)  # two thirds, in order
    both = refit_outcomes(
        X, a, {"conversion": y, "churn": churn}, {"conversion": report, "churn": report},
        rows=rows, actions=ACTIONS, feature_names=NAMES, offset_features=allowed,
    )  # fmt: skip
    for name, target in (("conversion", y), ("churn", churn)):
        alone = refit_shared_offset(
            X[rows], a[rows], target[rows], report,
            actions=ACTIONS, feature_names=NAMES, offset_features=allowed,
        )  # fmt: skip
        for key in ("base", "offset"):
            assert _model_text(both[name], key) == _model_text(alone, key)
    assert _model_text(both["conversion"], "base") != _model_text(both["churn"], "base")
