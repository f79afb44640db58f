"""The numba row kernel equals the offline numpy core bit for bit (features.online_kernel).

Rows are compared as uint64 bit patterns: stricter than ``array_equal(equal_nan=True)``
(it also tells 0.0 from -0.0), and NaN stays equal to NaN.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features.online_kernel as kernel
from features import schema
from features.compiled import jit
from features.counters import NS_PER_DAY
from features.online_kernel import feature_row, fill_row, offline_row, warm_up
from features.pipeline import _lookup_offsets, encode_customer_record
from features.spec import FeatureSpec
from features.stages import StageRules

AS_OF = 1_750_000_000 * 10**9  # mid 2025, ns
TYPES = (*schema.EVENT_TYPE_ORDER, "bogus")  # plus a type outside the vocabulary
EXTRA_CHANNELS = ("kiosk", "web")  # channels without columns

SPECS = {
    "full": FeatureSpec(
        channels=("email", "sms", "push"),
        token_vocabulary=("email:sent", "email:open", "sms:sent", "web:visit", "push:click"),
        static_numeric=("age",),
        static_categorical={"region": ("north", "south")},
        consent_channels=("email", "sms"),
    ),
    "no_sequence": FeatureSpec(
        channels=("email", "sms"),
        windows_days=(1, 14),
        sequence_length=0,
        token_vocabulary=("email:sent",),
    ),
    "long_sequence_odd_rules": FeatureSpec(
        channels=("app", "email"),
        windows_days=(3, 30, 45, 400),
        sequence_length=9,
        consent_channels=("app",),
        stage_rules=StageRules(
            recent_purchase_days=0.5,
            advocacy_days=45.25,
            advocacy_min_purchases=2,
            loyalty_days=400,
            loyalty_min_purchases=2,
            consideration_types=("visit", "open"),
            advocacy_types=("review", "feedback", "referral"),
        ),
    ),
    "no_channels": FeatureSpec(channels=(), windows_days=(7,), sequence_length=2),
}


def _bits(row: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(row, dtype=np.float64).view(np.uint64)


def _boundary_offsets(spec: FeatureSpec) -> np.ndarray:
    """ns before as_of of every window start the features look up, and ±1 ns around it."""
    _, offsets = _lookup_offsets(spec)
    return np.unique(np.concatenate([offsets[1:] - 1, offsets[1:], offsets[1:] + 1]))


def _history(
    rng: np.random.Generator, spec: FeatureSpec, n: int
) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """``n`` events strictly before AS_OF, shuffled, full of ties and window edges."""
    bounds = _boundary_offsets(spec)
    pool = AS_OF - rng.integers(1, 40 * NS_PER_DAY, 4)  # a few shared times: ties
    kind = rng.integers(0, 4, n)
    ago = np.where(
        kind == 0,
        rng.choice(bounds, n),
        np.where(kind == 1, rng.integers(1, 500 * NS_PER_DAY, n), AS_OF - rng.choice(pool, n)),
    )
    ago[kind == 3] = rng.integers(1, 3, (kind == 3).sum())  # the last nanoseconds
    time = (AS_OF - ago).astype(np.int64)
    channels = [*spec.channels, *EXTRA_CHANNELS]
    channel = [str(rng.choice(channels)) for _ in range(n)]
    event_type = [str(rng.choice(TYPES)) for _ in range(n)]
    specials = np.array([np.nan, np.inf, -np.inf, 0.00005, 0.00015, 1e-9, -3.25, 12.345678])
    value = np.where(rng.random(n) < 0.3, rng.choice(specials, n), rng.uniform(0, 500, n).round(4))
    return time, channel, event_type, value


def _record(rng: np.random.Generator, spec: FeatureSpec) -> dict[str, object] | None:
    """A stored customer record, or None (unknown customer)."""
    if rng.random() < 0.25:
        return None
    record: dict[str, object] = {
        f"consent_{c}": bool(rng.random() < 0.6) for c in spec.consent_channels
    }
    record["age"] = float(rng.integers(18, 90)) if rng.random() < 0.8 else None
    record["region"] = str(rng.choice(["north", "south", "east"]))
    return record


def _both(
    spec: FeatureSpec,
    hist: tuple[np.ndarray, list[str], list[str], np.ndarray],
    record: dict[str, object] | None,
    as_of: int = AS_OF,
) -> tuple[np.ndarray, np.ndarray]:
    consent, static = encode_customer_record(record, spec)
    new = feature_row(spec, *hist, as_of, consent, static)
    old = offline_row(spec, *hist, as_of, consent, static)
    return new, old


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("seed", range(6))
def test_random_histories_equal_offline_bit_for_bit(name: str, seed: int) -> None:
    spec = SPECS[name]
    rng = np.random.default_rng([seed, len(name)])
    for _ in range(40):
        n = int(rng.choice([0, 1, 2, 3, 8, 30, 120]))
        new, old = _both(spec, _history(rng, spec, n), _record(rng, spec))
        assert new.shape == (1, spec.n_features) and new.dtype == np.float64
        np.testing.assert_array_equal(_bits(new), _bits(old))


def test_a_long_history_equals_offline() -> None:
    spec = SPECS["full"]
    rng = np.random.default_rng(7)
    new, old = _both(spec, _history(rng, spec, 3000), _record(rng, spec))
    np.testing.assert_array_equal(_bits(new), _bits(old))


def test_rows_are_meaningful() -> None:
    """Not only equal to the offline row: the row says what the history says."""
    spec = SPECS["full"]
    names = spec.feature_names
    day = NS_PER_DAY
    time = np.array([AS_OF - 40 * day, AS_OF - 2 * day, AS_OF - 2 * day, AS_OF - day])
    hist = (time, ["email", "email", "email", "web"], ["sent", "open", "sent", "purchase"])
    row = feature_row(spec, *hist, np.array([np.nan, np.nan, 5.0, 12.5]), AS_OF, [1.0, 0.0], [])
    col = dict(zip(names, row[0], strict=True))
    assert col["n_sent_total"] == 2 and col["n_sent_7d"] == 1 and col["ch_email_sends_30d"] == 1
    assert col["purchase_value_total"] == 12.5  # the sent's value is not a purchase value
    assert col["days_since_first_event"] == 40 and col["days_since_last_purchase"] == 1
    assert col["ch_email_days_since_send"] == 2 and np.isnan(col["ch_sms_days_since_send"])
    assert col["journey_stage"] == 3  # first purchase within 30 days
    assert col["consent_sms"] == 0 and col["can_contact_email"] == 1
    # Same-time tie: "sent" sorts before "open", so the last tokens are purchase, open, sent.
    assert col["seq_token_2"] == spec.token_code("email", "open")
    assert col["seq_token_3"] == spec.token_code("email", "sent")
    assert col["trans_outbound_response"] == 1


def test_no_events_unknown_customer() -> None:
    for spec in SPECS.values():
        empty = (np.zeros(0, np.int64), [], [], np.zeros(0))
        new, old = _both(spec, empty, None)
        np.testing.assert_array_equal(_bits(new), _bits(old))
        stage = spec.feature_names.index("journey_stage")
        assert new[0, stage] == 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_column_is_written(name: str) -> None:
    spec = SPECS[name]
    rng = np.random.default_rng(3)
    for n in (0, 1, 50):
        consent, static = encode_customer_record(_record(rng, spec), spec)
        out = np.full(spec.n_features, 123456.789)
        fill_row(spec, *_history(rng, spec, n), AS_OF, consent, static, out)
        assert not (out == 123456.789).any()


@pytest.mark.parametrize("seed", range(4))
def test_later_events_are_ignored(seed: int) -> None:
    """Point in time: events at or after as_of change nothing (and the offline core agrees)."""
    spec = SPECS["long_sequence_odd_rules"]
    rng = np.random.default_rng(seed)
    time, channel, event_type, value = _history(rng, spec, 60)
    record = _record(rng, spec)
    base, _ = _both(spec, (time, channel, event_type, value), record)
    k = 25
    later = AS_OF + np.r_[0, 0, 1, rng.integers(0, 400 * NS_PER_DAY, k - 3)]
    more = (
        np.r_[time, later],
        [*channel, *(str(rng.choice(["email", "app", "kiosk"])) for _ in range(k))],
        [*event_type, *(str(rng.choice(TYPES)) for _ in range(k))],
        np.r_[value, rng.uniform(0, 100, k)],
    )
    order = rng.permutation(len(more[0]))  # later events mixed in anywhere
    shuffled = (
        more[0][order],
        [more[1][i] for i in order],
        [more[2][i] for i in order],
        more[3][order],
    )
    new, old = _both(spec, shuffled, record)
    np.testing.assert_array_equal(_bits(new), _bits(base))
    np.testing.assert_array_equal(_bits(old), _bits(base))


def test_input_order_does_not_matter() -> None:
    spec = SPECS["full"]
    rng = np.random.default_rng(11)
    time, channel, event_type, value = _history(rng, spec, 80)
    first = feature_row(spec, time, channel, event_type, value, AS_OF, [1.0, 1.0], [0.0, 1.0])
    for _ in range(5):
        o = rng.permutation(time.size)
        row = feature_row(
            spec,
            time[o],
            [channel[i] for i in o],
            [event_type[i] for i in o],
            value[o],
            AS_OF,
            [1.0, 1.0],
            [0.0, 1.0],
        )
        np.testing.assert_array_equal(_bits(row), _bits(first))


def test_mismatched_columns_raise() -> None:
    spec = SPECS["full"]
    with pytest.raises(ValueError, match="differ in length"):
        feature_row(spec, np.zeros(2, np.int64), ["email"], ["sent"], np.zeros(2), AS_OF, [], [])
    with pytest.raises(ValueError):
        feature_row(
            spec, np.zeros(1, np.int64), ["email"], ["sent", "open"], np.zeros(1), 0, [], []
        )


def test_new_names_past_the_memo_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """An open stream of channel names restarts the (channel, type) memo and stays exact."""
    spec = FeatureSpec(channels=("email",), token_vocabulary=("c3:visit", "email:sent"))
    spec._cache.clear()
    monkeypatch.setattr(kernel, "MAX_PAIRS", 5)
    rng = np.random.default_rng(5)
    for i in range(30):
        names = [f"c{(i + j) % 17}" for j in range(6)] + ["email"]
        types = [str(rng.choice(TYPES)) for _ in names]
        time = AS_OF - rng.integers(1, 3, len(names)) * NS_PER_DAY  # ties: name ranks matter
        hist = (time, names, types, np.ones(len(names)))
        new, old = _both(spec, hist, None)
        np.testing.assert_array_equal(_bits(new), _bits(old))
    assert len(kernel._kernel_spec(spec).pairs.ids) <= 5 + 7


def test_warm_up_compiles_and_is_then_fast() -> None:
    spec = SPECS["no_channels"]
    assert warm_up(spec) >= 0.0
    assert warm_up(spec) < 0.5  # compiled (or loaded) already: no compilation again


def test_uncached_fallback_when_no_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a writable cache location numba refuses cache=True; jit compiles uncached."""
    from numba.core import caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")

    def twice(x: int) -> int:
        return 2 * x

    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(twice)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jitted = jit(twice)
    assert jitted(21) == 42
    assert any("numba cache disabled" in str(w.message) for w in caught)


