"""A shared offset on the probability scale: ``p(x, a) = sigmoid(base(x)) + offset(x, a)``.

The scorer adds the offset booster's raw score to the base's probability (clipped to
[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]) in the batch path, the logged path and the
compiled one-row path alike (to the bit); a bundle keeps the scale (format 3) and reads
older bundles as log-odds; and the reasons weigh and show probability contributions.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from scipy.special import expit

from features.spec import FeatureSpec
from serving.bundle import Bundle, load_bundle, save_bundle
from serving.reasons import contributions, explain
from serving.scoring import PROBABILITY_FLOOR, Calibration, OutcomeScorer
from tests.serving.bundle_factory import ACTIONS, CATALOG, history

SPEC = FeatureSpec.from_data(history(), None, channels=CATALOG.channels)
N = SPEC.n_features


def _boosters(seed: int, effect_feature: int, size: float = 0.25) -> dict[str, lgb.Booster]:
    """A binary base and a least-squares offset on its probabilities, whose effect depends
    on the action and on ``effect_feature`` (``size`` per unit); by default large enough
    that some predictions leave (0, 1) before the clip."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4000, N))
    action = rng.integers(0, len(ACTIONS), len(X)).astype(float)
    p0 = expit(-1.0 + X[:, 1])
    p = np.clip(p0 + size * (action > 0) * X[:, effect_feature], 0.0, 1.0)
    y = (rng.random(len(X)) < p).astype(float)
    common = {"num_leaves": 7, "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1}
    base = lgb.train({**common, "objective": "binary"}, lgb.Dataset(X, y), 20)
    with_action = np.column_stack([X, action])
    init = expit(base.predict(X, raw_score=True))
    offset_data = lgb.Dataset(with_action, y, init_score=init, categorical_feature=[N])
    offset = lgb.train({**common, "objective": "regression"}, offset_data, 40)
    return {"base": base, "offset": offset}


def _scorer(
    calibrated: bool = False, seed: int = 0, feature: int = 0, size: float = 0.25
) -> OutcomeScorer:
    return OutcomeScorer(
        "shared_offset",
        ACTIONS,
        _boosters(seed, feature, size),
        calibration=Calibration(1.1, -0.2) if calibrated else None,
        offset_scale="probability",
    )


def _X(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N)) * 1.5


