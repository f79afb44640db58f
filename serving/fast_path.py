"""A pure-ASGI shortcut for the hot route, ``POST /v1/recommendations``.

FastAPI's machinery around one call (dependency solving, body reading and validation,
its middlewares) cost about a third as much as the decision itself.  The app
(``serving.app.TouchpointAPI``) hands this route to the shortcut before any of its
middlewares run: under load, the six ASGI layers between uvicorn and the shortcut
(Starlette's error and body-limit middlewares, FastAPI's telemetry, our metrics with its
``send`` wrapper) took ~10% of a worker's CPU (py-spy, one worker at concurrency 8).  The
shortcut therefore times and counts its own answers (``metrics``).  This middleware
answers a well-formed recommendation request directly: it reads the body, parses it
with orjson, validates it with the same pydantic model FastAPI uses (python mode, as
FastAPI does after ``json.loads``), calls the same :meth:`serving.app.Service.recommend_on_loop`
and writes the same JSON.

Anything it is not sure about goes to FastAPI unchanged, with the body replayed: another
content type, a body that does not parse or validate, a request the service rejects (a
``RequestError``), or a service that is not ready.  So every error answer (422 with its
``loc``, 503, ...) still comes from FastAPI's own code, and the fast path only ever
produces the 200s that FastAPI would have produced.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from serving.schemas import RecommendationRequest, RequestError

if TYPE_CHECKING:
    from serving.metrics import Metrics

__all__ = ["RecommendationFastPath"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/v1/recommendations"
#: Larger bodies (long inline histories) take the ordinary route.
MAX_BODY = 1 << 20


class RecommendationFastPath:
    """Answers ``POST /v1/recommendations`` without FastAPI when nothing can go wrong."""

    def __init__(self, app: ASGIApp, route: Any = None, metrics: Metrics | None = None) -> None:
        self.app = app
        self.route = route  # FastAPI's route object, so metrics label it as FastAPI would
        # Counts and times the answers given here (the others are FastAPI's to count).
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        replay = _replay(body, complete, receive)
        service = getattr(scope["app"].state, "service", None) if "app" in scope else None
        model = None if service is None else service.model
        if service is None or model is None or not complete:
            await self.app(scope, replay, send)
            return
        try:
            request = RecommendationRequest.model_validate(orjson.loads(body))
            response = (await service.recommend_on_loop([request], model, batch=False))[0]
        except (orjson.JSONDecodeError, ValidationError, RequestError):
            await self.app(scope, replay, send)  # FastAPI writes the error answer
            return
        except Exception:
            # A fault, not bad input: uvicorn answers 500 and logs it.  Not replayed to
            # FastAPI, which would decide (and log a decision) a second time.
            self._observe(500, start)
            raise
        payload = orjson.dumps(response)
        if self.route is not None:
            scope["route"] = self.route
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self._observe(200, start)

    def _observe(self, status: int, start: float) -> None:
        if self.metrics is not None:
            path = getattr(self.route, "path", PATH)
            self.metrics.observe_request("POST", path, status, time.perf_counter() - start)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body; ``complete`` is False when it is larger than :data:`MAX_BODY`
    (what was read is then replayed and FastAPI reads the rest)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # a disconnect: let FastAPI see it
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > MAX_BODY:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that first hands out the body already read, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
