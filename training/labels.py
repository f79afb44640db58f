"""Outcome labels of decision points: conversion and churn, with right-censoring.

Labels look *after* the decision (features look strictly before it), so they live here and
never in ``features/``.  Definitions (defaults from the catalog, see docs/CATALOG.md):

- ``conversion``: a ``purchase`` in ``(t, t + horizons.conversion_days]``.
- ``churn``: within ``(t, t + horizons.churn_days]`` either an explicit ``churn`` event
  happens, or an inactivity window starts: a stretch of ``churn.inactivity_days`` with no
  inbound event (visit, purchase, support, ...).  A window "starts" at ``t`` or at an
  inbound event inside the horizon, and the gap that follows it must reach the inactivity
  length before the next inbound event (or before the end of the data).
- A decision point whose label window runs past the end of the data is right-censored:
  its outcome is not known yet, so it is dropped (and counted) rather than labelled 0.
  The label window is ``max(conversion_days, churn_days + inactivity_days)`` long.

``conversion`` measures "this decision, and then the logging policy carries on": the
company keeps sending inside the horizon, to both arms.  The simulator's ground truth (and
the policy's question) is "this send and nothing else".  Two extra columns describe the
part of the horizon that is free of later sends (docs/TRAINING.md, "What limits the
policy"):

- ``next_send_days``: days from the decision to the customer's next outbound ``sent``
  strictly after it (``inf`` if none in the data);
- ``conversion_before_send``: a ``purchase`` in ``(t, min(t + conversion_days, next
  send))``, i.e. the conversion label stopped (censored) at the next send;
- ``churn_before_send``: the churn label with its explicit churn, or the start of its
  inactivity gap, strictly before the next send.

They measure "this decision, until the company speaks again": free of the later sends,
but over a shorter and arm-dependent window (the next send comes after a few days for
most decision points, and later after a send, whose fatigue holds the next one back), so
they are not the ground truth's quantity either; measured in docs/TRAINING.md.  Which label a model is fit on is chosen by
``CONVERSION_LABELS`` / ``CHURN_LABELS`` (``bench/bench_policy.py``); training uses the
logged ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.schema import INBOUND_TYPES

_MS_PER_DAY = 86_400_000

#: Which label column a conversion model can be fit on (``bench/bench_policy.py
#: --conversion-label``): ``logged`` is "then the logging policy carries on" (the default,
#: and the reward of the off-policy evaluation); ``before_send`` stops at the next send.
CONVERSION_LABELS: dict[str, str] = {
    "logged": "conversion",
    "before_send": "conversion_before_send",
}
#: The same choice for the churn model.
CHURN_LABELS: dict[str, str] = {"logged": "churn", "before_send": "churn_before_send"}


@dataclass(frozen=True)
class LabelWindows:
    """The label horizons in days, read from a catalog."""

    conversion_days: int
    churn_days: int
    inactivity_days: int

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> LabelWindows:
        return cls(
            conversion_days=catalog.horizons.conversion_days,
            churn_days=catalog.horizons.churn_days,
            inactivity_days=catalog.churn.inactivity_days,
        )

    @property
    def lookahead_days(self) -> int:
        """How far after a decision its labels look: the censoring and split-gap length."""
        return max(self.conversion_days, self.churn_days + self.inactivity_days)


class _TimeIndex:
    """Sorted (customer, time) keys of one kind of event, for vectorized "next event" lookups.

    Keys are ``customer_code * span + milliseconds``: one int64 per event, so a single
    ``np.searchsorted`` finds, for many (customer, time) queries at once, the position of
    the first event strictly after the time within that customer's events.
    """

    def __init__(self, codes: np.ndarray, ms: np.ndarray, span: int) -> None:
        self.span = span
        keys = codes.astype(np.int64) * span + ms
        self.keys = np.sort(keys)
        self.ms = self.keys % span
        self.codes = self.keys // span

    def first_after(self, codes: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index and time (ms) of the first event strictly after ``ms``; -1 where none."""
        if len(self.keys) == 0:
            none = np.full(len(codes), -1, dtype=np.int64)
            return none, none.copy()
        pos = np.searchsorted(self.keys, codes * self.span + ms, side="right")
        safe = np.minimum(pos, len(self.keys) - 1)
        found = (pos < len(self.keys)) & (self.codes[safe] == codes)
        return np.where(found, pos, -1), np.where(found, self.ms[safe], -1)

    def count_upto(self, codes: np.ndarray, ms: np.ndarray) -> np.ndarray:
        """Global position just past the events at or before ``ms`` (for range counts)."""
        return np.searchsorted(self.keys, codes * self.span + ms, side="right")


