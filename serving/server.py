"""Running the service: uvicorn with uvloop and httptools, one or several worker processes.

One Python process uses one core for the request path (the GIL), so ``workers=2`` on a
2-core machine nearly doubles throughput.  The workers are forked from this process,
which then owns the listening socket: it accepts each connection and hands it to the
worker holding the fewest (serving/connection_handoff.py).  Neither of the kernel's ways
of sharing a port balances connections: with one shared socket the worker that wakes
first accepts every connection waiting, and with one ``SO_REUSEPORT`` socket per worker
the kernel picks by a hash, which gave one worker 7 of a pool of 8 connections in 8 pools
of 100, and left the other core mostly idle.  Forking here also keeps two things in our
hands:

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
import functools
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType

import numpy as np

from serving.connection_handoff import Acceptor, ConnectionLedger, HandoffServer, channel_pairs
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

    _log_to_stderr()

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
    if not hasattr(os, "fork"):
        raise SystemExit("--workers above 1 needs os.fork (Linux, macOS); run one worker")
    shared = settings.model_copy(update={"events_path": None, "customers_path": None})
    # Bound first: a taken port fails before the startup files are loaded.
    try:
        listener = listening_socket(settings.host, settings.port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    log.info(
        "listening on %s port %d: %d workers, each connection to the one holding fewest",
        settings.host,
        listener.getsockname()[1],
        settings.workers,
    )
    # Where the workers share their metrics and reloads (serving/metrics_peers.py,
    # serving/shared_reload.py); removed when the service stops.
    shared_dir = tempfile.mkdtemp(prefix="touchpoint-workers-")
    _load_startup_files(settings)
    channels = channel_pairs(settings.workers)
    ledger = ConnectionLedger(settings.workers)
    children: list[int] = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker: serve what it is handed, then exit without cleanup
            code = 0
            listener.close()
            for other, (parent_end, worker_end) in enumerate(channels):
                parent_end.close()
                if other != worker:
                    worker_end.close()
            try:
                worker_settings = shared.model_copy(
                    update={"seed": _worker_seed(settings.seed, worker)}
                )
                HandoffServer(
                    config(worker_settings, worker),
                    channel=channels[worker][1],
                    on_closed=functools.partial(ledger.closed_one, worker),
                ).run()
            except BaseException:  # pragma: no cover - reported, then the worker exits
                log.exception("worker %d failed", worker)
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for _, worker_end in channels:
        worker_end.close()
    log.info("started %d workers: %s", len(children), ", ".join(map(str, children)))
    acceptor = Acceptor(listener, [parent_end for parent_end, _ in channels], ledger)
    try:
        _supervise(children, acceptor)
    finally:
        listener.close()
        for parent_end, _ in channels:
            parent_end.close()
        shutil.rmtree(shared_dir, ignore_errors=True)


#: Connections the kernel queues for the parent to accept (uvicorn's default).
BACKLOG = 2048


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one).  Raises ``OSError`` when
    the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart after a stop
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _worker_seed(seed: int | None, worker: int) -> int | None:
    """Independent per-worker seeds from one configured seed (None stays None: OS entropy)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, worker]).generate_state(1, np.uint64)[0] >> 1)


def _log_to_stderr() -> None:
    """The service's own messages (``touchpoint.*``: startup files, quarantines, reloads,
    workers) on stderr, in the CLI's progress format.  uvicorn configures only its own
    loggers, so without this only warnings reached stderr, bare, and the rest was lost.
    Left alone when the application has configured the logger itself."""
    logger = logging.getLogger("touchpoint")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[touchpoint %(asctime)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


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


def _supervise(children: list[int], acceptor: Acceptor) -> None:
    """Hand out connections while the workers run; pass SIGINT/SIGTERM on, and stop all
    if one dies."""
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGTERM)

    # Signals wake the select below through this pair (signal.set_wakeup_fd).
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake the select
    selector = selectors.DefaultSelector()
    selector.register(wake_read, selectors.EVENT_READ)
    for worker, channel in enumerate(acceptor.channels):
        selector.register(channel, selectors.EVENT_READ, worker)
    accepting = False  # from when the first worker is ready
    alive = set(children)
    status = 0
    try:
        while alive:
            events = selector.select(timeout=1.0)
            # Connections last: a worker that has just said it is ready gets its share of
            # the connections that arrived with that message.
            for key, _ in sorted(events, key=lambda event: event[0].fileobj is acceptor.listener):
                if key.fileobj is wake_read:
                    with contextlib.suppress(BlockingIOError):
                        while wake_read.recv(512):
                            pass
                elif key.fileobj is acceptor.listener:
                    acceptor.accept_ready()
                else:
                    if not acceptor.worker_said(key.data):  # the worker's end closed
                        selector.unregister(key.fileobj)
            if not accepting and not stopping and any(acceptor.ledger.ready):
                selector.register(acceptor.listener, selectors.EVENT_READ)
                accepting = True
            if stopping and acceptor.listener.fileno() != -1:  # none for workers on their way out
                if accepting:
                    selector.unregister(acceptor.listener)
                acceptor.listener.close()
            while alive:
                try:
                    pid, wait_status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    alive.clear()
                    break
                if pid == 0:
                    break
                alive.discard(pid)
                if not stopping:
                    code = os.waitstatus_to_exitcode(wait_status)
                    log.error("worker %d exited (status %d); stopping the others", pid, code)
                    status = 1
                    forward(signal.SIGTERM, None)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        selector.close()
        wake_read.close()
        wake_write.close()
    if status:
        sys.exit(status)
