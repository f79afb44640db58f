"""Connections spread evenly over the workers: the parent accepts them and hands each one to
the worker that holds the fewest.

A worker serves its connections until they close, so how connections are spread is how
the load is spread.  The kernel does not balance them: with one shared listening socket,
whichever worker wakes first accepts every connection waiting (a client that opens its
pool at once could land wholly on one worker), and with one ``SO_REUSEPORT`` socket per
worker, the kernel picks a worker by a hash of the client's port.  Of 100 pools of 8
connections to ``touchpoint serve --workers 2`` with ``SO_REUSEPORT`` (ad-hoc), 8 split
7/1, 19 split 6/2 and only 29 split 4/4 (docs/BENCHMARKS.md); a worker holding 7 of 8
leaves the other core mostly idle.

So the parent, which otherwise only waits for its workers, owns the listening socket.
:class:`Acceptor` accepts each connection and sends its file descriptor (``SCM_RIGHTS``
over a Unix socket pair) to the worker with the fewest open connections (ties in turn).
:class:`HandoffServer` is the worker's uvicorn server: it listens on nothing itself and
serves the connections it receives.  Each worker counts the connections it has closed
in memory shared with the parent (:class:`ConnectionLedger`), so the parent knows how
many each one holds.  This costs one ``sendmsg`` and one ``recvmsg`` per *connection*;
requests on a kept-alive connection go straight to their worker as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

__all__ = ["READY", "Acceptor", "ConnectionLedger", "HandoffServer", "channel_pairs"]

log = logging.getLogger("touchpoint.serving")

#: Connections accepted per wake-up of the parent before it looks at its workers again.
ACCEPT_BATCH = 64
#: What a worker sends the parent once it serves.
READY = b"r"


class ConnectionLedger:
    """How many connections each worker holds: handed (counted by the parent) minus
    closed (counted by the worker, in memory the forked workers share with the parent).

    Each count has one writer, and the parent only reads the closed counts, so no lock
    is needed: a stale read only makes a worker look busier for a moment."""

    def __init__(self, workers: int) -> None:
        self.handed = [0] * workers
        self.closed = multiprocessing.RawArray(ctypes.c_int64, workers)
        #: Set by the parent when a worker says it serves (its model is loaded).
        self.ready = [False] * workers
        self._turn = 0

    def open_connections(self) -> list[int]:
        return [h - c for h, c in zip(self.handed, self.closed, strict=True)]

    def preference(self) -> list[int]:
        """The ready workers, best first for the next connection: fewest open
        connections, ties in turn (starting after the last one picked)."""
        held = self.open_connections()
        n = len(held)
        ready = [(self._turn + step) % n for step in range(n)]
        return sorted((w for w in ready if self.ready[w]), key=held.__getitem__)  # stable

    def pick(self) -> int | None:
        """The worker that gets the next connection (None while no worker is ready)."""
        order = self.preference()
        return order[0] if order else None

    def handed_to(self, worker: int) -> None:
        self.handed[worker] += 1
        self._turn = (worker + 1) % len(self.handed)

    def closed_one(self, worker: int) -> None:
        """Called in ``worker`` when one of its connections closes."""
        self.closed[worker] += 1


def channel_pairs(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """One Unix socket pair per worker: ``(parent's end, worker's end)``.

    A stream socket (a datagram queue is 10 messages deep on some systems), one byte and
    one descriptor per connection; a ``recvmsg`` never returns the descriptors of two
    sends together."""
    return [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(workers)]


class Acceptor:
    """The parent's side: accepts connections and hands each to a worker."""

    def __init__(
        self,
        listener: socket.socket,
        channels: Sequence[socket.socket],
        ledger: ConnectionLedger,
    ) -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.channels = list(channels)
        for channel in self.channels:
            channel.setblocking(False)
        self.ledger = ledger

    def worker_said(self, worker: int) -> bool:
        """Read what ``worker`` sent on its channel: :data:`READY`, or the end of the
        channel when it exits (it then gets no more connections).  False once the
        channel has ended."""
        try:
            data = self.channels[worker].recv(64)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        self.ledger.ready[worker] = bool(data)
        return bool(data)

    def accept_ready(self) -> int:
        """Accept the connections waiting (up to :data:`ACCEPT_BATCH`), hand each on;
        return how many."""
        handed = 0
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. EMFILE: log it, keep serving the others
                log.warning("accept failed: %s", exc)
                break
            self.hand(conn)
            handed += 1
        return handed

    def hand(self, conn: socket.socket) -> None:
        """Send ``conn`` to the best worker that takes it (the next best when a worker's
        channel is full or gone), then close the parent's copy."""
        try:
            for worker in self.ledger.preference():
                try:
                    socket.send_fds(self.channels[worker], [b"c"], [conn.fileno()])
                except OSError as exc:  # full (a worker stuck), or gone
                    log.warning("could not hand a connection to worker %d: %s", worker, exc)
                    continue
                self.ledger.handed_to(worker)
                return
            log.warning("no worker took a connection; it was closed")
        finally:
            conn.close()  # the worker holds its own copy now


