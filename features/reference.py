"""A slow, obviously-correct reference of :func:`features.pipeline.compute_features`.

A plain per-customer, per-decision loop over pandas slices, written straight from the
definitions in docs/FEATURES.md and sharing no code with the vectorized pipeline. The tests
use it as the oracle and ``bench/bench_features.py`` times it; never use it in production.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.spec import (
    CLICK_RATE_PRIOR,
    INBOUND_WINDOW_DAYS,
    MISSING_CODE,
    OPEN_RATE_PRIOR,
    RATE_PRIOR_STRENGTH,
    TRANSITIONS,
    FeatureSpec,
)

__all__ = ["reference_features"]

_DAY = 86_400e9
_HOUR = 3_600e9


def _family(event_type: str) -> str:
    if event_type == "sent":
        return "outbound"
    if event_type in ("open", "click"):
        return "response"
    return "purchase" if event_type == "purchase" else "inbound"


class _History:
    """One customer's events before a decision time, as plain arrays."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.ts = frame["ts"].to_numpy()
        self.event_type = frame["event_type"].to_numpy()
        self.channel = frame["channel"].to_numpy()
        self.value = frame["value"].to_numpy()

    def __len__(self) -> int:
        return len(self.ts)

    def where(self, mask: np.ndarray) -> _History:
        out = _History.__new__(_History)
        out.ts, out.event_type = self.ts[mask], self.event_type[mask]
        out.channel, out.value = self.channel[mask], self.value[mask]
        return out


def _stage(h: _History, t: int, spec: FeatureSpec) -> int:
    r = spec.stage_rules
    purchases = h.where(h.event_type == "purchase")
    stage = 0
    if len(h):
        stage = 1
    if np.isin(h.event_type, r.consideration_types).any():
        stage = 2
    if len(purchases):
        first = purchases.ts.min()
        stage = 3 if first >= t - r.recent_purchase_days * _DAY else 4
        advocacy = np.isin(h.event_type, r.advocacy_types) & (h.ts >= t - r.advocacy_days * _DAY)
        if advocacy.any() and len(purchases) >= r.advocacy_min_purchases:
            stage = 5
    if (purchases.ts >= t - r.loyalty_days * _DAY).sum() >= r.loyalty_min_purchases:
        stage = 6
    return stage


