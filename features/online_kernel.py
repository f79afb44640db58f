"""One customer's feature row at one decision time, in one compiled pass (numba).

The service builds a single row per request.  :func:`features.pipeline.compute_feature_matrix`
is built for millions of rows: for one row its ~100 small numpy calls cost ~1 ms, almost
all of it call overhead.  :func:`feature_row` computes the same row with one ``@njit``
kernel that walks the customer's events once.

Bit for bit the same as the offline path (tests/features/test_online_kernel.py checks it on
random histories), because the kernel reproduces every step of ``_fill_chunk``:

* events are put in the same order (time, then type code, then channel name; stable), so
  the last-N tokens and the transitions see the same neighbours;
* "the events before x" is ``searchsorted(time, x, side="left")``, which is what
  :meth:`features.counters.EventArrays.lookup` returns for one customer; window starts are
  ``t - offset`` with the offsets of ``features.pipeline._lookup_offsets``;
* counts are integers (exact whatever the summation order) and become float64 only when
  written; purchase values are summed in int64 units of 1/``VALUE_SCALE``;
* every float is produced by the same IEEE operation on the same operands: ``int64 /
  int64`` (both converted to float64, then divided) for times and values, ``(count +
  prior) / (sends + strength)`` for the rates, ``flag * (not unsubscribed)`` for
  ``can_contact``.

Only events strictly before the decision time count; later events are ignored, exactly as
the offline lookup ignores them (the store never returns them anyway).
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features import schema
from features.compiled import jit
from features.counters import (
    CLICK,
    FAMILY_BY_TYPE,
    INBOUND_BY_TYPE,
    N_TYPES,
    NS_PER_DAY,
    NS_PER_HOUR,
    OPEN,
    PURCHASE,
    SENT,
    TRANSITION_BY_PAIR,
    TYPE_CODE,
    UNSUBSCRIBE,
    VALUE_SCALE,
    _online_codes,
    customer_event_arrays,
)
from features.pipeline import _lookup_offsets, compute_feature_matrix
from features.spec import (
    CLICK_RATE_PRIOR,
    INBOUND_WINDOW_DAYS,
    OPEN_RATE_PRIOR,
    RATE_PRIOR_STRENGTH,
    TRANSITIONS,
    FeatureSpec,
)

__all__ = ["feature_row", "fill_row", "offline_row", "warm_up"]

#: Distinct (channel, event type) pairs remembered per spec before the memo starts afresh
#: (open vocabularies: an unbounded stream of new channel names must not grow it forever).
MAX_PAIRS = 4096


# Positions in the kernel's int64 parameter vector (``_KernelSpec.params``).
(
    P_N_CH,  # channels with their own columns; channel code n_ch = any other channel
    P_N_SEQ,  # sequence_length
    P_NS_HOUR,
    P_NS_DAY,
    P_VALUE_SCALE,
    P_SENT,  # event type codes
    P_OPEN,
    P_CLICK,
    P_PURCHASE,
    P_UNSUB,
    P_ADV_MIN,  # stage_rules.advocacy_min_purchases
    P_LOYAL_MIN,  # stage_rules.loyalty_min_purchases
    P_OFF_INBOUND,  # ns look-back of ch_<c>_inbound_30d and of the three stage windows
    P_OFF_RECENT,
    P_OFF_ADVOCACY,
    P_OFF_LOYALTY,
    O_SEQ_TOKEN,  # first output column of each feature group
    O_SEQ_GAP,
    O_TRANSITIONS,
    O_RECENCY,
    O_TYPES_TOTAL,
    O_PURCHASE_VALUE,
    O_STAGE,
    O_SENDS_TOTAL,
    O_DAYS_SINCE_SEND,
    O_OPEN_RATE,
    O_CLICK_RATE,
    O_INBOUND,
    O_UNSUBSCRIBED,
    O_CONSENT,
    O_CAN_CONTACT,
    O_STATIC,
    N_PARAMS,
) = range(33)

# Rows of the kernel's per-type flag table (indexed by type code + 1; column 0 = unknown).
F_FAMILY, F_INBOUND, F_CONSIDERATION, F_ADVOCACY = range(4)
# Rows of the pair table (one column per known (channel, event type) pair).
PAIR_TYPE, PAIR_CHANNEL, PAIR_TOKEN, PAIR_NAME_RANK = range(4)
# Float parameters: the rate smoothing, computed in Python exactly as _fill_chunk does.
RATE_STRENGTH, RATE_OPEN_PRIOR, RATE_CLICK_PRIOR = range(3)


# ------------------------------------------------------------------------------ kernel
@jit
def _canonical_order(time: np.ndarray, etype: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Positions in the order of ``customer_event_arrays``: time, type code, channel name.

    That function uses a stable ``np.lexsort((name_rank, etype, time))``: a stable sort by
    time, then a stable insertion sort of each run of equal times by (type, name), gives
    the same permutation.  Runs are a handful of events, so insertion sort is cheap.
    """
    n = time.size
    order = np.argsort(time, kind="mergesort")
    lo = 0
    while lo < n:
        hi = lo + 1
        while hi < n and time[order[hi]] == time[order[lo]]:
            hi += 1
        for i in range(lo + 1, hi):
            cur = order[i]
            j = i - 1
            while j >= lo and (
                etype[order[j]] > etype[cur]
                or (etype[order[j]] == etype[cur] and rank[order[j]] > rank[cur])
            ):
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = cur
        lo = hi
    return order


