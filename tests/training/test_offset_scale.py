"""The shared offset on the probability scale (``offset_scale="probability"``): least
squares on the base's probabilities, every training row, so that an action's effect is a
change of probability that does not follow the base's ``p (1 - p)``."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from scipy.special import expit

from serving.scoring import OutcomeScorer
from training import models
from training.models import (
    FitReport,
    RowSample,
    fit_outcome_model,
    fit_outcome_models,
    uniform_rows,
)
from training.refit import refit_shared_offset

ACTIONS = ("none", "email_promo", "sms_offer")
#: The true effect of each action on P(outcome): the same for every customer.
EFFECT = np.array([0.0, 0.06, 0.0])
FIT_KW = {"actions": ACTIONS, "num_rounds": 400, "early_stopping": 20, "seed": 0}
ONE_THREAD = {"num_threads": 1}
#: Training rows (features, actions, outcomes) and validation rows.
Data = tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]


def _log(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers whose base rate runs from ~2% to ~60% with feature 0, actions at random,
    and outcomes whose probability each action raises by the same EFFECT for everyone."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    a = rng.integers(0, len(ACTIONS), n)
    p = expit(-1.8 + 1.2 * X[:, 0]) + EFFECT[a]
    return X, a, (rng.random(n) < p).astype(np.float64)


def _uplift_by_base_rate(scorer: object, X: np.ndarray) -> tuple[float, float]:
    """The mean estimated effect of email_promo among the low and the high base rates."""
    p = scorer.predict(X)  # type: ignore[attr-defined]
    uplift = p[:, 1] - p[:, 0]
    return float(uplift[X[:, 0] < -1].mean()), float(uplift[X[:, 0] > 1].mean())


def _trees(booster: lgb.Booster) -> str:
    """The model text without its ``num_threads`` line (side by side, each fit has one)."""
    lines = booster.model_to_string().splitlines()
    return "\n".join(line for line in lines if not line.startswith("[num_threads: "))


@pytest.fixture(scope="module")
def data() -> Data:
    X, a, y = _log(60_000, 0)
    Xv, av, yv = _log(15_000, 1)
    return (X, a, y), (Xv, av, yv)


@pytest.fixture(scope="module")
def fitted(data: Data) -> tuple[OutcomeScorer, FitReport]:
    """The probability-scale shared offset of the data's one outcome."""
    (X, a, y), (Xv, av, yv) = data
    return fit_outcome_model(
        X, a, y, Xv, av, yv, formulation="shared_offset", offset_scale="probability",
        params=ONE_THREAD, **FIT_KW,
    )  # fmt: skip


def test_a_probability_offset_finds_an_effect_that_does_not_follow_the_base_rate(
    fitted: tuple[OutcomeScorer, FitReport],
) -> None:
    scorer, report = fitted
    assert scorer.offset_scale == "probability"
    assert scorer.boosters["offset"].dump_model()["objective"].startswith("regression")
    assert report.best_iterations["offset"] > 1
    X_test, _, _ = _log(20_000, 2)
    low, high = _uplift_by_base_rate(scorer, X_test)
    assert low == pytest.approx(0.06, abs=0.015)
    assert high == pytest.approx(0.06, abs=0.015)
    # sms_offer does nothing, for anyone.
    p = scorer.predict(X_test)
    assert abs(float((p[:, 2] - p[:, 0]).mean())) < 0.01


def test_two_outcomes_side_by_side_are_their_single_fits(
    data: Data,
) -> None:
    """fit_outcome_models (both outcomes side by side, the offset on every row while the
    base keeps its negative sample) gives the single fit's trees, to the bit."""
    (X, a, y), (Xv, av, yv) = data
    X, a, y, Xv, av, yv = X[:20_000], a[:20_000], y[:20_000], Xv[:5000], av[:5000], yv[:5000]
    churn = 1.0 - y
    both = fit_outcome_models(
        X, a, {"conversion": y, "churn": churn}, Xv, av, {"conversion": yv, "churn": 1 - yv},
        formulation="shared_offset", offset_scale="probability", **FIT_KW,
    )  # fmt: skip
    alone, _ = fit_outcome_model(
        X, a, churn, Xv, av, 1 - yv, formulation="shared_offset", offset_scale="probability",
        **FIT_KW,
    )  # fmt: skip
    pair = both["churn"][0]
    for key in ("base", "offset"):
        assert _trees(pair.boosters[key]) == _trees(alone.boosters[key])
    assert pair.calibration == alone.calibration


