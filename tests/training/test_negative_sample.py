"""The negative subsample of the outcome boosters: which rows, which weights, and that the
weights reach LightGBM (a weighted subsample fits the full data's base rate, an unweighted
one would not)."""

from __future__ import annotations

import numpy as np
import pytest

from training.models import fit_outcome_models, negative_sample

ACTIONS = ("none", "email", "sms")


def test_keeps_every_positive_and_a_share_of_the_negatives() -> None:
    y = (np.random.default_rng(0).random(200_000) < 0.1).astype(np.float64)
    sample = negative_sample(y, 0.25, seed=1)
    assert sample.rows is not None and sample.weights is not None
    kept = y[sample.rows]
    assert kept.sum() == y.sum()  # every positive
    assert (kept == 0).sum() / (y == 0).sum() == pytest.approx(0.25, abs=0.005)
    np.testing.assert_array_equal(sample.weights, np.where(kept > 0, 1.0, 4.0))
    # Horvitz-Thompson: the weighted count and the weighted base rate are the full data's.
    assert sample.weights.sum() == pytest.approx(len(y), rel=0.01)
    assert np.average(kept, weights=sample.weights) == pytest.approx(y.mean(), rel=0.01)


def test_the_draw_depends_on_the_seed_not_on_the_labels_of_other_rows() -> None:
    """Two outcomes on the same rows keep the same negatives (the same uniform draw), so an
    outcome's sample does not depend on what it is fit alongside."""
    rng = np.random.default_rng(2)
    y1 = (rng.random(10_000) < 0.2).astype(np.float64)
    y2 = (rng.random(10_000) < 0.05).astype(np.float64)
    s1, s2 = negative_sample(y1, 0.3, seed=5), negative_sample(y2, 0.3, seed=5)
    assert s1.rows is not None and s2.rows is not None
    both_negative = np.flatnonzero((y1 == 0) & (y2 == 0))
    np.testing.assert_array_equal(
        np.intersect1d(s1.rows, both_negative), np.intersect1d(s2.rows, both_negative)
    )
    again = negative_sample(y1, 0.3, seed=5).rows
    assert again is not None
    np.testing.assert_array_equal(s1.rows, again)
    other_seed = negative_sample(y1, 0.3, seed=6).rows
    assert other_seed is not None and not np.array_equal(s1.rows, other_seed)


def test_keep_one_is_every_row_unweighted() -> None:
    sample = negative_sample(np.array([0.0, 1.0, 0.0]), 1.0, seed=0)
    assert sample.rows is None and sample.weights is None
    with pytest.raises(ValueError, match="negative_keep"):
        negative_sample(np.array([0.0, 1.0]), 0.0, seed=0)


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    a = rng.integers(0, len(ACTIONS), n).astype(np.int64)
    logit = -2.3 + 0.8 * X[:, 0] + 0.3 * (a == 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return X, a, y


@pytest.mark.parametrize("formulation", ["shared_offset", "single"])
def test_weights_reach_the_boosters(formulation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fit on a 20% negative subsample: with the 1/0.2 weights the raw (uncalibrated) mean
    prediction on the training rows is the full data's base rate; without them (weights of
    1, the same rows) it is the subsample's, about 2.5x higher.  (10% tolerance: at this
    size the model on 20% of the negatives is noisier, and noise in the log-odds raises
    the mean probability a little below 0.5; measured 0.128 against a rate of 0.124.)"""
    X, a, y = _world(40_000, 0)
    Xv, av, yv = _world(20_000, 1)
    kw = {
        "actions": ACTIONS,
        "formulation": formulation,
        "num_rounds": 300,
        "early_stopping": 20,
        "negative_keep": 0.2,
    }
    weighted = fit_outcome_models(X, a, {"y": y}, Xv, av, {"y": yv}, **kw)["y"][0]
    weighted.calibration = None  # Platt scaling would hide a wrong base rate
    assert weighted.predict_logged(X, a).mean() == pytest.approx(y.mean(), rel=0.1)

    import training.models as models

    real = models.negative_sample

    def unweighted(y: np.ndarray, keep: float, seed: int) -> models.RowSample:
        sample = real(y, keep, seed)
        assert sample.rows is not None
        return models.RowSample(rows=sample.rows, weights=np.ones(len(sample.rows)))

    monkeypatch.setattr(models, "negative_sample", unweighted)
    plain = fit_outcome_models(X, a, {"y": y}, Xv, av, {"y": yv}, **kw)["y"][0]
    plain.calibration = None
    sample = real(y, 0.2, 0)
    assert sample.rows is not None
    subsample_rate = y[sample.rows].mean()
    assert subsample_rate > 2 * y.mean()
    assert plain.predict_logged(X, a).mean() == pytest.approx(subsample_rate, rel=0.1)
