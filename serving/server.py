"""Running the service: uvicorn with uvloop and httptools, one or several worker processes.

One Python process uses one core for the request path (the GIL), so ``workers=2`` on a
2-core machine nearly doubles throughput.  The workers are forked from this process.  On
Linux each gets its own listening socket on the same port (``SO_REUSEPORT``), and the
kernel spreads new connections over them by a hash of the client's address and port.
``uvicorn --workers`` shares one socket instead, and there whichever worker wakes first
accepts every connection waiting: a client that opens its pool at once (a load generator,
a CRM's connection pool) can land wholly on one worker, leaving the other core idle.
That happened in about one load phase in three here (bench/bench_serving.py, 8 or 32
connections: ~97% of one core busy, ~370-550 rps instead of ~750-900).  Elsewhere the
workers share one socket.  Forking here also keeps two things in our hands:

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
import socket
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
    shared = settings.model_copy(update={"events_path": None, "customers_path": None})
    # Bound first: a taken port fails before the startup files are loaded.
    if REUSEPORT:
        try:
            socks = listening_sockets(settings.host, settings.port, settings.workers)
        except OSError as exc:
            raise SystemExit(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
        log.info(
            "listening on %s port %d: %d workers, one socket each (SO_REUSEPORT)",
            settings.host,
            socks[0].getsockname()[1],
            settings.workers,
        )
    else:
        socks = [config(shared).bind_socket()] * settings.workers
    # Where the workers share their metrics and reloads (serving/metrics_peers.py,
    # serving/shared_reload.py); removed when the service stops.
    shared_dir = tempfile.mkdtemp(prefix="touchpoint-workers-")
    _load_startup_files(settings)
    children: list[int] = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker: serve on its inherited socket, then exit without cleanup
            code = 0
            sock = socks[worker]
            for other in socks:  # a dead worker's socket must close, or it keeps its share
                if other is not sock:
                    other.close()
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
    for sock in socks:
        sock.close()
    log.info("started %d workers: %s", len(children), ", ".join(map(str, children)))
    try:
        _supervise(children)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)


#: One listening socket per worker, balanced by the kernel (Linux's SO_REUSEPORT; other
#: systems either lack it or give every connection to one socket).
REUSEPORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` sockets bound to ``host:port`` with ``SO_REUSEPORT`` (not yet listening:
    uvicorn listens on each in its worker).  Port 0 binds the first to a free port and
    the others to the same one.  Raises ``OSError`` when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


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
