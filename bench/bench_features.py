"""Benchmark of the feature pipeline on synthetic canonical event logs.

Usage::

    python bench/bench_features.py --events 1000000 10000000

Each size runs in a fresh subprocess so that its peak RSS is its own.  For each size the
child generates a log in-process (~100 events per customer, the 12 known channels, every
event type), then times ``build_feature_table`` (decision points + features), the naive
per-customer reference (:mod:`features.reference`) on a sample of customers, and the
online path (one customer's ~100 events, a 1-row decision frame).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import reset_peak, status_mb  # noqa: E402
from features import schema  # noqa: E402
from features.counters import prepare_events  # noqa: E402
from features.pipeline import (  # noqa: E402
    build_feature_table,
    compute_feature_matrix,
    compute_features,
    encode_customers,
    iter_feature_table,
)
from features.reference import reference_features  # noqa: E402
from features.spec import FeatureSpec  # noqa: E402

#: The default catalog's channels (features/default_catalog.yaml).
CATALOG_CHANNELS = (
    "ads", "chat", "direct_mail", "email", "phone", "push", "sms", "social", "store",
)  # fmt: skip
OUTBOUND_CHANNELS = CATALOG_CHANNELS
TYPE_MIX = {
    "sent": 0.35, "open": 0.15, "click": 0.05, "visit": 0.35, "purchase": 0.03,
    "support": 0.03, "feedback": 0.015, "review": 0.01, "referral": 0.008,
    "unsubscribe": 0.005, "churn": 0.002,
}  # fmt: skip


def synthetic_log(
    n_events: int, seed: int = 0, sent_share: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A canonical event table of ``n_events`` rows and its customers table.

    ``sent_share`` replaces the share of ``sent`` events (the rest of the mix is rescaled):
    the number of decision points per event, and so the work per event, follows it.
    """
    rng = np.random.default_rng(seed)
    n_cust = max(1, n_events // 100)
    weights = rng.gamma(4.0, 1.0, n_cust)
    counts = rng.multinomial(n_events, weights / weights.sum())
    cust = np.repeat(np.arange(n_cust), counts)
    day = 86_400 * 10**9
    t0 = pd.Timestamp("2024-01-01", tz="UTC").value
    first = t0 + (rng.random(n_cust) * 300 * day).astype(np.int64)
    span = t0 + 365 * day - first
    ts = first[cust] + (rng.random(n_events) * span[cust]).astype(np.int64)
    order = np.lexsort((ts, cust))
    cust, ts = cust[order], ts[order]

    types = list(schema.EVENT_TYPE_ORDER)
    mix = dict(TYPE_MIX)
    if sent_share is not None:
        rest = 1.0 - TYPE_MIX["sent"]
        mix = {
            t: (sent_share if t == "sent" else p * (1 - sent_share) / rest) for t, p in mix.items()
        }
    probs = np.array([mix[t] for t in types])
    etype = rng.choice(len(types), n_events, p=probs / probs.sum())
    channels = list(schema.KNOWN_CHANNELS)
    ch_index = {c: i for i, c in enumerate(channels)}
    chan = rng.integers(0, len(channels), n_events)  # "other inbound": any channel
    outbound = np.isin(etype, [types.index(t) for t in ("sent", "open", "click")])
    out_codes = np.array([ch_index[c] for c in OUTBOUND_CHANNELS])
    out_p = np.array([0.35, 0.03, 0.03, 0.2, 0.02, 0.15, 0.12, 0.05, 0.05])
    chan[outbound] = rng.choice(out_codes, outbound.sum(), p=out_p / out_p.sum())
    visit = etype == types.index("visit")
    chan[visit] = rng.choice([ch_index["web"], ch_index["app"]], visit.sum())
    purchase = etype == types.index("purchase")
    chan[purchase] = rng.choice(
        [ch_index["web"], ch_index["app"], ch_index["store"]], purchase.sum()
    )
    chan[etype == types.index("review")] = ch_index["review"]

    actions = [f"{c}_offer" for c in OUTBOUND_CHANNELS]
    act_of_channel = np.full(len(channels), -1)
    act_of_channel[out_codes] = np.arange(len(out_codes))
    action = np.where(outbound, act_of_channel[chan], -1)
    value = np.where(purchase, np.round(rng.lognormal(3.5, 0.8, n_events), 2), np.nan)
    ids = pd.Index([f"cust{i:08d}" for i in range(n_cust)])
    events = pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(cust, categories=ids),
            "timestamp": pd.to_datetime(ts, unit="ns", utc=True),
            "channel": pd.Categorical.from_codes(chan, categories=channels),
            "event_type": pd.Categorical.from_codes(etype, categories=types),
            "action": pd.Categorical.from_codes(action, categories=actions),
            "value": value,
            "propensity": np.where(outbound & (etype == 0), 0.1, np.nan),
            "event_id": None,
            "decision_id": None,
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "age": rng.integers(18, 80, n_cust).astype(float),
            "segment": rng.choice(["bronze", "silver", "gold"], n_cust),
            "consent_email": rng.random(n_cust) < 0.9,
            "consent_sms": rng.random(n_cust) < 0.6,
        }
    )
    return events, customers


