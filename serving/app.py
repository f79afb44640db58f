"""The HTTP service (CONTRACT §5): FastAPI on top of the decision engine.

Per request: history (inline events, or the store, strictly before ``as_of``) -> the same
feature code as offline -> :class:`serving.engine.DecisionEngine` (contact rules, both
models, expected values) -> a draw from the exploration policy with its exact propensity
-> the decision log -> the response.  The engine knows nothing of HTTP; this module only
adapts it.  docs/SERVING.md describes the API and the settings.

Start it with :func:`serving.server.serve` (what ``touchpoint serve`` calls) or mount
:func:`create_app` under any ASGI server.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from features.counters import NS_PER_DAY
from features.ingest import (
    IngestError,
    normalize_events,
    read_customers,
    read_events,
    write_quarantine,
)
from serving.bundle import Bundle, load_bundle
from serving.contact_policy import RULES
from serving.decision_log import DecisionLog, DecisionRecord, new_decision_id
from serving.engine import DecisionEngine
from serving.fast_path import RecommendationFastPath
from serving.inline_events import events_input_frame, inline_history
from serving.metrics import Metrics, MetricsMiddleware
from serving.metrics_peers import MetricsPeers
from serving.model_source import FAILED, RELOADED, ModelSource, ModelWatcher
from serving.online_features import customer_features, request_features
from serving.reasons import explain
from serving.schemas import (
    BatchRecommendationRequest,
    BatchRecommendationResponse,
    EventIn,
    EventsRequest,
    EventsResponse,
    RecommendationRequest,
    RecommendationResponse,
    ReloadRequest,
    ReloadResponse,
    RequestError,
    RowError,
)
from serving.settings import ServingSettings
from serving.shared_reload import POLL_SECONDS as SHARED_RELOAD_POLL_SECONDS
from serving.shared_reload import SharedReload
from serving.store import EventColumns, HistoryStore, SQLiteHistoryStore
from serving.strict_json import StrictJSONRoute

__all__ = ["LoadedModel", "Metrics", "Service", "create_app", "customer_features"]

log = logging.getLogger("touchpoint.serving")


# ---------------------------------------------------------------------------- service
@dataclass(frozen=True)
class LoadedModel:
    """A bundle and its engine; replaced as a whole on reload (one reference swap)."""

    bundle: Bundle
    engine: DecisionEngine
    path: Path

    @property
    def version(self) -> str:
        return self.bundle.model_version


def load_model(path: str | Path) -> LoadedModel:
    """Load a bundle and check that it can score (a decision for a customer with no history).

    Raises whatever the bundle or the engine raise (``BundleError``, ``ValueError``).
    """
    bundle = load_bundle(path)
    engine = DecisionEngine(bundle)
    now = time.time_ns()
    X = request_features(bundle.spec, EventColumns.from_rows([]), None, "warm-up", now)
    engine.decide_row(X[0], now, 0.5)  # compiles the decision kernel before any request
    explain(bundle, X[0], range(len(bundle.actions)), versus=1)
    return LoadedModel(bundle=bundle, engine=engine, path=Path(path))


class Service:
    """Everything the routes share: settings, store, decision log, model, metrics, RNG."""

    def __init__(
        self,
        settings: ServingSettings,
        metrics: Metrics,
        *,
        store: HistoryStore | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: HistoryStore = store or SQLiteHistoryStore(settings.store_path)
        self.decision_log = decision_log or DecisionLog(settings.decision_log_path)
        self.model: LoadedModel | None = None
        self._rng = np.random.default_rng(settings.seed)
        self._rng_lock = threading.Lock()
        self._reload_lock = threading.Lock()

    # ------------------------------------------------------------------ model
    def set_model(self, model: LoadedModel) -> None:
        self.model = model  # one reference assignment: requests in flight keep the old one
        self.metrics.model_version = model.version

    def reload(self, path: str | Path) -> tuple[LoadedModel, LoadedModel | None]:
        with self._reload_lock:
            new = load_model(path)
            old = self.model
            self.set_model(new)
            return new, old

    # ------------------------------------------------------------------ history
    def _inline_history(
        self, events: list[EventIn], customer_id: str, as_of_ns: int, loc: list[str | int]
    ) -> EventColumns:
        events = list(events)  # rows are filled in below: not the request's own list
        for i, e in enumerate(events):
            if e.customer_id is None or not e.customer_id.strip():
                # The request names the customer: an inline row may leave it out.
                events[i] = e.model_copy(update={"customer_id": customer_id})
            elif e.customer_id.strip() != customer_id:
                raise RequestError(
                    [*loc, "events", i, "customer_id"],
                    f"inline events must belong to customer_id {customer_id!r}",
                )
        # Row by row in plain Python (~µs per event); rows it cannot vouch for go through
        # normalize_events, the reference semantics, which costs ~40 ms (inline_events.py).
        history = inline_history(events, customer_id, as_of_ns, loc)
        # A client's history may be partial: an opt-out the store holds still counts.
        return history.with_opt_outs(self.store.unsubscribes(customer_id, as_of_ns))

    def _stored_history(self, customer_id: str, as_of_ns: int) -> EventColumns:
        days = self.settings.history_days
        since = as_of_ns - days * NS_PER_DAY if days else None
        if since is not None and since < _MIN_NS:
            since = None  # older than representable: read everything
        history = self.store.recent_events(customer_id, as_of_ns, since)
        if since is None:
            return history
        # Opt-outs older than the window still hold. With them the row is also closer to
        # the offline one, which reads the whole history.
        return history.with_opt_outs(self.store.unsubscribes(customer_id, since))

    # ------------------------------------------------------------------ decisions
    def decide(
        self, req: RecommendationRequest, model: LoadedModel, loc: list[str | int]
    ) -> tuple[dict[str, Any], DecisionRecord]:
        """One decision: the response body (a plain dict, serialized once) and its log row."""
        engine, bundle = model.engine, model.bundle
        as_of_ns = time.time_ns() if req.as_of is None else _datetime_ns(req.as_of)
        cid = req.customer_id
        if req.events is not None:
            history = self._inline_history(req.events, cid, as_of_ns, loc)
            source = "inline"
        else:
            history = self._stored_history(cid, as_of_ns)
            source = "store"
        X = request_features(bundle.spec, history, self.store.customer(cid), cid, as_of_ns)
        with self._rng_lock:
            draw = float(self._rng.random())  # as serving.policy.sample_actions draws
        row = engine.decide_row(X[0], as_of_ns, draw)
        chosen, ranked = row.chosen, row.ranked
        k = req.k or self.settings.default_k
        top = [chosen] + [a for a in ranked if a != chosen][: k - 1]
        explored = chosen != ranked[0]
        try:
            # At the models' precision (float32, as in DecisionEngine.score).
            reasons = explain(
                bundle,
                row.model_row,
                top,
                p_conversion=row.p_conversion[top],
                p_churn=row.p_churn[top],
                versus=next((a for a in ranked if a != 0), None),  # what `none` beats
                engagement=row.engagement,
            )
        except Exception:  # reasons are an explanation, never a reason to fail the decision
            log.exception("explaining the decision failed")
            reasons = [[] for _ in top]
        actions = engine.actions
        channels = engine.channel_names
        scores = row.scores.tolist()
        p_conv = row.p_conversion.tolist()
        p_churn = row.p_churn.tolist()
        prob = row.probs.tolist()
        codes = row.suppression.tolist()
        suppressed = [
            {"action": actions[a], "rule": RULES[c - 1]} for a, c in enumerate(codes) if c
        ]
        decision_id = new_decision_id()
        candidates = [
            {
                "action": actions[a],
                "score": scores[a],
                "p_conversion": p_conv[a],
                "p_churn": p_churn[a],
                "propensity": prob[a],
                "suppressed": RULES[codes[a] - 1] if codes[a] else None,
            }
            for a in range(len(actions))
        ]
        record = DecisionRecord(
            decision_id=decision_id,
            decision_time=as_of_ns,
            customer_id=cid,
            model_version=model.version,
            action=actions[chosen],
            propensity=prob[chosen],
            candidates=candidates,
            suppressed=suppressed,
            context={
                "request": req.context or {},
                "k": k,
                "history": source,
                "n_events": len(history),
                "explored": explored,
            },
        )
        response = {
            "decision_id": decision_id,
            "model_version": model.version,
            "customer_id": cid,
            "as_of": _iso(as_of_ns),
            "chosen": actions[chosen],
            "explored": explored,
            "recommendations": [
                {
                    "action": actions[a],
                    "channel": channels[a],
                    "score": scores[a],
                    "p_conversion": p_conv[a],
                    "p_churn": p_churn[a],
                    "propensity": prob[a],
                    "reasons": r,
                }
                for a, r in zip(top, reasons, strict=True)
            ],
            "suppressed": suppressed,
        }
        return response, record

    def recommend(
        self, requests: Sequence[RecommendationRequest], model: LoadedModel, batch: bool
    ) -> list[dict[str, Any]]:
        """Response bodies, in order; every decision is logged before any is returned."""
        out, records = self._decide_all(requests, model, batch)
        # Log before answering: a decision the caller may act on is never missing from the log.
        self.decision_log.append(records)
        self._observe(out)
        return out

    async def recommend_on_loop(
        self, requests: Sequence[RecommendationRequest], model: LoadedModel, batch: bool
    ) -> list[dict[str, Any]]:
        """:meth:`recommend` for the event loop: the decisions are logged in one commit
        with those of the other requests decided in the same turn of the loop."""
        out, records = self._decide_all(requests, model, batch)
        await self.decision_log.append_grouped(records)
        self._observe(out)
        return out

    def _decide_all(
        self, requests: Sequence[RecommendationRequest], model: LoadedModel, batch: bool
    ) -> tuple[list[dict[str, Any]], list[DecisionRecord]]:
        out: list[dict[str, Any]] = []
        records: list[DecisionRecord] = []
        for i, req in enumerate(requests):
            loc: list[str | int] = ["body", "requests", i] if batch else ["body"]
            response, record = self.decide(req, model, loc)
            out.append(response)
            records.append(record)
        return out, records

    def _observe(self, out: list[dict[str, Any]]) -> None:
        for r in out:
            self.metrics.observe_decision(
                r["chosen"], r["explored"], [s["rule"] for s in r["suppressed"]]
            )

    # ------------------------------------------------------------------ events
    def ingest(self, events: list[EventIn]) -> EventsResponse:
        if not events:
            return EventsResponse(accepted=0, duplicates=0, errors=[])
        try:
            result = normalize_events(events_input_frame(events))
        except IngestError as exc:
            raise RequestError(["body", "events"], str(exc)) from None
        accepted, duplicates = self.store.add(result.events)
        duplicates += result.n_duplicates
        errors = [
            RowError(row=int(row), reason=str(reason))
            for row, reason in zip(
                result.quarantine["row"].tolist(), result.quarantine["reason"].tolist(), strict=True
            )
        ]
        # Refused, not lost: the rows as received, for whoever fixes the producer.
        self.store.quarantine([(events[e.row - 1].model_dump(), e.reason) for e in errors])
        self.metrics.observe_events(accepted, duplicates, len(errors))
        return EventsResponse(accepted=accepted, duplicates=duplicates, errors=errors)

    def load_files(self) -> None:
        """Load the startup customers table and event log (settings) into the store.

        Bad rows are kept, with their row numbers and reasons, in
        ``<file stem>.quarantine.csv`` next to the store (the service's output, as the
        other commands quarantine next to theirs), and reported in the log.
        """
        s = self.settings
        if s.customers_path is not None:
            cres = read_customers(s.customers_path)
            n = self.store.load_customers(cres.customers)
            log.info("%s; %d stored", cres.summary_text(), n)
            self._quarantine(cres.quarantine, Path(s.customers_path), "customer rows")
        if s.events_path is not None:
            eres = read_events(s.events_path)
            accepted, duplicates = self.store.add(eres.events)
            log.info("%s; %d stored, %d already stored", eres.summary_text(), accepted, duplicates)
            self._quarantine(eres.quarantine, Path(s.events_path), "event rows")

    def _quarantine(self, rows: pd.DataFrame, source: Path, what: str) -> None:
        written = write_quarantine(rows, Path(self.settings.store_path).parent / source.name)
        if written is not None:
            log.warning("%s: %d bad %s quarantined in %s", source, len(rows), what, written)

    def close(self) -> None:
        self.store.close()
        self.decision_log.close()


_MIN_NS = int(pd.Timestamp.min.as_unit("ns").value)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _datetime_ns(value: datetime) -> int:
    """ns since the epoch of an aware datetime (naive = UTC), without pandas."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US * 1000


