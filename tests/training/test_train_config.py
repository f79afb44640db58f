"""Settings of the training pipeline that other parts rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from features.catalog import catalog_from_dict
from serving.scoring import Formulation
from touchpoint.cli import build_parser
from training.simulator import simulate
from training.train import COMPARED_FORMULATIONS, TrainConfig, fit_and_evaluate


def test_compare_fits_every_formulation_once() -> None:
    # It used to leave out shared_offset, the default, while the docs said "all four".
    assert sorted(COMPARED_FORMULATIONS) == sorted(get_args(Formulation))


def test_the_cli_offers_every_formulation_and_compare() -> None:
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    choices = next(a.choices for a in train._actions if a.dest == "formulation")
    assert sorted(choices) == sorted([*COMPARED_FORMULATIONS, "compare"])


@pytest.mark.slow
def test_compare_grades_every_formulation_and_keeps_the_best(tmp_path: Path) -> None:
    sim = simulate(n_customers=600, days=300, seed=3)
    catalog = catalog_from_dict(sim.catalog)
    result = fit_and_evaluate(
        sim.events,
        sim.customers,
        catalog,
        TrainConfig(formulation="compare", n_bootstrap=10),
        bundle_dir=tmp_path / "bundle",
        model_version="compare",
    )
    values = {
        key.split(".")[1]: value
        for key, value in result.formulation_comparison.items()
        if key.endswith(".valid_dr")
    }
    assert sorted(values) == sorted(COMPARED_FORMULATIONS)
    assert all(np.isfinite(v) for v in values.values())
    assert result.formulation == max(values, key=values.__getitem__)
    assert result.engine.bundle.metadata["formulation"] == result.formulation


@pytest.mark.slow
def test_engagement_on_puts_its_model_in_the_bundle_and_off_leaves_it_out(tmp_path: Path) -> None:
    sim = simulate(n_customers=600, days=300, seed=4)
    catalog = catalog_from_dict(sim.catalog)
    engines = {}
    for engagement in ("on", "off"):
        result = fit_and_evaluate(
            sim.events,
            sim.customers,
            catalog,
            TrainConfig(engagement=engagement, n_bootstrap=10),  # type: ignore[arg-type]
            bundle_dir=tmp_path / engagement,
            model_version=engagement,
        )
        assert result.engine.bundle.metadata["engagement"] is (engagement == "on")
        assert (tmp_path / engagement / "engagement.txt").is_file() is (engagement == "on")
        engines[engagement] = result.engine
    on, off = engines["on"].bundle, engines["off"].bundle
    assert on.conversion.engagement is on.churn.engagement is not None
    assert off.conversion.engagement is None
    n = len(on.spec.feature_names)
    assert on.conversion.boosters["offset"].num_feature() == n + 2
    assert off.conversion.boosters["offset"].num_feature() == n + 1
    # The engagement model reads the customer attributes, and a send lands more often on
    # some channels than on others.
    assert all(name.startswith("attr_") for name in on.conversion.engagement.inputs)
    X = result.test_rounds.X[:200]
    every = on.conversion.engagement.per_action(X)
    assert (every[:, 0] == 0).all() and np.ptp(every[:, 1:].mean(axis=0)) > 0.05


@pytest.mark.slow
def test_the_conversion_effect_scale_reaches_the_bundle_and_moves_only_the_ranking(
    tmp_path: Path,
) -> None:
    """``auto`` estimates the scale on the training rows and writes it to the bundle, its
    metadata and the metrics; a fixed scale is kept as given.  The models are the same
    either way (the scale is the policy's): the probabilities are equal, the scores are
    the conversion uplift's weight apart."""
    sim = simulate(n_customers=600, days=300, seed=5)
    catalog = catalog_from_dict(sim.catalog)
    results = {
        scale: fit_and_evaluate(
            sim.events,
            sim.customers,
            catalog,
            TrainConfig(conversion_effect_scale=scale, n_bootstrap=10),
            bundle_dir=tmp_path / str(scale),
            model_version=str(scale),
        )  # fmt: skip
        for scale in ("auto", 2.5)
    }
    auto, fixed = results["auto"], results[2.5]
    k = auto.engine.bundle.conversion_effect_scale
    assert auto.metrics["policy.conversion_effect_scale"] == k
    assert auto.engine.bundle.metadata["conversion_effect_scale"] == k
    assert 1.0 <= k <= 4.0
    assert fixed.engine.bundle.conversion_effect_scale == 2.5
    assert np.isnan(fixed.metrics["policy.conversion_effect_scale.raw"])
    assert fixed.engine.bundle.metadata["conversion_effect_scale_raw"] is None
    # bundle.json stays strict JSON (no NaN) for readers other than Python's.
    text = (tmp_path / "2.5" / "bundle.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in bundle.json"))
    X, when = auto.test_rounds.X[:500], auto.test_rounds.decision_time[:500]
    a, b = auto.engine.score(X, when), fixed.engine.score(X, when)
    np.testing.assert_array_equal(a.p_conversion, b.p_conversion)
    uplift = a.p_conversion - a.p_conversion[:, [0]]
    assert np.abs(uplift).max() > 1e-3
    np.testing.assert_allclose(
        b.scores - a.scores, (2.5 - k) * auto.engine.conversion_value * uplift, atol=1e-9
    )
