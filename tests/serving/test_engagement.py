"""The engagement model at serving time (serving/engagement.py) and the shared offset
scorer that reads it: every path (batch, compiled request path, logged rows, reasons,
bundle on disk) gives the same probabilities, and the engagement column matters."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.catalog import load_catalog
from features.spec import FeatureSpec
from serving.bundle import FORMAT_VERSION, Bundle, BundleError, load_bundle, save_bundle
from serving.engagement import EngagementModel
from serving.reasons import contributions, explain
from serving.scoring import Calibration, OutcomeScorer, _RowLogits

CATALOG = load_catalog(None)
ACTIONS: tuple[str, ...] = ("none", *CATALOG.action_ids)
CHANNELS = tuple(CATALOG.channels)
ACTION_CHANNELS = (-1, *(CHANNELS.index(a.channel) for a in CATALOG.actions))
SPEC = FeatureSpec(channels=("email",))
N = SPEC.n_features
INPUTS = SPEC.feature_names[:2]


def _engagement(seed: int = 0) -> EngagementModel:
    """Opens depend on the first input and the channel: channel c lands where x0 > c - 2."""
    rng = np.random.default_rng(seed)
    n = 4000
    x = rng.normal(size=(n, 2))
    channel = rng.integers(0, len(CHANNELS), n)
    logit = 2.0 * (x[:, 0] > channel / 3 - 1.5) - 1.0 + 0.3 * x[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    data = lgb.Dataset(np.column_stack([x, channel]), y, categorical_feature=[2])
    params = {"objective": "binary", "num_leaves": 8, "verbose": -1, "seed": seed}
    return EngagementModel(
        booster=lgb.train(params, data, num_boost_round=20),
        inputs=INPUTS,
        input_columns=(0, 1),
        channels=CHANNELS,
        action_channels=ACTION_CHANNELS,
    )


def _X(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N))
    X[0] = np.nan
    return X


def _scorer(
    engagement: EngagementModel, seed: int, calibrated: bool = False, actions: tuple = ACTIONS
) -> OutcomeScorer:
    """A shared offset scorer whose actions work in proportion to their engagement."""
    rng = np.random.default_rng(seed)
    X = _X(seed + 10, 6000)
    codes = rng.integers(0, len(actions), len(X))
    e = engagement.logged(X, codes)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-(-1.5 + 0.5 * X[:, 2] + 3.0 * e)))).astype(float)
    params = {"objective": "binary", "num_leaves": 8, "verbose": -1, "seed": seed}
    base = lgb.train(params, lgb.Dataset(X, y), num_boost_round=10)
    rows = np.column_stack([X, e, codes])
    data = lgb.Dataset(rows, y, categorical_feature=[N + 1])
    data.set_init_score(base.predict(X, raw_score=True))
    offset = lgb.train(params, data, num_boost_round=15)
    calibration = Calibration(slope=0.9, intercept=-0.1) if calibrated else None
    return OutcomeScorer(
        "shared_offset",
        actions,
        {"base": base, "offset": offset},
        calibration,
        engagement=engagement,
    )


@pytest.fixture(scope="module")
def engagement() -> EngagementModel:
    return _engagement()


def test_per_action_is_zero_for_none_and_logged_picks_each_row_s_action(
    engagement: EngagementModel,
) -> None:
    X = _X(1, 300)
    every = engagement.per_action(X)
    assert every.shape == (300, len(ACTIONS))
    assert (every[:, 0] == 0).all()
    assert ((every[:, 1:] > 0) & (every[:, 1:] < 1)).all()
    # Actions on one channel share its engagement; channels differ.
    same = [i for i, c in enumerate(ACTION_CHANNELS) if c == ACTION_CHANNELS[1]]
    assert len(same) >= 2
    np.testing.assert_array_equal(every[:, same[0]], every[:, same[1]])
    assert np.ptp(every[:, 1:], axis=1).max() > 0.1
    codes = np.random.default_rng(2).integers(0, len(ACTIONS), 300)
    np.testing.assert_array_equal(engagement.logged(X, codes), every[np.arange(300), codes])
    np.testing.assert_array_equal(engagement.per_action(X, [3, 0]), every[:, [3, 0]])


def test_one_row_agrees_with_a_batch_to_the_bit(engagement: EngagementModel) -> None:
    """A request's few rows take LightGBM's single-row path, a batch its matrix path: the
    same probabilities to the bit, NaN inputs included."""
    X = _X(3, 200)  # row 0 is all NaN
    batch = engagement.per_action(X)
    rows = np.array([engagement.per_action(X[i : i + 1])[0] for i in range(len(X))])
    np.testing.assert_array_equal(rows, batch)


def test_the_model_checks_its_shape(engagement: EngagementModel) -> None:
    with pytest.raises(ValueError, match="reads 3 columns"):
        EngagementModel(engagement.booster, INPUTS[:1], (0,), CHANNELS, ACTION_CHANNELS)
    with pytest.raises(ValueError, match="out of range"):
        EngagementModel(engagement.booster, INPUTS, (0, 1), CHANNELS, (-1, len(CHANNELS)))
    with pytest.raises(ValueError, match="shared_offset formulation only"):
        OutcomeScorer("single", ACTIONS, {"all": engagement.booster}, engagement=engagement)


@pytest.mark.parametrize("calibrated", [False, True], ids=["raw", "calibrated"])
def test_request_path_equals_batch_path(engagement: EngagementModel, calibrated: bool) -> None:
    scorer = _scorer(engagement, 3, calibrated)
    # The offset splits on the engagement column: the compiled walk must divide there.
    assert scorer.boosters["offset"].feature_importance("gain")[N] > 0
    X = _X(4, 300)
    batch = scorer.predict(X)
    got = np.array([scorer.predict_row(x) for x in X])
    assert isinstance(scorer._row_logits, _RowLogits)
    np.testing.assert_array_equal(got, batch)
    # ... with the engagement given by the caller (as the engine does), the same.
    given = scorer.engagement_of(X)
    assert given is not None
    np.testing.assert_array_equal(scorer.predict(X, engagement=given), batch)
    np.testing.assert_array_equal(scorer.predict_row(X[5], given[5]), batch[5])
    # And the column is read: other engagement values, other probabilities.
    assert not np.array_equal(scorer.predict_row(X[5], np.zeros(len(ACTIONS))), batch[5])


def test_request_path_over_64_actions(engagement: EngagementModel) -> None:
    """Past 64 actions the compiled walk goes action by action: the same probabilities."""
    actions = ("none", *(f"a{i}" for i in range(1, 70)))
    many = EngagementModel(
        engagement.booster, INPUTS, (0, 1), CHANNELS,
        (-1, *(i % len(CHANNELS) for i in range(1, 70))),
    )  # fmt: skip
    scorer = _scorer(many, 5, actions=actions)
    X = _X(6, 100)
    got = np.array([scorer.predict_row(x) for x in X])
    np.testing.assert_array_equal(got, scorer.predict(X))


def test_logged_rows_score_as_the_batch(engagement: EngagementModel) -> None:
    scorer = _scorer(engagement, 7, calibrated=True)
    X = _X(8, 200)
    codes = np.random.default_rng(9).integers(0, len(ACTIONS), 200)
    np.testing.assert_allclose(
        scorer.predict_logged(X, codes), scorer.predict(X)[np.arange(200), codes], rtol=1e-12
    )
    rows = scorer.logged_rows(X, codes)
    assert rows.shape == (200, N + 2)
    np.testing.assert_array_equal(rows[:, N], engagement.logged(X, codes))
    np.testing.assert_array_equal(rows[:, N + 1], codes)


def _bundle(tmp_path: Path, engagement: EngagementModel) -> Path:
    return save_bundle(
        tmp_path / "b",
        model_version="v1",
        spec=SPEC,
        catalog=CATALOG,
        conversion=_scorer(engagement, 11, calibrated=True),
        churn=_scorer(engagement, 12),
    )


def test_bundle_keeps_one_engagement_model_for_both_outcomes(
    tmp_path: Path, engagement: EngagementModel
) -> None:
    folder = _bundle(tmp_path, engagement)
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["format"] == FORMAT_VERSION == 4
    assert manifest["engagement"]["inputs"] == list(INPUTS)
    assert (folder / "engagement.txt").is_file()
    loaded = load_bundle(folder)
    assert loaded.conversion.engagement is loaded.churn.engagement is not None
    X = _X(13, 100)
    np.testing.assert_array_equal(
        loaded.conversion.engagement.per_action(X), engagement.per_action(X)
    )
    before = _scorer(engagement, 11, calibrated=True).predict(X)
    np.testing.assert_array_equal(loaded.conversion.predict(X), before)


def test_bundle_refuses_what_does_not_fit(tmp_path: Path, engagement: EngagementModel) -> None:
    with pytest.raises(BundleError, match="share one engagement model"):
        save_bundle(
            tmp_path / "x", model_version="v", spec=SPEC, catalog=CATALOG,
            conversion=_scorer(engagement, 11), churn=_scorer(_engagement(1), 12),
        )  # fmt: skip
    folder = _bundle(tmp_path, engagement)
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["engagement"]["inputs"] = ["attr_not_in_the_spec", INPUTS[1]]
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="attr_not_in_the_spec"):
        load_bundle(folder)


def test_reasons_name_the_engagement_and_add_up(engagement: EngagementModel) -> None:
    conversion = _scorer(engagement, 21, calibrated=True)
    bundle = Bundle(
        path=Path("."), model_version="v", actions=ACTIONS, spec=SPEC, catalog=CATALOG,
        conversion=conversion, churn=_scorer(engagement, 22),
    )  # fmt: skip
    X = _X(23, 60)
    codes = list(range(len(ACTIONS)))
    named = 0
    for x in X[1:]:
        rows, contrib = contributions(conversion, x, codes, versus=1)
        assert rows.shape[1] == N + 2
        # Each action's contributions add up to its uplift in log-odds over none.
        p = conversion.predict_raw(x[None, :])[0]
        logit = np.log(p / (1 - p))
        np.testing.assert_allclose(contrib[1:].sum(axis=1), logit[1:] - logit[0], atol=1e-9)
        reasons_x = explain(bundle, x, codes, versus=1)
        for reasons in reasons_x:
            named += sum(r.startswith("engagement=") and "%" in r for r in reasons)
        # The decision's engagement, handed over, gives the same reasons.
        given = conversion.engagement_of(x[None, :])
        assert given is not None
        assert explain(bundle, x, codes, versus=1, engagement=given[0]) == reasons_x
    assert named > 0
