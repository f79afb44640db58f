"""Prometheus metrics of the service: counters and latency histograms, hand-written.

The text format is simple enough that a dependency is not worth it, and one lock around
plain dicts costs less per request than a client library's per-metric locking.  Each
uvicorn worker process keeps its own counters; with several workers, ``/metrics`` adds
up all of them (serving/metrics_peers.py).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from serving.metrics_peers import MetricsPeers

__all__ = ["Metrics", "MetricsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: The label -> count maps of a snapshot, merged alike.
_COUNTER_MAPS = ("decisions", "suppressions", "events", "reloads")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format."""

    def __init__(self, peers: MetricsPeers | None = None) -> None:
        #: The other workers' snapshots, added in by :meth:`render` (None: one worker).
        self.peers = peers
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.decisions: dict[str, int] = defaultdict(int)
        self.explored = 0
        self.suppressions: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)
        self.reloads: dict[str, int] = defaultdict(int)
        self.model_version: str | None = None

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            buckets = self.latency_buckets.setdefault(route, [0] * len(_BUCKETS))
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[route] += seconds
            self.latency_count[route] += 1

    def observe_decision(
        self, action: str, explored: bool, suppressed_rules: Sequence[str]
    ) -> None:
        with self._lock:
            self.decisions[action] += 1
            self.explored += int(explored)
            for rule in suppressed_rules:
                self.suppressions[rule] += 1

    def observe_events(self, accepted: int, duplicates: int, rejected: int) -> None:
        with self._lock:
            self.events["accepted"] += accepted
            self.events["duplicate"] += duplicates
            self.events["rejected"] += rejected

    def observe_reload(self, result: str) -> None:
        with self._lock:
            self.reloads[result] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON-ready data (what :mod:`serving.metrics_peers` shares)."""
        with self._lock:
            return {
                "requests": [[*key, v] for key, v in self.requests.items()],
                "latency": {
                    route: {
                        "buckets": list(buckets),
                        "sum": self.latency_sum[route],
                        "count": self.latency_count[route],
                    }
                    for route, buckets in self.latency_buckets.items()
                },
                "decisions": dict(self.decisions),
                "explored": self.explored,
                "suppressions": dict(self.suppressions),
                "events": dict(self.events),
                "reloads": dict(self.reloads),
                "model_version": self.model_version,
            }

    def render(self) -> str:
        """The Prometheus text: these counters, plus the other workers' when shared."""
        snapshots = [self.snapshot()]
        if self.peers is not None:
            snapshots += self.peers.others()
        return render(snapshots)


def render(snapshots: Sequence[Mapping[str, Any]]) -> str:
    """The Prometheus text of the sum of :meth:`Metrics.snapshot` s (one per worker).

    ``touchpoint_model_info`` has one line per model version being served, valued by the
    number of workers serving it (1 with one worker; two lines during a rolling reload).
    """
    total = _merge(snapshots)
    lines = [
        "# HELP touchpoint_requests_total HTTP requests by method, route and status.",
        "# TYPE touchpoint_requests_total counter",
    ]
    for (method, route, status), v in sorted(total["requests"].items()):
        lines.append(
            f'touchpoint_requests_total{{method="{method}",route="{_label(route)}",'
            f'status="{status}"}} {v}'
        )
    lines += [
        "# HELP touchpoint_request_duration_seconds Request latency by route.",
        "# TYPE touchpoint_request_duration_seconds histogram",
    ]
    hist = "touchpoint_request_duration_seconds"
    for route, lat in sorted(total["latency"].items()):
        r = _label(route)
        for bound, v in zip(_BUCKETS, lat["buckets"], strict=True):
            lines.append(f'{hist}_bucket{{route="{r}",le="{bound}"}} {v}')
        lines.append(f'{hist}_bucket{{route="{r}",le="+Inf"}} {lat["count"]}')
        lines.append(f'{hist}_sum{{route="{r}"}} {lat["sum"]}')
        lines.append(f'{hist}_count{{route="{r}"}} {lat["count"]}')
    lines += _labelled("decisions", "action", "Decisions by chosen action.", total["decisions"])
    lines += [
        "# HELP touchpoint_explored_decisions_total Decisions that did not pick the best-scoring action.",
        "# TYPE touchpoint_explored_decisions_total counter",
        f"touchpoint_explored_decisions_total {total['explored']}",
    ]
    lines += _labelled(
        "suppressions", "rule", "Candidate actions removed, by contact rule.", total["suppressions"]
    )
    lines += _labelled("events", "outcome", "Ingested events by outcome.", total["events"])
    lines += _labelled("model_reloads", "result", "Model reloads by result.", total["reloads"])
    lines += [
        "# HELP touchpoint_model_info The model bundle being served (value: workers serving it).",
        "# TYPE touchpoint_model_info gauge",
    ]
    for version, workers in sorted(total["model_versions"].items()):
        lines.append(f'touchpoint_model_info{{model_version="{_label(version)}"}} {workers}')
    return "\n".join(lines) + "\n"


def _labelled(name: str, label: str, help_text: str, values: Mapping[str, int]) -> list[str]:
    """One counter family ``touchpoint_<name>_total`` with one label, sorted by its value."""
    family = f"touchpoint_{name}_total"
    lines = [f"# HELP {family} {help_text}", f"# TYPE {family} counter"]
    for key, v in sorted(values.items()):
        lines.append(f'{family}{{{label}="{_label(key)}"}} {v}')
    return lines


def _merge(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counters added up over snapshots; latency histograms bucket by bucket."""
    requests: dict[tuple[str, str, str], int] = defaultdict(int)
    latency: dict[str, dict[str, Any]] = {}
    sums: dict[str, dict[str, int]] = {k: defaultdict(int) for k in _COUNTER_MAPS}
    explored = 0
    versions: dict[str, int] = defaultdict(int)
    for snap in snapshots:
        for method, route, status, v in snap["requests"]:
            requests[(method, route, status)] += v
        for route, lat in snap["latency"].items():
            acc = latency.setdefault(
                route, {"buckets": [0] * len(_BUCKETS), "sum": 0.0, "count": 0}
            )
            acc["buckets"] = [a + b for a, b in zip(acc["buckets"], lat["buckets"], strict=True)]
            acc["sum"] += lat["sum"]
            acc["count"] += lat["count"]
        for name in _COUNTER_MAPS:
            for key, v in snap[name].items():
                sums[name][key] += v
        explored += snap["explored"]
        if snap["model_version"] is not None:
            versions[snap["model_version"]] += 1
    return {
        "requests": requests,
        "latency": latency,
        **sums,
        "explored": explored,
        "model_versions": versions,
    }


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than ``BaseHTTPMiddleware``): counts and times requests.

    The route label is the route's path template (``/v1/recommendations``), never the raw
    path, so label cardinality stays bounded.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(
                scope.get("method", ""), route, status, time.perf_counter() - start
            )
