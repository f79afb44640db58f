"""Where one recommendation spends its time: the request path, stage by stage, in process.

Usage::

    python bench/bench_request_stages.py --model BUNDLE --store STORE.db \\
        [--as-of 2026-10-28T12:00:00Z] [--requests 2000] [--seed 0] [--inline]

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

``--inline`` sends each sampled customer's store history (the ``history_days`` window the
store path reads) as inline ``events`` instead, the JSON a client would send, and times
every stage twice per request, side by side: ``old``, the inline rows through
``normalize_events`` (pandas), and ``new``, ``serving.inline_events.inline_history``.
``body`` is pydantic reading the JSON body (as ``serving/fast_path.py`` does) and
``history`` the inline rows to ``EventColumns``; ``decide + log`` is the service's own
path with the one or the other.  Each path runs blocks of requests in a row (as a server
would), the blocks alternating.  The two histories of every request are also compared
(they must be equal), and the requests the new path hands to pandas are counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import serving.app as serving_app  # noqa: E402
from bench.store_sample import StoreSample, sample_customers, store_service  # noqa: E402
from features.counters import NS_PER_DAY, to_ns  # noqa: E402
from serving.app import LoadedModel, Service, load_model  # noqa: E402
from serving.bundle import Bundle  # noqa: E402
from serving.engine import RowDecision  # noqa: E402
from serving.inline_events import (  # noqa: E402
    fast_inline_history,
    inline_history,
    pandas_inline_history,
)
from serving.online_features import request_features  # noqa: E402
from serving.reasons import explain  # noqa: E402
from serving.schemas import EventIn, RecommendationRequest  # noqa: E402
from serving.store import EventColumns  # noqa: E402

STAGES = ("history", "customer", "features", "score + policy", "reasons", "log", "json")
INLINE_STAGES = ("body", *STAGES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model bundle folder")
    parser.add_argument("--store", required=True, help="SQLite history store (built already)")
    parser.add_argument(
        "--as-of", default=None, help="decision time (default: noon the day after the last event)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="decisions to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inline",
        action="store_true",
        help="send the store history inline; time the pandas and the new path side by side",
    )
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

    if args.inline:
        try:
            return _inline(service, model, drawn, args.seed)
        finally:
            service.close()

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
        t5 = time.perf_counter()
        _explain_top(bundle, row)
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


def _explain_top(bundle: Bundle, row: RowDecision) -> None:
    """The reasons stage as ``Service.decide`` runs it: the chosen action and the next two."""
    ranked = row.ranked
    top = [row.chosen] + [a for a in ranked if a != row.chosen][:2]
    explain(
        bundle,
        row.model_row,
        top,
        p_conversion=row.p_conversion[top],
        p_churn=row.p_churn[top],
        versus=next((a for a in ranked if a != 0), None),
        engagement=row.engagement,  # as serving.app hands it over
    )


# ---------------------------------------------------------------------------- --inline
def _old_history(
    events: Sequence[EventIn], customer_id: str, as_of_ns: int, loc: Sequence[str | int]
) -> EventColumns:
    """The request path before serving/inline_events.py: normalize_events on a frame."""
    return pandas_inline_history(events, as_of_ns, loc)


PATHS = {"old": _old_history, "new": inline_history}


def _inline_body(service: Service, cid: str, as_of_ns: int, as_of: str) -> bytes:
    """The JSON body of a request that carries the customer's store history inline."""
    days = service.settings.history_days
    since = as_of_ns - days * NS_PER_DAY if days else None
    store = service.store
    frame = store.history(  # type: ignore[attr-defined]
        cid,
        pd.Timestamp(as_of_ns, unit="ns", tz="UTC"),
        None if since is None else pd.Timestamp(since, unit="ns", tz="UTC"),
    )
    events = []
    for row, ts in zip(frame.itertuples(index=False), to_ns(frame["timestamp"]), strict=True):
        e: dict[str, object] = {
            "customer_id": row.customer_id,
            # isoformat(): "+00:00", and a fraction only when there is one, as a Python
            # client would write it
            "timestamp": pd.Timestamp(int(ts), unit="ns", tz="UTC").isoformat(),
            "channel": row.channel,
            "event_type": row.event_type,
        }
        for name in ("action", "event_id", "decision_id"):
            if getattr(row, name) is not None:
                e[name] = getattr(row, name)
        for name in ("value", "propensity"):
            if not np.isnan(getattr(row, name)):
                e[name] = float(getattr(row, name))
        events.append(e)
    return orjson.dumps({"customer_id": cid, "as_of": as_of, "events": events})


