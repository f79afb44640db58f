"""The journey funnel and stage transitions (training/funnel.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from features.ingest import read_events
from features.mapping import load_mapping
from features.schema import STAGES
from tests.conftest import make_events
from training.funnel import funnel, funnel_figure, stage_transitions, transitions_figure

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "journeys.csv"
MAPPING = ROOT / "examples" / "journeys_mapping.yaml"
needs_data = pytest.mark.skipif(
    not DATA.is_file(),
    reason=f"journeys sample not available at {DATA} (multi-touch advertising journeys CSV)",
)


@pytest.fixture
def events() -> pd.DataFrame:
    # Stages on 2024-03-01 (default rules): a pre-awareness (first event later), b awareness,
    # c consideration (a click), d purchase (first purchase 10 days ago), e usage (first
    # purchase 40 days ago).  On 2024-04-15: a awareness, d usage, f's purchases make 3 in
    # a year (loyalty); the others stay.
    return make_events(
        [
            ("a", "2024-03-10", "email", "sent", "promo"),
            ("b", "2024-02-01", "email", "sent", "promo"),
            ("c", "2024-02-01", "email", "sent", "promo"),
            ("c", "2024-02-02", "email", "click"),
            ("d", "2024-02-20", "web", "purchase", None, 10.0),
            ("e", "2024-01-20", "web", "purchase", None, 10.0),
            ("f", "2024-01-01", "web", "purchase", None, 10.0),
            ("f", "2024-03-20", "web", "purchase", None, 10.0),
            ("f", "2024-04-01", "web", "purchase", None, 10.0),
        ]
    )


def test_funnel_counts(events: pd.DataFrame) -> None:
    table = funnel(events, "2024-03-01")
    assert list(table.index) == list(STAGES)
    assert table["customers"].sum() == 6
    assert table["customers"].to_dict() == {
        "pre-awareness": 1,
        "awareness": 1,
        "consideration": 1,
        "purchase": 1,
        "usage": 2,  # e and f (first purchases 40 and 60 days before)
        "advocacy": 0,
        "loyalty": 0,
    }
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.attrs["time"] == pd.Timestamp("2024-03-01", tz="UTC")


def test_stage_transitions(events: pd.DataFrame) -> None:
    m = stage_transitions(events, "2024-03-01", "2024-04-15")
    assert m.shape == (7, 7) and list(m.index) == list(STAGES) and list(m.columns) == list(STAGES)
    assert m.to_numpy().sum() == 6
    # Row sums are the funnel at the start, column sums the funnel at the end.
    np.testing.assert_array_equal(m.sum(axis=1), funnel(events, "2024-03-01")["customers"])
    np.testing.assert_array_equal(m.sum(axis=0), funnel(events, "2024-04-15")["customers"])
    assert m.loc["pre-awareness", "awareness"] == 1  # a
    assert m.loc["purchase", "usage"] == 1  # d
    assert m.loc["usage", "loyalty"] == 1  # f
    assert m.loc["usage", "usage"] == 1  # e


def test_figures_have_titles_and_labels(events: pd.DataFrame) -> None:
    fig = funnel_figure(funnel(events, "2024-03-01"))
    ax = fig.axes[0]
    assert "2024-03-01" in ax.get_title()
    assert ax.get_xlabel() == "Customers (count)" and ax.get_ylabel() == "Journey stage"
    plt.close(fig)
    fig = transitions_figure(stage_transitions(events, "2024-03-01", "2024-04-15"))
    ax, bar = fig.axes
    assert "2024-03-01 to 2024-04-15" in ax.get_title()
    assert ax.get_xlabel().startswith("Stage at the end") and "2024-04-15" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("Stage at the start")
    assert bar.get_ylabel().endswith("(%)")
    plt.close(fig)


@needs_data
def test_journeys_sample_funnel() -> None:
    ev = read_events(DATA, mapping=load_mapping(MAPPING)).events
    n = ev["customer_id"].nunique()
    table = funnel(ev, "2018-07-15")
    assert table["customers"].sum() == n == 7896
    m = stage_transitions(ev, "2018-07-15", "2018-08-01")
    assert m.to_numpy().sum() == n
    # Nobody moves back to an earlier stage of this log (no churn rules, only purchases).
    assert np.tril(m.to_numpy(), k=-1).sum() == 0
    # After the last event everyone has had an impression or a purchase.
    assert m.loc[:, "pre-awareness"].sum() == 0
    # The end funnel's purchase-or-later customers are the 1,642 converting customers.
    assert m.loc[:, "purchase":].to_numpy().sum() == 1642
