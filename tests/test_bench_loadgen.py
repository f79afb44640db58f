"""The benchmark load generator (bench/loadgen.py) against a tiny local HTTP server."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# bench/ is a folder of scripts, not an installed package: import it from the repo root,
# the way the bench scripts themselves do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import loadgen


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.delay:
            time.sleep(self.delay)
        fail = b"fail" in body
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"ok":', b" true}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps({"ok": not fail}).encode()
        self.send_response(500 if fail else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _SlowHandler(_Handler):
    delay = 0.05


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def port() -> Iterator[int]:
    yield from _serve(_Handler)


@pytest.fixture
def slow_port() -> Iterator[int]:
    yield from _serve(_SlowHandler)


def test_counts_requests_errors_and_latency(port: int) -> None:
    # 1 body in 5 fails: 50 consecutive requests of one shared cycle over 5 bodies ->
    # exactly 10 failures, however the 4 connections interleave.
    bodies = ['{"id": 1}', '{"id": 2}', '{"id": "fail"}', '{"id": 4}', '{"id": 5}']
    res = loadgen.run(port, "/x", bodies, concurrency=4, max_requests=50, max_seconds=10, warmup=5)
    assert res.requests == 50
    assert res.errors == 10
    assert res.status_counts == {"200": 40, "500": 10}
    assert res.p50_ms <= res.p99_ms
    assert res.rps > 0
    assert res.error_samples and "HTTP 500" in res.error_samples[0]


def test_chunked_responses(port: int) -> None:
    res = loadgen.run(port, "/chunked", ['{"a": 1}'], concurrency=2, max_requests=20)
    assert (res.requests, res.errors) == (20, 0)


def test_max_seconds_stops_the_run(slow_port: int) -> None:
    started = time.perf_counter()
    res = loadgen.run(
        slow_port, "/x", ["{}"], concurrency=2, max_requests=1_000_000, max_seconds=0.5
    )
    assert time.perf_counter() - started < 5
    assert 0 < res.requests < 1_000_000
    assert res.errors == 0


def test_connection_errors_are_counted() -> None:
    # Nothing listens on a port just released by a bound socket: every attempt is refused.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    res = loadgen.run(free, "/x", ["{}"], concurrency=2, max_requests=6, max_seconds=5)
    assert res.requests == res.errors == 6
    assert any(k.startswith("error:") for k in res.status_counts)


def test_run_in_subprocess(port: int) -> None:
    # The child process, JSON both ways, and the server CPU reading (this process serves).
    res = loadgen.run_in_subprocess(
        port, "/x", ['{"a": 1}', '{"a": "fail"}'], concurrency=2, max_requests=10,
        max_seconds=10, watch_pid=os.getpid(),
    )  # fmt: skip
    assert (res.requests, res.errors) == (10, 5)
    assert res.server_cpu_seconds >= 0
    # Per process of the watched tree (here this process and its threads' children).
    assert len(res.server_cpu_by_process) >= 1
    assert sum(res.server_cpu_by_process) == pytest.approx(res.server_cpu_seconds, abs=0.05)