def _same(a: EventColumns, b: EventColumns) -> bool:
    return (
        a.time.dtype == b.time.dtype
        and np.array_equal(a.time, b.time)
        and list(a.channel) == list(b.channel)
        and list(a.event_type) == list(b.event_type)
        and a.value.dtype == b.value.dtype
        and np.array_equal(a.value, b.value, equal_nan=True)
    )


#: Requests per block: each path runs a block of requests in a row, as a server running
#: only that path would (interleaving them per request would charge the new path for the
#: caches pandas just trashed: ~2x its time), and the blocks alternate, so that a change
#: of machine load hits both paths alike.
BLOCK = 25


def _inline(service: Service, model: LoadedModel, drawn: StoreSample, seed: int) -> int:
    bundle, engine = model.bundle, model.engine
    as_of_ns, sample = drawn.as_of_ns, drawn.ids
    n = len(sample)
    bodies = [_inline_body(service, cid, as_of_ns, drawn.as_of.isoformat()) for cid in sample]
    rng = np.random.default_rng(seed)
    times = {
        version: {name: np.zeros(n) for name in (*INLINE_STAGES, "decide + log")}
        for version in PATHS
    }
    histories: dict[str, list[EventColumns]] = {version: [] for version in PATHS}
    real_inline_history = serving_app.inline_history
    try:
        for lo in range(0, n, BLOCK):
            for version in ("old", "new") if (lo // BLOCK) % 2 == 0 else ("new", "old"):
                history_of = PATHS[version]
                serving_app.inline_history = history_of  # what Service._inline_history calls
                for i in range(lo, min(lo + BLOCK, n)):
                    cid = sample[i]
                    t0 = time.perf_counter()
                    request = RecommendationRequest.model_validate(orjson.loads(bodies[i]))
                    t1 = time.perf_counter()
                    history = history_of(request.events or [], cid, as_of_ns, ["body"])
                    t2 = time.perf_counter()
                    attributes = service.store.customer(cid)
                    t3 = time.perf_counter()
                    X = request_features(bundle.spec, history, attributes, cid, as_of_ns)
                    t4 = time.perf_counter()
                    row = engine.decide_row(X[0], as_of_ns, float(rng.random()))
                    t5 = time.perf_counter()
                    _explain_top(bundle, row)
                    t6 = time.perf_counter()
                    out, record = service.decide(request, model, ["body"])
                    t7 = time.perf_counter()
                    service.decision_log.append([record])
                    t9 = time.perf_counter()
                    orjson.dumps(out)
                    t10 = time.perf_counter()
                    spent = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t9 - t7)
                    for name, seconds in zip(INLINE_STAGES, (*spent, t10 - t9), strict=True):
                        times[version][name][i] = seconds
                    times[version]["decide + log"][i] = t9 - t6
                    histories[version].append(history)
    finally:
        serving_app.inline_history = real_inline_history

    # Outside the timing: the two paths must agree, and how often the new one declines.
    requests = [RecommendationRequest.model_validate(orjson.loads(b)) for b in bodies]
    events = [r.events or [] for r in requests]
    old, new = histories["old"], histories["new"]  # both in request order
    mismatches = sum(not _same(a, b) for a, b in zip(old, new, strict=True))
    declined = sum(
        fast_inline_history(e, cid, as_of_ns, ["body"]) is None
        for e, cid in zip(events, sample, strict=True)
    )
    n_events = np.array([len(e) for e in events])
    n_kept = np.array([len(h) for h in new])

    keep = slice(n // 10, None)
    print(
        f"\ninline events per request: median {int(np.median(n_events))}, "
        f"p99 {int(np.percentile(n_events, 99))}, max {int(n_events.max())} "
        f"(before as_of: median {int(np.median(n_kept))}); "
        f"{declined} of {n} requests handed to pandas by the new path; "
        f"{mismatches} with histories that differ\n"
    )
    print("| stage | old p50 µs | old p99 µs | new p50 µs | new p99 µs |")
    print("|---|---|---|---|---|")
    for name in (*INLINE_STAGES, "decide + log"):
        cells = []
        for version in PATHS:
            v = times[version][name][keep] * 1e6
            cells += [f"{np.median(v):,.0f}", f"{np.percentile(v, 99):,.0f}"]
        print(f"| {name} | {' | '.join(cells)} |")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
