"""What the in-process request benchmarks share: a service on a built history store, and a
seeded sample of its customers with a decision time just after its last event.

Used by ``bench/bench_request_stages.py`` and ``bench/bench_online_features.py``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serving.app import Service
from serving.metrics import Metrics
from serving.settings import ServingSettings


@dataclass(frozen=True)
class StoreSample:
    n_customers: int  # customers with events in the store (at most 200,000 are read)
    ids: list[str]  # the sampled customers, with repeats
    as_of: pd.Timestamp

    @property
    def as_of_ns(self) -> int:
        return int(self.as_of.as_unit("ns").value)


def store_service(model: str | Path, store: str | Path, seed: int) -> Service:
    """A service on ``store`` (no model set yet), logging decisions to a throwaway file."""
    work = Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    settings = ServingSettings(
        model=Path(model),
        store_path=Path(store),
        decision_log_path=work / "decisions.db",
        seed=seed,
    )
    return Service(settings, Metrics())


def sample_customers(service: Service, n: int, seed: int, as_of: str | None) -> StoreSample:
    """``n`` customers drawn with replacement; ``as_of`` defaults to noon of the day after
    the store's last event.  Raises ValueError when the store holds no events."""
    conn = service.store._db.connection()  # type: ignore[attr-defined]
    ids = [r[0] for r in conn.execute("SELECT DISTINCT customer_id FROM events LIMIT 200000")]
    if not ids:
        raise ValueError(f"{service.settings.store_path} holds no events")
    last = conn.execute("SELECT MAX(ts) FROM events").fetchone()[0]
    when = (
        pd.Timestamp(as_of)
        if as_of
        else pd.Timestamp(last, unit="ns", tz="UTC").floor("D") + pd.Timedelta(hours=36)
    )
    rng = np.random.default_rng(seed)
    return StoreSample(len(ids), [str(c) for c in rng.choice(ids, size=n)], when)
