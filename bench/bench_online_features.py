"""The request path's feature row, old numpy path vs the numba kernel, side by side.

Usage::

    python bench/bench_online_features.py [--store /tmp/tpb/bench-store.db]
        [--model BUNDLE] [--as-of 2026-06-30T12:00:00Z] [--requests 2000] [--seed 0]

For a random sample of the store's customers, the history is read once the way the
service reads it (:meth:`serving.app.Service._stored_history`, events strictly before
``as_of``) together with the stored attributes.  Then, per customer and interleaved (so
that both paths see the same machine load), the row is computed by

- ``old``: ``customer_event_arrays`` + ``compute_feature_matrix`` (the former
  ``request_features``, kept as :func:`features.online_kernel.offline_row`);
- ``new``: :func:`serving.online_features.request_features` (the numba kernel).

Both include ``encode_customer_record``.  Every pair of rows is checked bit for bit.
Prints medians and p99 in µs per row; the first 10 % of requests are a warm-up.  Also
prints the kernel's warm-up time (compile on a cold numba cache, load on a warm one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store_sample import sample_customers, store_service  # noqa: E402
from features.online_kernel import offline_row, warm_up  # noqa: E402
from features.pipeline import encode_customer_record  # noqa: E402
from serving.app import load_model  # noqa: E402
from serving.bundle import load_bundle  # noqa: E402
from serving.online_features import request_features  # noqa: E402

DEFAULT_STORE = "/tmp/tpb/bench-store.db"
DEFAULT_MODEL = "/tmp/tpb/models/touchpoint-bcafaa1cb266"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=DEFAULT_STORE, help="SQLite history store")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model bundle folder (its spec)")
    parser.add_argument(
        "--as-of", default=None, help="decision time (default: noon the day after the last event)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="customers to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    t0 = time.perf_counter()
    spec = load_bundle(args.model).spec
    # Before load_model (which calls request_features): the process's first kernel call.
    first = warm_up(spec)
    print(f"warm_up (first call in this process): {first * 1e3:,.1f} ms; import + load "
          f"{(time.perf_counter() - t0):.2f} s")  # fmt: skip

    service = store_service(args.model, args.store, args.seed)
    service.set_model(load_model(args.model))
    try:
        drawn = sample_customers(service, args.requests, args.seed, args.as_of)
    except ValueError as exc:
        parser.error(str(exc))
    as_of, as_of_ns, sample = drawn.as_of, drawn.as_of_ns, drawn.ids
    requests = [
        (cid, service._stored_history(cid, as_of_ns), service.store.customer(cid)) for cid in sample
    ]
    service.close()
    print(
        f"{drawn.n_customers:,} customers in the store; {args.requests} customers sampled; as_of "
        f"{as_of.isoformat()}; {spec.n_features} features"
    )

    old_s = np.zeros(len(requests))
    new_s = np.zeros(len(requests))
    n_events = np.zeros(len(requests), dtype=np.int64)
    mismatches = 0
    for i, (cid, history, attributes) in enumerate(requests):
        t1 = time.perf_counter()
        consent, static = encode_customer_record(attributes, spec)
        old = offline_row(
            spec,
            history.time,
            history.channel,
            history.event_type,
            history.value,
            as_of_ns,
            consent,
            static,
        )
        t2 = time.perf_counter()
        new = request_features(spec, history, attributes, cid, as_of_ns)
        t3 = time.perf_counter()
        old_s[i], new_s[i], n_events[i] = t2 - t1, t3 - t2, len(history)
        mismatches += not np.array_equal(old.view(np.uint64), new.view(np.uint64))

    keep = slice(len(requests) // 10, None)
    print(
        f"events per customer before as_of: median {int(np.median(n_events))}, "
        f"max {int(n_events.max())}; rows not bit-identical: {mismatches}\n"
    )
    print("| path | p50 µs/row | p99 µs/row |")
    print("|---|---|---|")
    for name, values in (("old (numpy core)", old_s), ("new (numba kernel)", new_s)):
        v = values[keep] * 1e6
        print(f"| {name} | {np.median(v):,.1f} | {np.percentile(v, 99):,.1f} |")
    ratio = np.median(old_s[keep]) / np.median(new_s[keep])
    print(f"\nspeed-up (p50): {ratio:.1f}x")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
