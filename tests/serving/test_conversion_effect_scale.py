"""The bundle's ``conversion_effect_scale``: the policy weighs each action's conversion
uplift at ``k`` times the model's (training/effect_scale.py says why).

The bundle keeps ``k`` (format 4) and reads older formats with 1; the vectorized engine,
the compiled one-row decision and the reasons all weigh the uplift by it, while the
probabilities and the off-policy reward model (``ScoredRows.q_values``) stay the model's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import Bundle, BundleError, load_bundle, save_bundle
from serving.engine import DecisionEngine
from serving.policy import expected_values
from serving.reasons import explain
from tests.serving.bundle_factory import CATALOG, save_tiny_bundle
from tests.serving.test_decision_kernel import BASE_NS, _random_row
from tests.serving.test_probability_offset import ACTIONS, SPEC, N, _scorer

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(save_tiny_bundle(tmp_path_factory.mktemp("scale") / "m", "s-1"))


def test_the_bundle_keeps_the_scale_and_older_formats_read_one(tmp_path: Path) -> None:
    conversion, churn = _scorer(seed=1), _scorer(seed=2, feature=2)
    folder = save_bundle(
        tmp_path / "b", model_version="k", spec=SPEC, catalog=CATALOG,
        conversion=conversion, churn=churn, conversion_effect_scale=1.7,
    )  # fmt: skip
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["format"] == 4
    assert manifest["policy"] == {"conversion_effect_scale": 1.7}
    assert load_bundle(folder).conversion_effect_scale == 1.7
    # Formats 1-3 had no policy section: their uplift was weighed as the model gave it.
    del manifest["policy"]
    manifest["format"] = 3
    (folder / "bundle.json").write_text(json.dumps(manifest))
    assert load_bundle(folder).conversion_effect_scale == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_scale_that_is_not_a_positive_number_is_refused(tmp_path: Path, bad: float) -> None:
    with pytest.raises(BundleError, match="conversion_effect_scale must be a number > 0"):
        save_bundle(
            tmp_path / "b", model_version="k", spec=SPEC, catalog=CATALOG,
            conversion=_scorer(), churn=_scorer(seed=2), conversion_effect_scale=bad,
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_a_damaged_scale_in_a_bundle_file_is_refused(tmp_path: Path) -> None:
    folder = save_bundle(
        tmp_path / "b", model_version="k", spec=SPEC, catalog=CATALOG,
        conversion=_scorer(), churn=_scorer(seed=2),
    )  # fmt: skip
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["policy"]["conversion_effect_scale"] = "two"
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="got 'two'"):
        load_bundle(folder)


def test_the_engine_and_the_row_decision_weigh_the_conversion_uplift_by_the_scale(
    bundle: Bundle,
) -> None:
    plain = DecisionEngine(bundle)
    scaled = DecisionEngine(dataclasses.replace(bundle, conversion_effect_scale=2.5))
    assert scaled.uplift_value == 2.5 * scaled.conversion_value
    rng = np.random.default_rng(3)
    X = np.array([_random_row(plain, rng) for _ in range(200)])
    one, two = plain.score(X, BASE_NS), scaled.score(X, BASE_NS)
    # The probabilities and the reward model are the model's; only the ranking moves.
    np.testing.assert_array_equal(one.p_conversion, two.p_conversion)
    np.testing.assert_array_equal(one.p_churn, two.p_churn)
    costs, c = scaled.costs, scaled.churn_cost
    np.testing.assert_array_equal(
        one.q_values(plain.conversion_value, c, costs),
        two.q_values(scaled.conversion_value, c, costs),
    )
    expected = expected_values(
        two.p_conversion, two.p_churn, costs,
        conversion_value=2.5 * scaled.conversion_value, churn_cost=c,
    )  # fmt: skip
    np.testing.assert_allclose(two.scores, expected, rtol=1e-12, atol=1e-12)
    uplift = two.p_conversion - two.p_conversion[:, [0]]
    np.testing.assert_allclose(
        two.scores - one.scores, 1.5 * scaled.conversion_value * uplift, atol=1e-9
    )
    assert (one.greedy() != two.greedy()).any(), "the scale should change some choices"
    # The compiled one-customer path reads the same weight.
    for i in range(len(X)):
        row = scaled.decide_row(X[i], BASE_NS, 0.5)
        np.testing.assert_array_equal(row.scores, two.scores[i])


@pytest.fixture(scope="module")
def probability_bundle() -> Bundle:
    """Conversion moved by feature 0, churn by feature 2 (as in test_probability_offset)."""
    return Bundle(
        path=Path("."), model_version="p", actions=ACTIONS, spec=SPEC, catalog=CATALOG,
        conversion=_scorer(seed=5, feature=0), churn=_scorer(seed=6, feature=2, size=0.06),
    )  # fmt: skip


def test_the_reasons_weigh_the_conversion_contributions_by_the_scale(
    probability_bundle: Bundle,
) -> None:
    """A large scale makes every first reason a conversion reason, a small one a churn
    reason: the reasons rank contributions in the policy's units."""
    rng = np.random.default_rng(8)
    codes = list(range(1, len(ACTIONS)))
    rows = [rng.normal(size=N) for _ in range(6)]
    for k, outcome in ((1e4, "conversion"), (1e-4, "churn")):
        b = dataclasses.replace(probability_bundle, conversion_effect_scale=k)
        for x in rows:
            pc = b.conversion.predict(x[None, :])[0]
            pch = b.churn.predict(x[None, :])[0]
            reasons = explain(b, x, codes, p_conversion=pc[codes], p_churn=pch[codes])
            firsts = [r[0] for r in reasons if r]
            assert firsts
            assert all(f" {outcome} probability over no action" in r for r in firsts), firsts