def _row(h: _History, t: int, spec: FeatureSpec, cust: dict[str, Any]) -> list[float]:
    """All features of one decision from its history ``h`` (events before ``t``, sorted)."""
    nan = math.nan
    f: dict[str, float] = {}
    vocab = {tok: i + 1 for i, tok in enumerate(spec.token_vocabulary)}
    for k in range(1, spec.sequence_length + 1):
        if k <= len(h):
            tok = f"{h.channel[-k]}:{h.event_type[-k]}"
            f[f"seq_token_{k}"] = vocab.get(tok, len(vocab) + 1)
            f[f"seq_gap_hours_{k}"] = (t - h.ts[-k]) / _HOUR
        else:
            f[f"seq_token_{k}"] = 0
            f[f"seq_gap_hours_{k}"] = nan
    fams = [_family(x) for x in h.event_type]
    pairs = list(zip(fams[:-1], fams[1:], strict=True))
    for name, a, b in TRANSITIONS:
        f[name] = sum(1 for p in pairs if p == (a, b))
    inbound = h.where(np.isin(h.event_type, list(schema.INBOUND_TYPES)))
    purchases = h.where(h.event_type == "purchase")
    f["days_since_first_event"] = (t - h.ts.min()) / _DAY if len(h) else nan
    f["days_since_last_event"] = (t - h.ts.max()) / _DAY if len(h) else nan
    f["days_since_last_inbound"] = (t - inbound.ts.max()) / _DAY if len(inbound) else nan
    f["days_since_last_purchase"] = (t - purchases.ts.max()) / _DAY if len(purchases) else nan
    for typ in schema.EVENT_TYPE_ORDER:
        f[f"n_{typ}_total"] = int((h.event_type == typ).sum())
        for w in spec.windows_days:
            f[f"n_{typ}_{w}d"] = int(((h.event_type == typ) & (h.ts >= t - w * _DAY)).sum())
    f["purchase_value_total"] = np.nansum(purchases.value)
    for w in spec.windows_days:
        f[f"purchase_value_{w}d"] = np.nansum(purchases.value[purchases.ts >= t - w * _DAY])
    f["journey_stage"] = _stage(h, t, spec)
    for c in spec.channels:
        on = h.where(h.channel == c)
        sends = on.where(on.event_type == "sent")
        f[f"ch_{c}_sends_total"] = len(sends)
        for w in spec.windows_days:
            f[f"ch_{c}_sends_{w}d"] = int((sends.ts >= t - w * _DAY).sum())
        f[f"ch_{c}_days_since_send"] = (t - sends.ts.max()) / _DAY if len(sends) else nan
        opens = int((on.event_type == "open").sum())
        clicks = int((on.event_type == "click").sum())
        prior = RATE_PRIOR_STRENGTH
        f[f"ch_{c}_open_rate"] = (opens + prior * OPEN_RATE_PRIOR) / (len(sends) + prior)
        f[f"ch_{c}_click_rate"] = (clicks + prior * CLICK_RATE_PRIOR) / (len(sends) + prior)
        recent = on.where(on.ts >= t - INBOUND_WINDOW_DAYS * _DAY)
        f[f"ch_{c}_inbound_{INBOUND_WINDOW_DAYS}d"] = int(
            np.isin(recent.event_type, list(schema.INBOUND_TYPES)).sum()
        )
        f[f"ch_{c}_unsubscribed"] = float((on.event_type == "unsubscribe").any())
    for c in spec.consent_channels:
        raw = cust.get(f"{schema.CONSENT_PREFIX}{c}")
        given = 1.0 if raw is None or pd.isna(raw) else float(bool(raw))
        f[f"consent_{c}"] = given
        f[f"can_contact_{c}"] = given * (1.0 - f[f"ch_{c}_unsubscribed"])
    for a_name in spec.static_numeric:
        raw = cust.get(a_name)
        f[f"attr_{a_name}"] = nan if raw is None or pd.isna(raw) else float(raw)
    for a_name, vocab_c in spec.static_categorical.items():
        raw = cust.get(a_name)
        known = raw is not None and not pd.isna(raw) and str(raw) in vocab_c
        f[f"attr_{a_name}"] = vocab_c.index(str(raw)) if known else MISSING_CODE
    return [float(f[name]) for name in spec.feature_names]


def reference_features(
    events: pd.DataFrame,
    decisions: pd.DataFrame,
    customers: pd.DataFrame | None,
    spec: FeatureSpec,
) -> pd.DataFrame:
    """The features of each decision (rows in the order of ``decisions``), naively."""
    ev = pd.DataFrame(
        {
            "customer_id": events["customer_id"].astype(str).to_numpy(),
            "ts": pd.to_datetime(events["timestamp"], utc=True).dt.as_unit("ns").astype("int64"),
            "channel": events["channel"].astype(str).to_numpy(),
            "event_type": events["event_type"].astype(str).to_numpy(),
            "value": events["value"].astype("float64").to_numpy(),
        }
    )
    ev["type_rank"] = ev.event_type.map(
        {t: i for i, t in enumerate(schema.EVENT_TYPE_ORDER)}
    ).fillna(-1)
    # Same-time events are ordered by event type, then channel name.
    ev = ev.sort_values(["customer_id", "ts", "type_rank", "channel"], kind="stable")
    by_customer = {c: _History(g) for c, g in ev.groupby("customer_id")}
    cust_rows: dict[str, dict[str, Any]] = {}
    if customers is not None:
        for rec in customers.drop_duplicates("customer_id").to_dict("records"):
            cust_rows[str(rec["customer_id"])] = {str(k): v for k, v in rec.items()}
    ids = decisions["customer_id"].astype(str).to_numpy()
    times = (
        pd.to_datetime(decisions["decision_time"], utc=True)
        .dt.as_unit("ns")
        .astype("int64")
        .to_numpy()
    )
    empty = _History(ev.iloc[:0])
    out = np.empty((len(decisions), len(spec.feature_names)))
    # One customer at a time, then each of its decisions: the naive loop.
    for cust in pd.unique(ids):
        hist = by_customer.get(cust, empty)
        for i in np.flatnonzero(ids == cust):
            h = hist.where(hist.ts < times[i])
            out[i] = _row(h, int(times[i]), spec, cust_rows.get(cust, {}))
    return pd.DataFrame(out, columns=list(spec.feature_names))
