"""Time-ordered train / validation / test splits with gaps.

Random splits leak: a customer's Tuesday row in train and Wednesday row in test share most
of their history and their outcome.  So the split is by decision time, in that order, with a
gap between consecutive parts at least as long as the label lookahead: no training label
can observe anything that happens in the validation period, and likewise validation →
test.  ``tests/training/test_datasets.py`` checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


class SplitError(ValueError):
    """The labelled history cannot be split as asked (too short, bad shares)."""


@dataclass(frozen=True)
class TimeSplit:
    """Boundaries of a split; each part is ``[start, end)`` in decision time."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    gap_days: int

    def assign(self, decision_time: pd.Series) -> pd.Series:
        """``train`` / ``valid`` / ``test`` per row, or ``gap`` for rows that fall in a gap."""
        part = pd.Series("gap", index=decision_time.index, dtype=object)
        for name, lo, hi in (
            ("train", self.train_start, self.train_end),
            ("valid", self.valid_start, self.valid_end),
            ("test", self.test_start, self.test_end),
        ):
            part[(decision_time >= lo) & (decision_time < hi)] = name
        return part

    def to_dict(self) -> dict[str, str | int]:
        return {
            key: (value.isoformat() if isinstance(value, pd.Timestamp) else value)
            for key, value in self.__dict__.items()
        }


def labelled_days_needed(
    gap_days: int,
    *,
    train_share: float = 0.6,
    valid_share: float = 0.15,
    min_part_days: float = 3.0,
) -> float:
    """Days of labelled decision times :func:`make_time_split` needs (same parameters):
    two gaps, and enough left that the smallest part lasts ``min_part_days``."""
    test_share = 1 - train_share - valid_share
    return 2 * gap_days + min_part_days / min(train_share, valid_share, test_share)


def history_days_needed(lookahead_days: int) -> int:
    """Whole days of history ``touchpoint train`` needs with the default split: the
    labelled days, the last ``lookahead_days`` (their decision points are censored), and
    one more, because a day's decisions fall between its first and last hours (a 200-day
    simulation labels only ~139.6 days of decision times with the default horizons)."""
    return math.ceil(lookahead_days + labelled_days_needed(lookahead_days)) + 1


def make_time_split(
    decision_time: pd.Series,
    *,
    gap_days: int,
    train_share: float = 0.6,
    valid_share: float = 0.15,
    min_part_days: float = 3.0,
) -> TimeSplit:
    """Cut the labelled decision times into train, validation and test, with two gaps.

    Parameters
    ----------
    decision_time
        Decision times of the labelled (uncensored) rows.
    gap_days
        The gap between parts; pass the label lookahead (``LabelWindows.lookahead_days``).
    train_share, valid_share
        Shares of the time left once the gaps are taken out; test gets the rest.
    min_part_days
        Refuse to split when a part would be shorter than this many days.

    Raises
    ------
    SplitError
        When the history is too short for three parts and two gaps.
    """
    if not 0 < train_share < 1 or not 0 < valid_share < 1 or train_share + valid_share >= 1:
        raise SplitError(
            f"train_share and valid_share must be in (0, 1) and sum below 1, got "
            f"{train_share} and {valid_share}"
        )
    if len(decision_time) == 0:
        raise SplitError("no labelled decision points to split (is the history long enough?)")
    start, end = decision_time.min(), decision_time.max() + pd.Timedelta(seconds=1)
    gap = pd.Timedelta(days=gap_days)
    usable = (end - start) - 2 * gap
    test_share = 1 - train_share - valid_share
    shortest = usable * min(train_share, valid_share, test_share)
    if shortest < pd.Timedelta(days=min_part_days):
        span_days = (end - start) / pd.Timedelta(days=1)
        need = labelled_days_needed(
            gap_days, train_share=train_share, valid_share=valid_share, min_part_days=min_part_days
        )
        raise SplitError(
            f"the labelled history spans {span_days:.1f} days, too short for train, "
            f"validation and test parts with two {gap_days}-day gaps; it needs at least "
            f"{need:g} days (simulate more --days, or shorten the catalog's horizons)"
        )
    train_end = start + usable * train_share
    valid_start = train_end + gap
    valid_end = valid_start + usable * valid_share
    test_start = valid_end + gap
    return TimeSplit(
        train_start=start,
        train_end=train_end,
        valid_start=valid_start,
        valid_end=valid_end,
        test_start=test_start,
        test_end=end,
        gap_days=gap_days,
    )
