"""The feature pipeline against its naive reference, offline vs online, and invariances."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features import counters, schema
from features.counters import prepare_events
from features.pipeline import (
    build_feature_table,
    compute_feature_matrix,
    compute_features,
    decision_points,
    iter_feature_table,
)
from features.reference import reference_features
from features.spec import MIN_NONE_PER_CUSTOMER, MISSING_CODE, FeatureSpec
from features.stages import StageRules

CHANNELS = ("email", "push", "sms")
ALL_CHANNELS = ("email", "push", "sms", "web", "app", "review")
ACTIONS = {"email": "email_promo", "push": "push_reminder", "sms": "sms_offer"}


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame to the canonical event table of features/schema.py."""
    out = df.copy()
    for col in schema.EVENT_COLUMNS:
        if col not in out:
            out[col] = np.nan if col in schema.FLOAT_EVENT_COLUMNS else None
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).dt.as_unit("ns")
    for col in schema.CATEGORY_EVENT_COLUMNS:
        out[col] = out[col].astype("category")
    for col in schema.FLOAT_EVENT_COLUMNS:
        out[col] = out[col].astype("float64")
    for col in schema.STRING_EVENT_COLUMNS:
        out[col] = out[col].astype(object)
    out = out[list(schema.EVENT_COLUMNS)]
    return out.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def random_log(seed: int, n_customers: int = 12, max_events: int = 40) -> pd.DataFrame:
    """A random log with same-time ties, off-vocabulary channels and every event type."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC").value
    for c in range(n_customers):
        n = int(rng.integers(0, max_events))
        # Minutes over ~200 days, so ties and every window boundary occur.
        minutes = np.sort(rng.integers(0, 200 * 24 * 60 // 30, n)) * 30
        for m in minutes:
            typ = str(rng.choice(schema.EVENT_TYPE_ORDER, p=_TYPE_P))
            ch = str(rng.choice(ALL_CHANNELS))
            value = round(float(rng.uniform(5, 200)), 2) if typ == "purchase" else np.nan
            action = ACTIONS.get(ch) if typ in ("sent", "open", "click") else None
            ts = start + int(m) * 60 * 10**9 + int(rng.integers(0, 3)) * 500_000_000
            rows.append((f"c{c:03d}", ts, ch, typ, action, value))
    df = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "channel", "event_type", "action", "value"]
    )
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ns", utc=True)
    return canonical(df)


_TYPE_P = np.array([0.3, 0.12, 0.06, 0.25, 0.04, 0.03, 0.04, 0.03, 0.08, 0.03, 0.02])
_TYPE_P = _TYPE_P / _TYPE_P.sum()


def customers_table(n_customers: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ids = [f"c{c:03d}" for c in range(n_customers) if c != 3]  # c003 has no row
    consent_sms = pd.array(rng.random(len(ids)) < 0.6, dtype="boolean")
    consent_sms[1] = pd.NA  # missing = consent given
    return pd.DataFrame(
        {
            "customer_id": ids,
            "age": rng.integers(18, 80, len(ids)).astype(float),
            "segment": rng.choice(["gold", "silver", "bronze"], len(ids)),
            "consent_email": rng.random(len(ids)) < 0.8,
            "consent_sms": consent_sms,
        }
    )


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return random_log(1)


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return customers_table()


@pytest.fixture(scope="module")
def spec(log: pd.DataFrame, customers: pd.DataFrame) -> FeatureSpec:
    return FeatureSpec.from_data(log, customers, channels=CHANNELS)


def extra_decisions(log: pd.DataFrame) -> pd.DataFrame:
    """Decisions at event times (ties), between them, and for unknown customers."""
    rng = np.random.default_rng(3)
    pick = rng.choice(len(log), 40, replace=False)
    times = log["timestamp"].iloc[pick].reset_index(drop=True)
    shift = pd.to_timedelta(rng.integers(-3, 4, 40) * 15, unit="min")
    times = times.where(np.arange(40) % 2 == 0, times + shift)
    ids = log["customer_id"].astype(str).iloc[pick].to_numpy().copy()
    ids[:3] = ["zzz_unknown", "c003", "c011"]
    return pd.DataFrame({"customer_id": ids, "decision_time": times, "action": "email_promo"})


def assert_same(a: np.ndarray, b: np.ndarray, names: tuple[str, ...]) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for j, name in enumerate(names):
        np.testing.assert_allclose(a[:, j], b[:, j], rtol=2e-6, atol=2e-4, err_msg=name)


def test_matches_reference(log: pd.DataFrame, customers: pd.DataFrame, spec: FeatureSpec) -> None:
    decisions = pd.concat([decision_points(log, spec), extra_decisions(log)], ignore_index=True)
    got = compute_features(log, decisions, customers, spec=spec)
    want = reference_features(log, decisions, customers, spec)
    assert list(got.columns) == [*schema.DECISION_KEY_COLUMNS, *spec.feature_names]
    assert len(got) == len(decisions)
    assert_same(got[list(spec.feature_names)].to_numpy(), want.to_numpy(), spec.feature_names)


def test_matches_reference_with_other_settings(log: pd.DataFrame) -> None:
    rules = StageRules(loyalty_min_purchases=2, recent_purchase_days=10, advocacy_days=20)
    spec = FeatureSpec.from_data(
        log,
        None,
        channels=("sms", "web"),
        windows_days=(1, 14),
        sequence_length=3,
        stage_rules=rules,
    )
    decisions = decision_points(log, spec)
    got = compute_features(log, decisions, None, spec=spec)
    want = reference_features(log, decisions, None, spec)
    assert_same(got[list(spec.feature_names)].to_numpy(), want.to_numpy(), spec.feature_names)


def test_online_single_customer_equals_offline(
    log: pd.DataFrame, customers: pd.DataFrame, spec: FeatureSpec
) -> None:
    decisions = pd.concat([decision_points(log, spec), extra_decisions(log)], ignore_index=True)
    offline = compute_features(log, decisions, customers, spec=spec)
    names = list(spec.feature_names)
    for i in range(0, len(decisions), 7):
        cust = str(decisions["customer_id"].iloc[i])
        history = log[log["customer_id"].astype(str) == cust]
        one = pd.DataFrame(
            {
                "customer_id": [cust],
                "decision_time": [decisions["decision_time"].iloc[i]],
                "action": [str(decisions["action"].iloc[i])],
            }
        )
        row = customers[customers["customer_id"] == cust]
        online = compute_features(history, one, row, spec=spec)
        np.testing.assert_array_equal(
            online[names].to_numpy(), offline[names].iloc[[i]].to_numpy(), err_msg=cust
        )


def test_output_follows_decision_order(log: pd.DataFrame, spec: FeatureSpec) -> None:
    decisions = decision_points(log, spec)
    base = compute_features(log, decisions, None, spec=spec)
    perm = np.random.default_rng(0).permutation(len(decisions))
    shuffled = decisions.iloc[perm].reset_index(drop=True)
    got = compute_features(log, shuffled, None, spec=spec)
    expected = base.iloc[perm].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_event_row_order_does_not_matter(log: pd.DataFrame, spec: FeatureSpec) -> None:
    table = build_feature_table(log, None, spec)
    shuffled = log.sample(frac=1.0, random_state=5).reset_index(drop=True)
    pd.testing.assert_frame_equal(build_feature_table(shuffled, None, spec), table)
    # Plain strings instead of categories: same values.
    plain = shuffled.astype({c: str for c in ("customer_id", "channel", "event_type")})
    again = build_feature_table(plain, None, spec)
    np.testing.assert_array_equal(
        again[list(spec.feature_names)].to_numpy(), table[list(spec.feature_names)].to_numpy()
    )


def test_decision_points_properties(log: pd.DataFrame, spec: FeatureSpec) -> None:
    dp = decision_points(log, spec)
    assert list(dp.columns) == list(schema.DECISION_KEY_COLUMNS)
    assert str(dp["decision_time"].dtype) == "datetime64[ns, UTC]"
    sends = log[log["event_type"] == "sent"]
    is_none = dp["action"] == schema.NO_ACTION
    assert (~is_none).sum() == len(sends)
    assert is_none.sum() == round(spec.none_per_send * len(sends))
    got_sends = dp[~is_none].astype({"customer_id": str, "action": str})
    want = sends[["customer_id", "timestamp", "action"]].astype({"customer_id": str, "action": str})
    want = want.rename(columns={"timestamp": "decision_time"})
    key = ["customer_id", "decision_time", "action"]
    pd.testing.assert_frame_equal(
        got_sends.sort_values(key).reset_index(drop=True)[key],
        want.sort_values(key).reset_index(drop=True)[key],
        check_categorical=False,
    )
    nones = dp[is_none]
    first = log.groupby("customer_id", observed=True)["timestamp"].min()
    end = log["timestamp"].max()
    assert (nones["decision_time"].to_numpy() >= first[nones["customer_id"]].to_numpy()).all()
    assert (nones["decision_time"] <= end).all()
    send_keys = set(zip(sends["customer_id"].astype(str), sends["timestamp"], strict=True))
    none_keys = set(zip(nones["customer_id"].astype(str), nones["decision_time"], strict=True))
    assert not send_keys & none_keys
    # No "no action" moment after the customer's explicit churn event.
    churned_at = (
        log[log["event_type"] == "churn"].groupby("customer_id", observed=True)["timestamp"].min()
    )
    stop = churned_at.reindex(nones["customer_id"].astype(str)).to_numpy()
    has_stop = ~pd.isna(stop)
    assert (nones["decision_time"].to_numpy()[has_stop] <= stop[has_stop]).all()
    # At least the floor (default MIN_NONE_PER_CUSTOMER) for every customer with a positive
    # span, when affordable.
    assert spec.min_none_per_customer == MIN_NONE_PER_CUSTOMER
    stop_all = churned_at.reindex(first.index).fillna(end)
    span = (stop_all - first).astype("timedelta64[ns]")
    eligible = span[span > pd.Timedelta(0)].index.astype(str)
    if is_none.sum() >= MIN_NONE_PER_CUSTOMER * len(eligible):
        per = nones["customer_id"].astype(str).value_counts()
        assert (per.reindex(eligible, fill_value=0) >= MIN_NONE_PER_CUSTOMER).all()
    # Sorted by customer, then time.
    order = dp.assign(c=dp["customer_id"].astype(str)).sort_values(
        ["c", "decision_time"], kind="stable"
    )
    assert (order.index == dp.index).all()


def test_decision_points_deterministic_and_seeded(log: pd.DataFrame, spec: FeatureSpec) -> None:
    a = decision_points(log, spec)
    b = decision_points(log.sample(frac=1.0, random_state=1).reset_index(drop=True), spec)
    pd.testing.assert_frame_equal(a, b)
    c = decision_points(log, spec.with_overrides(seed=spec.seed + 1))
    assert not a["decision_time"].equals(c["decision_time"])
    half = decision_points(log, spec.with_overrides(none_per_send=0.5))
    n_sends = int((log["event_type"] == "sent").sum())
    assert (half["action"] == schema.NO_ACTION).sum() == round(0.5 * n_sends)
    end = log["timestamp"].max() + pd.Timedelta(days=30)
    later = decision_points(log, spec, end=end)
    assert later.loc[later["action"] == schema.NO_ACTION, "decision_time"].max() <= end


def _short_and_long_lived_log(n_each: int = 200) -> pd.DataFrame:
    """Customers in the log for 300 days, and customers who churn explicitly on day 10;
    every customer is sent a message every 5 days until it leaves."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for c in range(2 * n_each):
        days = 10 if c < n_each else 300
        cid = f"c{c:04d}"
        rows += [(cid, start + pd.Timedelta(days=d, hours=9), "email", "sent", "email_promo")
                 for d in range(0, days, 5)]  # fmt: skip
        if days == 10:
            rows.append((cid, start + pd.Timedelta(days=10), "web", "churn", None))
        else:
            rows.append((cid, start + pd.Timedelta(days=300), "web", "visit", None))
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "channel", "event_type", "action"])
    return canonical(df)