def counting(
    protocol_class: type[asyncio.Protocol], on_closed: Callable[[], None]
) -> type[asyncio.Protocol]:
    """``protocol_class``, calling ``on_closed`` once each connection is lost."""

    class Counted(protocol_class):  # type: ignore[valid-type, misc]
        def connection_lost(self, exc: Exception | None) -> None:
            try:
                super().connection_lost(exc)
            finally:
                on_closed()

    Counted.__name__ = Counted.__qualname__ = f"Counted{protocol_class.__name__}"
    return Counted


class HandoffServer(uvicorn.Server):
    """A worker's uvicorn server that serves the connections the parent hands it.

    It binds nothing: uvicorn starts with no listening socket, and the connections come
    in over ``channel`` (:class:`Acceptor`).  Everything else, graceful shutdown included,
    is uvicorn's, which tracks each connection its protocol opens."""

    def __init__(
        self, config: uvicorn.Config, channel: socket.socket, on_closed: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.channel = channel
        self.on_closed = on_closed
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._adopting: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan runs: the model loads first
        protocol_class = counting(self.config.http_protocol_class, self.on_closed)
        # uvicorn's protocols take these, as its own create_protocol passes them.
        self._factory = functools.partial(
            protocol_class,  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        self.channel.setblocking(False)
        if self.say_ready():
            asyncio.get_running_loop().add_reader(self.channel.fileno(), self._adopt)
            logging.getLogger("uvicorn.error").info(
                "Taking connections from the parent process [%d]", os.getppid()
            )

    def say_ready(self) -> bool:
        """Tell the parent this worker serves: until then it is handed nothing, so a worker
        still loading its model holds no connection the other one could serve.  False
        when the parent is gone (it died while this worker started)."""
        try:
            self.channel.send(READY)
        except OSError:
            self._parent_gone()
            return False
        return True

    def _parent_gone(self) -> None:
        """No more connections will come: finish the open requests and exit."""
        with contextlib.suppress(OSError, ValueError):
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        log.warning("the parent process is gone; finishing the open requests")
        self.should_exit = True  # uvicorn's graceful shutdown, as on SIGTERM

    def _adopt(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, ACCEPT_BATCH, ACCEPT_BATCH)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset: the parent died with our READY unread
                data, fds = b"", []
            if not data and not fds:  # the end of the channel: the parent is gone
                self._parent_gone()
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                task = loop.create_task(self._serve_connection(sock))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _serve_connection(self, sock: socket.socket) -> None:
        assert self._factory is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._factory, sock)
        except OSError as exc:  # the client left before we got to it
            log.debug("dropped a handed connection: %s", exc)
            sock.close()
            self.on_closed()  # the parent counted it as handed

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        with contextlib.suppress(OSError, ValueError):  # already closed
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets=sockets)
