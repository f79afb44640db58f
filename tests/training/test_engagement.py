"""The engagement model: its labels, its fit, and its column in the shared offset booster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.catalog import load_catalog
from serving.engagement import ENGAGEMENT_COLUMN, EngagementModel
from tests.training.test_offset_interactions import _branch_features
from training.engagement import (
    ENGAGEMENT_HOURS,
    engagement_inputs,
    engagement_labels,
    fit_engagement,
)
from training.models import fit_outcome_model
from training.refit import refit_shared_offset

CATALOG = load_catalog(None)
ACTIONS = ("none", "email_promo", "sms_offer")
NAMES = ["attr_loyal", "attr_age", "ch_email_open_rate", "ch_sms_open_rate", "n_sent_7d"]
ATTRS = ["attr_loyal", "attr_age"]
EFFECTS = ["attr_loyal", "attr_age", "ch_email_open_rate"]
ENGAGEMENT_INDEX = len(NAMES)  # the offset's engagement column, before the action code
ACTION_COLUMN = len(NAMES) + 1
#: One LightGBM thread: on a busy two-core machine two threads took seconds instead of 0.1 s.
PARAMS = {"num_threads": 1}
T0 = pd.Timestamp("2024-03-01 09:00", tz="UTC")


# ---------------------------------------------------------------------------- labels
def _hours(h: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=h)


def _label_case() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], list[bool]]:
    """Hand-made sends and responses, with the label each send should get."""
    channel_of = {"email_promo": "email", "sms_offer": "sms", "push_reminder": "push"}
    decisions = [
        # (customer, decision time, action, expected label, why)
        ("c1", _hours(0), "email_promo", True),  # email open 2 h later
        ("c2", _hours(0), "email_promo", False),  # email click 30 h later: too late
        ("c3", _hours(0), "sms_offer", False),  # its open is on email, not sms
        ("c4", _hours(10), "email_promo", False),  # its open came 1 h before the send
        ("c5", _hours(0), "none", False),  # no send (an email open follows anyway)
        ("c6", _hours(0), "store_invitation", False),  # not in the channel map
        ("c7", _hours(0), "push_reminder", True),  # a click at the very send time
        ("c8", _hours(100), "sms_offer", False),  # c1's sms click 3 h later is not c8's
        ("c1", _hours(100), "sms_offer", True),  # c1 again, its sms click 3 h later
    ]
    events = pd.DataFrame(
        [
            ("c1", _hours(2), "email", "open", "email_promo"),
            ("c2", _hours(30), "email", "click", "email_promo"),
            ("c3", _hours(1), "email", "open", "email_promo"),
            ("c4", _hours(9), "email", "open", "email_promo"),
            ("c5", _hours(1), "email", "open", None),
            ("c6", _hours(1), "store", "click", "store_invitation"),
            ("c7", _hours(0), "push", "click", "push_reminder"),
            ("c1", _hours(103), "sms", "click", "sms_offer"),
            # Not responses: a purchase and a send right after c8's decision.
            ("c8", _hours(101), "sms", "purchase", None),
            ("c8", _hours(101), "sms", "send", "sms_offer"),
        ],
        columns=["customer_id", "timestamp", "channel", "event_type", "action"],
    )
    table = pd.DataFrame(
        [d[:3] for d in decisions], columns=["customer_id", "decision_time", "action"]
    )
    return events, table, channel_of, [d[3] for d in decisions]


def test_engagement_labels_match_channel_and_window() -> None:
    events, table, channel_of, expected = _label_case()
    labels = engagement_labels(events, table, channel_of)
    assert labels.dtype == bool
    assert labels.tolist() == expected


def test_engagement_labels_follow_their_rows_when_shuffled() -> None:
    events, table, channel_of, expected = _label_case()
    order = np.random.default_rng(0).permutation(len(table))
    assert not np.array_equal(order, np.arange(len(table)))
    shuffled = table.iloc[order]  # keeps its permuted index, on purpose
    labels = engagement_labels(events.sample(frac=1.0, random_state=1), shuffled, channel_of)
    assert labels.tolist() == [expected[i] for i in order]
    # And with a fresh index.
    fresh = engagement_labels(events, shuffled.reset_index(drop=True), channel_of)
    assert fresh.tolist() == [expected[i] for i in order]


def test_engagement_labels_window_is_a_parameter() -> None:
    events, table, channel_of, expected = _label_case()
    assert ENGAGEMENT_HOURS == 24.0
    wide = engagement_labels(events, table, channel_of, hours=48.0)
    assert wide.tolist() == [e or i == 1 for i, e in enumerate(expected)]  # c2's 30 h click
    narrow = engagement_labels(events, table, channel_of, hours=1.0)
    # Only the response at the send time stays (the others came 2 and 3 h after).
    assert narrow.tolist() == [i == 6 for i in range(len(expected))]


def test_engagement_labels_without_sends_or_responses_are_false() -> None:
    events, table, channel_of, _ = _label_case()
    nothing = engagement_labels(events[events["event_type"] == "purchase"], table, channel_of)
    assert nothing.tolist() == [False] * len(table)
    nones = table.assign(action="none")
    assert engagement_labels(events, nones, channel_of).tolist() == [False] * len(table)


def test_engagement_inputs_are_the_attributes_in_order() -> None:
    names = ["ch_email_open_rate", "attr_b", "n_sent_7d", "attr_a", "x_attr_c", "attr_c"]
    assert engagement_inputs(names) == ["attr_b", "attr_a", "attr_c"]
    assert engagement_inputs(["n_sent_7d"]) == []


# ---------------------------------------------------------------------------- fit
def _sends(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of NAMES, action codes of ACTIONS and engagement: loyal customers open email
    far more (0.65 against 0.15), sms lands with everyone alike (0.35); the open-rate
    features are noise to the engagement model (it must not read them)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    X[:, 0] = rng.integers(0, 2, n)  # attr_loyal
    a = rng.integers(0, len(ACTIONS), n)
    p = np.where(a == 1, 0.15 + 0.5 * X[:, 0], np.where(a == 2, 0.35, 0.0))
    engaged = rng.random(n) < p
    return X, a, engaged


@pytest.fixture(scope="module")
def model() -> EngagementModel:
    X, a, e = _sends(12000, 0)
    Xv, av, ev = _sends(4000, 1)
    fitted = fit_engagement(
        X,
        a,
        e,
        Xv,
        av,
        ev,
        feature_names=NAMES,
        actions=ACTIONS,
        catalog=CATALOG,
        seed=0,
        num_threads=1,
    )
    assert fitted is not None
    return fitted


def test_fit_engagement_learns_who_opens_which_channel(model: EngagementModel) -> None:
    assert model.inputs == tuple(ATTRS)
    assert model.input_columns == (0, 1)
    assert model.booster.num_feature() == len(ATTRS) + 1
    channels = tuple(CATALOG.channels)
    assert model.channels == channels
    assert model.action_channels == (-1, channels.index("email"), channels.index("sms"))

    X, a, _ = _sends(4000, 2)
    p = model.per_action(X)
    assert p.shape == (len(X), len(ACTIONS))
    loyal = X[:, 0] == 1
    assert (p[:, 0] == 0).all()  # no action reaches nobody
    email, sms = p[:, 1], p[:, 2]
    assert email[loyal].mean() > email[~loyal].mean() + 0.15
    assert email[loyal].mean() == pytest.approx(0.65, abs=0.08)
    assert email[~loyal].mean() == pytest.approx(0.15, abs=0.08)
    assert abs(sms[loyal].mean() - sms[~loyal].mean()) < 0.05
    assert sms.mean() == pytest.approx(0.35, abs=0.05)
    # Chosen columns, and each row under its own action.
    np.testing.assert_array_equal(model.per_action(X, [2, 0]), p[:, [2, 0]])
    np.testing.assert_allclose(model.logged(X, a), p[np.arange(len(X)), a], rtol=0, atol=1e-12)
    # The open-rate features are not inputs: changing them changes nothing.
    moved = X.copy()
    moved[:, 2:] += 5.0
    np.testing.assert_array_equal(model.per_action(moved), p)


def test_fit_engagement_without_engaged_sends_is_none() -> None:
    X, a, e = _sends(2000, 3)
    messages: list[str] = []
    none = fit_engagement(
        X, a, np.zeros_like(e), X, a, e, feature_names=NAMES, actions=ACTIONS,
        catalog=CATALOG, num_threads=1, progress=messages.append,
    )  # fmt: skip
    assert none is None
    assert len(messages) == 1 and "left out" in messages[0]
    # No sends at all in the validation part: also None.
    messages.clear()
    zeros = np.zeros_like(a)
    assert (
        fit_engagement(
            X,
            a,
            e,
            X,
            zeros,
            e,
            feature_names=NAMES,
            actions=ACTIONS,
            catalog=CATALOG,
            num_threads=1,
            progress=messages.append,
        )  # fmt: skip
        is None
    )
    assert messages


# ---------------------------------------------------------------------------- offset
def _conversions(
    model: EngagementModel, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conversion whose action effect is 2.5 × the chosen action's engagement (so email
    works on loyal customers, sms a little on everyone); n_sent_7d moves the outcome."""
    X, a, _ = _sends(n, seed)
    rng = np.random.default_rng(seed + 100)
    logit = -2.0 + 0.8 * X[:, 4] + 2.5 * model.logged(X, a)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, a, y