def test_none_floor_oversamples_short_lived_customers() -> None:
    """With the per-customer floor, customers who leave early (the churners) get more
    "no action" moments per day in the log than the others, so the "no action" rows
    over-represent churners; without it both get the same density, as the sends do."""
    log = _short_and_long_lived_log()
    base = FeatureSpec.from_data(log, None, channels=CHANNELS)
    per_day = {}
    for floor in (MIN_NONE_PER_CUSTOMER, 0):
        dp = decision_points(log, base.with_overrides(min_none_per_customer=floor))
        none = dp[dp["action"] == schema.NO_ACTION]
        short = none["customer_id"].astype(str).str[1:].astype(int) < 200
        per_day[floor] = (short.sum() / (200 * 10), (~short).sum() / (200 * 300))
    sends_per_day = 1 / 5  # the same for both groups
    short_d, long_d = per_day[MIN_NONE_PER_CUSTOMER]
    assert short_d > 1.5 * long_d  # 2 of the ~3.9 per short-lived customer are the floor
    short_d, long_d = per_day[0]
    assert abs(short_d / long_d - 1) < 0.15  # 2,000 customer-days: a few % noise
    assert abs(long_d / sends_per_day - 1) < 0.05


def test_spec_min_none_per_customer_is_checked_and_kept(spec: FeatureSpec) -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="min_none_per_customer"):
            spec.with_overrides(min_none_per_customer=bad)
    zero = spec.with_overrides(min_none_per_customer=0)
    assert FeatureSpec.from_dict(json.loads(json.dumps(zero.to_dict()))) == zero
    # A spec written before the setting existed reads with the default.
    old = {k: v for k, v in spec.to_dict().items() if k != "min_none_per_customer"}
    assert FeatureSpec.from_dict(old).min_none_per_customer == MIN_NONE_PER_CUSTOMER


