"""Running the service: uvicorn with uvloop and httptools, one or several worker processes.

One Python process uses one core for the request path (the GIL), so ``workers=2`` on a
2-core machine nearly doubles throughput.  The workers are forked from this process and
share one listening socket, and the kernel hands each new connection to one of them,
which is what ``uvicorn --workers`` does too; doing it here keeps two things in our hands:

* the startup files (``--events``, ``--customers``) are loaded into the store ONCE, before
  the fork, instead of by every worker at the same time;
* each worker gets its own exploration seed (derived from ``seed`` and the worker number),
  so two workers never replay the same random draws.

Each worker is a complete service: it loads the model, follows the registry alias, keeps
its own metrics (and adds up the others' for ``/metrics``, serving/metrics_peers.py),
follows a reload made through any worker (serving/shared_reload.py), and writes to the
shared SQLite store and decision log (WAL mode, so readers never wait and writers queue
briefly).  docs/SERVING.md, "Workers", says what that means for ``/metrics`` and
``/admin/reload``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType

import numpy as np

from serving.metrics_peers import MetricsPeers
from serving.model_source import ModelSource
from serving.settings import ServingSettings
from serving.shared_reload import SharedReload

__all__ = ["serve"]

log = logging.getLogger("touchpoint.serving")


def serve(
    settings: ServingSettings,
    *,
    model_source: ModelSource | None = None,
    model_ident: str | None = None,
) -> None:
    """Run the service until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    from serving.app import create_app

    def config(worker_settings: ServingSettings, worker: int | None = None) -> uvicorn.Config:
        """A worker's server; ``worker`` numbers one of several, which then share
        ``shared_dir``."""
        app = create_app(
            worker_settings,
            model_source=model_source,
            model_ident=model_ident,
            metrics_peers=None if worker is None else MetricsPeers(shared_dir, f"w{worker}"),
            shared_reload=None if worker is None else SharedReload(shared_dir),
        )
        return uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="auto",  # uvloop when installed (uvicorn[standard] installs it)
            http="auto",  # httptools likewise
            access_log=settings.access_log,
            log_level="info",
        )

    if settings.workers == 1:
        uvicorn.Server(config(settings)).run()
        return
    # Where the workers share their metrics and reloads (serving/metrics_peers.py,
    # serving/shared_reload.py); removed when the service stops.
    shared_dir = tempfile.mkdtemp(prefix="touchpoint-workers-")
    _load_startup_files(settings)
    shared = settings.model_copy(update={"events_path": None, "customers_path": None})
    sock = config(shared).bind_socket()
    children: list[int] = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker: serve on the inherited socket, then exit without cleanup
            code = 0
            try:
                worker_settings = shared.model_copy(
                    update={"seed": _worker_seed(settings.seed, worker)}
                )
                uvicorn.Server(config(worker_settings, worker)).run(sockets=[sock])
            except BaseException:  # pragma: no cover - reported, then the worker exits
                log.exception("worker %d failed", worker)
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    log.info("started %d workers: %s", len(children), ", ".join(map(str, children)))
    try:
        _supervise(children)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)


def _worker_seed(seed: int | None, worker: int) -> int | None:
    """Independent per-worker seeds from one configured seed (None stays None: OS entropy)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, worker]).generate_state(1, np.uint64)[0] >> 1)


def _load_startup_files(settings: ServingSettings) -> None:
    """Load ``events_path`` / ``customers_path`` into the store once, before forking."""
    if settings.events_path is None and settings.customers_path is None:
        return
    from serving.app import Service
    from serving.metrics import Metrics

    service = Service(settings, Metrics())
    try:
        service.load_files()
    finally:
        service.close()


def _supervise(children: list[int]) -> None:
    """Wait for the workers; pass SIGINT/SIGTERM on, and stop all if one dies."""
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    alive = set(children)
    status = 0
    while alive:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
            continue
        alive.discard(pid)
        if not stopping:
            log.error("worker %d exited (status %d); stopping the others", pid, code)
            status = 1
            forward(signal.SIGTERM, None)
    if status:
        sys.exit(status)
