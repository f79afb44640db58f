"""Event buffering and the final canonical event table of :mod:`training.simulator`.

The simulator emits events as numpy chunks (one per day and event kind) into an
:class:`EventBuffer`; :func:`build_event_table` concatenates them once, sorts them and
builds the canonical table of ``features/schema.py``.  Keeping integer codes until the
very end is what keeps 10M events within a few hundred MB.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.schema import EVENT_COLUMNS, EVENT_TYPE_ORDER


class EventBuffer:
    """Column chunks of events: customer index, seconds since start, codes, floats."""

    def __init__(self) -> None:
        self.cust: list[npt.NDArray[np.int32]] = []
        self.sec: list[npt.NDArray[np.int64]] = []
        self.chan: list[npt.NDArray[np.int16]] = []
        self.etype: list[npt.NDArray[np.int8]] = []
        self.action: list[npt.NDArray[np.int16]] = []
        self.value: list[npt.NDArray[np.float64]] = []
        self.propensity: list[npt.NDArray[np.float64]] = []
        self.size = 0

    def add(
        self,
        cust: np.ndarray,
        sec: np.ndarray,
        chan: np.ndarray | int,
        etype: int,
        action: np.ndarray | None = None,
        *,
        value: np.ndarray | None = None,
        propensity: np.ndarray | None = None,
    ) -> None:
        """Append ``len(cust)`` events; ``action`` -1 / ``value`` NaN mean absent."""
        m = int(np.asarray(cust).size)
        if m == 0:
            return
        self.cust.append(np.asarray(cust, dtype=np.int32))
        self.sec.append(np.asarray(sec, dtype=np.int64))
        self.chan.append(np.broadcast_to(np.asarray(chan, dtype=np.int16), (m,)).copy())
        self.etype.append(np.full(m, etype, dtype=np.int8))
        self.action.append(
            np.full(m, -1, dtype=np.int16) if action is None else np.asarray(action, dtype=np.int16)
        )
        self.value.append(np.full(m, np.nan) if value is None else np.asarray(value, dtype=float))
        self.propensity.append(
            np.full(m, np.nan) if propensity is None else np.asarray(propensity, dtype=float)
        )
        self.size += m


def _cat(chunks: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)


def build_event_table(
    buf: EventBuffer,
    customer_ids: np.ndarray,
    start: pd.Timestamp,
    channel_names: list[str],
    action_ids: list[str],
    seed: int,
) -> pd.DataFrame:
    """The canonical event table: sorted by (customer, time), stable, with string ids.

    ``event_id`` is ``"s<seed>-<row>"`` (row after sorting), so ids are unique within a
    simulation and differ between seeds; ``decision_id`` is None (no recommender yet).
    """
    cust = _cat(buf.cust, np.int32)
    sec = _cat(buf.sec, np.int64)
    # Stable: ties keep emission order (a send precedes its responses).
    order = np.lexsort((sec, cust))
    del buf.cust, buf.sec
    cust, sec = cust[order], sec[order]
    n = cust.size
    ts = (start.value + sec * 1_000_000_000).astype("datetime64[ns]")
    del sec
    action = _cat(buf.action, np.int16)[order]
    table = pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(
                cust, categories=pd.Index(customer_ids.astype(str), dtype=object)
            ),
            "timestamp": pd.DatetimeIndex(ts).tz_localize("UTC"),
            "channel": pd.Categorical.from_codes(
                _cat(buf.chan, np.int16)[order], categories=pd.Index(channel_names, dtype=object)
            ),
            "event_type": pd.Categorical.from_codes(
                _cat(buf.etype, np.int8)[order],
                categories=pd.Index(list(EVENT_TYPE_ORDER), dtype=object),
            ),
            "action": pd.Categorical.from_codes(
                action, categories=pd.Index(action_ids, dtype=object)
            ),
            "value": _cat(buf.value, np.float64)[order],
            "propensity": _cat(buf.propensity, np.float64)[order],
            # Explicit object dtype: pandas 3 would otherwise infer its ``str`` dtype.
            "event_id": pd.Series([f"s{seed}-{i}" for i in range(n)], dtype=object),
            "decision_id": pd.Series(np.full(n, None, dtype=object), dtype=object),
        },
        columns=list(EVENT_COLUMNS),
    )
    return table
