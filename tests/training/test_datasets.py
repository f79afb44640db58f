"""The time split: ordered parts, gaps as long as the label window, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.datasets import (
    SplitError,
    history_days_needed,
    labelled_days_needed,
    make_time_split,
)


def _times(days: int, n: int = 5000, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.Series(start + pd.to_timedelta(rng.uniform(0, days, n), unit="D"))


def test_parts_are_ordered_with_gaps_and_no_label_leakage() -> None:
    times = _times(240)
    split = make_time_split(times, gap_days=60)
    part = split.assign(times)
    assert set(part) == {"train", "valid", "test", "gap"}
    train, valid, test = (times[part == p] for p in ("train", "valid", "test"))
    lookahead = pd.Timedelta(days=60)
    # Every training label window ends before the first validation decision, and likewise.
    assert train.max() + lookahead < valid.min()
    assert valid.max() + lookahead < test.min()


def test_customer_time_leakage_is_impossible_for_the_same_customer() -> None:
    times = _times(300, n=20000, seed=1)
    customers = pd.Series(np.random.default_rng(2).integers(0, 50, len(times)))
    split = make_time_split(times, gap_days=30)
    part = split.assign(times)
    frame = pd.DataFrame({"c": customers, "t": times, "p": part})
    for _, rows in frame.groupby("c"):
        last_train = rows.loc[rows.p == "train", "t"].max()
        first_valid = rows.loc[rows.p == "valid", "t"].min()
        if pd.notna(last_train) and pd.notna(first_valid):
            assert first_valid - last_train > pd.Timedelta(days=30)


def test_too_short_history_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="too short"):
        make_time_split(_times(100), gap_days=60)


def test_days_needed_is_where_the_split_starts_to_work() -> None:
    # Decision times spread evenly over the span, so the span is what the split sees.
    start = pd.Timestamp("2026-01-01", tz="UTC")
    needed = labelled_days_needed(60)
    assert needed == 140  # two 60-day gaps and 3 days of validation (15% of 20 days)

    def spread(days: float) -> pd.Series:
        return pd.Series(start + pd.to_timedelta(np.linspace(0, days, 2000), unit="D"))

    make_time_split(spread(needed + 0.1), gap_days=60)
    with pytest.raises(SplitError, match="needs at least 140 days"):
        make_time_split(spread(needed - 0.5), gap_days=60)
    # The history also holds the censored last 60 days.
    assert history_days_needed(60) == 201


def test_bad_shares_rejected() -> None:
    with pytest.raises(SplitError, match="train_share"):
        make_time_split(_times(300), gap_days=10, train_share=0.9, valid_share=0.2)
