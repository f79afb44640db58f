"""CONTRACT §5 against a real ``touchpoint serve`` process (uvicorn on 127.0.0.1).

One server per module (start-up costs a few seconds), started exactly as an operator
would: ``python -m touchpoint.cli serve --model M --events E --customers C --host
127.0.0.1 --port P`` with the store, decision log and API key from ``TOUCHPOINT_*``
variables pointing into a temporary folder.  Every request goes over a real socket to
127.0.0.1 with httpx (``trust_env=False``: no proxy ever sees the traffic).  Tests that
change the server's state (events, reloads) use customers of their own and put the model
back, so they do not depend on their order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.contact_policy import RULES
from serving.metrics_peers import PUBLISH_SECONDS
from serving.shared_reload import POLL_SECONDS as SHARED_RELOAD_POLL_SECONDS
from tests.serving.bundle_factory import (
    ACTIONS,
    AS_OF,
    CATALOG,
    KEY,
    ServingFiles,
    build_serving_files,
    save_tiny_bundle,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # seconds until /readyz must answer 200
STOP_TIMEOUT = 10.0  # seconds a terminated server gets before it is killed
AUTH = {"X-API-Key": KEY}
CHANNEL_OF = {a.id: a.channel for a in CATALOG.actions}
RECOMMENDATION_FIELDS = {
    "action", "channel", "score", "p_conversion", "p_churn", "propensity", "reasons",
}  # fmt: skip
METRIC_FAMILIES = {
    "touchpoint_requests_total": "counter",
    "touchpoint_request_duration_seconds": "histogram",
    "touchpoint_decisions_total": "counter",
    "touchpoint_explored_decisions_total": "counter",
    "touchpoint_suppressions_total": "counter",
    "touchpoint_events_total": "counter",
    "touchpoint_model_reloads_total": "counter",
    "touchpoint_model_info": "gauge",
}


# ---------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``touchpoint serve`` subprocess and what it was started with."""

    process: subprocess.Popen[bytes]
    port: int
    files: ServingFiles
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """Terminate (SIGTERM), wait, kill if it hangs; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        return int(self.process.returncode)


def _server_env(files: ServingFiles) -> dict[str, str]:
    # Nothing of the caller's TOUCHPOINT_* configuration may leak into the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    env.update(
        TOUCHPOINT_STORE_PATH=str(files.store),
        TOUCHPOINT_DECISION_LOG_PATH=str(files.decision_log),
        TOUCHPOINT_API_KEY=KEY,
        TOUCHPOINT_SEED="7",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_server(files: ServingFiles, tag: str, *extra: str) -> Server:
    """Start ``touchpoint serve`` on a free port and wait (bounded) until it is ready."""
    for _attempt in range(3):  # another process may grab the free port before uvicorn does
        port = _free_port()
        out = files.root / f"{tag}-{port}.stdout"
        err = files.root / f"{tag}-{port}.stderr"
        cmd = [
            sys.executable, "-m", "touchpoint.cli", "serve",
            "--model", str(files.model),
            "--events", str(files.events),
            "--customers", str(files.customers),
            "--host", HOST,
            "--port", str(port), *extra,
        ]  # fmt: skip
        with out.open("wb") as fout, err.open("wb") as ferr:
            process = subprocess.Popen(
                cmd, cwd=files.root, env=_server_env(files), stdout=fout, stderr=ferr
            )
        server = Server(process, port, files, out, err)
        try:
            if _wait_ready(server):
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()
        if "address already in use" not in server.stderr().lower():
            break
    pytest.fail(
        f"touchpoint serve did not become ready (exit status {server.process.returncode}); "
        f"stderr:\n{server.stderr()}"
    )


def _wait_ready(server: Server) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(base_url=server.url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.get("/readyz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    files = build_serving_files(tmp_path_factory.mktemp("uvicorn"))
    srv = start_server(files, "main")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    # trust_env=False: ignore HTTP(S)_PROXY, the traffic stays on 127.0.0.1.
    with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
        yield c


def _rec(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("as_of", AS_OF)
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _by_action(out: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Everything of a response that depends on the features only (not on the random draw)."""
    return {
        r["action"]: (r["score"], r["p_conversion"], r["p_churn"], r["propensity"], r["reasons"])
        for r in out["recommendations"]
    }