@pytest.fixture(scope="module")
def offset_fit(model: EngagementModel) -> tuple:
    X, a, y = _conversions(model, 12000, 10)
    Xv, av, yv = _conversions(model, 4000, 11)
    scorer, report = fit_outcome_model(
        X, a, y, Xv, av, yv, actions=ACTIONS, formulation="shared_offset",
        feature_names=NAMES, offset_features=EFFECTS, offset_interactions="pairwise",
        engagement=model, params=PARAMS,
    )  # fmt: skip
    return X, a, y, scorer, report


def test_offset_reads_the_engagement_column(model: EngagementModel, offset_fit: tuple) -> None:
    _, _, _, scorer, _ = offset_fit
    assert scorer.engagement is model
    offset = scorer.boosters["offset"]
    assert offset.num_feature() == len(NAMES) + 2
    assert offset.feature_name() == [*NAMES, ENGAGEMENT_COLUMN, "action_code"]
    assert scorer.boosters["base"].num_feature() == len(NAMES)
    gain = offset.feature_importance("gain")
    assert gain[ENGAGEMENT_INDEX] > 0
    # Outside the offset features: never split on (n_sent_7d moves the base only).
    for name in set(NAMES) - set(EFFECTS):
        assert gain[NAMES.index(name)] == 0, name


