"""The HTTP service (CONTRACT §5): FastAPI on top of the decision engine.

Per request: history (inline events, or the store, strictly before ``as_of``) -> the same
feature code as offline -> :class:`serving.engine.DecisionEngine` (contact rules, both
models, expected values) -> a draw from the exploration policy with its exact propensity
-> the decision log -> the response.  The engine knows nothing of HTTP; this module only
adapts it.  docs/SERVING.md describes the API and the settings.

Start it with :func:`serve` (what ``touchpoint serve`` calls) or mount :func:`create_app`
under any ASGI server.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from features.counters import map_customers, prepare_events
from features.ingest import IngestError, normalize_events, read_customers, read_events
from features.pipeline import compute_feature_matrix, encode_customers
from features.schema import NO_ACTION, STAGES
from features.spec import FeatureSpec
from serving.bundle import Bundle, load_bundle
from serving.contact_policy import RULES
from serving.decision_log import DecisionLog, DecisionRecord
from serving.engine import DecisionEngine
from serving.policy import sample_actions
from serving.schemas import (
    BatchRecommendationRequest,
    BatchRecommendationResponse,
    EventIn,
    EventsRequest,
    EventsResponse,
    Recommendation,
    RecommendationRequest,
    RecommendationResponse,
    ReloadRequest,
    ReloadResponse,
    RowError,
    Suppression,
)
from serving.settings import ServingSettings
from serving.store import HistoryStore, SQLiteHistoryStore, events_frame

__all__ = ["LoadedModel", "Metrics", "Service", "create_app", "customer_features", "serve"]

log = logging.getLogger("touchpoint.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


# ---------------------------------------------------------------------------- features
def customer_features(
    spec: FeatureSpec,
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    customer_id: str,
    as_of: pd.Timestamp,
) -> np.ndarray:
    """The ``(1, n_features)`` feature row of one customer at ``as_of``.

    The numpy core of :func:`features.pipeline.compute_features` without its DataFrame
    wrapping; float32 then float64, exactly as ``touchpoint recommend`` gets them.
    """
    ev = prepare_events(events, spec)
    ids = pd.Series([customer_id], dtype=object)
    codes = map_customers(ids, ev.customer_ids)
    consent, static = encode_customers(customers, ids, spec)
    times = np.array([pd.Timestamp(as_of).as_unit("ns").value], dtype=np.int64)
    X = compute_feature_matrix(ev, codes, times, spec, consent=consent, static=static)
    return np.ascontiguousarray(X, dtype=np.float64)


# ---------------------------------------------------------------------------- reasons
def _readable_value(spec: FeatureSpec, name: str, value: float, actions: Sequence[str]) -> str:
    if name == "action":
        code = int(value)
        return actions[code] if 0 <= code < len(actions) else str(code)
    if np.isnan(value):
        return "missing"
    if name.startswith("seq_token_"):
        code = int(value)
        if code == 0:
            return "no event"
        if 1 <= code <= len(spec.token_vocabulary):
            return spec.token_vocabulary[code - 1]
        return "other"
    if name == "journey_stage" and 0 <= int(value) < len(STAGES):
        return STAGES[int(value)]
    if name.startswith("attr_") and name[5:] in spec.static_categorical:
        vocab = spec.static_categorical[name[5:]]
        return vocab[int(value)] if 0 <= int(value) < len(vocab) else "missing"
    return f"{value:.3g}"


def explain(
    bundle: Bundle, x: np.ndarray, codes: Sequence[int], *, top: int = 3
) -> list[list[str]]:
    """Top feature contributions (LightGBM SHAP, log-odds) of the conversion model per action.

    ``x`` is one feature row; one list of readable reasons per action code.  Calibration is
    monotone, so the raw model's contributions keep their sign.
    """
    scorer = bundle.conversion
    boosters = scorer.boosters
    names = [*bundle.spec.feature_names, "action"]
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    m, n = len(codes), x.shape[1]
    rows = np.hstack([np.repeat(x, m, axis=0), np.asarray(codes, dtype=np.float64)[:, None]])

    def contrib(booster: Any, data: np.ndarray) -> np.ndarray:
        out = np.asarray(booster.predict(data, pred_contrib=True, num_threads=1), dtype=np.float64)
        return out[:, :-1]  # drop the bias column

    contribs = np.zeros((m, n + 1))
    if scorer.formulation == "single":
        contribs[:] = contrib(boosters["all"], rows)
    elif scorer.formulation == "shared_offset":
        contribs[:, :n] = contrib(boosters["base"], x)
        contribs += contrib(boosters["offset"], rows)
    elif scorer.formulation == "offset":
        contribs[:, :n] = contrib(boosters["base"], x)
        for i, code in enumerate(codes):
            contribs[i, :n] += contrib(boosters[scorer.actions[code]], x)[0]
    else:
        for i, code in enumerate(codes):
            contribs[i, :n] = contrib(boosters[scorer.actions[code]], x)[0]
    out: list[list[str]] = []
    for i in range(m):
        order = np.argsort(-np.abs(contribs[i]), kind="stable")[:top]
        reasons = []
        for j in order:
            c = contribs[i, j]
            if c == 0:
                break
            value = _readable_value(bundle.spec, names[j], rows[i, j], scorer.actions)
            verb = "raises" if c > 0 else "lowers"
            reasons.append(f"{names[j]}={value} {verb} conversion odds ({c:+.2f})")
        out.append(reasons)
    return out


# ---------------------------------------------------------------------------- metrics
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
    empty = events_frame([])
    X = customer_features(bundle.spec, empty, None, "warm-up", pd.Timestamp.now(tz="UTC"))
    engine.distribution(engine.score(X, pd.Timestamp.now(tz="UTC")))
    return LoadedModel(bundle=bundle, engine=engine, path=Path(path))


class RequestError(Exception):
    """A request that is well-formed JSON but breaks the contract; becomes a 422."""

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = list(loc)
        self.msg = msg
        self.type = type_

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": self.loc, "msg": self.msg, "type": self.type}]


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
        self, events: list[EventIn], customer_id: str, loc: list[str | int]
    ) -> pd.DataFrame:
        for i, e in enumerate(events):
            if e.customer_id is not None and e.customer_id.strip() != customer_id:
                raise RequestError(
                    [*loc, "events", i, "customer_id"],
                    f"inline events must belong to customer_id {customer_id!r}",
                )
        frame = _events_input_frame(events)
        try:
            result = normalize_events(frame)
        except IngestError as exc:
            raise RequestError([*loc, "events"], str(exc)) from None
        if len(result.quarantine):
            row, reason = result.quarantine.iloc[0][["row", "reason"]]
            raise RequestError([*loc, "events", int(row) - 1], str(reason), "event_invalid")
        return result.events

    # ------------------------------------------------------------------ decisions
    def decide(
        self, req: RecommendationRequest, model: LoadedModel, loc: list[str | int]
    ) -> tuple[RecommendationResponse, DecisionRecord]:
        engine, bundle = model.engine, model.bundle
        as_of = pd.Timestamp.now(tz="UTC") if req.as_of is None else pd.Timestamp(req.as_of)
        as_of = as_of.tz_convert("UTC").as_unit("ns")
        cid = req.customer_id
        if req.events is not None:
            history = self._inline_history(req.events, cid, loc)
            history = history[history["timestamp"] < as_of]
            source = "inline"
        else:
            days = self.settings.history_days
            # Clamp at the earliest representable time rather than overflow on old dates.
            floor = pd.Timestamp.min.tz_localize("UTC") + pd.Timedelta(days=days or 0)
            since = as_of - pd.Timedelta(days=days) if days and as_of > floor else None
            history = self.store.history(cid, before=as_of, since=since)
            source = "store"
        customers = self.store.customers([cid])
        X = customer_features(bundle.spec, history, customers, cid, as_of)
        scored = engine.score(X, as_of)
        probs = engine.distribution(scored)[0]
        with self._rng_lock:
            chosen = int(sample_actions(probs[None, :], self._rng)[0])
        ranked = [int(a) for a in scored.ranked()[0] if scored.eligible[0, a]]
        k = req.k or self.settings.default_k
        top = [chosen] + [a for a in ranked if a != chosen][: k - 1]
        explored = chosen != ranked[0]
        try:
            reasons = explain(bundle, X[0], top)
        except Exception:  # reasons are an explanation, never a reason to fail the decision
            log.exception("explaining the decision failed")
            reasons = [[] for _ in top]
        actions = engine.actions
        channels = [c or NO_ACTION for c in engine.channels]
        recs = [
            Recommendation(
                action=actions[a],
                channel=channels[a],
                score=float(scored.scores[0, a]),
                p_conversion=float(scored.p_conversion[0, a]),
                p_churn=float(scored.p_churn[0, a]),
                propensity=float(probs[a]),
                reasons=r,
            )
            for a, r in zip(top, reasons, strict=True)
        ]
        codes = scored.suppression[0]
        suppressed = [
            Suppression(action=actions[a], rule=RULES[int(c) - 1]) for a, c in enumerate(codes) if c
        ]
        decision_id = uuid.uuid4().hex
        candidates = [
            {
                "action": actions[a],
                "score": float(scored.scores[0, a]),
                "p_conversion": float(scored.p_conversion[0, a]),
                "p_churn": float(scored.p_churn[0, a]),
                "propensity": float(probs[a]),
                "suppressed": RULES[int(codes[a]) - 1] if codes[a] else None,
            }
            for a in range(len(actions))
        ]
        record = DecisionRecord(
            decision_id=decision_id,
            decision_time=as_of,
            customer_id=cid,
            model_version=model.version,
            action=actions[chosen],
            propensity=float(probs[chosen]),
            candidates=candidates,
            suppressed=[s.model_dump() for s in suppressed],
            context={
                "request": req.context or {},
                "k": k,
                "history": source,
                "n_events": len(history),
                "explored": explored,
            },
        )
        response = RecommendationResponse(
            decision_id=decision_id,
            model_version=model.version,
            customer_id=cid,
            as_of=as_of.to_pydatetime(),
            chosen=actions[chosen],
            explored=explored,
            recommendations=recs,
            suppressed=suppressed,
        )
        return response, record

    def recommend(
        self, requests: Sequence[RecommendationRequest], model: LoadedModel, batch: bool
    ) -> list[RecommendationResponse]:
        out: list[RecommendationResponse] = []
        records: list[DecisionRecord] = []
        for i, req in enumerate(requests):
            loc: list[str | int] = ["body", "requests", i] if batch else ["body"]
            response, record = self.decide(req, model, loc)
            out.append(response)
            records.append(record)
        # Log before answering: a decision the caller may act on is never missing from the log.
        self.decision_log.append(records)
        for r in out:
            self.metrics.observe_decision(r.chosen, r.explored, [s.rule for s in r.suppressed])
        return out

    # ------------------------------------------------------------------ events
    def ingest(self, events: list[EventIn]) -> EventsResponse:
        if not events:
            return EventsResponse(accepted=0, duplicates=0, errors=[])
        try:
            result = normalize_events(_events_input_frame(events))
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
        self.metrics.observe_events(accepted, duplicates, len(errors))
        return EventsResponse(accepted=accepted, duplicates=duplicates, errors=errors)

    def load_files(self) -> None:
        """Load the startup customers table and event log (settings) into the store."""
        s = self.settings
        if s.customers_path is not None:
            cres = read_customers(s.customers_path)
            n = self.store.load_customers(cres.customers)
            log.info("customers: %d loaded, %d quarantined", n, cres.n_quarantined)
        if s.events_path is not None:
            eres = read_events(s.events_path)
            accepted, duplicates = self.store.add(eres.events)
            log.info(
                "events: %d accepted, %d already stored, %d duplicates in the file, %d quarantined",
                accepted,
                duplicates,
                eres.n_duplicates,
                eres.n_quarantined,
            )

    def close(self) -> None:
        self.store.close()
        self.decision_log.close()


def _events_input_frame(events: list[EventIn]) -> pd.DataFrame:
    columns = list(EventIn.model_fields)
    records = [e.model_dump() for e in events]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.astype(object)


# ---------------------------------------------------------------------------- app
def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the service is starting")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_model(service: ServiceDep) -> LoadedModel:
    model = service.model
    if model is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    return model


ModelDep = Annotated[LoadedModel, Depends(get_model)]


def require_api_key(
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
) -> FastAPI:
    """The FastAPI app.  Nothing is opened or loaded until the lifespan starts.

    ``store`` and ``decision_log`` replace the SQLite ones built from ``settings`` (tests,
    other backends).
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, metrics, store=store, decision_log=decision_log)
        app.state.service = service
        try:
            await run_in_threadpool(service.load_files)
            model = await run_in_threadpool(load_model, settings.model)
            service.set_model(model)
            log.info("serving model %s from %s", model.version, model.path)
            yield
        finally:
            app.state.service = None
            service.close()

    app = FastAPI(
        title="touchpoint",
        summary="Next-best-touchpoint recommendations (CONTRACT §5)",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

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

    @app.post("/v1/recommendations", tags=["recommendations"])
    def recommend(
        body: RecommendationRequest, service: ServiceDep, model: ModelDep
    ) -> RecommendationResponse:
        """Ranked actions for one customer; the first one is the policy's pick."""
        return service.recommend([body], model, batch=False)[0]

    @app.post("/v1/recommendations:batch", tags=["recommendations"])
    def recommend_batch(
        body: BatchRecommendationRequest, service: ServiceDep, model: ModelDep
    ) -> BatchRecommendationResponse:
        """Up to ``max_batch`` (default 1000) recommendation requests, answered in order."""
        if len(body.requests) > settings.max_batch:
            raise RequestError(
                ["body", "requests"], f"at most {settings.max_batch} requests per batch"
            )
        return BatchRecommendationResponse(
            responses=service.recommend(body.requests, model, batch=True)
        )

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
        service: ServiceDep, _: ApiKeyDep, body: ReloadRequest | None = None
    ) -> ReloadResponse:
        """Load a bundle (default: the configured one again) and swap it in atomically."""
        path = Path(body.model) if body is not None and body.model else settings.model
        current = service.model
        try:
            new, old = service.reload(path)
        except Exception as exc:  # any failure leaves the old model serving
            service.metrics.observe_reload("failed")
            log.warning("reload of %s failed: %s", path, exc)
            raise HTTPException(
                status_code=409,
                detail={
                    "error": f"{type(exc).__name__}: {exc}",
                    "model_version": None if current is None else current.version,
                    "message": "the new bundle failed to load; the previous model keeps serving",
                },
            ) from None
        service.metrics.observe_reload("ok")
        return ReloadResponse(
            model_version=new.version,
            previous_version="" if old is None else old.version,
            path=str(new.path),
        )

    return app


def serve(settings: ServingSettings) -> None:
    """Run the service with uvicorn (one worker; uvloop and httptools when installed)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        access_log=settings.access_log,
        workers=1,
    )


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