def _model_version(client: httpx.Client) -> str:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    return str(ready.json()["model_version"])


# ---------------------------------------------------------------------------- metrics parsing
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of the Prometheus text format: ``(name, labels) -> value``; strict about syntax."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def _metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------------------- ops
def test_healthz_and_readyz(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model_version": "test-1"}
    assert r.headers["content-type"].startswith("application/json")


def test_openapi_and_docs_are_served(client: httpx.Client) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/v1/recommendations",
        "/v1/recommendations:batch",
        "/v1/events",
        "/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_metrics_format_and_counters(client: httpx.Client) -> None:
    before = parse_metrics(client.get("/metrics").text)
    _rec(client, customer_id="c3", k=20)  # c3 refused email consent
    assert client.post("/v1/recommendations", json={"customer_id": "c1", "k": 0}).status_code == 422
    events = {"events": [{"customer_id": "m1", "timestamp": AS_OF, "channel": "web",
                          "event_type": "visit", "event_id": "metrics-1"},
                         {"customer_id": "m1", "timestamp": "no", "channel": "web",
                          "event_type": "visit"}]}  # fmt: skip
    assert client.post("/v1/events", json=events, headers=AUTH).json()["accepted"] == 1
    assert client.post("/v1/events", json=events, headers=AUTH).json()["duplicates"] == 1
    assert client.get("/no/such/path/12345").status_code == 404

    r = client.get("/metrics")
    assert r.status_code == 200
    ctype = r.headers["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    text = r.text
    for family, kind in METRIC_FAMILIES.items():
        assert f"# TYPE {family} {kind}" in text, family
        assert f"# HELP {family} " in text, family
    after = parse_metrics(text)

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    rec = {"method": "POST", "route": "/v1/recommendations"}
    assert delta("touchpoint_requests_total", **rec, status="200") == 1
    assert delta("touchpoint_requests_total", **rec, status="422") == 1
    ev = {"method": "POST", "route": "/v1/events"}
    assert delta("touchpoint_requests_total", **ev, status="200") == 2
    # The route label is the template, never the raw path (bounded cardinality).
    assert delta("touchpoint_requests_total", method="GET", route="unmatched", status="404") == 1
    assert "/no/such/path" not in text
    hist = "touchpoint_request_duration_seconds"
    assert delta(f"{hist}_count", route="/v1/recommendations") == 2
    assert delta(f"{hist}_bucket", route="/v1/recommendations", le="+Inf") == 2
    assert delta(f"{hist}_sum", route="/v1/recommendations") > 0
    buckets = [
        (float(dict(labels)["le"]), v)
        for (name, labels), v in after.items()
        if name == f"{hist}_bucket" and dict(labels).get("route") == "/v1/recommendations"
    ]
    counts = [v for _, v in sorted(buckets)]
    assert counts == sorted(counts) and len(counts) == 12  # cumulative, 11 bounds + Inf
    decisions = sum(
        delta("touchpoint_decisions_total", action=a) for a in ACTIONS
    )  # one decision, whatever the policy picked
    assert decisions == 1
    assert delta("touchpoint_suppressions_total", rule="consent") >= 2  # both email actions
    assert delta("touchpoint_events_total", outcome="accepted") == 1
    assert delta("touchpoint_events_total", outcome="duplicate") == 1
    assert delta("touchpoint_events_total", outcome="rejected") == 2
    assert _metric(after, "touchpoint_model_info", model_version=_model_version(client)) == 1
    assert ("touchpoint_explored_decisions_total", frozenset()) in after


# ---------------------------------------------------------------------------- recommendations
def _check_response(out: dict[str, Any], customer_id: str, k: int) -> None:
    assert set(out) == {
        "decision_id", "model_version", "customer_id", "as_of", "chosen", "explored",
        "recommendations", "suppressed",
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", out["decision_id"])
    assert isinstance(out["model_version"], str) and out["model_version"]
    assert out["customer_id"] == customer_id
    assert isinstance(out["explored"], bool)
    recs, suppressed = out["recommendations"], out["suppressed"]
    eligible = len(ACTIONS) - len(suppressed)
    assert len(recs) == min(k, eligible)  # k honoured
    assert out["chosen"] == recs[0]["action"]
    assert len({r["action"] for r in recs}) == len(recs)
    for rec in recs:
        assert set(rec) == RECOMMENDATION_FIELDS
        assert rec["action"] in ACTIONS
        assert rec["channel"] == CHANNEL_OF.get(rec["action"], "none")
        for name in ("score", "p_conversion", "p_churn", "propensity"):
            assert isinstance(rec[name], float), (name, rec[name])
        assert 0 <= rec["p_conversion"] <= 1 and 0 <= rec["p_churn"] <= 1
        assert 0 < rec["propensity"] <= 1
        assert isinstance(rec["reasons"], list) and len(rec["reasons"]) <= 3
        assert all(isinstance(s, str) and s for s in rec["reasons"])
    assert sum(r["propensity"] for r in recs) <= 1 + 1e-9
    if len(recs) == eligible:
        assert sum(r["propensity"] for r in recs) == pytest.approx(1.0)
    rest = [r["score"] for r in recs[1:]]  # after the policy's pick: by score, best first
    assert rest == sorted(rest, reverse=True)
    recommended = {r["action"] for r in recs}
    for s in suppressed:
        assert set(s) == {"action", "rule"}
        assert s["action"] in ACTIONS and s["rule"] in RULES
        assert s["action"] not in recommended


@pytest.mark.parametrize("customer_id", ["c1", "c2", "c3", "never-seen"])
def test_recommendation_contract(client: httpx.Client, customer_id: str) -> None:
    out = _rec(client, customer_id=customer_id, context={"placement": "home"})
    _check_response(out, customer_id, k=3)  # the server's default_k
    assert out["model_version"] == _model_version(client)
    assert pd.Timestamp(out["as_of"]) == pd.Timestamp(AS_OF)
    if customer_id == "c3":  # refused email consent in the customers file
        assert {"action": "email_promo", "rule": "consent"} in out["suppressed"]


def test_k_is_honoured(client: httpx.Client) -> None:
    for k in (1, 2, 5, 20):
        out = _rec(client, customer_id="c1", k=k)
        _check_response(out, "c1", k=k)
    everything = _rec(client, customer_id="c1", k=20)
    assert len(everything["recommendations"]) == len(ACTIONS) - len(everything["suppressed"])


def test_customer_id_is_stripped_and_as_of_defaults_to_now(client: httpx.Client) -> None:
    before = pd.Timestamp.now(tz="UTC")
    r = client.post("/v1/recommendations", json={"customer_id": "  c2  "})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["customer_id"] == "c2"
    as_of = pd.Timestamp(out["as_of"])
    assert before - pd.Timedelta(seconds=5) <= as_of <= pd.Timestamp.now(tz="UTC")
    # An offset is honoured and answered in UTC; no offset means UTC.
    shifted = _rec(client, customer_id="c2", as_of="2024-03-20T14:00:00+02:00")
    assert pd.Timestamp(shifted["as_of"]) == pd.Timestamp(AS_OF)
    naive = _rec(client, customer_id="c2", as_of="2024-03-20T12:00:00")
    assert pd.Timestamp(naive["as_of"]) == pd.Timestamp(AS_OF)
    assert _by_action(naive) == _by_action(shifted)


def test_as_of_is_honoured_an_event_after_it_changes_nothing(client: httpx.Client) -> None:
    cid = "asof-1"
    as_of, later = "2024-03-20T12:00:00Z", "2024-03-21T12:00:00Z"
    before = _rec(client, customer_id=cid, k=20, as_of=as_of)
    assert all(s["rule"] != "unsubscribed" for s in before["suppressed"])
    events = [
        {"customer_id": cid, "timestamp": "2024-03-20T12:00:00Z", "channel": "sms",
         "event_type": "unsubscribe", "event_id": "asof-unsub"},  # at as_of: not before it
        {"customer_id": cid, "timestamp": "2024-03-20T15:00:00Z", "channel": "web",
         "event_type": "purchase", "value": 99.0, "event_id": "asof-buy"},
        {"customer_id": cid, "timestamp": "2024-03-20T16:00:00Z", "channel": "email",
         "event_type": "sent", "action": "email_promo", "propensity": 0.5,
         "event_id": "asof-sent"},
    ]  # fmt: skip
    r = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"accepted": 3, "duplicates": 0, "errors": []}
    again = _rec(client, customer_id=cid, k=20, as_of=as_of)
    assert _by_action(again) == _by_action(before)
    assert again["suppressed"] == before["suppressed"]
    # Inline history gets the same cut: rows at or after as_of are ignored.
    inline = _rec(client, customer_id=cid, k=20, as_of=as_of, events=events)
    assert _by_action(inline) == _by_action(before)
    # Control: after the events they do count (the store kept them).
    after = _rec(client, customer_id=cid, k=20, as_of=later)
    assert {"action": "sms_offer", "rule": "unsubscribed"} in after["suppressed"]
    assert all(r["channel"] != "sms" for r in after["recommendations"])


def test_inline_events_match_the_store(client: httpx.Client) -> None:
    inline = [
        {"customer_id": "c1", "timestamp": "2024-03-01T10:00:00Z", "channel": "email",
         "event_type": "sent", "action": "email_promo", "propensity": 0.5},
        {"customer_id": "c1", "timestamp": "2024-03-01T12:00:00Z", "channel": "email",
         "event_type": "open", "action": "email_promo"},
        {"customer_id": "c1", "timestamp": "2024-03-02T09:00:00Z", "channel": "web",
         "event_type": "visit"},
        {"customer_id": "c1", "timestamp": "2024-03-04T18:00:00Z", "channel": "web",
         "event_type": "purchase", "value": 40},
    ]  # fmt: skip
    store = _rec(client, customer_id="c1", k=20)
    stateless = _rec(client, customer_id="c1", k=20, events=inline)
    a, b = _by_action(store), _by_action(stateless)
    assert a.keys() == b.keys()
    for action in a:
        assert b[action][:4] == pytest.approx(a[action][:4]), action
        assert b[action][4] == a[action][4], action  # the same reasons


def test_batch(client: httpx.Client) -> None:
    body = {
        "requests": [
            {"customer_id": "c1", "as_of": AS_OF},
            {"customer_id": "c2", "k": 2, "as_of": AS_OF},
            {"customer_id": "nobody", "k": 20, "as_of": AS_OF},
        ]
    }
    r = client.post("/v1/recommendations:batch", json=body)
    assert r.status_code == 200, r.text
    responses = r.json()["responses"]
    assert [x["customer_id"] for x in responses] == ["c1", "c2", "nobody"]
    for out, k in zip(responses, (3, 2, 20), strict=True):
        _check_response(out, out["customer_id"], k=k)
    assert len({x["decision_id"] for x in responses}) == 3
    single = _by_action(_rec(client, customer_id="c2", k=20))  # same features one by one
    for action, values in _by_action(responses[1]).items():
        assert values == single[action], action
    bad = {"requests": [{"customer_id": "c1"}, {"customer_id": "c2", "k": 0}]}
    r = client.post("/v1/recommendations:batch", json=bad)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests", 1, "k"]
    r = client.post("/v1/recommendations:batch", json={"requests": [{"customer_id": "c1"}] * 1001})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests"]


# ---------------------------------------------------------------------------- events
EVENT = {"customer_id": "ev-1", "timestamp": "2024-03-10T10:00:00Z", "channel": "web",
         "event_type": "visit", "event_id": "ev-1-a"}  # fmt: skip


def test_events_need_the_api_key(client: httpx.Client) -> None:
    body = {"events": [EVENT]}
    r = client.post("/v1/events", json=body)
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
    assert "API key" in r.json()["detail"]
    assert client.post("/v1/events", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.post("/v1/events", json=body, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    ok = client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["accepted"] + ok.json()["duplicates"] == 1


def test_events_rows_errors_and_idempotence(client: httpx.Client) -> None:
    cid = "ev-2"
    events = [
        {"customer_id": cid, "timestamp": "2024-03-10T10:00:00Z", "channel": "Email",
         "event_type": "sent", "action": "email_promo", "event_id": "ev2-a", "propensity": 0.4},
        {"customer_id": cid, "timestamp": "not a time", "channel": "web",
         "event_type": "visit", "event_id": "ev2-b"},
        {"customer_id": cid, "timestamp": "2024-03-10T11:00:00Z", "channel": "web",
         "event_type": "teleport", "event_id": "ev2-c"},
        {"customer_id": cid, "timestamp": "2024-03-10T12:00:00Z", "channel": "web",
         "event_type": "purchase", "value": "12.5", "event_id": "ev2-d"},
        {"customer_id": cid, "timestamp": "2024-03-10T12:00:00Z", "channel": "web",
         "event_type": "purchase", "value": "lots", "propensity": -1, "event_id": "ev2-e"},
        {"customer_id": cid, "timestamp": "2024-03-10T13:00:00Z", "channel": "web",
         "event_type": "visit", "event_id": "ev2-a"},  # repeats the first id
        {"customer_id": cid, "timestamp": "2024-03-11T13:00:00Z", "channel": "sms",
         "event_type": "unsubscribe", "event_id": "ev2-f"},
    ]  # fmt: skip
    r = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"accepted", "duplicates", "errors"}
    assert out["accepted"] == 3 and out["duplicates"] == 1
    rows = {e["row"]: e["reason"] for e in out["errors"]}
    assert set(rows) == {2, 3, 5}
    assert "timestamp" in rows[2] and "event_type" in rows[3]
    assert "value" in rows[5] and "propensity" in rows[5]
    again = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 4
    assert {e["row"] for e in again.json()["errors"]} == {2, 3, 5}
    # The accepted rows count (never lost): the unsubscribe suppresses SMS afterwards.
    after = _rec(client, customer_id=cid, k=20, as_of="2024-03-12T12:00:00Z")
    assert {"action": "sms_offer", "rule": "unsubscribed"} in after["suppressed"]
    empty = client.post("/v1/events", json={"events": []}, headers=AUTH)
    assert empty.json() == {"accepted": 0, "duplicates": 0, "errors": []}


def test_events_without_ids_are_idempotent_by_content(client: httpx.Client) -> None:
    row = {"customer_id": "ev-3", "timestamp": "2024-03-10T10:00:00Z", "channel": "web",
           "event_type": "visit"}  # fmt: skip
    first = client.post("/v1/events", json={"events": [row, row]}, headers=AUTH).json()
    assert first == {"accepted": 2, "duplicates": 0, "errors": []}  # identical rows in one call
    second = client.post("/v1/events", json={"events": [row, row]}, headers=AUTH).json()
    assert second == {"accepted": 0, "duplicates": 2, "errors": []}


# ---------------------------------------------------------------------------- admin
def test_reload(client: httpx.Client, server: Server, tmp_path: Path) -> None:
    assert _model_version(client) == "test-1"
    assert client.post("/admin/reload", json={"model": str(server.files.model)}).status_code == 401

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json", encoding="utf-8")
    corrupt = shutil.copytree(server.files.model, tmp_path / "corrupt")
    for booster in corrupt.glob("conversion.*"):
        booster.write_text("garbage", encoding="utf-8")
    for bad in (broken, corrupt, tmp_path / "missing"):
        r = client.post("/admin/reload", json={"model": str(bad)}, headers=AUTH)
        assert r.status_code == 409, (bad, r.text)
        detail = r.json()["detail"]
        assert set(detail) == {"error", "model_version", "message"}
        assert detail["model_version"] == "test-1" and detail["error"]
        # The old model keeps serving.
        assert _model_version(client) == "test-1"
        assert _rec(client, customer_id="c1")["model_version"] == "test-1"

    copy = shutil.copytree(server.files.model, tmp_path / "copy")
    r = client.post("/admin/reload", json={"model": str(copy)}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_version": "test-1", "previous_version": "test-1", "path": str(copy)}

    v2 = save_tiny_bundle(tmp_path / "v2", "test-2")
    try:
        r = client.post("/admin/reload", json={"model": str(v2)}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "model_version": "test-2",
            "previous_version": "test-1",
            "path": str(v2),
        }
        assert _model_version(client) == "test-2"
        assert _rec(client, customer_id="c1")["model_version"] == "test-2"
        metrics = parse_metrics(client.get("/metrics").text)
        assert _metric(metrics, "touchpoint_model_info", model_version="test-2") == 1
        assert _metric(metrics, "touchpoint_model_reloads_total", result="failed") >= 3
        assert _metric(metrics, "touchpoint_model_reloads_total", result="ok") >= 2
    finally:
        # No body: the configured model again (and the state other tests expect).
        back = client.post("/admin/reload", headers=AUTH)
    assert back.status_code == 200 and back.json()["model_version"] == "test-1"
    assert back.json()["path"] == str(server.files.model)
    assert _model_version(client) == "test-1"


# ---------------------------------------------------------------------------- bad input
JSON = {"content-type": "application/json", **AUTH}
# (path, raw body, expected loc prefix or None when any 4xx with a detail will do)
BAD_BODIES: list[tuple[str, bytes, list[Any] | None]] = [
    ("/v1/recommendations", b"{not json", ["body"]),
    ("/v1/recommendations", b"", ["body"]),
    ("/v1/recommendations", b"[]", ["body"]),
    ("/v1/recommendations", b"null", ["body"]),
    ("/v1/recommendations", b"{}", ["body", "customer_id"]),
    ("/v1/recommendations", b'{"customer_id": 5}', ["body", "customer_id"]),
    ("/v1/recommendations", b'{"customer_id": ""}', ["body", "customer_id"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "k": "three"}', ["body", "k"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "k": 21}', ["body", "k"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "k": 2.5}', ["body", "k"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "as_of": "yesterday"}', ["body", "as_of"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "as_of": "1000-01-01T00:00:00Z"}',
     ["body", "as_of"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "events": {}}', ["body", "events"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "events": [{"colour": 1}]}',
     ["body", "events", 0, "colour"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "events": [{}]}', ["body", "events", 0]),
    ("/v1/recommendations", b'{"customer_id": "c1", "context": []}', ["body", "context"]),
    ("/v1/recommendations", b'{"customer_id": "c1", "kk": 3}', ["body", "kk"]),
    ("/v1/recommendations:batch", b"{not json", ["body"]),
    ("/v1/recommendations:batch", b"{}", ["body", "requests"]),
    ("/v1/recommendations:batch", b'{"requests": []}', ["body", "requests"]),
    ("/v1/recommendations:batch", b'{"requests": [{}]}', ["body", "requests", 0, "customer_id"]),
    ("/v1/events", b"{not json", ["body"]),
    ("/v1/events", b"{}", ["body", "events"]),
    ("/v1/events", b'{"events": "x"}', ["body", "events"]),
    ("/v1/events", b'{"events": [{"customer_id": true}]}', ["body", "events", 0, "customer_id"]),
    ("/v1/events", b'{"events": [{"colour": "red"}]}', ["body", "events", 0, "colour"]),
    ("/admin/reload", b"{not json", ["body"]),
    ("/admin/reload", b"[]", ["body"]),
    ("/admin/reload", b'{"model": 5}', ["body", "model"]),
    ("/admin/reload", b'{"modell": "x"}', ["body", "modell"]),
]  # fmt: skip

# Non-finite JSON numbers (Python's parser accepts NaN and Infinity) used to turn the 422
# into a 500 while the error body echoed the input; these cases guard that fix.
NON_FINITE = [
    pytest.param(
        "/v1/recommendations", b'{"customer_id": "c1", "k": NaN}', ["body", "k"],
        id="recommendations-k-NaN",
    ),
    pytest.param(
        "/v1/recommendations:batch",
        b'{"requests": [{"customer_id": "c1", "k": Infinity}]}',
        ["body", "requests", 0, "k"],
        id="batch-k-Infinity",
    ),
    pytest.param(
        "/v1/events", b'{"events": [{"colour": NaN}]}', ["body", "events", 0, "colour"],
        id="events-unknown-field-NaN",
    ),
]  # fmt: skip


def _assert_4xx_naming(r: httpx.Response, loc: list[Any] | None) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for item in detail:
        assert item["msg"], item
    if loc is not None:
        assert any(item["loc"][: len(loc)] == loc for item in detail), detail


@pytest.mark.parametrize(("path", "body", "loc"), [*BAD_BODIES, *NON_FINITE])
def test_bad_input_is_4xx_naming_the_field(
    client: httpx.Client, path: str, body: bytes, loc: list[Any] | None
) -> None:
    r = client.post(path, content=body, headers=JSON)
    _assert_4xx_naming(r, loc)


def test_as_of_near_the_earliest_representable_time_is_answered(client: httpx.Client) -> None:
    # as_of minus history_days used to overflow pandas' timestamps (a 500).
    r = client.post(
        "/v1/recommendations",
        content=b'{"customer_id": "c1", "as_of": "1678-01-01T00:00:00Z"}',
        headers=JSON,
    )
    assert r.status_code == 200, r.text
    assert r.json()["recommendations"], r.text


def test_wrong_content_type_and_method_are_4xx(client: httpx.Client) -> None:
    r = client.post(
        "/v1/recommendations",
        content=json.dumps({"customer_id": "c1"}).encode(),
        headers={"content-type": "text/plain"},
    )
    assert 400 <= r.status_code < 500
    assert client.get("/v1/recommendations").status_code == 405
    assert client.post("/healthz").status_code == 405
    assert client.get("/nope").status_code == 404


def test_server_is_still_healthy_after_the_bad_input(client: httpx.Client, server: Server) -> None:
    assert server.process.poll() is None
    assert client.get("/healthz").status_code == 200
    _rec(client, customer_id="c1")


# ---------------------------------------------------------------------------- load
def test_mini_load_200_sequential_requests(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    customers = ["c1", "c2", "c3", "new"]
    latencies: list[float] = []
    statuses: list[int] = []
    for i in range(200):
        body = {"customer_id": customers[i % 4], "as_of": AS_OF, "k": 3}
        start = time.perf_counter()
        r = client.post("/v1/recommendations", json=body)
        latencies.append(time.perf_counter() - start)
        statuses.append(r.status_code)
    assert statuses == [200] * 200
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    with capsys.disabled():
        print(
            f"\n[uvicorn mini load] 200 sequential POST /v1/recommendations (keep-alive): "
            f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms, total {sum(latencies):.2f} s"
        )


# ---------------------------------------------------------------------------- lifecycle
def test_sigterm_stops_cleanly_and_the_store_survives_a_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    files = build_serving_files(tmp_path_factory.mktemp("restart"))
    row = {"customer_id": "r1", "timestamp": "2024-03-10T10:00:00Z", "channel": "sms",
           "event_type": "unsubscribe", "event_id": "restart-1"}  # fmt: skip
    first = start_server(files, "first")
    try:
        with httpx.Client(base_url=first.url, timeout=10.0, trust_env=False) as c:
            assert (
                c.post("/v1/events", json={"events": [row]}, headers=AUTH).json()["accepted"] == 1
            )
    finally:
        status = first.stop()  # one SIGTERM (a second one would force uvicorn's exit)
    # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM.
    assert status in (0, -signal.SIGTERM), first.stderr()
    log = first.stderr()
    assert "Traceback" not in log, log
    assert "Application shutdown complete" in log and "Finished server process" in log, log

    second = start_server(files, "second")  # same store, same --events loaded again
    try:
        with httpx.Client(base_url=second.url, timeout=10.0, trust_env=False) as c:
            again = c.post("/v1/events", json={"events": [row]}, headers=AUTH).json()
            assert again == {"accepted": 0, "duplicates": 1, "errors": []}
            out = _rec(c, customer_id="r1", k=20)
            assert {"action": "sms_offer", "rule": "unsubscribed"} in out["suppressed"]
    finally:
        assert second.stop() in (0, -signal.SIGTERM), second.stderr()
    assert "Traceback" not in second.stderr(), second.stderr()


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _client_ports_by_worker(workers: set[int], port: int) -> dict[int, set[int]]:
    """The client ports of the connections each worker holds, in any TCP state but
    listening (from /proc: its socket descriptors, matched in the kernel's TCP tables)."""
    owner: dict[int, int] = {}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = pid
    held: dict[int, set[int]] = {pid: set() for pid in workers}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                local, remote, state, inode = f[1], f[2], f[3], int(f[9])
                if int(local.rsplit(":", 1)[1], 16) == port and state != "0A" and inode in owner:
                    held[owner[inode]].add(int(remote.rsplit(":", 1)[1], 16))
    return held


def _wait_for_held(
    workers: set[int], port: int, done: Any, timeout: float = 10.0
) -> dict[int, set[int]]:
    deadline = time.monotonic() + timeout
    while True:
        held = _client_ports_by_worker(workers, port)
        if done(held) or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_connections_are_spread_evenly_over_the_workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``--workers 2``: a pool opened at once is split evenly, and a worker whose
    connections closed gets the next ones (with SO_REUSEPORT the kernel split 8 connections
    7/1 in 8 pools of 100)."""
    files = build_serving_files(tmp_path_factory.mktemp("balance"))
    server = start_server(files, "balance", "--workers", "2")
    clients: list[socket.socket] = []
    try:
        workers = _children(server.process.pid)
        assert len(workers) == 2, server.stderr()
        # Until a worker has started, it is handed nothing (the other one serves).
        deadline = time.monotonic() + 60
        while server.stderr().count("Taking connections from the parent") < 2:
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.1)

        def connect(n: int) -> None:
            for _ in range(n):
                clients.append(socket.create_connection((HOST, server.port), timeout=10))

        def total(n: int) -> Any:
            return lambda held: sum(map(len, held.values())) == n

        connect(8)
        held = _wait_for_held(workers, server.port, total(8))
        assert sorted(map(len, held.values())) == [4, 4], held
        # Close all four of one worker's connections; the next four all go to it.
        emptied = min(workers)
        for c in [c for c in clients if c.getsockname()[1] in held[emptied]]:
            clients.remove(c)
            c.close()
        held = _wait_for_held(workers, server.port, lambda h: not h[emptied])
        assert not held[emptied], held
        connect(4)
        held = _wait_for_held(workers, server.port, total(8))
        assert sorted(map(len, held.values())) == [4, 4], held
        # Every connection is served by its worker.
        for c in clients:
            c.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        for c in clients:
            assert c.recv(4096).startswith(b"HTTP/1.1 200"), server.stderr()
    finally:
        for c in clients:
            c.close()
        status = server.stop()
    assert status in (0, -signal.SIGTERM), server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def _running(pid: int) -> bool:
    """Neither gone nor a zombie (an orphan's exit waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_their_parent_is_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The parent hands out the connections; killed outright (no SIGTERM to forward), its
    workers would get no more, so they finish and exit instead of lingering."""
    files = build_serving_files(tmp_path_factory.mktemp("orphans"))
    server = start_server(files, "orphans", "--workers", "2")
    workers = _children(server.process.pid)
    try:
        assert len(workers) == 2, server.stderr()
        server.process.kill()
        server.process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its parent"
            time.sleep(0.1)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert "the parent process is gone" in server.stderr(), server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def test_two_workers_share_the_port_the_store_and_the_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``--workers 2``: two worker processes answer on one port; the startup events are in
    the shared store; every decision of either worker is in the one decision log; SIGTERM
    stops all of them."""
    files = build_serving_files(tmp_path_factory.mktemp("workers"))
    server = start_server(files, "workers", "--workers", "2")
    try:
        workers = _children(server.process.pid)
        assert len(workers) == 2, server.stderr()
        ids = []
        for i in range(20):  # a new connection each time: the kernel spreads them
            with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
                ids.append(_rec(c, customer_id=["c1", "c2", "c3"][i % 3])["decision_id"])
        # /metrics, from whichever worker answers, counts the requests of both.
        rec = {"method": "POST", "route": "/v1/recommendations", "status": "200"}
        deadline = time.monotonic() + 10 * PUBLISH_SECONDS
        while True:
            with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
                samples = parse_metrics(c.get("/metrics").text)
            if _metric(samples, "touchpoint_requests_total", **rec) == 20:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.2)
        version = {k[1] for k in samples if k[0] == "touchpoint_model_info"}
        assert len(version) == 1 and samples[("touchpoint_model_info", *version)] == 2
        # A reload reaches one worker; the other follows it within about a second.
        v2 = save_tiny_bundle(tmp_path_factory.mktemp("workers-v2"), "test-2")
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as c:
            r = c.post("/admin/reload", json={"model": str(v2)}, headers=AUTH)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10 * SHARED_RELOAD_POLL_SECONDS
        while True:
            with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
                samples = parse_metrics(c.get("/metrics").text)
            if _metric(samples, "touchpoint_model_info", model_version="test-2") == 2:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.2)
        assert _metric(samples, "touchpoint_model_info", model_version="test-1") == 0
        for _ in range(10):  # whichever worker answers serves test-2
            with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
                out = _rec(c, customer_id="c1")
            assert out["model_version"] == "test-2"
            ids.append(out["decision_id"])
    finally:
        status = server.stop()
    assert status in (0, -signal.SIGTERM), server.stderr()
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived stop"
    assert "Traceback" not in server.stderr(), server.stderr()

    from serving.decision_log import DecisionLog
    from serving.store import SQLiteHistoryStore

    log = DecisionLog(files.decision_log)
    try:
        assert sorted(log.frame()["decision_id"]) == sorted(ids)
    finally:
        log.close()
    store = SQLiteHistoryStore(files.store)
    try:
        assert store.count() == len(pd.read_parquet(files.events))
    finally:
        store.close()
