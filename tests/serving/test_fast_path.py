"""The ASGI shortcut answers only what FastAPI would answer with a 200 (serving.fast_path)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from serving.fast_path import RecommendationFastPath
from serving.metrics import Metrics
from serving.schemas import RequestError


class FakeService:
    def __init__(self, fail: bool = False) -> None:
        self.model = object()
        self.calls: list[Any] = []
        self.fail = fail

    async def recommend_on_loop(
        self, requests: list[Any], model: object, batch: bool
    ) -> list[dict[str, Any]]:
        self.calls.append(requests[0])
        if self.fail:
            raise RequestError(["body", "events"], "bad inline events")
        return [{"customer_id": requests[0].customer_id, "recommendations": []}]


def _call(
    service: FakeService | None,
    body: bytes,
    content_type: bytes = b"application/json",
    metrics: Metrics | None = None,
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Run the middleware once; returns what it sent and the bodies the inner app read."""
    inner_bodies: list[bytes] = []
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        inner_bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"fastapi"})

    chunks = [body[:5], body[5:]]  # the body arrives in two messages

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/recommendations",
        "headers": [(b"content-type", content_type)],
        "app": SimpleNamespace(state=SimpleNamespace(service=service)),
    }
    route = SimpleNamespace(path="/v1/recommendations")
    shortcut = RecommendationFastPath(inner, route=route, metrics=metrics)
    asyncio.run(shortcut(scope, receive, send))
    return sent, inner_bodies


def test_a_valid_request_is_answered_directly() -> None:
    service = FakeService()
    sent, inner = _call(service, b'{"customer_id": " c1 ", "k": 2}')
    assert inner == []  # FastAPI never saw it
    assert sent[0]["status"] == 200
    assert orjson.loads(sent[1]["body"]) == {"customer_id": "c1", "recommendations": []}
    assert service.calls[0].k == 2


@pytest.mark.parametrize(
    "body",
    [b'{"customer_id": ""}', b'{"customer_id": "c1", "k": 0}', b'{"customer_id": "c1",', b""],
)
def test_what_does_not_validate_goes_to_fastapi_with_the_whole_body(body: bytes) -> None:
    service = FakeService()
    sent, inner = _call(service, body)
    assert inner == [body] and sent[0]["status"] == 299
    assert service.calls == []


def test_other_content_types_and_service_errors_go_to_fastapi() -> None:
    body = b'{"customer_id": "c1"}'
    sent, inner = _call(FakeService(), body, content_type=b"text/plain")
    assert inner == [body[:5]] and sent[0]["status"] == 299  # the stream, untouched
    sent, inner = _call(FakeService(fail=True), body)
    assert inner == [body] and sent[0]["status"] == 299
    sent, inner = _call(None, body)  # not ready yet: FastAPI answers 503
    assert inner == [body] and sent[0]["status"] == 299


def test_it_counts_its_own_answers_only() -> None:
    """Ahead of the metrics middleware, the shortcut times what it answers; what it hands
    on is FastAPI's to count (tests/serving/test_uvicorn_contract.py checks both, once)."""
    metrics = Metrics()
    _call(FakeService(), b'{"customer_id": "c1"}', metrics=metrics)
    _call(FakeService(), b'{"customer_id": ""}', metrics=metrics)  # FastAPI's 422
    _call(FakeService(fail=True), b'{"customer_id": "c1"}', metrics=metrics)
    assert dict(metrics.requests) == {("POST", "/v1/recommendations", "200"): 1}
    assert metrics.latency_count["/v1/recommendations"] == 1
    assert metrics.latency_sum["/v1/recommendations"] > 0


def test_a_fault_is_counted_as_a_500_and_raised() -> None:
    """Not bad input but a fault (a broken store): uvicorn answers 500; the shortcut, ahead
    of the metrics middleware, counts it, and never replays the request to FastAPI."""

    class Broken(FakeService):
        async def recommend_on_loop(self, requests: list[Any], model: object, batch: bool) -> Any:
            raise OSError("disk gone")

    metrics = Metrics()
    with pytest.raises(OSError, match="disk gone"):
        _call(Broken(), b'{"customer_id": "c1"}', metrics=metrics)
    assert dict(metrics.requests) == {("POST", "/v1/recommendations", "500"): 1}
