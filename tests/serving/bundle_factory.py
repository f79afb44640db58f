"""A tiny model bundle and a small events/customers log on disk, built without training code.

Shared by the tests that run the service for real (``test_uvicorn_contract.py``) or fuzz
it (``test_schemathesis.py``).  The construction mirrors the fixture of ``test_app.py``:
two LightGBM boosters fitted on random data in a few milliseconds, saved with
:func:`serving.bundle.save_bundle`, so the bundle has the real layout and loader path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalog import load_catalog
from features.spec import FeatureSpec
from serving.bundle import save_bundle
from serving.scoring import OutcomeScorer
from tests.conftest import make_events

__all__ = [
    "ACTIONS",
    "AS_OF",
    "CATALOG",
    "KEY",
    "ServingFiles",
    "build_serving_files",
    "history",
    "save_tiny_bundle",
]

KEY = "s3cret"
AS_OF = "2024-03-20T12:00:00Z"  # noon UTC: outside the default quiet hours
CATALOG = load_catalog(None)
ACTIONS: tuple[str, ...] = ("none", *CATALOG.action_ids)


def history() -> pd.DataFrame:
    """Seven events of three customers, all before :data:`AS_OF`."""
    return make_events(
        [
            ("c1", "2024-03-01 10:00", "email", "sent", "email_promo"),
            ("c1", "2024-03-01 12:00", "email", "open", "email_promo"),
            ("c1", "2024-03-02 09:00", "web", "visit"),
            ("c1", "2024-03-04 18:00", "web", "purchase", None, 40.0),
            ("c2", "2024-03-03 10:00", "sms", "sent", "sms_offer"),
            ("c2", "2024-03-05 11:00", "app", "visit"),
            ("c3", "2024-03-06 08:00", "push", "sent", "push_reminder"),
        ]
    )


def _booster(n_cols: int, seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, n_cols))
    X[:, -1] = rng.integers(0, len(ACTIONS), 300)
    y = (X[:, 0] + 0.3 * X[:, -1] + rng.normal(size=300) > 0.5).astype(float)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 10, "verbose": -1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)


def save_tiny_bundle(folder: Path, version: str) -> Path:
    """A loadable bundle with ``model_version=version`` in ``folder``; returns its path."""
    spec = FeatureSpec.from_data(history(), None, channels=CATALOG.channels)
    width = spec.n_features + 1
    return save_bundle(
        folder,
        model_version=version,
        spec=spec,
        catalog=CATALOG,
        conversion=OutcomeScorer("single", ACTIONS, {"all": _booster(width, 1)}),
        churn=OutcomeScorer("single", ACTIONS, {"all": _booster(width, 2)}),
    )


@dataclass(frozen=True)
class ServingFiles:
    """Everything ``touchpoint serve`` needs, under one folder."""

    root: Path
    model: Path
    events: Path
    customers: Path
    store: Path
    decision_log: Path


def build_serving_files(root: Path, version: str = "test-1") -> ServingFiles:
    """Bundle ``root/model``, ``events.parquet``, ``customers.csv`` (c3 refused email)."""
    root.mkdir(parents=True, exist_ok=True)
    model = save_tiny_bundle(root / "model", version)
    events = root / "events.parquet"
    history().to_parquet(events)
    customers = root / "customers.csv"
    pd.DataFrame({"customer_id": ["c1", "c3"], "consent_email": ["true", "false"]}).to_csv(
        customers, index=False
    )
    return ServingFiles(
        root=root,
        model=model,
        events=events,
        customers=customers,
        store=root / "store.db",
        decision_log=root / "decisions.db",
    )