@jit
def _in_order(time: np.ndarray, etype: np.ndarray, rank: np.ndarray) -> bool:
    """Whether the events are already in canonical order (then sorting is the identity)."""
    for j in range(1, time.size):
        if time[j] < time[j - 1]:
            return False
        if time[j] == time[j - 1] and (
            etype[j] < etype[j - 1] or (etype[j] == etype[j - 1] and rank[j] < rank[j - 1])
        ):
            return False
    return True


@jit
def _fill_row(
    time: np.ndarray,
    pair: np.ndarray,
    value: np.ndarray,
    as_of: int,
    pairs: np.ndarray,
    type_flags: np.ndarray,
    trans_by_pair: np.ndarray,
    params: np.ndarray,
    win_offsets: np.ndarray,
    win_pos: np.ndarray,
    rates: np.ndarray,
    consent_pos: np.ndarray,
    consent: np.ndarray,
    static: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write every feature of one customer decided at ``as_of`` into ``out`` (float64)."""
    n_ch = params[P_N_CH]
    ns_day = params[P_NS_DAY]
    n_win = win_offsets.size
    n_types = type_flags.shape[1] - 1

    # --- the events in canonical order, as codes ---
    etype = pairs[PAIR_TYPE][pair]
    rank = pairs[PAIR_NAME_RANK][pair]
    if not _in_order(time, etype, rank):
        order = _canonical_order(time, etype, rank)
        time, pair, value, etype = time[order], pair[order], value[order], etype[order]
    chan = pairs[PAIR_CHANNEL][pair]
    token = pairs[PAIR_TOKEN][pair]

    # --- the history [0, idx) and where each window starts in it ---
    idx = np.searchsorted(time, as_of)
    win_start = np.empty(n_win, dtype=np.int64)
    for w in range(n_win):
        win_start[w] = np.searchsorted(time, as_of - win_offsets[w])
    inbound_start = np.searchsorted(time, as_of - params[P_OFF_INBOUND])
    recent_start = np.searchsorted(time, as_of - params[P_OFF_RECENT])
    advocacy_start = np.searchsorted(time, as_of - params[P_OFF_ADVOCACY])
    loyalty_start = np.searchsorted(time, as_of - params[P_OFF_LOYALTY])

    # --- one pass over the history: every counter, and the last event of each kind ---
    types = np.zeros((n_win + 1, n_types), dtype=np.int64)  # row 0: total, 1 + w: window w
    sends = np.zeros((n_win + 1, n_ch), dtype=np.int64)
    cents = np.zeros(n_win + 1, dtype=np.int64)
    inbound = np.zeros(n_ch, dtype=np.int64)
    opens = np.zeros(n_ch, dtype=np.int64)
    clicks = np.zeros(n_ch, dtype=np.int64)
    unsubs = np.zeros(n_ch, dtype=np.int64)
    last_send = np.full(n_ch, -1, dtype=np.int64)
    transitions = np.zeros(trans_by_pair.max() + 1, dtype=np.int64)
    n_consideration = 0
    n_advocacy_recent = 0
    n_purchases_before_recent = 0
    n_purchases_loyalty = 0
    last_inbound = -1
    last_purchase = -1
    for j in range(idx):
        t = etype[j]
        c = chan[j]
        on_vocab = c < n_ch
        is_inbound = type_flags[F_INBOUND, t + 1] != 0
        if t >= 0:
            types[0, t] += 1
            for w in range(n_win):
                if j >= win_start[w]:
                    types[1 + w, t] += 1
        if t == params[P_SENT] and on_vocab:
            sends[0, c] += 1
            for w in range(n_win):
                if j >= win_start[w]:
                    sends[1 + w, c] += 1
            last_send[c] = j
        if is_inbound:
            last_inbound = j
            if on_vocab and j >= inbound_start:
                inbound[c] += 1
        if on_vocab:
            if t == params[P_OPEN]:
                opens[c] += 1
            elif t == params[P_CLICK]:
                clicks[c] += 1
            elif t == params[P_UNSUB]:
                unsubs[c] += 1
        if type_flags[F_CONSIDERATION, t + 1] != 0:
            n_consideration += 1
        if type_flags[F_ADVOCACY, t + 1] != 0 and j >= advocacy_start:
            n_advocacy_recent += 1
        if t == params[P_PURCHASE]:
            last_purchase = j
            if j < recent_start:
                n_purchases_before_recent += 1
            if j >= loyalty_start:
                n_purchases_loyalty += 1
            v = value[j]
            if np.isfinite(v):
                # np.rint then astype(int64), as _fill_chunk: exact integer sums.
                cent = np.int64(np.rint(v * params[P_VALUE_SCALE]))
                cents[0] += cent
                for w in range(n_win):
                    if j >= win_start[w]:
                        cents[1 + w] += cent
        if j > 0:
            # Transition from the previous event, counted at the later one.
            f0 = type_flags[F_FAMILY, etype[j - 1] + 1]
            f1 = type_flags[F_FAMILY, t + 1]
            if f0 >= 0 and f1 >= 0:
                k = trans_by_pair[f0 * 4 + f1]
                if k >= 0:
                    transitions[k] += 1

    # --- sequences: the last N events, most recent first ---
    n_seq = params[P_N_SEQ]
    for k in range(n_seq):
        p = idx - 1 - k
        if p >= 0:
            out[params[O_SEQ_TOKEN] + k] = token[p]
            out[params[O_SEQ_GAP] + k] = (as_of - time[p]) / params[P_NS_HOUR]
        else:
            out[params[O_SEQ_TOKEN] + k] = 0.0
            out[params[O_SEQ_GAP] + k] = np.nan
    for k in range(transitions.size):
        out[params[O_TRANSITIONS] + k] = transitions[k]

    # --- recency ---
    rec = params[O_RECENCY]
    out[rec] = (as_of - time[0]) / ns_day if idx > 0 else np.nan
    out[rec + 1] = (as_of - time[idx - 1]) / ns_day if idx > 0 else np.nan
    out[rec + 2] = (as_of - time[last_inbound]) / ns_day if last_inbound >= 0 else np.nan
    out[rec + 3] = (as_of - time[last_purchase]) / ns_day if last_purchase >= 0 else np.nan

    # --- counts: totals, then each window (type counts, purchase values, sends) ---
    for t in range(n_types):
        out[params[O_TYPES_TOTAL] + t] = types[0, t]
        for w in range(n_win):
            out[win_pos[0, w] + t] = types[1 + w, t]
    for w in range(n_win + 1):
        out[params[O_PURCHASE_VALUE] + w] = cents[w] / params[P_VALUE_SCALE]
    for c in range(n_ch):
        out[params[O_SENDS_TOTAL] + c] = sends[0, c]
        for w in range(n_win):
            out[win_pos[1, w] + c] = sends[1 + w, c]

    # --- per channel: last send, smoothed response rates, inbound, unsubscribed ---
    for c in range(n_ch):
        ls = last_send[c]
        out[params[O_DAYS_SINCE_SEND] + c] = (as_of - time[ls]) / ns_day if ls >= 0 else np.nan
        denom = sends[0, c] + rates[RATE_STRENGTH]
        out[params[O_OPEN_RATE] + c] = (opens[c] + rates[RATE_OPEN_PRIOR]) / denom
        out[params[O_CLICK_RATE] + c] = (clicks[c] + rates[RATE_CLICK_PRIOR]) / denom
        out[params[O_INBOUND] + c] = inbound[c]
        out[params[O_UNSUBSCRIBED] + c] = 1.0 if unsubs[c] > 0 else 0.0

    # --- journey stage: features.stages.assign_stages, highest rule that holds wins ---
    n_purchases = types[0, params[P_PURCHASE]]
    stage = 1 if idx > 0 else 0
    if n_consideration > 0:
        stage = 2
    if n_purchases > 0:
        stage = 3 if n_purchases_before_recent == 0 else 4
    if n_advocacy_recent > 0 and n_purchases >= params[P_ADV_MIN]:
        stage = 5
    if n_purchases_loyalty >= params[P_LOYAL_MIN]:
        stage = 6
    out[params[O_STAGE]] = stage

    # --- consent as given; contactable unless also unsubscribed; static attributes ---
    for i in range(consent_pos.size):
        out[params[O_CONSENT] + i] = consent[i]
        reachable = 0.0 if unsubs[consent_pos[i]] > 0 else 1.0
        out[params[O_CAN_CONTACT] + i] = consent[i] * reachable
    for i in range(static.size):
        out[params[O_STATIC] + i] = static[i]


# ------------------------------------------------------------------------------ spec side
class _PairCodes:
    """``(channel, event type) -> column`` of a table of codes, append-only.

    Columns hold the type code, channel index and token code of
    :func:`features.counters.customer_event_arrays` (one source of truth: its memo is asked
    for every new pair) and the channel name's rank among all names seen, which orders
    same-time events like its ``np.unique`` ranks do (only the relative order matters).
    A reader looks ids up first and reads :attr:`table` after: the table only ever grows,
    so every id it got is in it.
    """

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.table = np.zeros((4, 0), dtype=np.int64)
        self._lock = threading.Lock()

    def lookup(
        self, spec: FeatureSpec, channel: Sequence[str], event_type: Sequence[str]
    ) -> np.ndarray:
        """Column of each event (int64); new pairs are added on the way."""
        n = len(channel)
        pairs = zip(channel, event_type, strict=True)
        try:
            return np.fromiter(map(self.ids.get, pairs), dtype=np.int64, count=n)
        except TypeError:  # a pair seen for the first time (get returned None)
            pass
        ids = []
        for pair in zip(channel, event_type, strict=True):
            hit = self.ids.get(pair)
            ids.append(self._add(spec, pair) if hit is None else hit)
        return np.array(ids, dtype=np.int64)

    def _add(self, spec: FeatureSpec, pair: tuple[str, str]) -> int:
        with self._lock:
            hit = self.ids.get(pair)
            if hit is not None:
                return hit
            codes = _online_codes(spec)
            type_code, chan, token = codes.get(pair) or codes.add(spec, *pair)
            names = sorted({c for c, _ in self.ids} | {pair[0]})
            name_rank = {name: i for i, name in enumerate(names)}
            table = np.empty((4, self.table.shape[1] + 1), dtype=np.int64)
            table[:, :-1] = self.table
            table[:, -1] = (type_code, chan, token, 0)
            for (c, _), i in self.ids.items():
                table[PAIR_NAME_RANK, i] = name_rank[c]
            table[PAIR_NAME_RANK, -1] = name_rank[pair[0]]
            self.table = table  # published before the id, see the class docstring
            new_id = table.shape[1] - 1
            self.ids[pair] = new_id
            return new_id


@dataclass
class _KernelSpec:
    """Everything the kernel needs from a spec, as arrays (built once per spec)."""

    n_features: int
    type_flags: np.ndarray
    trans_by_pair: np.ndarray
    params: np.ndarray
    win_offsets: np.ndarray
    win_pos: np.ndarray
    rates: np.ndarray
    consent_pos: np.ndarray
    pairs: _PairCodes = field(default_factory=_PairCodes)


def _type_flags(spec: FeatureSpec) -> np.ndarray:
    """Family, inbound, consideration and advocacy flags by type code + 1 (0 = unknown)."""
    flags = np.zeros((4, N_TYPES + 1), dtype=np.int64)
    flags[F_FAMILY] = FAMILY_BY_TYPE
    flags[F_INBOUND] = INBOUND_BY_TYPE
    rules = spec.stage_rules
    for row, kinds in (
        (F_CONSIDERATION, rules.consideration_types),
        (F_ADVOCACY, rules.advocacy_types),
    ):
        for kind in kinds:
            flags[row, TYPE_CODE[kind] + 1] = 1
    return flags


def _kernel_spec(spec: FeatureSpec) -> _KernelSpec:
    """The spec's kernel constants, memoized on ``spec._cache``."""
    hit: _KernelSpec | None = spec._cache.get("online_kernel")
    if hit is not None:
        return hit
    assert len(schema.EVENT_TYPE_ORDER) == N_TYPES and len(TRANSITIONS) == 5
    sl = spec.feature_slices
    rules = spec.stage_rules
    # The very offsets (and float -> ns rounding) that _fill_chunk looks up.
    days, offsets = _lookup_offsets(spec)

    def offset(d: float) -> int:
        return int(offsets[1 + days.index(float(d))])

    params = np.zeros(N_PARAMS, dtype=np.int64)
    params[P_N_CH] = len(spec.channels)
    params[P_N_SEQ] = spec.sequence_length
    params[P_NS_HOUR] = NS_PER_HOUR
    params[P_NS_DAY] = NS_PER_DAY
    params[P_VALUE_SCALE] = VALUE_SCALE
    params[P_SENT], params[P_OPEN], params[P_CLICK] = SENT, OPEN, CLICK
    params[P_PURCHASE], params[P_UNSUB] = PURCHASE, UNSUBSCRIBE
    params[P_ADV_MIN] = rules.advocacy_min_purchases
    params[P_LOYAL_MIN] = rules.loyalty_min_purchases
    params[P_OFF_INBOUND] = offset(INBOUND_WINDOW_DAYS)
    params[P_OFF_RECENT] = offset(rules.recent_purchase_days)
    params[P_OFF_ADVOCACY] = offset(rules.advocacy_days)
    params[P_OFF_LOYALTY] = offset(rules.loyalty_days)
    for pos, group in (
        (O_SEQ_TOKEN, "seq_token"),
        (O_SEQ_GAP, "seq_gap"),
        (O_TRANSITIONS, "transitions"),
        (O_RECENCY, "recency"),
        (O_TYPES_TOTAL, "type_counts_total"),
        (O_PURCHASE_VALUE, "purchase_value"),
        (O_STAGE, "journey_stage"),
        (O_SENDS_TOTAL, "ch_sends_total"),
        (O_DAYS_SINCE_SEND, "ch_days_since_send"),
        (O_OPEN_RATE, "ch_open_rate"),
        (O_CLICK_RATE, "ch_click_rate"),
        (O_INBOUND, "ch_inbound"),
        (O_UNSUBSCRIBED, "ch_unsubscribed"),
        (O_CONSENT, "consent"),
        (O_CAN_CONTACT, "can_contact"),
        (O_STATIC, "static_numeric"),  # static_categorical follows it directly
    ):
        params[pos] = sl[group].start
    wins = spec.windows_days
    out = _KernelSpec(
        n_features=spec.n_features,
        type_flags=_type_flags(spec),
        trans_by_pair=TRANSITION_BY_PAIR.astype(np.int64),
        params=params,
        win_offsets=np.array([offset(w) for w in wins], dtype=np.int64),
        win_pos=np.array(
            [
                [sl[f"type_counts_{w}d"].start for w in wins],
                [sl[f"ch_sends_{w}d"].start for w in wins],
            ],
            dtype=np.int64,
        ).reshape(2, len(wins)),
        # The same Python float products as _fill_chunk's `opens + STRENGTH * PRIOR`.
        rates=np.array(
            [
                RATE_PRIOR_STRENGTH,
                RATE_PRIOR_STRENGTH * OPEN_RATE_PRIOR,
                RATE_PRIOR_STRENGTH * CLICK_RATE_PRIOR,
            ],
            dtype=np.float64,
        ),
        consent_pos=np.array(
            [spec.channels.index(c) for c in spec.consent_channels], dtype=np.int64
        ),
    )
    spec._cache["online_kernel"] = out
    return out


# ------------------------------------------------------------------------------ public
def fill_row(
    spec: FeatureSpec,
    time: np.ndarray,
    channel: Sequence[str],
    event_type: Sequence[str],
    value: np.ndarray,
    as_of_ns: int,
    consent: Sequence[float],
    static: Sequence[float],
    out: np.ndarray,
) -> None:
    """Write one customer's feature row at ``as_of_ns`` into ``out`` (float64, 1-D).

    ``time``/``channel``/``event_type``/``value`` are the customer's events in any order
    (ns since the epoch, strings, float64 with NaN = no value); events at or after
    ``as_of_ns`` are ignored.  ``consent`` and ``static`` come from
    :func:`features.pipeline.encode_customer_record`.
    """
    ks = _kernel_spec(spec)
    n = len(time)
    if len(value) != n or len(channel) != n or len(event_type) != n:
        raise ValueError(
            f"event columns differ in length: time {n}, channel {len(channel)}, "
            f"event_type {len(event_type)}, value {len(value)}"
        )
    if out.shape != (ks.n_features,) or out.dtype != np.float64:
        raise ValueError(f"out must be a float64 array of shape ({ks.n_features},)")
    pairs = ks.pairs
    if len(pairs.ids) > MAX_PAIRS:  # start afresh; readers of the old table keep theirs
        pairs = ks.pairs = _PairCodes()
    pair = pairs.lookup(spec, channel, event_type)
    _fill_row(
        # Fresh C-contiguous writable copies: numba compiles one specialization per array
        # layout and writability, so callers' views must not trigger new compilations.
        np.array(time, dtype=np.int64),
        pair,
        np.array(value, dtype=np.float64),
        as_of_ns,
        pairs.table,  # read after the lookup: holds every id it returned
        ks.type_flags,
        ks.trans_by_pair,
        ks.params,
        ks.win_offsets,
        ks.win_pos,
        ks.rates,
        ks.consent_pos,
        np.array(consent, dtype=np.float64),
        np.array(static, dtype=np.float64),
        out,
    )


def feature_row(
    spec: FeatureSpec,
    time: np.ndarray,
    channel: Sequence[str],
    event_type: Sequence[str],
    value: np.ndarray,
    as_of_ns: int,
    consent: Sequence[float],
    static: Sequence[float],
) -> np.ndarray:
    """The ``(1, n_features)`` float64 row of :func:`fill_row` (a fresh array)."""
    out = np.empty((1, spec.n_features), dtype=np.float64)
    fill_row(spec, time, channel, event_type, value, as_of_ns, consent, static, out[0])
    return out


def warm_up(spec: FeatureSpec) -> float:
    """Compile (or load from numba's cache) the kernel and build the spec's constants.

    Call at model load so that the first request does not pay for it.  Runs one row with
    two same-time events, which also exercises the sorting branch.  Returns the seconds it
    took (seconds on a cold cache, milliseconds when the compiled code is cached).
    """
    t0 = _time.perf_counter()
    channel = spec.channels[0] if spec.channels else "warm-up"
    feature_row(
        spec,
        np.array([2, 1, 1], dtype=np.int64),
        [channel, channel, channel],
        ["purchase", "open", "sent"],
        np.array([1.0, np.nan, np.nan]),
        3,
        [1.0] * len(spec.consent_channels),
        [np.nan] * (len(spec.static_numeric) + len(spec.static_categorical)),
    )
    return _time.perf_counter() - t0


def offline_row(
    spec: FeatureSpec,
    time: np.ndarray,
    channel: Sequence[str],
    event_type: Sequence[str],
    value: np.ndarray,
    as_of_ns: int,
    consent: Sequence[float],
    static: Sequence[float],
) -> np.ndarray:
    """:func:`feature_row` through the offline numpy core (the former request path).

    ``customer_event_arrays`` then ``compute_feature_matrix``: the reference the tests and
    ``bench/bench_online_features.py`` compare the kernel with.
    """
    ev = customer_event_arrays(spec, "c", time, channel, event_type, value)
    X = compute_feature_matrix(
        ev,
        np.zeros(1, dtype=np.int64),
        np.array([as_of_ns], dtype=np.int64),
        spec,
        consent=np.array([consent], dtype=np.float64) if spec.consent_channels else None,
        static=np.array([static], dtype=np.float64) if len(static) else None,
        dtype=np.float64,
    )
    return np.ascontiguousarray(X)
