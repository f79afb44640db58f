"""Multi-touch attribution per channel: which channels get credit for conversions.

A *journey* is one customer's ordered touches (by default the channels of their outbound
``sent`` events) up to their first ``purchase``, which makes it *converted*, or up to the
end of the log, which makes it end in *null*.  Four ways of crediting the conversions to
channels are computed side by side:

- **Markov removal effect** (first order): states ``start`` -> channels -> ``conversion``
  or ``null``; the transition probabilities are the observed transition counts of all
  journeys, normalized per state.  The conversion probability from ``start`` is the
  absorption probability of the chain, solved exactly as a linear system (no simulation).
  A channel's *removal effect* is ``1 - P(conversion | channel removed) / P(conversion)``,
  where removing a channel sends every journey that reaches it to ``null``.  Conversions
  are credited in proportion to the removal effects.
- **First touch**: each conversion to the channel of its journey's first touch.
- **Last touch**: each conversion to the channel of the touch just before it.
- **Linear**: each conversion split equally over its journey's touches (a channel touched
  twice gets two shares).

Every step is vectorized over the touches (``np.bincount`` on integer codes); the only
loop is over channels, one small ``(k + 1) x (k + 1)`` solve each.  The method notes, a
worked example and the numbers on the journeys sample are in ``docs/ATTRIBUTION.md``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features import schema

__all__ = [
    "INBOUND_TOUCH_TYPES",
    "METHODS",
    "AttributionResult",
    "Journeys",
    "attribute",
    "attribute_journeys",
    "attribution_figure",
    "build_journeys",
    "conversion_probability",
    "transition_counts",
]

#: Inbound event types that count as touches with ``include_inbound=True``: contacts the
#: customer starts.  ``purchase`` is the outcome, and ``unsubscribe`` / ``churn`` are
#: exits rather than touchpoints, so none of them is a touch.
INBOUND_TOUCH_TYPES: Final = ("visit", "support", "feedback", "review", "referral")

#: The attribution columns of :attr:`AttributionResult.table` (conversions credited), in
#: the order they are drawn, with the plain-word names used in figures.
METHODS: Final = {
    "markov": "Markov removal effect",
    "first_touch": "First touch",
    "last_touch": "Last touch",
    "linear": "Linear (equal split)",
}

#: Labels of the non-channel states of the chain in :attr:`AttributionResult.transitions`.
START: Final = "(start)"
CONVERSION: Final = "(conversion)"
NULL: Final = "(null)"

_PURCHASE: Final = "purchase"
_NEVER: Final = np.iinfo(np.int64).max  # "no purchase" as a timestamp in ns


@dataclass(frozen=True)
class Journeys:
    """Journeys as flat arrays: touch ``i`` of journey ``j`` is ``channel_codes[offsets[j] + i]``.

    Only journeys with at least one touch are held; converted customers without any touch
    before their first purchase are counted in :attr:`n_untouched_conversions`.

    Attributes
    ----------
    channels : tuple of str
        Channel names, sorted; ``channel_codes`` index into it.
    channel_codes : ndarray of int64
        The touches of all journeys, concatenated in journey order.
    offsets : ndarray of int64
        ``len(journeys) + 1`` boundaries into ``channel_codes``.
    converted : ndarray of bool
        Whether each journey ends in a purchase.
    customer_ids : ndarray of object
        The customer of each journey.
    n_untouched_conversions : int
        Customers whose first purchase comes before (or without) any touch: they convert,
        but no channel can be credited.
    """

    channels: tuple[str, ...]
    channel_codes: np.ndarray
    offsets: np.ndarray
    converted: np.ndarray
    customer_ids: np.ndarray
    n_untouched_conversions: int = 0

    def __len__(self) -> int:
        return len(self.converted)

    @property
    def lengths(self) -> np.ndarray:
        """Touches per journey."""
        return np.diff(self.offsets)

    @property
    def n_conversions(self) -> int:
        """Converted journeys (the conversions that can be credited to channels)."""
        return int(self.converted.sum())

    def paths(self) -> list[tuple[list[str], bool]]:
        """Every journey as ``(channel names, converted)``; a Python loop, for small data."""
        names = np.asarray(self.channels, dtype=object)
        return [
            (list(names[self.channel_codes[a:b]]), bool(c))
            for a, b, c in zip(self.offsets[:-1], self.offsets[1:], self.converted, strict=True)
        ]


@dataclass(frozen=True)
class AttributionResult:
    """Conversions credited to each channel by each method.

    Attributes
    ----------
    table : DataFrame
        One row per channel (index ``channel``, sorted by name) with columns
        ``markov_removal_effect`` (a fraction in [0, 1]) and the conversions credited by
        ``markov``, ``first_touch``, ``last_touch`` and ``linear``; each of those four
        columns sums to :attr:`conversions`.
    conversions : int
        Conversions credited (converted journeys with at least one touch).
    base_conversion_probability : float
        P(conversion) from ``start`` in the Markov chain.  For a first-order chain fitted
        by counting, this equals the observed share of converting journeys.
    transitions : DataFrame
        The transition probabilities, rows ``(start)`` and the channels, columns the
        channels, ``(conversion)`` and ``(null)``; each row sums to 1.
    n_journeys : int
        Journeys with at least one touch.
    n_untouched_conversions : int
        Converting customers with no touch before their first purchase (not credited).
    """

    table: pd.DataFrame
    conversions: int
    base_conversion_probability: float
    transitions: pd.DataFrame
    n_journeys: int
    n_untouched_conversions: int

    @property
    def n_converted_customers(self) -> int:
        """All converting customers: credited plus untouched conversions."""
        return self.conversions + self.n_untouched_conversions


def _touch_types(touch_types: Collection[str], include_inbound: bool) -> list[str]:
    if isinstance(touch_types, str):
        touch_types = (touch_types,)
    types = list(dict.fromkeys(touch_types))
    if include_inbound:
        types += [t for t in INBOUND_TOUCH_TYPES if t not in types]
    unknown = sorted(set(types) - schema.EVENT_TYPES)
    if unknown:
        raise ValueError(f"unknown touch event type(s): {unknown}")
    if _PURCHASE in types:
        raise ValueError("'purchase' is the conversion, it cannot be a touch type")
    if not types:
        raise ValueError("touch_types is empty")
    return types


def build_journeys(
    events: pd.DataFrame,
    *,
    touch_types: Collection[str] = ("sent",),
    include_inbound: bool = False,
) -> Journeys:
    """Each customer's ordered touches up to their first purchase.

    Parameters
    ----------
    events : DataFrame
        A canonical event table (``features.schema``).
    touch_types : collection of str, default ("sent",)
        Event types whose channels are touches (``purchase`` is not allowed).
    include_inbound : bool, default False
        Also count the inbound contacts of :data:`INBOUND_TOUCH_TYPES` as touches.

    Returns
    -------
    Journeys
        Touches strictly before the first purchase (a touch at the same instant cannot
        have caused it, and ties have no meaningful order in the log).  Customers without
        touches in that span have no journey; the converted ones among them are counted.
    """
    types = _touch_types(touch_types, include_inbound)
    cust = pd.Categorical(events["customer_id"])
    cust_codes = np.asarray(cust.codes, dtype=np.int64)
    n_cust = len(cust.categories)
    ts = events["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    etype = events["event_type"]
    is_purchase = np.asarray(etype == _PURCHASE, dtype=bool)
    is_touch = np.asarray(etype.isin(types), dtype=bool)

    # First purchase per customer: a scatter-min over the purchases only (the contract sorts
    # the table, but nothing here relies on it).
    first_purchase = np.full(n_cust, _NEVER, dtype=np.int64)
    np.minimum.at(first_purchase, cust_codes[is_purchase], ts[is_purchase])
    converted_customer = first_purchase != _NEVER

    keep = is_touch & (ts < first_purchase[cust_codes])
    t_cust, t_ts = cust_codes[keep], ts[keep]
    channel = pd.Categorical(events["channel"])
    raw_codes = np.asarray(channel.codes, dtype=np.int64)[keep]
    # Only channels that are touched, sorted by name, so the codes do not depend on the
    # categories the table happens to carry.
    used = np.unique(raw_codes)
    names = np.asarray(channel.categories, dtype=object)[used].astype(str)
    order = np.argsort(names, kind="stable")
    remap = np.zeros(len(channel.categories), dtype=np.int64)
    remap[used[order]] = np.arange(len(used), dtype=np.int64)
    t_channel = remap[raw_codes]

    # Order the touches by (customer, time), stable so tied touches keep the log's order.
    sort = np.lexsort((t_ts, t_cust))
    t_cust, t_channel = t_cust[sort], t_channel[sort]
    starts = np.flatnonzero(np.r_[True, t_cust[1:] != t_cust[:-1]]) if len(t_cust) else t_cust
    offsets = np.r_[starts, len(t_cust)].astype(np.int64)
    journey_cust = t_cust[starts]
    has_journey = np.zeros(n_cust, dtype=bool)
    has_journey[journey_cust] = True
    return Journeys(
        channels=tuple(str(n) for n in names[order]),
        channel_codes=t_channel,
        offsets=offsets,
        converted=converted_customer[journey_cust],
        customer_ids=np.asarray(cust.categories, dtype=object)[journey_cust],
        n_untouched_conversions=int((converted_customer & ~has_journey).sum()),
    )


def transition_counts(journeys: Journeys) -> np.ndarray:
    """Observed transitions between the chain's states, as a square count matrix.

    States are ``0 = start``, ``1..k`` = the channels, ``k + 1 = conversion`` and
    ``k + 2 = null``.  Each journey contributes ``start -> first touch``, one transition
    per consecutive pair of touches (repeats of a channel are self-loops), and ``last touch
    -> conversion`` or ``-> null``.

    Returns
    -------
    ndarray of float64, shape (k + 3, k + 3)
        ``counts[i, j]`` = transitions from state ``i`` to state ``j``; the two absorbing
        rows are zero.
    """
    k = len(journeys.channels)
    n_states = k + 3
    to_state = journeys.channel_codes + 1
    # The state before each touch: the previous touch's channel, or start (0) for the first
    # touch of a journey.
    from_state = np.empty_like(to_state)
    from_state[1:] = to_state[:-1]
    from_state[journeys.offsets[:-1]] = 0
    # The exits: from each journey's last touch into conversion or null.
    last = to_state[journeys.offsets[1:] - 1] if len(journeys) else to_state[:0]
    exit_state = np.where(journeys.converted, k + 1, k + 2)
    pairs = np.r_[from_state * n_states + to_state, last * n_states + exit_state]
    counts = np.bincount(pairs, minlength=n_states * n_states).astype(np.float64)
    return counts.reshape(n_states, n_states)


def conversion_probability(probabilities: np.ndarray, removed: int | None = None) -> float:
    """P(absorbed in conversion | start) of the chain, optionally with one state removed.

    Parameters
    ----------
    probabilities : ndarray, shape (k + 3, k + 3)
        Row-stochastic transitions in the state order of :func:`transition_counts`.
    removed : int, optional
        A channel state (``1..k``) whose outgoing transitions all go to null instead.

    Returns
    -------
    float

    Notes
    -----
    With ``Q`` the transitions among the transient states (start and channels) and ``r``
    the one-step probabilities of converting, the absorption probabilities ``b`` solve
    ``(I - Q) b = r`` (first-step analysis); the answer is ``b[start]``.  Removing a
    channel zeroes its row of ``Q`` and its ``r``, which pins ``b`` there to 0.
    """
    n_transient = probabilities.shape[0] - 2
    q = probabilities[:n_transient, :n_transient].copy()
    r = probabilities[:n_transient, n_transient].copy()
    if removed is not None:
        q[removed] = 0.0
        r[removed] = 0.0
    b = np.linalg.solve(np.eye(n_transient) - q, r)
    return float(b[0])


def attribute_journeys(journeys: Journeys) -> AttributionResult:
    """Markov removal effect, first-touch, last-touch and linear attribution of journeys.

    See :func:`attribute`, which builds the journeys from an event table.
    """
    k = len(journeys.channels)
    conv = journeys.converted
    n_conv = journeys.n_conversions

    counts = transition_counts(journeys)
    totals = counts.sum(axis=1, keepdims=True)
    # Absorbing rows have no outflow: leave them at zero (they are not used by the solve).
    probs = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    if n_conv > 0:
        base = conversion_probability(probs)
        removed = np.array([conversion_probability(probs, c + 1) for c in range(k)])
        # Clip rounding noise: removing a state can only lower the absorption probability.
        effect = np.clip(1.0 - removed / base, 0.0, 1.0)
        total = effect.sum()
        # total > 0 whenever a journey converts (removing its last channel loses it); the
        # guard only keeps rounding in degenerate chains from dividing by zero.
        markov = effect / total * n_conv if total > 0 else np.zeros(k)
    else:
        base = 0.0
        effect = np.zeros(k)
        markov = np.zeros(k)

    starts, ends = journeys.offsets[:-1], journeys.offsets[1:]
    codes = journeys.channel_codes
    first = np.bincount(codes[starts[conv]], minlength=k).astype(np.float64)
    last = np.bincount(codes[ends[conv] - 1], minlength=k).astype(np.float64)
    # Linear: every touch of a converted journey gets 1 / (its journey's length).
    weight = np.repeat(np.where(conv, 1.0 / np.maximum(journeys.lengths, 1), 0.0), journeys.lengths)
    linear = np.bincount(codes, weights=weight, minlength=k)

    index = pd.Index(list(journeys.channels), name="channel", dtype=object)
    table = pd.DataFrame(
        {
            "markov_removal_effect": effect,
            "markov": markov,
            "first_touch": first,
            "last_touch": last,
            "linear": linear,
        },
        index=index,
    )
    states = [START, *journeys.channels, CONVERSION, NULL]
    transitions = pd.DataFrame(
        probs[: k + 1, 1:], index=pd.Index(states[: k + 1]), columns=pd.Index(states[1:])
    )
    return AttributionResult(
        table=table,
        conversions=n_conv,
        base_conversion_probability=base,
        transitions=transitions,
        n_journeys=len(journeys),
        n_untouched_conversions=journeys.n_untouched_conversions,
    )


def attribute(
    events: pd.DataFrame,
    *,
    touch_types: Collection[str] = ("sent",),
    include_inbound: bool = False,
) -> AttributionResult:
    """Credit each customer's first conversion to the channels of their journey.

    Parameters
    ----------
    events : DataFrame
        A canonical event table (``features.schema``).
    touch_types : collection of str, default ("sent",)
        Event types whose channels are touches.
    include_inbound : bool, default False
        Also count inbound contacts (:data:`INBOUND_TOUCH_TYPES`) as touches.

    Returns
    -------
    AttributionResult
        ``.table`` has one row per channel: ``markov_removal_effect`` and the conversions
        credited by ``markov``, ``first_touch``, ``last_touch`` and ``linear``, each
        summing to ``.conversions``; ``.base_conversion_probability`` is P(conversion)
        from the chain's start.

    Notes
    -----
    Only the first purchase of a customer is a conversion, and only touches strictly
    before it count.  A customer whose first purchase precedes every touch converts
    without a journey; such customers are reported in ``.n_untouched_conversions`` and
    credited to no channel.
    """
    return attribute_journeys(
        build_journeys(events, touch_types=touch_types, include_inbound=include_inbound)
    )


def attribution_figure(table: pd.DataFrame | AttributionResult) -> Figure:
    """Grouped horizontal bars: conversions credited to each channel by each method.

    Parameters
    ----------
    table : DataFrame or AttributionResult
        :attr:`AttributionResult.table` (or the result itself).

    Returns
    -------
    Figure
    """
    if isinstance(table, AttributionResult):
        table = table.table
    methods = [m for m in METHODS if m in table.columns]
    # Largest Markov credit on top: barh draws the first row at the bottom.
    frame = table.sort_values(methods[0], kind="stable") if methods else table
    n_channels, n_methods = len(frame), max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(8, 0.45 * n_channels * n_methods + 2))
    height = 0.8 / n_methods
    y = np.arange(n_channels, dtype=np.float64)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#8172B3"]
    for i, method in enumerate(methods):
        # The first method sits on top within a group, matching the legend order.
        pos = y + (n_methods - 1 - i - (n_methods - 1) / 2) * height
        values = frame[method].to_numpy(dtype=np.float64)
        bars = ax.barh(pos, values, height=height, label=METHODS[method], color=colors[i % 4])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2, fontsize=8)
    ax.set_yticks(y, [str(c).replace("_", " ") for c in frame.index])
    ax.set_xlabel("Conversions credited")
    ax.set_ylabel("Channel")
    ax.set_title("Which channels get the credit for conversions, by attribution method")
    ax.margins(x=0.12)
    if methods:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
