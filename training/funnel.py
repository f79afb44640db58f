"""The journey funnel for marketers: how many customers are in each stage, and how they move.

Stages are the seven of :data:`features.schema.STAGES`, inferred from each customer's
history strictly before the given time by :func:`features.stages.stage_at` (rules in
``features/stages.py``).  Every customer of the event table is counted, including those
whose first event comes later (they are in ``pre-awareness``), so the counts of the
funnel always add up to the number of customers in the table.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from features import schema
from features.stages import StageRules, stage_at

__all__ = ["funnel", "funnel_figure", "stage_transitions", "transitions_figure"]

TimeLike = pd.Timestamp | str


def _stamp(time: TimeLike) -> pd.Timestamp:
    """A UTC timestamp; naive input is taken as UTC, like everywhere in the contract."""
    stamp = pd.Timestamp(time)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _label(time: TimeLike) -> str:
    """A short date (with the time of day only when it is not midnight) for titles."""
    stamp = _stamp(time)
    if stamp == stamp.normalize():
        return f"{stamp:%Y-%m-%d}"
    return f"{stamp:%Y-%m-%d %H:%M} UTC"


def _percent(share: float) -> str:
    """A share in percent for a label; a handful of customers is not shown as 0.0%."""
    return "<0.1%" if 0 < share < 0.1 else f"{share:.1f}%"


def funnel(
    events: pd.DataFrame, time: TimeLike, *, rules: StageRules | None = None
) -> pd.DataFrame:
    """How many customers are in each journey stage at ``time``.

    Parameters
    ----------
    events : DataFrame
        A canonical event table (``features.schema``).
    time : Timestamp or str
        The moment; only events strictly before it count.  Naive times are UTC.
    rules : StageRules, optional
        Stage thresholds; defaults to ``StageRules()``.

    Returns
    -------
    DataFrame
        Index ``stage`` (all seven, in journey order, empty ones included), columns
        ``customers`` (int64) and ``share`` (fraction of all customers, in [0, 1]).
        ``attrs["time"]`` holds the UTC timestamp.
    """
    stamp = _stamp(time)
    stages = stage_at(events, stamp, rules)
    n_stages = len(schema.STAGES)
    counts = np.bincount(stages["stage_code"].to_numpy(dtype=np.int64), minlength=n_stages)
    total = int(counts.sum())
    table = pd.DataFrame(
        {
            "customers": counts.astype(np.int64),
            "share": counts / total if total else np.zeros(n_stages),
        },
        index=pd.Index(list(schema.STAGES), name="stage"),
    )
    table.attrs["time"] = stamp
    return table


def stage_transitions(
    events: pd.DataFrame,
    start: TimeLike,
    end: TimeLike,
    *,
    rules: StageRules | None = None,
) -> pd.DataFrame:
    """Customers moving from each stage at ``start`` to each stage at ``end``.

    Parameters
    ----------
    events : DataFrame
        A canonical event table.
    start, end : Timestamp or str
        The two moments (``start`` before ``end`` for a forward view, but either order is
        computed as asked).
    rules : StageRules, optional
        Stage thresholds; defaults to ``StageRules()``.

    Returns
    -------
    DataFrame
        A 7 x 7 count matrix (int64): rows ``stage_at_start``, columns ``stage_at_end``,
        both in journey order.  It sums to the number of customers; its row sums are the
        funnel at ``start`` and its column sums the funnel at ``end``.  ``attrs`` holds
        ``start`` and ``end`` as UTC timestamps.
    """
    t0, t1 = _stamp(start), _stamp(end)
    stages = stage_at(events, [t0, t1], rules)
    codes = stages["stage_code"].to_numpy(dtype=np.int64)
    # stage_at orders rows by time, then customer: the same customer order in both halves.
    n_cust = len(codes) // 2
    n_stages = len(schema.STAGES)
    pairs = codes[:n_cust] * n_stages + codes[n_cust:]
    matrix = np.bincount(pairs, minlength=n_stages * n_stages).reshape(n_stages, n_stages)
    out = pd.DataFrame(
        matrix.astype(np.int64),
        index=pd.Index(list(schema.STAGES), name="stage_at_start"),
        columns=pd.Index(list(schema.STAGES), name="stage_at_end"),
    )
    out.attrs["start"] = t0
    out.attrs["end"] = t1
    return out


def funnel_figure(table: pd.DataFrame, *, time: TimeLike | None = None) -> Figure:
    """Horizontal bars of customers per stage, first stage on top, with counts and shares.

    Parameters
    ----------
    table : DataFrame
        The output of :func:`funnel`.
    time : Timestamp or str, optional
        Shown in the title; defaults to ``table.attrs["time"]`` when present.

    Returns
    -------
    Figure
    """
    when = time if time is not None else table.attrs.get("time")
    counts = table["customers"].to_numpy(dtype=np.float64)
    total = counts.sum()
    share = counts / total * 100 if total else np.zeros_like(counts)
    names = [str(s) for s in table.index]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.8))
    y = np.arange(len(names))[::-1]  # journey order from top to bottom
    bars = ax.barh(y, counts, color="#4C72B0")
    ax.bar_label(
        bars,
        labels=[f"{c:,.0f} ({_percent(s)})" for c, s in zip(counts, share, strict=True)],
        padding=3,
        fontsize=9,
    )
    ax.set_yticks(y, names)
    ax.set_xlabel("Customers (count)")
    ax.set_ylabel("Journey stage")
    suffix = f" on {_label(when)}" if when is not None else ""
    ax.set_title(f"Where customers are in their journey{suffix} ({total:,.0f} customers)")
    ax.margins(x=0.22)  # room for the labels right of the longest bar
    fig.tight_layout()
    return fig


def transitions_figure(
    matrix: pd.DataFrame, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> Figure:
    """A grid of customers by stage at the start (rows) and at the end (columns).

    Each cell shows the number of customers and, in brackets, their share of the row (of
    the customers who started in that stage); the colour is that share, so the grid reads
    the same whether a stage holds 10 or 10,000 customers.

    Parameters
    ----------
    matrix : DataFrame
        The output of :func:`stage_transitions`.
    start, end : Timestamp or str, optional
        Shown in the title and labels; default to ``matrix.attrs``.

    Returns
    -------
    Figure
    """
    t0 = start if start is not None else matrix.attrs.get("start")
    t1 = end if end is not None else matrix.attrs.get("end")
    counts = matrix.to_numpy(dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) * 100
    fig, ax = plt.subplots(figsize=(9, 7))
    image = ax.imshow(share, cmap="Blues", norm=Normalize(0, 100), aspect="auto")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j] == 0:
                continue
            dark = share[i, j] > 60
            ax.text(
                j,
                i,
                f"{counts[i, j]:,.0f}\n({share[i, j]:.0f}%)",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xticks(np.arange(counts.shape[1]), [str(c) for c in matrix.columns], rotation=30)
    ax.set_yticks(np.arange(counts.shape[0]), [str(r) for r in matrix.index])
    ax.set_xlabel(f"Stage at the end{f' ({_label(t1)})' if t1 is not None else ''}")
    ax.set_ylabel(f"Stage at the start{f' ({_label(t0)})' if t0 is not None else ''}")
    period = f", {_label(t0)} to {_label(t1)}" if t0 is not None and t1 is not None else ""
    ax.set_title(f"How customers moved between journey stages{period}")
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label("Share of the customers who started in the stage (%)")
    fig.tight_layout()
    return fig