def test_spec_round_trip(spec: FeatureSpec) -> None:
    payload = json.loads(json.dumps(spec.to_dict()))
    again = FeatureSpec.from_dict(payload)
    assert again == spec
    assert again.feature_names == spec.feature_names
    with pytest.raises(ValueError, match="bogus"):
        FeatureSpec.from_dict({**payload, "bogus": 1})
    custom = FeatureSpec.from_dict(
        {**payload, "stage_rules": {"loyalty_min_purchases": 5, "consideration_types": ["visit"]}}
    )
    assert custom.stage_rules.loyalty_min_purchases == 5
    assert custom.stage_rules.consideration_types == ("visit",)
    with pytest.raises(ValueError, match="loyalty_min_purchase"):
        FeatureSpec.from_dict({**payload, "stage_rules": {"loyalty_min_purchase": 5}})


def test_spec_learns_vocabularies(spec: FeatureSpec, log: pd.DataFrame) -> None:
    assert spec.channels == CHANNELS
    assert spec.static_numeric == ("age",)
    assert spec.static_categorical == {"segment": ("bronze", "gold", "silver")}
    assert spec.consent_channels == CHANNELS
    tokens = set(log["channel"].astype(str) + ":" + log["event_type"].astype(str))
    assert set(spec.token_vocabulary) == tokens
    assert spec.token_code("nope", "sent") == spec.other_token_code
    assert spec.token_code(*spec.token_vocabulary[0].split(":")) == 1
    assert 60 <= spec.n_features <= 120