def label_decisions(
    events: pd.DataFrame, decisions: pd.DataFrame, windows: LabelWindows
) -> pd.DataFrame:
    """Label decision points and mark the right-censored ones.

    Parameters
    ----------
    events
        The canonical event table (``features.schema``).
    decisions
        At least ``customer_id`` and ``decision_time`` (UTC timestamps).
    windows
        The label horizons.

    Returns
    -------
    DataFrame
        Aligned with ``decisions`` (same index): ``conversion`` (int8), ``churn`` (int8),
        ``censored`` (bool: the label window runs past the end of the data),
        ``conversion_before_send`` and ``churn_before_send`` (int8: the outcome happened
        before the next send) and ``next_send_days`` (float64, ``inf`` when no send
        follows).
    """
    if len(events) == 0:
        raise ValueError("cannot label decision points: the event log is empty")
    t0 = events["timestamp"].min()
    end_ms = _ms(events["timestamp"].max(), t0)
    ev_ms = _ms_series(events["timestamp"], t0)
    dec_ms = _ms_series(decisions["decision_time"], t0)
    # Customer codes shared by both tables: factorize against the union.
    uniques = pd.Index(
        pd.unique(
            np.concatenate(
                [
                    events["customer_id"].astype(str).to_numpy(),
                    decisions["customer_id"].astype(str).to_numpy(),
                ]
            )
        )
    )
    ev_codes = uniques.get_indexer(events["customer_id"].astype(str))
    dec_codes = uniques.get_indexer(decisions["customer_id"].astype(str)).astype(np.int64)
    span = int(max(end_ms, int(dec_ms.max()) if len(dec_ms) else 0)) + 2

    etype = events["event_type"].astype(str).to_numpy()
    conv_days = windows.conversion_days * _MS_PER_DAY
    churn_days = windows.churn_days * _MS_PER_DAY
    gap_len = windows.inactivity_days * _MS_PER_DAY

    purchases = _TimeIndex(ev_codes[etype == "purchase"], ev_ms[etype == "purchase"], span)
    _, next_purchase = purchases.first_after(dec_codes, dec_ms)
    conversion = (next_purchase >= 0) & (next_purchase <= dec_ms + conv_days)

    # The next send ends the "this decision and nothing else" part of the horizon.  A
    # purchase at the very same millisecond as that send does not count: it may be its
    # response.
    sends = _TimeIndex(ev_codes[etype == "sent"], ev_ms[etype == "sent"], span)
    _, next_send = sends.first_after(dec_codes, dec_ms)
    before_send = conversion & ((next_send < 0) | (next_purchase < next_send))
    next_send_days = np.where(next_send >= 0, (next_send - dec_ms) / _MS_PER_DAY, np.inf)

    churns = _TimeIndex(ev_codes[etype == "churn"], ev_ms[etype == "churn"], span)
    _, next_churn = churns.first_after(dec_codes, dec_ms)
    explicit = (next_churn >= 0) & (next_churn <= dec_ms + churn_days)

    inbound_mask = np.isin(etype, sorted(INBOUND_TYPES - {"unsubscribe", "churn"}))
    inbound = _TimeIndex(ev_codes[inbound_mask], ev_ms[inbound_mask], span)
    inactive = _inactivity_starts(
        inbound, dec_codes, dec_ms, end_ms=end_ms, horizon=churn_days, gap_len=gap_len
    )
    # The same churn, stopped at the next send: the explicit churn, or the start of the
    # inactivity gap, must come strictly before it.
    no_send = next_send < 0
    churn_horizon = np.where(no_send, churn_days, np.minimum(churn_days, next_send - dec_ms - 1))
    churn_before_send = (explicit & (no_send | (next_churn < next_send))) | _inactivity_starts(
        inbound, dec_codes, dec_ms, end_ms=end_ms, horizon=churn_horizon, gap_len=gap_len
    )
    censored = dec_ms + windows.lookahead_days * _MS_PER_DAY > end_ms
    return pd.DataFrame(
        {
            "conversion": conversion.astype(np.int8),
            "churn": (explicit | inactive).astype(np.int8),
            "censored": censored,
            "conversion_before_send": before_send.astype(np.int8),
            "churn_before_send": churn_before_send.astype(np.int8),
            "next_send_days": next_send_days.astype(np.float64),
        },
        index=decisions.index,
    )


def _inactivity_starts(
    inbound: _TimeIndex,
    codes: np.ndarray,
    ms: np.ndarray,
    *,
    end_ms: int,
    horizon: int | np.ndarray,
    gap_len: int,
) -> np.ndarray:
    """True where a gap of ``gap_len`` with no inbound event starts in ``(t, t+horizon]``.

    The candidate gaps are: from ``t`` to the first inbound event after it, and from each
    inbound event inside the horizon to the next one (or to the end of the data, where a
    gap only counts once it has fully elapsed).  Long gaps are precomputed per event, so
    "any long gap in the horizon" is a difference of two cumulative counts.
    """
    n = len(inbound.keys)
    if n == 0:
        return ms + gap_len <= end_ms
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = inbound.codes[1:] == inbound.codes[:-1]
    next_ms = np.where(same_next, np.roll(inbound.ms, -1), end_ms)
    long_gap = (next_ms - inbound.ms) >= gap_len
    cum_long = np.concatenate([[0], np.cumsum(long_gap)])

    idx, first_ms = inbound.first_after(codes, ms)
    first_ms = np.where(idx >= 0, first_ms, end_ms)
    gap_from_t = (first_ms - ms) >= gap_len
    lo = np.where(idx >= 0, idx, n)
    hi = inbound.count_upto(codes, ms + horizon)
    hi = np.maximum(hi, lo)
    gap_inside = (cum_long[hi] - cum_long[lo]) > 0
    return gap_from_t | gap_inside


def _ms(ts: pd.Timestamp, t0: pd.Timestamp) -> int:
    return int((ts - t0) // pd.Timedelta(milliseconds=1))


def _ms_series(values: pd.Series, t0: pd.Timestamp) -> np.ndarray:
    deltas = pd.to_datetime(values, utc=True) - t0
    return (deltas // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