def _iso(ns: int) -> str:
    """ISO-8601 in UTC with a ``Z``, as pydantic writes datetimes."""
    seconds, rest = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return stamp.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- app
# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a
# worker thread, two thread hops per request for what is an attribute lookup.
async def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the service is starting")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_model(service: ServiceDep) -> LoadedModel:
    model = service.model
    if model is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    return model


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def require_api_key(
    service: ServiceDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """With ``api_key`` set, writes need ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    expected = service.settings.api_key
    if expected is None:
        return
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if given is None or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key (header X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKeyDep = Annotated[None, Depends(require_api_key)]


def create_app(
    settings: ServingSettings,
    *,
    store: HistoryStore | None = None,
    decision_log: DecisionLog | None = None,
    model_source: ModelSource | None = None,
    model_ident: str | None = None,
    metrics_peers: MetricsPeers | None = None,
    shared_reload: SharedReload | None = None,
) -> FastAPI:
    """The FastAPI app.  Nothing is opened or loaded until the lifespan starts.

    ``store`` and ``decision_log`` replace the SQLite ones built from ``settings`` (tests,
    other backends).  ``model_source`` (e.g. ``training.registry_source``'s registry
    alias, which the CLI passes) is polled every ``reload_poll_seconds`` and a new model
    it points at is loaded and swapped in; ``model_ident`` names the one served at start.
    ``metrics_peers`` shares the counters with the other workers, and ``shared_reload``
    the reloads made through ``/admin/reload`` (serving/server.py).
    """
    metrics = Metrics(metrics_peers)

    def report(status: str, ident: str | None, error: BaseException | None) -> None:
        if status == RELOADED:
            metrics.observe_reload("ok")
        elif status == FAILED:
            metrics.observe_reload("failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, metrics, store=store, decision_log=decision_log)
        app.state.service = service
        watcher: ModelWatcher | None = None
        if metrics_peers is not None:
            metrics_peers.start(metrics.snapshot)
        try:
            await run_in_threadpool(service.load_files)
            model = await run_in_threadpool(load_model, settings.model)
            service.set_model(model)
            log.info("serving model %s from %s", model.version, model.path)
            if model_source is not None and settings.reload_poll_seconds > 0:
                watcher = ModelWatcher(
                    model_source,
                    service.reload,
                    interval=settings.reload_poll_seconds,
                    initial=model_ident,
                    on_result=report,
                ).start()
            app.state.watcher = watcher
            if shared_reload is not None:
                app.state.peer_watcher = ModelWatcher(
                    shared_reload,
                    service.reload,
                    interval=SHARED_RELOAD_POLL_SECONDS,
                    initial=shared_reload.current(),
                    on_result=report,
                ).start()
            yield
        finally:
            for w in (watcher, app.state.peer_watcher):
                if w is not None:
                    await run_in_threadpool(w.stop)  # joins the thread: keep it off the loop
            app.state.peer_watcher = None
            if metrics_peers is not None:
                await run_in_threadpool(metrics_peers.stop)
            app.state.watcher = None
            app.state.service = None
            service.close()

    app = TouchpointAPI(
        title="touchpoint",
        summary="Next-best-touchpoint recommendations (CONTRACT §5)",
        version="1",
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute  # JSON text only (serving/strict_json.py)
    app.state.service = None
    app.state.watcher = None
    app.state.peer_watcher = None  # follows the other workers' reloads (shared_reload)
    app.state.metrics = metrics

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.detail()})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes the offending input; a NaN or Infinity (which Python's JSON parser
        # accepts) cannot be written back as JSON, so echo such values as strings instead
        # of failing with a 500 while reporting a 422.
        return JSONResponse(status_code=422, content={"detail": _json_safe(exc.errors())})

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready"}})
    def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 once the model is loaded, 503 before."""
        service: Service | None = getattr(request.app.state, "service", None)
        if service is None or service.model is None:
            return JSONResponse(status_code=503, content={"status": "loading"})
        return JSONResponse(
            status_code=200, content={"status": "ready", "model_version": service.model.version}
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics_endpoint() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # The recommendation routes return the JSON bytes themselves (orjson, one pass): FastAPI
    # would otherwise validate the body against the response model and serialize it again.
    # `response_model` still documents the body in the OpenAPI schema.
    @app.post(
        "/v1/recommendations",
        tags=["recommendations"],
        response_model=RecommendationResponse,
        response_class=Response,
    )
    async def recommend(
        body: RecommendationRequest, service: ServiceDep, model: ModelDep
    ) -> Response:
        """Ranked actions for one customer; the first one is the policy's pick."""
        # async on purpose: about a millisecond of CPU, cheaper run on the event loop than
        # handed to a worker thread (with the GIL, a thread would not run it any sooner).
        return _json((await service.recommend_on_loop([body], model, batch=False))[0])

    @app.post(
        "/v1/recommendations:batch",
        tags=["recommendations"],
        response_model=BatchRecommendationResponse,
        response_class=Response,
    )
    def recommend_batch(
        body: BatchRecommendationRequest, service: ServiceDep, model: ModelDep
    ) -> Response:
        """Up to ``max_batch`` (default 1000) recommendation requests, answered in order."""
        # Not async: a large batch takes a while, and must not hold up the event loop.
        if len(body.requests) > settings.max_batch:
            raise RequestError(
                ["body", "requests"], f"at most {settings.max_batch} requests per batch"
            )
        return _json({"responses": service.recommend(body.requests, model, batch=True)})

    @app.post("/v1/events", tags=["events"])
    def ingest_events(body: EventsRequest, service: ServiceDep, _: ApiKeyDep) -> EventsResponse:
        """Ingest touchpoints (CONTRACT §1); idempotent by ``event_id``; bad rows reported."""
        return service.ingest(body.events)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        responses={409: {"description": "the new bundle failed to load; the old one serves"}},
    )
    def reload_model(
        request: Request, service: ServiceDep, _: ApiKeyDep, body: ReloadRequest | None = None
    ) -> ReloadResponse:
        """Load a bundle (default: the configured one again, or, when the service follows a
        registry alias, the version the alias points at now) and swap it in atomically."""
        watcher: ModelWatcher | None = request.app.state.watcher
        if watcher is not None and (body is None or not body.model):
            return _reload_from_source(service, watcher)
        path = Path(body.model) if body is not None and body.model else settings.model
        current = service.model
        try:
            new, old = service.reload(path)
        except Exception as exc:  # any failure leaves the old model serving
            service.metrics.observe_reload("failed")
            log.warning("reload of %s failed: %s", path, exc)
            raise _reload_failed(exc, current) from None
        service.metrics.observe_reload("ok")
        peers: ModelWatcher | None = request.app.state.peer_watcher
        if shared_reload is not None and peers is not None:  # the other workers follow
            ident = shared_reload.next_ident(path)
            peers.note_served(ident)  # first, so this worker does not load it twice
            shared_reload.announce(ident)
        return ReloadResponse(
            model_version=new.version,
            previous_version="" if old is None else old.version,
            path=str(new.path),
        )

    route = next(r for r in app.routes if getattr(r, "path", None) == "/v1/recommendations")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Ahead of every middleware; it counts its own answers and hands the rest to FastAPI.
    app.fast_path = RecommendationFastPath(app.fastapi_call, route=route, metrics=metrics)
    return app


class TouchpointAPI(FastAPI):
    """FastAPI, with the hot route's shortcut (serving/fast_path.py) in front of the whole
    middleware stack."""

    fast_path: RecommendationFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http":
            scope["app"] = self  # as Starlette sets it: the shortcut reads app.state
            await self.fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def fastapi_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What FastAPI alone does with a request: the shortcut's way out."""
        await super().__call__(scope, receive, send)


def _reload_failed(error: BaseException | None, serving: LoadedModel | None) -> HTTPException:
    """The 409 of a reload that failed: the error, and the version that keeps serving."""
    return HTTPException(
        status_code=409,
        detail={
            "error": f"{type(error).__name__}: {error}",
            "model_version": None if serving is None else serving.version,
            "message": "the new bundle failed to load; the previous model keeps serving",
        },
    )


def _reload_from_source(service: Service, watcher: ModelWatcher) -> ReloadResponse:
    """``POST /admin/reload`` without a body when a registry alias is followed: check the
    alias now (retrying a version that failed before) rather than reload the folder that
    was downloaded at startup, which would quietly go back to an older version."""
    before = service.model
    result = watcher.check_now(force=True)  # the watcher's hook counts the reload metric
    if result.status == FAILED:
        raise _reload_failed(result.error, before)
    now = service.model
    if now is None:  # not reachable: routes only run once a model is loaded
        raise HTTPException(status_code=503, detail="no model loaded")
    return ReloadResponse(
        model_version=now.version,
        previous_version="" if before is None else before.version,
        path=str(now.path),
    )


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings and other oddities as ``str``."""
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