def test_unseen_category_and_unknown_customer(log: pd.DataFrame, spec: FeatureSpec) -> None:
    cust = pd.DataFrame(
        {
            "customer_id": ["c000", "c001"],
            "age": [30.0, np.nan],
            "segment": ["platinum", None],
            "consent_email": [False, True],
        }
    )
    decisions = pd.DataFrame(
        {
            "customer_id": ["c000", "c001", "c002", "nobody"],
            "decision_time": pd.to_datetime(["2024-06-01"] * 4, utc=True),
            "action": ["none"] * 4,
        }
    )
    out = compute_features(log, decisions, cust, spec=spec)
    assert (out["attr_segment"] == MISSING_CODE).all()
    assert out["attr_age"].iloc[0] == 30.0 and out["attr_age"].iloc[1:].isna().all()
    assert out["consent_email"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert out["consent_sms"].tolist() == [1.0] * 4  # no consent_sms column: given
    assert out["can_contact_email"].iloc[0] == 0.0
    nobody = out.iloc[3]
    assert nobody["journey_stage"] == 0 and np.isnan(nobody["days_since_last_event"])
    assert nobody["n_sent_total"] == 0 and nobody["seq_token_1"] == 0


def test_unsubscribe_blocks_contact(spec: FeatureSpec) -> None:
    events = canonical(
        pd.DataFrame(
            {
                "customer_id": ["a", "a"],
                "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"],
                "channel": ["sms", "sms"],
                "event_type": ["sent", "unsubscribe"],
                "action": ["sms_offer", None],
            }
        )
    )
    decisions = pd.DataFrame(
        {
            "customer_id": ["a", "a"],
            "decision_time": pd.to_datetime(
                ["2024-01-02T00:00:00Z", "2024-01-02T00:00:00.000000001Z"],
                utc=True,
                format="ISO8601",
            ),
        }
    )
    out = compute_features(events, decisions, None, spec=spec)
    # The unsubscribe AT the decision time is not visible; one nanosecond later it is.
    assert out["ch_sms_unsubscribed"].tolist() == [0.0, 1.0]
    assert out["can_contact_sms"].tolist() == [1.0, 0.0]
    assert out["consent_sms"].tolist() == [1.0, 1.0]


