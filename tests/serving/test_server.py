"""The workers' listening sockets (serving.server): one per worker, the kernel spreads
connections over them."""

from __future__ import annotations

import socket

import pytest

from serving.server import REUSEPORT, listening_sockets

pytestmark = pytest.mark.skipif(not REUSEPORT, reason="SO_REUSEPORT balancing is Linux's")


def _accept_all(sock: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return accepted
        conn.close()
        accepted += 1


def test_connections_opened_at_once_reach_every_worker_socket() -> None:
    """32 connections opened together (a client's pool): with one shared socket the first
    worker to wake could take them all; here each socket gets its hash share.  (All 32 on
    one of two sockets would have probability 2^-31.)"""
    socks = listening_sockets("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        port = socks[0].getsockname()[1]
        assert port != 0 and socks[1].getsockname()[1] == port
        for s in socks:
            s.listen(64)
            s.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
        counts = [_accept_all(s) for s in socks]
        assert sum(counts) == 32
        assert min(counts) >= 1, counts
    finally:
        for c in clients:
            c.close()
        for s in socks:
            s.close()


def test_a_taken_port_is_an_error() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEPORT
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        taken.close()
