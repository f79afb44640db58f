"""Outcome scorers of every formulation, and the bundle round trip (no pickles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from features.catalog import load_catalog
from features.spec import FeatureSpec
from serving.bundle import BundleError, load_bundle, save_bundle
from serving.scoring import FORMULATIONS, Calibration
from training.models import fit_outcome_model

ACTIONS = ("none", "email_promo", "sms_offer")


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    a = rng.integers(0, 3, n)
    # sms works when x0 > 0, email never: a heterogeneous effect the models can find.
    logit = -2 + 0.8 * X[:, 1] + np.where((a == 2) & (X[:, 0] > 0), 1.5, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, a, y


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple]:
    X, a, y = _data(12000, 0)
    Xv, av, yv = _data(4000, 1)
    out = {}
    for formulation in FORMULATIONS:
        scorer, report = fit_outcome_model(
            X, a, y, Xv, av, yv, actions=ACTIONS, formulation=formulation, num_rounds=200
        )
        out[formulation] = (scorer, report)
    return out


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_each_formulation_finds_the_heterogeneous_effect(fitted: dict, formulation: str) -> None:
    scorer, _ = fitted[formulation]
    X, _, _ = _data(2000, 2)
    p = scorer.predict(X)
    assert p.shape == (2000, 3) and np.all((p > 0) & (p < 1))
    uplift_sms = p[:, 2] - p[:, 0]
    assert uplift_sms[X[:, 0] > 0.5].mean() > uplift_sms[X[:, 0] < -0.5].mean() + 0.05
    # One customer (the request path: LightGBM's single-row API) scores as in a batch.
    np.testing.assert_array_equal(scorer.predict(X[:1]), p[:1])
    np.testing.assert_array_equal(scorer.predict(X[5:8], [2, 0]), p[5:8][:, [2, 0]])
    # predict_logged agrees with the matching column of predict.
    codes = np.arange(2000) % 3
    np.testing.assert_allclose(
        scorer.predict_logged(X, codes), p[np.arange(2000), codes], atol=1e-9
    )


def test_calibration_is_monotone_and_round_trips() -> None:
    cal = Calibration(slope=1.3, intercept=-0.2)
    p = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(cal.apply(p)) > 0)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="slope"):
        Calibration.from_dict({"slope": -1.0, "intercept": 0.0})


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_bundle_round_trip_gives_identical_predictions(
    fitted: dict, formulation: str, tmp_path: Path
) -> None:
    scorer, _ = fitted[formulation]
    spec = FeatureSpec(channels=("email", "sms"))
    folder = save_bundle(
        tmp_path / "b",
        model_version="test-1",
        spec=spec,
        catalog=load_catalog(None),
        conversion=scorer,
        churn=scorer,
    )
    bundle = load_bundle(folder)
    X, _, _ = _data(300, 3)
    np.testing.assert_allclose(bundle.conversion.predict(X), scorer.predict(X), atol=1e-12)
    assert bundle.model_version == "test-1" and bundle.actions == ACTIONS
    assert not list(folder.glob("*.pkl")), "a bundle holds no pickles"


def test_broken_bundles_give_clear_errors(fitted: dict, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle.json not found"):
        load_bundle(tmp_path)
    scorer, _ = fitted["offset"]
    folder = save_bundle(
        tmp_path / "b",
        model_version="v",
        spec=FeatureSpec(channels=("email",)),
        catalog=load_catalog(None),
        conversion=scorer,
        churn=scorer,
    )
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["format"] = 99
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format"):
        load_bundle(folder)
    manifest["format"] = 1
    (folder / "bundle.json").write_text(json.dumps(manifest))
    (folder / "conversion.base.txt").write_text("not a model")
    with pytest.raises(BundleError, match="cannot load"):
        load_bundle(folder)
