"""The compiled one-customer decision (serving.decision_kernel) against the vectorized
engine it copies: the same rules, probabilities, scores, ranking, distribution and draw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from features.catalog import Exploration
from serving.bundle import Bundle, load_bundle
from serving.engine import DecisionEngine
from serving.policy import sample_actions
from tests.serving.bundle_factory import save_tiny_bundle

HOUR_NS = 3600 * 10**9
BASE_NS = 1_710_936_000 * 10**9  # 2024-03-20 12:00 UTC


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(save_tiny_bundle(tmp_path_factory.mktemp("kernel") / "m", "k-1"))


def _engine(bundle: Bundle, exploration: Exploration) -> DecisionEngine:
    catalog = dataclasses.replace(bundle.catalog, exploration=exploration)
    return DecisionEngine(dataclasses.replace(bundle, catalog=catalog))


def _random_row(engine: DecisionEngine, rng: np.random.Generator) -> np.ndarray:
    """A feature row whose contact columns hit every rule, its edges and NaN."""
    names = engine.feature_names
    x = rng.normal(size=len(names))
    cols = engine.contact_columns
    policy = engine.bundle.catalog.contact_policy
    for c in range(len(cols.channels)):
        if cols.consent[c] >= 0:
            x[cols.consent[c]] = rng.choice([0.0, 1.0, 1.0, 1.0, np.nan, -0.0])
        x[cols.unsubscribed[c]] = rng.choice([0.0, 0.0, 0.0, 1.0])
        x[cols.sends_in_window[c]] = rng.choice([0.0, 1.0, 2.0, 3.0, 1.5, np.nan])
        cooldown_days = policy.cooldown_hours / 24.0
        x[cols.days_since[c]] = rng.choice(
            [np.nan, cooldown_days, np.nextafter(cooldown_days, 0.0), rng.uniform(0, 3)]
        )
    x[cols.total_in_window] = rng.choice([0.0, 1.0, 3.0, 4.0, 5.0, np.nan])
    return x


# The vectorized reference casts the NaN counts of the random rows to int64 (as serving
# does for such rows), which numpy reports; the kernel's reading of them is what is tested.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    "exploration",
    [
        Exploration(method="epsilon", epsilon=0.05, control_share=0.05),
        Exploration(method="epsilon", epsilon=0.0, control_share=0.0),
        Exploration(method="epsilon", epsilon=1.0, control_share=0.3),
        Exploration(method="softmax", temperature=0.5, control_share=0.1),
    ],
)
def test_row_decision_equals_the_vectorized_engine(
    bundle: Bundle, exploration: Exploration
) -> None:
    engine = _engine(bundle, exploration)
    rng = np.random.default_rng(7)
    seen_rules: set[int] = set()
    for i in range(400):
        x = _random_row(engine, rng)
        when = BASE_NS + int(rng.integers(0, 24)) * HOUR_NS  # in and out of quiet hours
        seed = 1000 + i
        row = engine.decide_row(x, when, float(np.random.default_rng(seed).random()))

        scored = engine.score(x[None, :], when)
        probs = engine.distribution(scored)
        chosen = int(sample_actions(probs, np.random.default_rng(seed))[0])
        np.testing.assert_array_equal(row.suppression, scored.suppression[0])
        np.testing.assert_array_equal(row.p_conversion, scored.p_conversion[0])
        np.testing.assert_array_equal(row.p_churn, scored.p_churn[0])
        np.testing.assert_array_equal(row.scores, scored.scores[0])
        np.testing.assert_array_equal(row.order, scored.ranked()[0])
        if exploration.method == "softmax":  # numba's exp may differ in the last bit
            np.testing.assert_allclose(row.probs, probs[0], rtol=1e-14, atol=1e-300)
        else:
            np.testing.assert_array_equal(row.probs, probs[0])
        assert row.chosen == chosen
        assert row.ranked == [a for a in scored.ranked()[0].tolist() if scored.eligible[0, a]]
        seen_rules.update(row.suppression.tolist())
    assert seen_rules == {0, 1, 2, 3, 4, 5, 6}  # every rule was exercised


def test_row_decision_breaks_score_ties_by_action_code(bundle: Bundle) -> None:
    engine = _engine(bundle, Exploration(method="epsilon", epsilon=0.0, control_share=0.0))
    n = len(engine.actions)
    engine.costs = np.zeros(n)  # equal predictions and no costs: every score is 0
    x = np.zeros(len(engine.feature_names))  # no sends, nothing unsubscribed
    cols = engine.contact_columns
    x[cols.days_since] = np.nan
    x[cols.consent[cols.consent >= 0]] = 1.0
    for scorer in (engine.bundle.conversion, engine.bundle.churn):
        object.__setattr__(scorer, "predict_row", lambda x, engagement=None: np.full(n, 0.1))
    try:
        row = engine.decide_row(x, BASE_NS, 0.5)
    finally:
        for scorer in (engine.bundle.conversion, engine.bundle.churn):
            del scorer.predict_row
    assert not row.suppression.any()
    assert row.order.tolist() == list(range(n))  # ties: lower code first, none first
    assert row.chosen == 0
    assert row.probs[0] == 1.0


def test_row_decision_reads_the_row_at_full_precision(bundle: Bundle) -> None:
    """A send 1 ms short of the cool-down is suppressed, though float32 rounds it up."""
    engine = _engine(bundle, Exploration())
    policy = engine.bundle.catalog.contact_policy
    cols = engine.contact_columns
    x = np.zeros(len(engine.feature_names))
    x[cols.days_since] = np.nan
    x[cols.consent[cols.consent >= 0]] = 1.0
    email = cols.channels.index("email")
    short = (policy.cooldown_hours * 3600 - 0.001) / 86400.0
    assert np.float32(short) * 24.0 >= policy.cooldown_hours  # the trap
    x[cols.days_since[email]] = short
    row = engine.decide_row(x, BASE_NS, 0.5)
    email_actions = [a for a, c in enumerate(engine.channels) if c == "email"]
    assert email_actions and all(row.suppression[a] == 3 for a in email_actions)