@st.composite
def _edge_histories(draw: st.DrawFn) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Small histories whose times sit on window edges, on ties and at as_of - 1 ns."""
    spec = SPECS["long_sequence_odd_rules"]
    bounds = [int(b) for b in _boundary_offsets(spec)] + [1, 2, 5 * NS_PER_DAY]
    n = draw(st.integers(0, 12))
    ago = draw(st.lists(st.sampled_from(bounds), min_size=n, max_size=n))
    channel = draw(st.lists(st.sampled_from(["app", "email", "kiosk"]), min_size=n, max_size=n))
    event_type = draw(st.lists(st.sampled_from(TYPES), min_size=n, max_size=n))
    value = draw(
        st.lists(
            st.one_of(st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False)),
            min_size=n,
            max_size=n,
        )
    )
    time = AS_OF - np.array(ago, dtype=np.int64)
    return time, channel, event_type, np.array(value, dtype=np.float64)


@settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(hist=_edge_histories(), consent=st.booleans())
def test_edge_histories_equal_offline(
    hist: tuple[np.ndarray, list[str], list[str], np.ndarray], consent: bool
) -> None:
    spec = SPECS["long_sequence_odd_rules"]
    new, old = _both(spec, hist, {"consent_app": consent})
    np.testing.assert_array_equal(_bits(new), _bits(old))