def test_numpy_entry_point(log: pd.DataFrame, spec: FeatureSpec) -> None:
    ev = prepare_events(log, spec)
    codes = np.array([0, 1, ev.n_customers], dtype=np.int64)
    times = np.full(3, pd.Timestamp("2024-05-01", tz="UTC").value, dtype=np.int64)
    mat = compute_feature_matrix(ev, codes, times, spec, dtype=np.float64)
    assert mat.shape == (3, spec.n_features) and mat.dtype == np.float64
    decisions = pd.DataFrame(
        {
            "customer_id": list(ev.customer_ids[:2]) + ["unknown"],
            "decision_time": pd.to_datetime(times, unit="ns", utc=True),
        }
    )
    frame = compute_features(log, decisions, None, spec=spec)
    np.testing.assert_allclose(frame[list(spec.feature_names)].to_numpy(), mat, rtol=1e-6)


def test_empty_inputs(spec: FeatureSpec, log: pd.DataFrame) -> None:
    empty_events = log.iloc[:0]
    assert len(decision_points(empty_events, spec)) == 0
    decisions = pd.DataFrame(
        {"customer_id": ["a"], "decision_time": pd.to_datetime(["2024-01-01"], utc=True)}
    )
    out = compute_features(empty_events, decisions, None, spec=spec)
    assert out["journey_stage"].iloc[0] == 0
    none = compute_features(log, decisions.iloc[:0], None, spec=spec)
    assert len(none) == 0 and list(none.columns)[2:] == list(spec.feature_names)


def test_batches_equal_the_whole_table(log: pd.DataFrame, spec: FeatureSpec) -> None:
    whole = build_feature_table(log, None, spec)
    parts = list(iter_feature_table(log, None, spec, batch_rows=17))
    assert len(parts) == -(-len(whole) // 17)
    pd.testing.assert_frame_equal(pd.concat(parts), whole)


def test_coarse_lookup_keys_stay_exact(
    log: pd.DataFrame, spec: FeatureSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Huge logs quantize the composite search key; the result must not change."""
    decisions = pd.concat([decision_points(log, spec), extra_decisions(log)], ignore_index=True)
    exact = compute_features(log, decisions, None, spec=spec)
    monkeypatch.setattr(counters, "KEY_BUDGET", 2**24)  # forces a unit of ~10 s
    ev = prepare_events(log, spec)
    assert ev._key_parts[2] > 10**9
    coarse = compute_features(log, decisions, None, spec=spec)
    pd.testing.assert_frame_equal(coarse, exact)
