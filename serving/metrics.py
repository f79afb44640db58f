"""Prometheus metrics of the service: counters and latency histograms, hand-written.

The text format is simple enough that a dependency is not worth it, and one lock around
plain dicts costs less per request than a client library's per-metric locking.  Each
uvicorn worker process keeps its own counters (docs/SERVING.md, "Workers").
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["Metrics", "MetricsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
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

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP touchpoint_requests_total HTTP requests by method, route and status.",
                "# TYPE touchpoint_requests_total counter",
            ]
            for (method, route, status), v in sorted(self.requests.items()):
                lines.append(
                    f'touchpoint_requests_total{{method="{method}",route="{_label(route)}",'
                    f'status="{status}"}} {v}'
                )
            lines += [
                "# HELP touchpoint_request_duration_seconds Request latency by route.",
                "# TYPE touchpoint_request_duration_seconds histogram",
            ]
            for route, buckets in sorted(self.latency_buckets.items()):
                r = _label(route)
                for bound, v in zip(_BUCKETS, buckets, strict=True):
                    lines.append(
                        f'touchpoint_request_duration_seconds_bucket{{route="{r}",le="{bound}"}} {v}'
                    )
                count = self.latency_count[route]
                lines.append(
                    f'touchpoint_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {count}'
                )
                lines.append(
                    f'touchpoint_request_duration_seconds_sum{{route="{r}"}} {self.latency_sum[route]}'
                )
                lines.append(f'touchpoint_request_duration_seconds_count{{route="{r}"}} {count}')
            lines += [
                "# HELP touchpoint_decisions_total Decisions by chosen action.",
                "# TYPE touchpoint_decisions_total counter",
            ]
            for action, v in sorted(self.decisions.items()):
                lines.append(f'touchpoint_decisions_total{{action="{_label(action)}"}} {v}')
            lines += [
                "# HELP touchpoint_explored_decisions_total Decisions that did not pick the best-scoring action.",
                "# TYPE touchpoint_explored_decisions_total counter",
                f"touchpoint_explored_decisions_total {self.explored}",
                "# HELP touchpoint_suppressions_total Candidate actions removed, by contact rule.",
                "# TYPE touchpoint_suppressions_total counter",
            ]
            for rule, v in sorted(self.suppressions.items()):
                lines.append(f'touchpoint_suppressions_total{{rule="{_label(rule)}"}} {v}')
            lines += [
                "# HELP touchpoint_events_total Ingested events by outcome.",
                "# TYPE touchpoint_events_total counter",
            ]
            for outcome, v in sorted(self.events.items()):
                lines.append(f'touchpoint_events_total{{outcome="{outcome}"}} {v}')
            lines += [
                "# HELP touchpoint_model_reloads_total Model reloads by result.",
                "# TYPE touchpoint_model_reloads_total counter",
            ]
            for result, v in sorted(self.reloads.items()):
                lines.append(f'touchpoint_model_reloads_total{{result="{result}"}} {v}')
            lines += [
                "# HELP touchpoint_model_info The model bundle being served.",
                "# TYPE touchpoint_model_info gauge",
            ]
            if self.model_version is not None:
                lines.append(
                    f'touchpoint_model_info{{model_version="{_label(self.model_version)}"}} 1'
                )
        return "\n".join(lines) + "\n"


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