def test_predictions_add_the_offset_to_the_base_probability() -> None:
    scorer = _scorer()
    X = _X(1, 300)
    base = scorer.boosters["base"].predict(X, raw_score=True)
    expected = np.empty((len(X), len(ACTIONS)))
    for code in range(len(ACTIONS)):
        rows = np.column_stack([X, np.full(len(X), float(code))])
        offset = scorer.boosters["offset"].predict(rows, raw_score=True)
        expected[:, code] = expit(base) + offset
    clipped = (expected < PROBABILITY_FLOOR) | (expected > 1 - PROBABILITY_FLOOR)
    assert clipped.any() and not clipped.all()  # the clip is exercised, not everywhere
    expected = np.clip(expected, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    np.testing.assert_allclose(scorer.predict(X), expected, rtol=0, atol=1e-12)
    # An action's effect is the offset's difference wherever nothing was clipped.
    inside = ~clipped[:, 0] & ~clipped[:, 3]
    uplift = scorer.predict(X)[:, 3] - scorer.predict(X)[:, 0]
    rows3 = np.column_stack([X, np.full(len(X), 3.0)])
    rows0 = np.column_stack([X, np.zeros(len(X))])
    offsets = scorer.boosters["offset"].predict(rows3) - scorer.boosters["offset"].predict(rows0)
    np.testing.assert_allclose(uplift[inside], offsets[inside], atol=1e-12)


@pytest.mark.parametrize("calibrated", [False, True])
def test_one_row_is_the_batch_to_the_bit(calibrated: bool) -> None:
    scorer = _scorer(calibrated)
    X = _X(2, 60)
    batch = scorer.predict(X)
    for i in range(len(X)):
        np.testing.assert_array_equal(scorer.predict_row(X[i]), batch[i])
    assert scorer._row_logits not in (None, False)  # the compiled path answered


def test_logged_rows_are_the_batch_at_their_action() -> None:
    scorer = _scorer(calibrated=True)
    X = _X(3, 200)
    codes = np.random.default_rng(3).integers(0, len(ACTIONS), len(X))
    np.testing.assert_array_equal(
        scorer.predict_logged(X, codes), scorer.predict(X)[np.arange(len(X)), codes]
    )


def test_the_bundle_keeps_the_scale_and_older_bundles_read_as_log_odds(tmp_path: Path) -> None:
    conversion, churn = _scorer(True), _scorer(seed=1, feature=2)
    folder = save_bundle(
        tmp_path / "b", model_version="p1", spec=SPEC, catalog=CATALOG,
        conversion=conversion, churn=churn,
    )  # fmt: skip
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["format"] == 4
    loaded = load_bundle(folder)
    assert loaded.conversion.offset_scale == loaded.churn.offset_scale == "probability"
    X = _X(4, 50)
    np.testing.assert_array_equal(loaded.conversion.predict(X), conversion.predict(X))
    # A format-2 bundle wrote no scale: its offsets were added on the log-odds.
    for outcome in ("conversion", "churn"):
        del manifest[outcome]["offset_scale"]
    manifest["format"] = 2
    (folder / "bundle.json").write_text(json.dumps(manifest))
    old = load_bundle(folder)
    assert old.conversion.offset_scale == "log_odds"
    base = old.conversion.boosters["base"].predict(X, raw_score=True)
    rows = np.column_stack([X, np.full(len(X), 2.0)])
    logit = base + old.conversion.boosters["offset"].predict(rows, raw_score=True)
    expected = Calibration(1.1, -0.2).apply(expit(logit))
    np.testing.assert_allclose(old.conversion.predict(X)[:, 2], expected, atol=1e-12)


def test_only_a_shared_offset_takes_the_probability_scale() -> None:
    boosters = _boosters(0, 0)
    with pytest.raises(ValueError, match="shared_offset formulation only"):
        OutcomeScorer("single", ACTIONS, {"all": boosters["offset"]}, offset_scale="probability")
    with pytest.raises(ValueError, match="offset_scale must be one of"):
        OutcomeScorer("shared_offset", ACTIONS, boosters, offset_scale="odds")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    """Conversion moved by feature 0, churn (four times as costly) by feature 2 with a
    smaller effect, both on the probability scale: either can give the first reason."""
    return Bundle(
        path=Path("."), model_version="p", actions=ACTIONS, spec=SPEC, catalog=CATALOG,
        conversion=_scorer(seed=5, feature=0), churn=_scorer(seed=6, feature=2, size=0.06),
    )  # fmt: skip


def test_contributions_add_up_to_the_uplift_in_probability(bundle: Bundle) -> None:
    rng = np.random.default_rng(7)
    codes = list(range(len(ACTIONS)))
    for _ in range(5):
        x = rng.normal(size=N) * 0.5
        for scorer in (bundle.conversion, bundle.churn):
            p = scorer.predict_raw(x[None, :])[0]
            if ((p <= PROBABILITY_FLOOR) | (p >= 1 - PROBABILITY_FLOOR)).any():
                continue  # clipped: the sum is the unclipped difference
            _, contrib = contributions(scorer, x, codes, versus=3)
            uplift = p - p[0]
            uplift[0] = p[0] - p[3]
            np.testing.assert_allclose(contrib.sum(axis=1), uplift, atol=1e-9)


def test_reasons_weigh_probability_contributions_by_value_and_show_points(
    bundle: Bundle,
) -> None:
    """The first reason is the feature whose contribution times V (conversion) or C
    (churn) is largest: no ``p (1 - p)`` slope, the contributions are already changes of
    the probability, shown in percentage points."""
    rng = np.random.default_rng(8)
    objective = bundle.catalog.objective
    codes = list(range(1, len(ACTIONS)))
    seen = set()
    for _ in range(8):
        x = rng.normal(size=N)
        pc = bundle.conversion.predict(x[None, :])[0]
        pch = bundle.churn.predict(x[None, :])[0]
        reasons = explain(bundle, x, codes, p_conversion=pc[codes], p_churn=pch[codes])
        _, conv = contributions(bundle.conversion, x, codes)
        _, churn = contributions(bundle.churn, x, codes)
        for i in range(len(codes)):
            effect = np.abs(
                np.concatenate(
                    [
                        objective.conversion_value * conv[i, :-1],
                        objective.churn_cost * churn[i, :-1],
                    ]
                )
            )
            if effect.max() == 0:
                continue
            best = int(np.argmax(effect))
            outcome, column = ("conversion", best) if best < N else ("churn", best - N)
            value = (conv if outcome == "conversion" else churn)[i, column]
            first = reasons[i][0]
            assert first.startswith(f"{SPEC.feature_names[column]}=")
            assert f" {outcome} probability over no action ({100 * value:+.1f} pp)" in first
            assert " odds " not in first
            seen.add(outcome)
    assert seen == {"conversion", "churn"}
