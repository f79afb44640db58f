"""How connections reach the workers (serving/server.py, serving/connection_handoff.py):
the parent accepts and hands each one to the worker holding the fewest.

The whole path with real workers is in tests/serving/test_uvicorn_contract.py
(``test_connections_are_spread_evenly_over_the_workers``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from serving.connection_handoff import (
    READY,
    Acceptor,
    ConnectionLedger,
    HandoffServer,
    channel_pairs,
)
from serving.server import listening_socket

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "send_fds"), reason="handing descriptors over needs SCM_RIGHTS"
)


def test_the_ledger_picks_the_worker_holding_fewest_and_breaks_ties_in_turn() -> None:
    ledger = ConnectionLedger(3)
    assert ledger.pick() is None  # nobody ready yet
    ledger.ready[2] = True
    assert [ledger.pick(), ledger.pick()] == [2, 2]  # the only one ready
    ledger.ready[:] = [True, True, True]
    picks = []
    for _ in range(6):
        worker = ledger.pick()
        assert worker is not None
        ledger.handed_to(worker)
        picks.append(worker)
    assert picks == [0, 1, 2, 0, 1, 2]
    ledger.closed_one(1)
    ledger.closed_one(1)
    assert ledger.open_connections() == [2, 0, 2]
    assert ledger.preference() == [1, 0, 2]  # the one that closed both, then in turn
    ledger.handed_to(1)
    assert ledger.preference() == [1, 2, 0]  # still fewest: 1 against 2 and 2
    ledger.handed_to(1)
    assert ledger.preference() == [2, 0, 1]  # a tie of three: in turn after the last
    ledger.ready[2] = False
    assert ledger.preference() == [0, 1]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = listening_socket("127.0.0.1", 0)
    yield sock
    sock.close()


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    """The sockets a test opens (client connections, channel pairs): closed after it."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def _pairs(n: int, opened: list[socket.socket]) -> list[tuple[socket.socket, socket.socket]]:
    pairs = channel_pairs(n)
    opened += [end for pair in pairs for end in pair]
    return pairs


def _connect(listener: socket.socket, n: int, opened: list[socket.socket]) -> list[socket.socket]:
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    opened += clients
    return clients


def test_each_connection_reaches_one_worker_with_its_descriptor(
    listener: socket.socket, opened: list[socket.socket]
) -> None:
    pairs = _pairs(2, opened)
    clients = _connect(listener, 3, opened)
    ledger = ConnectionLedger(2)
    acceptor = Acceptor(listener, [p for p, _ in pairs], ledger)
    for worker, (_, worker_end) in enumerate(pairs):
        worker_end.send(READY)
        assert acceptor.worker_said(worker)
    assert ledger.ready == [True, True]
    assert acceptor.accept_ready() == 3
    assert ledger.handed == [2, 1]
    received: list[list[socket.socket]] = []
    for _, worker_end in pairs:
        worker_end.setblocking(False)
        got: list[socket.socket] = []
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(worker_end, 64, 64)
            except BlockingIOError:
                break
            assert len(data) == len(fds)  # one byte per descriptor
            got += [socket.socket(fileno=fd) for fd in fds]
        opened += got
        received.append(got)
    assert [len(g) for g in received] == [2, 1]
    # Each handed descriptor is its client's connection, still open.
    for i, client in enumerate(clients):
        client.sendall(b"hello %d" % i)
    answers = set()
    for sock in received[0] + received[1]:
        sock.settimeout(5)
        answers.add(sock.recv(64))
    assert answers == {b"hello 0", b"hello 1", b"hello 2"}
    assert acceptor.accept_ready() == 0  # nothing waiting: no block, nothing handed


def test_a_worker_gone_does_not_stop_the_acceptor(
    listener: socket.socket, opened: list[socket.socket]
) -> None:
    """The supervisor stops the others when a worker dies; until then the acceptor must
    neither raise nor leak the connection it could not hand on."""
    ((parent_end, worker_end),) = _pairs(1, opened)
    worker_end.send(READY)
    worker_end.close()  # the worker is gone
    (client,) = _connect(listener, 1, opened)
    ledger = ConnectionLedger(1)
    acceptor = Acceptor(listener, [parent_end], ledger)
    ledger.ready[0] = True  # as if the supervisor had not read the channel yet
    assert acceptor.accept_ready() == 1
    assert ledger.handed == [0]
    client.settimeout(5)
    assert client.recv(1) == b""  # closed, not left hanging
    assert acceptor.worker_said(0)  # READY, still buffered
    assert not acceptor.worker_said(0)  # then the end of the channel
    assert ledger.ready == [False]


def test_a_full_channel_passes_the_connection_to_the_next_worker(
    listener: socket.socket, opened: list[socket.socket]
) -> None:
    """A worker that stops reading (stuck in a long request) fills its channel; the
    connection goes to the next worker instead of being dropped."""
    pairs = _pairs(2, opened)
    ledger = ConnectionLedger(2)
    ledger.ready[:] = [True, True]
    acceptor = Acceptor(listener, [p for p, _ in pairs], ledger)
    ledger.handed[1] = 10**6  # worker 0 is always preferred...
    filled = 0
    while True:  # ...but its channel is full
        try:
            pairs[0][0].send(b"x" * 4096)
            filled += 1
        except BlockingIOError:
            break
    assert filled > 0
    _connect(listener, 1, opened)
    assert acceptor.accept_ready() == 1
    assert ledger.handed == [0, 10**6 + 1]
    pairs[1][1].setblocking(False)
    _, fds, _, _ = socket.recv_fds(pairs[1][1], 64, 64)
    assert len(fds) == 1
    opened.append(socket.socket(fileno=fds[0]))


@pytest.mark.parametrize("unread", [False, True], ids=["closed", "reset"])
def test_a_worker_stops_when_its_parent_is_gone(unread: bool, opened: list[socket.socket]) -> None:
    """The end of the channel, or a reset (the parent died with the worker's READY still
    unread), makes the worker finish its open requests and exit; it never raises."""
    import asyncio

    import uvicorn

    ((parent_end, worker_end),) = _pairs(1, opened)
    server = HandoffServer(uvicorn.Config(app=None), channel=worker_end, on_closed=lambda: None)
    if unread:
        worker_end.send(READY)
    parent_end.close()

    async def adopt() -> None:
        worker_end.setblocking(False)
        server._adopt()

    asyncio.run(adopt())
    assert server.should_exit


def test_a_worker_whose_parent_died_while_it_started_stops(opened: list[socket.socket]) -> None:
    import asyncio

    import uvicorn

    ((parent_end, worker_end),) = _pairs(1, opened)
    server = HandoffServer(uvicorn.Config(app=None), channel=worker_end, on_closed=lambda: None)
    parent_end.close()

    async def ready() -> bool:
        return server.say_ready()

    assert asyncio.run(ready()) is False  # no BrokenPipeError out of startup
    assert server.should_exit


def test_a_taken_port_is_an_error() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
