"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

The app runs in-process (ASGI, lifespan started once by schemathesis) against the tiny
bundle and log of ``bundle_factory``.  Every operation of ``/openapi.json`` gets a bounded,
derandomized set of generated requests (valid and invalid ones), sent with the API key so
the write endpoints (``/v1/events``, ``/admin/reload``) get past authentication.  The one
property checked is CONTRACT §5's "the service never answers 500 to bad input": no
response is a 5xx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from schemathesis import Case  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from serving.app import create_app  # noqa: E402
from serving.settings import ServingSettings  # noqa: E402
from tests.serving.bundle_factory import KEY, build_serving_files  # noqa: E402

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25  # per operation (fuzzing phase); the whole file stays well under 60 s
MAX_BATCH = 50

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class LateApp:
    """An ASGI app that forwards to one set by a fixture.

    The schema is needed when the module is collected, the app (bundle, log files in a
    temporary folder) only when the tests run.  ``schemathesis.pytest.from_fixture`` would
    do that, but breaks on pytest 9 (``request.node._nodeid``), so the schema is built from
    the OpenAPI document of a never-started app (``create_app`` opens nothing) and the
    requests go through this proxy to the real app, in-process, lifespan included.
    """

    def __init__(self) -> None:
        self.target: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.target is None:
            raise RuntimeError("the served_app fixture has not set the app yet")
        await self.target(scope, receive, send)


APP = LateApp()
# The same code as the served app; create_app reads and opens nothing until its lifespan.
_OPENAPI = create_app(ServingSettings(model=Path("not-loaded"))).openapi()
schema = schemathesis.openapi.from_dict(_OPENAPI)
schema.app = APP  # what schemathesis.openapi.from_asgi does: in-process ASGI transport


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LateApp]:
    files = build_serving_files(tmp_path_factory.mktemp("schemathesis"))
    APP.target = create_app(
        ServingSettings(
            model=files.model,
            store_path=files.store,
            decision_log_path=files.decision_log,
            events_path=files.events,
            customers_path=files.customers,
            api_key=SecretStr(KEY),
            seed=7,
            # The coverage phase sends a batch at the schema's maxItems (1000): scored one
            # by one that is ~7 s per batch.  A lower limit keeps the file fast and fuzzes
            # the "at most max_batch" 422 as well.
            max_batch=MAX_BATCH,
        )
    )
    try:
        yield APP
    finally:
        # schemathesis starts the lifespan on the first request and keeps it until exit;
        # stop it now so the store and the decision log are closed with their folder.
        from schemathesis.python import asgi

        shutdown = getattr(asgi, "shutdown_lifespans", None)
        if shutdown is not None:
            shutdown()
        APP.target = None


def test_every_operation_is_fuzzed() -> None:
    paths = set(_OPENAPI["paths"])
    assert {"/v1/recommendations", "/v1/recommendations:batch", "/v1/events",
            "/admin/reload", "/healthz", "/readyz", "/metrics"} <= paths  # fmt: skip


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Case, served_app: LateApp) -> None:
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=[not_a_server_error])
