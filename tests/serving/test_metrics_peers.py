"""Several workers' metrics add up in whichever worker answers /metrics."""

from __future__ import annotations

import time
from pathlib import Path

from serving.metrics import Metrics
from serving.metrics_peers import PUBLISH_SECONDS, MetricsPeers
from tests.serving.test_uvicorn_contract import parse_metrics


def _worker(directory: Path, name: str, version: str) -> Metrics:
    metrics = Metrics(MetricsPeers(directory, name))
    metrics.model_version = version
    return metrics


def test_render_adds_up_the_other_workers(tmp_path: Path) -> None:
    a, b, c = (_worker(tmp_path, f"w{i}", v) for i, v in enumerate(["v1", "v1", "v2"]))
    a.observe_request("POST", "/v1/recommendations", 200, 0.002)
    b.observe_request("POST", "/v1/recommendations", 200, 0.02)
    b.observe_request("POST", "/v1/recommendations", 422, 0.001)
    c.observe_decision("sms_offer", explored=True, suppressed_rules=["consent", "cooldown"])
    b.observe_decision("sms_offer", explored=False, suppressed_rules=["consent"])
    c.observe_events(3, 1, 0)
    for m in (b, c):
        assert m.peers is not None
        m.peers.publish(m.snapshot())
    (tmp_path / "metrics-junk.json").write_text("{not json")  # skipped, not fatal
    (tmp_path / "reload.json").write_text('{"ident": "x"}')  # another file of the directory

    got = parse_metrics(a.render())

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    rec = {"method": "POST", "route": "/v1/recommendations"}
    assert value("touchpoint_requests_total", **rec, status="200") == 2
    assert value("touchpoint_requests_total", **rec, status="422") == 1
    hist = "touchpoint_request_duration_seconds"
    assert value(f"{hist}_count", route="/v1/recommendations") == 3
    assert value(f"{hist}_bucket", route="/v1/recommendations", le="0.0025") == 2
    assert value(f"{hist}_bucket", route="/v1/recommendations", le="0.025") == 3
    assert abs(value(f"{hist}_sum", route="/v1/recommendations") - 0.023) < 1e-12
    assert value("touchpoint_decisions_total", action="sms_offer") == 2
    assert value("touchpoint_explored_decisions_total") == 1
    assert value("touchpoint_suppressions_total", rule="consent") == 2
    assert value("touchpoint_events_total", outcome="accepted") == 3
    # One line per version being served, valued by the workers serving it.
    assert value("touchpoint_model_info", model_version="v1") == 2
    assert value("touchpoint_model_info", model_version="v2") == 1


def test_a_single_worker_renders_its_own_counters() -> None:
    m = Metrics()
    m.model_version = "v9"
    m.observe_request("GET", "/healthz", 200, 0.0001)
    got = parse_metrics(m.render())
    assert got[("touchpoint_model_info", frozenset({("model_version", "v9")}))] == 1
    labels = frozenset({("method", "GET"), ("route", "/healthz"), ("status", "200")})
    assert got[("touchpoint_requests_total", labels)] == 1


def test_the_publisher_keeps_the_snapshot_current_and_writes_the_last_one(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "w0", "v1")
    reader = _worker(tmp_path, "w1", "v1")
    assert worker.peers is not None and reader.peers is not None
    worker.peers.start(worker.snapshot)
    try:
        deadline = time.monotonic() + 5
        while not reader.peers.others() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.peers.others()[0]["decisions"] == {}  # published at start
        worker.observe_decision("push_reminder", explored=False, suppressed_rules=[])
        time.sleep(PUBLISH_SECONDS * 2.5)
        assert reader.peers.others()[0]["decisions"] == {"push_reminder": 1}
        worker.observe_decision("push_reminder", explored=False, suppressed_rules=[])
    finally:
        worker.peers.stop()  # publishes the final counts
    assert reader.peers.others()[0]["decisions"] == {"push_reminder": 2}
    assert not list(tmp_path.glob(".*.tmp"))  # written, then renamed into place
