"""Where one recommendation spends its time: the request path, stage by stage, in process.

Usage::

    python bench/bench_request_stages.py --model BUNDLE --store STORE.db \\
        [--as-of 2026-10-28T12:00:00Z] [--requests 2000] [--seed 0]

``STORE.db`` is a history store built by ``bench/bench_serving.py`` (or by
``touchpoint serve --events``).  For a random sample of the store's customers, each stage
of :meth:`serving.app.Service.decide` is run and timed on its own, in the order the
service runs them:

- ``history``: the store query (events strictly before ``as_of``, four columns);
- ``customer``: the customer's stored attributes;
- ``features``: the feature row (``serving.online_features.request_features``);
- ``score + policy``: both outcome models, then contact rules, expected values, ranking,
  the exploration distribution and the draw (``DecisionEngine.decide_row``);
- ``reasons``: SHAP reasons of the three returned actions (``serving.reasons.explain``);
- ``log``: appending the decision to the SQLite decision log;
- ``json``: serializing the response body.

``decide + log`` then times the whole thing as the service calls it, which also covers
the glue between stages.  HTTP (uvicorn, FastAPI's body parsing) comes on top: see
``bench/bench_serving.py`` for the end-to-end figures.  Medians and p99 in µs; the first
10% of requests are a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store_sample import sample_customers, store_service  # noqa: E402
from serving.app import load_model  # noqa: E402
from serving.online_features import request_features  # noqa: E402
from serving.reasons import explain  # noqa: E402
from serving.schemas import RecommendationRequest  # noqa: E402

STAGES = ("history", "customer", "features", "score + policy", "reasons", "log", "json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model bundle folder")
    parser.add_argument("--store", required=True, help="SQLite history store (built already)")
    parser.add_argument(
        "--as-of", default=None, help="decision time (default: noon the day after the last event)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="decisions to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    service = store_service(args.model, args.store, args.seed)
    model = load_model(args.model)
    service.set_model(model)
    try:
        drawn = sample_customers(service, args.requests, args.seed, args.as_of)
    except ValueError as exc:
        parser.error(str(exc))
    as_of, as_of_ns, sample = drawn.as_of, drawn.as_of_ns, drawn.ids
    rng = np.random.default_rng(args.seed)
    print(
        f"{drawn.n_customers:,} customers in the store; {args.requests} decisions at {as_of.isoformat()}; "
        f"model {model.version} ({model.bundle.conversion.formulation})",
        file=sys.stderr,
    )

    bundle, engine = model.bundle, model.engine
    times = {name: np.zeros(len(sample)) for name in (*STAGES, "decide + log")}
    n_events = np.zeros(len(sample), dtype=np.int64)
    for i, cid in enumerate(sample):
        t0 = time.perf_counter()
        history = service._stored_history(cid, as_of_ns)
        t1 = time.perf_counter()
        attributes = service.store.customer(cid)
        t2 = time.perf_counter()
        X = request_features(bundle.spec, history, attributes, cid, as_of_ns)
        t3 = time.perf_counter()
        row = engine.decide_row(X[0], as_of_ns, float(rng.random()))
        ranked = row.ranked
        top = [row.chosen] + [a for a in ranked if a != row.chosen][:2]
        t5 = time.perf_counter()
        explain(
            bundle,
            row.model_row,
            top,
            p_conversion=row.p_conversion[top],
            p_churn=row.p_churn[top],
            versus=next((a for a in ranked if a != 0), None),
        )
        t6 = time.perf_counter()
        request = RecommendationRequest(customer_id=cid, as_of=as_of.to_pydatetime())
        t7 = time.perf_counter()
        body, record = service.decide(request, model, ["body"])
        t8 = time.perf_counter()
        service.decision_log.append([record])
        t9 = time.perf_counter()
        orjson.dumps(body)
        t10 = time.perf_counter()
        n_events[i] = len(history)
        for name, seconds in zip(
            STAGES,
            (t1 - t0, t2 - t1, t3 - t2, t5 - t3, t6 - t5, t9 - t8, t10 - t9),
            strict=True,
        ):
            times[name][i] = seconds
        times["decide + log"][i] = t9 - t7
    service.close()

    keep = slice(len(sample) // 10, None)
    total = float(np.median(times["decide + log"][keep]))
    print(
        f"\nevents per customer before as_of: median {int(np.median(n_events))}, "
        f"max {int(n_events.max())}\n"
    )
    print("| stage | p50 µs | p99 µs | share of decide + log (p50) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        v = values[keep] * 1e6
        share = "" if name == "decide + log" else f"{np.median(values[keep]) / total:.0%}"
        print(f"| {name} | {np.median(v):,.0f} | {np.percentile(v, 99):,.0f} | {share} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