def test_offset_branches_stay_pairwise_with_engagement(offset_fit: tuple) -> None:
    _, _, _, scorer, _ = offset_fit
    paths = _branch_features(scorer.boosters["offset"])
    assert paths
    for path in paths:
        assert len(path - {ACTION_COLUMN}) <= 1, path
    assert ENGAGEMENT_INDEX in set().union(*paths)


def test_offset_with_engagement_finds_the_engagement_driven_effect(offset_fit: tuple) -> None:
    _, _, _, scorer, _ = offset_fit
    X, _, _ = _sends(4000, 12)
    p = scorer.predict_raw(X)
    email = p[:, 1] - p[:, 0]
    loyal = X[:, 0] == 1
    assert email[loyal].mean() > email[~loyal].mean() + 0.03
    # The logged rows carry the engagement column too.
    codes = np.random.default_rng(13).integers(0, len(ACTIONS), len(X))
    np.testing.assert_allclose(
        scorer.predict_logged(X, codes), scorer.predict(X)[np.arange(len(X)), codes], atol=1e-9
    )


def test_engagement_needs_the_shared_offset_formulation(model: EngagementModel) -> None:
    X, a, y = _conversions(model, 500, 20)
    for formulation in ("single", "offset"):
        with pytest.raises(ValueError, match="engagement.*shared_offset"):
            fit_outcome_model(
                X, a, y, X, a, y, actions=ACTIONS, formulation=formulation,
                engagement=model, params=PARAMS,
            )  # fmt: skip


def test_refit_keeps_the_engagement_column(model: EngagementModel, offset_fit: tuple) -> None:
    X, a, y, _, report = offset_fit
    kwargs: dict[str, Any] = {
        "actions": ACTIONS,
        "feature_names": NAMES,
        "offset_features": EFFECTS,
        "offset_interactions": "pairwise",
        "params": PARAMS,
    }
    refit = refit_shared_offset(X, a, y, report, engagement=model, **kwargs)
    assert refit.engagement is model
    offset = refit.boosters["offset"]
    assert offset.num_feature() == len(NAMES) + 2
    assert offset.feature_name() == [*NAMES, ENGAGEMENT_COLUMN, "action_code"]
    assert offset.feature_importance("gain")[ENGAGEMENT_INDEX] > 0
    for path in _branch_features(offset):
        assert len(path - {ACTION_COLUMN}) <= 1, path

    plain = refit_shared_offset(X, a, y, report, **kwargs)
    assert plain.engagement is None
    assert plain.boosters["offset"].num_feature() == len(NAMES) + 1
    Xt, _, _ = _sends(2000, 30)
    with_engagement, without = refit.predict_raw(Xt), plain.predict_raw(Xt)
    assert np.abs(with_engagement - without).max() > 1e-3
    # The bases are the same fit; only the offsets differ.
    np.testing.assert_allclose(
        refit.boosters["base"].predict(Xt, raw_score=True),
        plain.boosters["base"].predict(Xt, raw_score=True),
    )
