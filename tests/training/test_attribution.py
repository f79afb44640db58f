"""Multi-touch attribution (training/attribution.py): worked examples and the journeys sample."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from features.ingest import read_events
from features.mapping import load_mapping
from tests.conftest import make_events
from training.attribution import (
    METHODS,
    AttributionResult,
    attribute,
    attribution_figure,
    build_journeys,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "journeys.csv"
MAPPING = ROOT / "examples" / "journeys_mapping.yaml"
needs_data = pytest.mark.skipif(
    not DATA.is_file(),
    reason=f"journeys sample not available at {DATA} (multi-touch advertising journeys CSV)",
)
CREDIT = list(METHODS)  # markov, first_touch, last_touch, linear


def _journey_events(paths: list[tuple[list[str], bool]]) -> pd.DataFrame:
    """One customer per path: a send per channel one day apart, then a purchase if converted."""
    rows: list[tuple] = []
    for i, (channels, converted) in enumerate(paths):
        day = pd.Timestamp("2024-01-01")
        for ch in channels:
            rows.append((f"c{i}", day, ch, "sent", f"{ch}_ad"))
            day += pd.Timedelta(days=1)
        if converted:
            rows.append((f"c{i}", day, "web", "purchase", None, 10.0))
    return make_events(rows)


def _assert_sums(result: AttributionResult) -> None:
    for method in CREDIT:
        assert result.table[method].sum() == pytest.approx(result.conversions, abs=1e-9)


# ---------------------------------------------------------------------------------------
# Worked example 1, the classic three journeys:
#   J1: c1 -> c2 -> c3 -> conversion
#   J2: c1 -> null
#   J3: c2 -> c3 -> null
# Transition counts: start->c1 2, start->c2 1; c1->c2 1, c1->null 1; c2->c3 2;
# c3->conv 1, c3->null 1.  Probabilities: start: c1 2/3, c2 1/3; c1: c2 1/2, null 1/2;
# c2: c3 1; c3: conv 1/2, null 1/2.
# P(conv) = 2/3 * 1/2 * 1 * 1/2 + 1/3 * 1 * 1/2 = 1/6 + 1/6 = 1/3 (= 1 of 3 journeys).
# Remove c1: only start -> c2 -> c3 -> conv is left: 1/3 * 1/2 = 1/6; RE = 1 - (1/6)/(1/3) = 1/2.
# Remove c2 or c3: every converting path goes through both: P = 0; RE = 1.
# Sum of RE = 5/2; one conversion: Markov c1 = (1/2)/(5/2) = 1/5, c2 = c3 = 2/5.
# First touch: c1 1.  Last touch: c3 1.  Linear: 1/3 each.
# ---------------------------------------------------------------------------------------
CLASSIC = [(["c1", "c2", "c3"], True), (["c1"], False), (["c2", "c3"], False)]


def test_classic_example_by_hand() -> None:
    r = attribute(_journey_events(CLASSIC))
    t = r.table
    assert list(t.index) == ["c1", "c2", "c3"]
    assert r.conversions == 1 and r.n_journeys == 3 and r.n_untouched_conversions == 0
    assert r.base_conversion_probability == pytest.approx(1 / 3, abs=1e-12)
    np.testing.assert_allclose(t["markov_removal_effect"], [1 / 2, 1, 1], atol=1e-12)
    np.testing.assert_allclose(t["markov"], [1 / 5, 2 / 5, 2 / 5], atol=1e-12)
    np.testing.assert_allclose(t["first_touch"], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(t["last_touch"], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(t["linear"], [1 / 3, 1 / 3, 1 / 3], atol=1e-12)
    p = r.transitions
    assert p.loc["(start)", "c1"] == pytest.approx(2 / 3, abs=1e-12)
    assert p.loc["(start)", "c2"] == pytest.approx(1 / 3, abs=1e-12)
    assert p.loc["c1", "c2"] == pytest.approx(1 / 2, abs=1e-12)
    assert p.loc["c1", "(null)"] == pytest.approx(1 / 2, abs=1e-12)
    assert p.loc["c2", "c3"] == pytest.approx(1, abs=1e-12)
    assert p.loc["c3", "(conversion)"] == pytest.approx(1 / 2, abs=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    _assert_sums(r)


# ---------------------------------------------------------------------------------------
# Worked example 2, with a loop (a -> b -> a), so the answer needs the linear solve:
#   J1: a -> b -> a -> conversion
#   J2: b -> null
#   J3: a -> conversion
# Counts: start->a 2, start->b 1; a->b 1, a->conv 2; b->a 1, b->null 1.
# Probabilities: start: a 2/3, b 1/3; a: b 1/3, conv 2/3; b: a 1/2, null 1/2.
# Absorption: x_a = 2/3 + 1/3 x_b, x_b = 1/2 x_a  =>  x_a = 4/5, x_b = 2/5;
# P(conv) = 2/3 * 4/5 + 1/3 * 2/5 = 2/3 (= 2 of 3 journeys).
# Remove a: b -> a now goes to null, x_b = 0, P = 0; RE_a = 1.
# Remove b: x_a = 2/3, x_b = 0; P = 2/3 * 2/3 = 4/9; RE_b = 1 - (4/9)/(2/3) = 1/3.
# Sum of RE = 4/3; two conversions: Markov a = 1/(4/3) * 2 = 3/2, b = (1/3)/(4/3) * 2 = 1/2.
# First touch: a 2.  Last touch: a 2.  Linear: J1 a 2/3, b 1/3; J3 a 1 => a 5/3, b 1/3.
# ---------------------------------------------------------------------------------------
LOOP = [(["a", "b", "a"], True), (["b"], False), (["a"], True)]


def test_loop_example_by_hand() -> None:
    r = attribute(_journey_events(LOOP))
    t = r.table
    assert list(t.index) == ["a", "b"]
    assert r.conversions == 2
    assert r.base_conversion_probability == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(t["markov_removal_effect"], [1, 1 / 3], atol=1e-12)
    np.testing.assert_allclose(t["markov"], [3 / 2, 1 / 2], atol=1e-12)
    np.testing.assert_allclose(t["first_touch"], [2, 0], atol=1e-12)
    np.testing.assert_allclose(t["last_touch"], [2, 0], atol=1e-12)
    np.testing.assert_allclose(t["linear"], [5 / 3, 1 / 3], atol=1e-12)
    assert r.transitions.loc["b", "a"] == pytest.approx(1 / 2, abs=1e-12)
    _assert_sums(r)


def test_journey_ends_at_first_purchase_and_untouched_conversions_are_counted() -> None:
    ev = make_events(
        [
            # touches after the first purchase do not count; a second purchase neither
            ("x", "2024-01-01", "email", "sent", "e"),
            ("x", "2024-01-02", "web", "purchase", None, 5.0),
            ("x", "2024-01-03", "sms", "sent", "s"),
            ("x", "2024-01-04", "web", "purchase", None, 5.0),
            # converts before any touch: no journey, counted as untouched
            ("y", "2024-01-01", "web", "purchase", None, 5.0),
            ("y", "2024-01-02", "sms", "sent", "s"),
            # a touch at the same instant as the purchase does not count
            ("z", "2024-01-01", "sms", "sent", "s"),
            ("z", "2024-01-01", "web", "purchase", None, 5.0),
            # inbound visits are touches only on request
            ("w", "2024-01-01", "web", "visit"),
            ("w", "2024-01-02", "email", "sent", "e"),
        ]
    )
    j = build_journeys(ev)
    assert j.paths() == [(["email"], False), (["email"], True)]  # customers w, x
    assert j.n_untouched_conversions == 2
    r = attribute(ev)
    assert r.conversions == 1 and r.n_converted_customers == 3
    assert r.table.loc["email", "markov"] == pytest.approx(1.0)
    j_in = build_journeys(ev, include_inbound=True)
    assert j_in.paths() == [(["web", "email"], False), (["email"], True)]
    assert j_in.channels == ("email", "web")
    with pytest.raises(ValueError, match="purchase"):
        attribute(ev, touch_types=("sent", "purchase"))
    with pytest.raises(ValueError, match="unknown"):
        attribute(ev, touch_types=("teleport",))


def test_no_conversions_gives_zero_credit() -> None:
    r = attribute(_journey_events([(["a", "b"], False), (["b"], False)]))
    assert r.conversions == 0 and r.base_conversion_probability == 0.0
    assert (r.table[CREDIT].to_numpy() == 0).all()


def test_attribution_figure_has_title_and_labels() -> None:
    r = attribute(_journey_events(CLASSIC))
    fig = attribution_figure(r.table)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "Conversions credited" and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(METHODS.values())
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# The real journeys sample
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journeys_events() -> pd.DataFrame:
    return read_events(DATA, mapping=load_mapping(MAPPING)).events


@needs_data
def test_journeys_sample(journeys_events: pd.DataFrame) -> None:
    ev = journeys_events
    r = attribute(ev)
    t = r.table
    assert list(t.index) == [
        "facebook",
        "instagram",
        "online_display",
        "online_video",
        "paid_search",
    ]
    # 1,642 customers convert; 230 of them make their first purchase before any impression
    # (228 have impressions only afterwards, 2 have none), so 1,412 conversions have a
    # journey to credit.
    assert r.n_converted_customers == 1642
    assert r.n_untouched_conversions == 230
    assert r.conversions == 1412
    assert r.n_journeys == 7896 - 230
    _assert_sums(r)
    # A first-order chain fitted by counting reproduces the observed conversion rate.
    assert r.base_conversion_probability == pytest.approx(1412 / 7666, abs=1e-12)
    assert ((t["markov_removal_effect"] > 0) & (t["markov_removal_effect"] <= 1)).all()
    assert (t[CREDIT] >= 0).to_numpy().all()
    np.testing.assert_allclose(r.transitions.sum(axis=1), 1.0, atol=1e-12)
    # Paid search and Facebook lead under every method on this sample.
    for method in CREDIT:
        assert set(t[method].nlargest(2).index) == {"facebook", "paid_search"}


@needs_data
def test_journeys_sample_scaled_to_a_million_events(journeys_events: pd.DataFrame) -> None:
    # 16 disjoint copies (~1M events): the credit scales by 16.  (How fast is a benchmark
    # question: a time limit in a test on a shared machine fails with the load, not the code.)
    ev = journeys_events
    copies = pd.concat(
        [ev.assign(customer_id=ev["customer_id"].astype(str) + f"#{i}") for i in range(16)],
        ignore_index=True,
    )
    copies["customer_id"] = copies["customer_id"].astype("category")
    big = attribute(copies)
    small = attribute(ev)
    np.testing.assert_allclose(big.table[CREDIT], small.table[CREDIT] * 16, rtol=1e-9)
