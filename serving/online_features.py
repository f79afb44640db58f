"""The feature row of one customer at request time, no pandas.

Both functions end in :func:`features.online_kernel.feature_row`, a compiled one-row
version of :func:`features.pipeline.compute_feature_matrix` (the numpy core that
``touchpoint features`` and ``touchpoint recommend`` use): a customer's row is the same
online and offline, bit for bit (tests/features/test_online_kernel.py on random histories,
tests/serving/test_app.py on the service's).  What differs is only how the events get
there: :func:`request_features` takes the plain columns the store returns;
:func:`customer_features` takes canonical DataFrames (inline histories, tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.online_kernel import feature_row
from features.pipeline import encode_customer_record
from features.spec import FeatureSpec
from serving.store import EventColumns

__all__ = ["customer_features", "request_features"]


def request_features(
    spec: FeatureSpec,
    events: EventColumns,
    attributes: Mapping[str, Any] | None,
    customer_id: str,
    as_of_ns: int,
) -> np.ndarray:
    """The ``(1, n_features)`` float64 row of one customer decided at ``as_of_ns``.

    ``events`` should hold only events strictly before ``as_of_ns`` (the store's query and
    the inline path both cut there); later ones would be ignored.  ``attributes`` is the
    customer's stored record (None = unknown customer: consent given, attributes missing).
    ``customer_id`` does not enter the row (kept for the callers).  Computed in float64, as
    ``touchpoint recommend`` does: the contact rules read exact times off the row, and
    :meth:`serving.engine.DecisionEngine.score` rounds it to float32 (the offline table's
    precision) for the models.
    """
    consent_row, static_row = encode_customer_record(attributes, spec)
    return feature_row(
        spec,
        events.time,
        events.channel,
        events.event_type,
        events.value,
        as_of_ns,
        consent_row,
        static_row,
    )


def customer_features(
    spec: FeatureSpec,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    customer_id: str,
    as_of: pd.Timestamp,
) -> np.ndarray:
    """:func:`request_features` from canonical tables (events of any customers, any order).

    Only ``customer_id``'s events strictly before ``as_of`` are used.
    """
    as_of_ns = int(pd.Timestamp(as_of).as_unit("ns").value)
    mine = events[events["customer_id"].astype(str) == customer_id] if len(events) else events
    columns = EventColumns.from_frame(mine) if len(mine) else EventColumns.from_rows([])
    keep = columns.time < as_of_ns
    if not keep.all():
        columns = EventColumns(
            time=columns.time[keep],
            channel=[c for c, k in zip(columns.channel, keep, strict=True) if k],
            event_type=[t for t, k in zip(columns.event_type, keep, strict=True) if k],
            value=columns.value[keep],
        )
    record: dict[str, Any] | None = None
    if customers is not None and len(customers):
        rows = customers[customers["customer_id"].astype(str) == customer_id]
        if len(rows):
            record = {str(k): v for k, v in rows.iloc[0].items()}
    return request_features(spec, columns, record, customer_id, as_of_ns)
