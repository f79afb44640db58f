"""Shared test helpers: canonical event tables built by hand."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.schema import CATEGORY_EVENT_COLUMNS, EVENT_COLUMNS


def make_events(rows: Iterable[tuple]) -> pd.DataFrame:
    """A canonical event table from ``(customer_id, timestamp, channel, event_type[, action[, value]])``."""
    records = []
    for row in rows:
        cid, ts, channel, etype, *rest = row
        action = rest[0] if len(rest) > 0 else None
        value = rest[1] if len(rest) > 1 else np.nan
        records.append(
            {
                "customer_id": cid,
                "timestamp": pd.Timestamp(ts, tz="UTC"),
                "channel": channel,
                "event_type": etype,
                "action": action,
                "value": value,
                "propensity": 0.5 if etype == "sent" else np.nan,
                "event_id": None,
                "decision_id": None,
            }
        )
    df = pd.DataFrame.from_records(records, columns=list(EVENT_COLUMNS))
    df["timestamp"] = df["timestamp"].astype("datetime64[ns, UTC]")
    for column in CATEGORY_EVENT_COLUMNS:
        df[column] = df[column].astype("category")
    df["value"] = df["value"].astype("float64")
    df["propensity"] = df["propensity"].astype("float64")
    df["event_id"] = df["event_id"].astype(object)
    df["decision_id"] = df["decision_id"].astype(object)
    return df.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