def test_the_refit_keeps_the_scale(data: Data, fitted: tuple[OutcomeScorer, FitReport]) -> None:
    (X, a, y), (Xv, av, yv) = data
    _, report = fitted
    refit = refit_shared_offset(
        np.vstack([X, Xv]), np.concatenate([a, av]), np.concatenate([y, yv]), report,
        actions=ACTIONS, params=ONE_THREAD, seed=0, offset_scale="probability",
    )  # fmt: skip
    assert refit.offset_scale == "probability"
    assert refit.boosters["offset"].dump_model()["objective"].startswith("regression")
    X_test, _, _ = _log(20_000, 2)
    low, high = _uplift_by_base_rate(refit, X_test)
    assert low == pytest.approx(0.06, abs=0.015)
    assert high == pytest.approx(0.06, abs=0.015)


def test_what_the_probability_scale_does_not_go_with(
    data: Data,
) -> None:
    (X, a, y), (Xv, av, yv) = data
    X, a, y = X[:2000], a[:2000], y[:2000]
    with pytest.raises(ValueError, match="shared_offset"):
        fit_outcome_model(
            X, a, y, Xv, av, yv, formulation="single", offset_scale="probability", **FIT_KW
        )
    with pytest.raises(ValueError, match="shared_offset"):
        fit_outcome_model(
            X, a, y, Xv, av, yv, formulation="offset", offset_scale="probability", **FIT_KW
        )
    with pytest.raises(ValueError, match="use offset_scale log_odds"):
        fit_outcome_model(
            X, a, y, Xv, av, yv, formulation="shared_offset", offset_scale="probability",
            offset_members=2, **FIT_KW,
        )  # fmt: skip
    with pytest.raises(ValueError, match="offset_scale must be one of"):
        fit_outcome_model(
            X, a, y, Xv, av, yv, formulation="shared_offset", offset_scale="odds", **FIT_KW,  # type: ignore[arg-type]
        )  # fmt: skip


def test_the_log_odds_scale_is_the_old_shared_offset(
    data: Data,
) -> None:
    """``log_odds`` is the default of the fitting functions: the same boosters as without
    the argument, a binary offset on the base's log-odds."""
    (X, a, y), (Xv, av, yv) = data
    X, a, y = X[:10_000], a[:10_000], y[:10_000]
    default, _ = fit_outcome_model(X, a, y, Xv, av, yv, formulation="shared_offset", **FIT_KW)
    explicit, _ = fit_outcome_model(
        X, a, y, Xv, av, yv, formulation="shared_offset", offset_scale="log_odds", **FIT_KW
    )
    assert default.offset_scale == "log_odds"
    assert default.boosters["offset"].model_to_string() == (
        explicit.boosters["offset"].model_to_string()
    )
    assert default.boosters["offset"].dump_model()["objective"].startswith("binary")
    assert isinstance(default.boosters["base"], lgb.Booster)


def test_uniform_rows_are_every_row_up_to_the_cap_then_a_seeded_sample() -> None:
    assert uniform_rows(100, 100, 0).rows is None
    sample = uniform_rows(1000, 300, 3)
    assert sample.weights is None  # unweighted: a uniform sample
    assert sample.rows is not None and len(sample.rows) == 300
    assert np.all(np.diff(sample.rows) > 0) and sample.rows.max() < 1000
    np.testing.assert_array_equal(sample.rows, uniform_rows(1000, 300, 3).rows)
    assert not np.array_equal(sample.rows, uniform_rows(1000, 300, 4).rows)


def test_above_the_cap_the_offset_trains_on_a_uniform_sample(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capped at 20k of the 60k training rows, the offset sees a third of them, and still
    finds the effect at both ends of the base rate."""
    (X, a, y), (Xv, av, yv) = data
    seen: list[int | None] = []
    copy = models._SharedDatasets.copy

    def spy(self: Any, sample: RowSample, *args: Any) -> Any:
        seen.append(None if sample.rows is None else len(sample.rows))
        return copy(self, sample, *args)

    monkeypatch.setattr(models, "PROBABILITY_OFFSET_MAX_ROWS", 20_000)
    monkeypatch.setattr(models._SharedDatasets, "copy", spy)
    scorer, _ = fit_outcome_model(
        X, a, y, Xv, av, yv, formulation="shared_offset", offset_scale="probability",
        params=ONE_THREAD, **FIT_KW,
    )  # fmt: skip
    base = models.negative_sample(y, models.NEGATIVE_KEEP, FIT_KW["seed"]).rows
    assert base is not None
    assert seen == [len(base), 20_000]  # the base's negative sample, the offset's cap
    X_test, _, _ = _log(20_000, 2)
    low, high = _uplift_by_base_rate(scorer, X_test)
    assert low == pytest.approx(0.06, abs=0.02)
    assert high == pytest.approx(0.06, abs=0.02)
