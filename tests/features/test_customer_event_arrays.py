"""The request path's event arrays equal the offline ones (features.counters)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.counters import customer_event_arrays, prepare_events
from features.spec import FeatureSpec
from tests.conftest import make_events

CHANNELS = ("email", "sms", "web", "app")
TYPES = ("sent", "open", "click", "visit", "purchase", "unsubscribe", "churn")


def _random_history(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    # Few distinct times, so that same-time ties are common; one channel the spec lacks.
    hours = rng.integers(0, 12, n)
    rows = [
        (
            "c1",
            start + pd.Timedelta(hours=int(h)),
            str(rng.choice([*CHANNELS, "kiosk"])),
            str(rng.choice(TYPES)),
            None,
            float(rng.uniform(5, 50)) if rng.random() < 0.3 else np.nan,
        )
        for h in hours
    ]
    return make_events(rows).sample(frac=1.0, random_state=seed)  # any input order


@pytest.mark.parametrize("seed", range(8))
def test_same_arrays_as_prepare_events(seed: int) -> None:
    events = _random_history(seed, 40)
    spec = FeatureSpec.from_data(_random_history(99, 200), None, channels=CHANNELS)
    offline = prepare_events(events, spec)
    online = customer_event_arrays(
        spec,
        "c1",
        events["timestamp"].astype("int64").to_numpy(),
        [str(c) for c in events["channel"]],
        [str(t) for t in events["event_type"]],
        events["value"].to_numpy(),
    )
    assert online.customer_ids.tolist() == ["c1"]
    for name in ("code", "time", "etype", "channel", "token"):
        np.testing.assert_array_equal(getattr(online, name), getattr(offline, name), err_msg=name)
    np.testing.assert_array_equal(online.value, offline.value)


def test_no_events() -> None:
    spec = FeatureSpec.from_data(_random_history(1, 10), None, channels=CHANNELS)
    ev = customer_event_arrays(spec, "c9", np.zeros(0, np.int64), [], [], np.zeros(0))
    assert ev.n_events == 0 and ev.n_customers == 0