def run_child(
    n_events: int, naive_customers: int, sent_share: float | None, none_per_send: float
) -> dict[str, Any]:
    events, customers = synthetic_log(n_events, sent_share=sent_share)
    spec = FeatureSpec.from_data(
        events, customers, channels=CATALOG_CHANNELS, none_per_send=none_per_send
    )
    res: dict[str, Any] = {"events": n_events, "features": spec.n_features}
    res["input_mb"] = round(status_mb("VmRSS"), 1)
    res["load_avg_1m"] = os.getloadavg()[0]

    # Streaming: batches of 500k decision points, each dropped after use (the way a
    # Parquet writer consumes them): peak memory is bounded by the batch.
    reset = reset_peak()
    start = time.perf_counter()
    rows = sum(len(b) for b in iter_feature_table(events, customers, spec, batch_rows=500_000))
    res["stream_seconds"] = round(time.perf_counter() - start, 3)
    res["stream_peak_rss_mb"] = round(status_mb("VmHWM"), 1) if reset else None

    reset = reset_peak()
    cpu0 = time.process_time()
    start = time.perf_counter()
    table = build_feature_table(events, customers, spec)
    res["seconds"] = round(time.perf_counter() - start, 3)
    res["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    res["peak_rss_mb"] = round(status_mb("VmHWM"), 1) if reset else None
    assert rows == len(table)
    res["decision_points"] = len(table)
    res["events_per_s"] = round(n_events / res["seconds"])
    res["events_per_cpu_s"] = round(n_events / res["cpu_seconds"])
    res["output_mb"] = round(table.memory_usage(deep=False).sum() / 2**20, 1)

    # The naive per-customer loop on a sample of customers.
    rng = np.random.default_rng(1)
    ids = events["customer_id"].cat.categories
    sample = set(rng.choice(ids, min(naive_customers, len(ids)), replace=False))
    ev_s = events[events["customer_id"].isin(sample)]
    dec_s = table.loc[table["customer_id"].isin(sample), list(schema.DECISION_KEY_COLUMNS)]
    start = time.perf_counter()
    ref = reference_features(ev_s, dec_s, customers, spec)
    naive_s = time.perf_counter() - start
    res["naive_events_per_s"] = round(len(ev_s) / naive_s)
    res["speedup_vs_naive"] = round(res["events_per_s"] / res["naive_events_per_s"], 1)
    got = table.loc[dec_s.index, list(spec.feature_names)].to_numpy(np.float64)
    res["naive_max_abs_diff"] = float(np.nanmax(np.abs(got - ref.to_numpy())) if len(ref) else 0.0)
    del table

    # Online: one customer with ~100 events, 1-row decisions, fresh small frames.
    sizes = events["customer_id"].value_counts()
    cust = str(sizes.index[np.argmin(np.abs(sizes.to_numpy() - 100))])
    hist = events[events["customer_id"] == cust].copy()
    hist["customer_id"] = hist["customer_id"].astype(str).astype("category")
    one = pd.DataFrame(
        {
            "customer_id": [cust],
            "decision_time": [hist["timestamp"].max() + pd.Timedelta(hours=1)],
            "action": ["none"],
        }
    )
    row = customers[customers["customer_id"] == cust]
    lat = []
    for _ in range(300):
        t = time.perf_counter()
        compute_features(hist, one, row, spec=spec)
        lat.append(time.perf_counter() - t)
    res["online_events"] = len(hist)
    res["online_p50_ms"] = round(float(np.median(lat[50:])) * 1e3, 3)
    res["online_p99_ms"] = round(float(np.percentile(lat[50:], 99)) * 1e3, 3)
    ev = prepare_events(hist, spec)
    consent, static = encode_customers(row, one["customer_id"], spec)
    codes = np.zeros(1, dtype=np.int64)
    times = np.array([one["decision_time"].iloc[0].value], dtype=np.int64)
    lat = []
    for _ in range(300):
        t = time.perf_counter()
        compute_feature_matrix(ev, codes, times, spec, consent=consent, static=static)
        lat.append(time.perf_counter() - t)
    res["matrix_p50_ms"] = round(float(np.median(lat[50:])) * 1e3, 3)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--naive-customers", type=int, default=100)
    parser.add_argument(
        "--sent-share",
        type=float,
        help="share of sends in the log (default 0.35); 0.10 with --none-per-send 0.5 gives "
        "MEASURED.md's 0.15 decision points per event",
    )
    parser.add_argument("--none-per-send", type=float, default=1.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        res = run_child(args.child, args.naive_customers, args.sent_share, args.none_per_send)
        print(json.dumps(res))
        return 0
    results = []
    for n in args.events:
        cmd = [sys.executable, __file__, "--child", str(n)]
        cmd += ["--naive-customers", str(args.naive_customers)]
        cmd += ["--none-per-send", str(args.none_per_send)]
        if args.sent_share is not None:
            cmd += ["--sent-share", str(args.sent_share)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    cols = [
        ("events", "events"), ("decision_points", "decisions"), ("features", "features"),
        ("seconds", "seconds"), ("events_per_s", "events/s"), ("cpu_seconds", "cpu s"),
        ("events_per_cpu_s", "events/cpu-s"), ("peak_rss_mb", "peak MB"),
        ("input_mb", "input MB"), ("output_mb", "output MB"),
        ("stream_peak_rss_mb", "stream peak MB"), ("stream_seconds", "stream s"),
        ("speedup_vs_naive", "x naive"), ("online_p50_ms", "online p50 ms"),
        ("online_p99_ms", "online p99 ms"), ("matrix_p50_ms", "matrix p50 ms"),
        ("load_avg_1m", "load"),
    ]  # fmt: skip
    print()
    print(" | ".join(h for _, h in cols))
    for res in results:
        print(" | ".join(str(res.get(k)) for k, _ in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
