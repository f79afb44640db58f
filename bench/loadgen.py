"""A bounded, closed-loop HTTP/1.1 keep-alive load generator for benchmarks on 127.0.0.1.

``concurrency`` connections each send one request, wait for the whole response, then send
the next (closed loop: the offered load adapts to the server, so latency is never inflated
by an unbounded queue).  The run stops by itself after ``max_requests`` measured requests or
``max_seconds``, whichever comes first.  Request bodies are cycled from a shared list.

Why not httpx or aiohttp: on a 2-core machine the client shares the CPU with the server it
measures, so every microsecond the client spends is taken from the server.  Here each
request is a pre-encoded ``bytes`` object written on a raw asyncio stream (uvloop when
installed), and a response costs one header parse and one ``readexactly``: ~20-40 µs of
client CPU per request.  :func:`run_in_subprocess` runs it in its own process, so it
neither holds the caller's GIL nor competes with the caller's imports.

Measured per request: latency from the first byte written to the last byte read
(``perf_counter_ns``) and the status.  Non-2xx responses, timeouts and connection errors
are errors (a connection error reconnects); percentiles are over the successful requests
only, so fast failures cannot flatter them.

Standalone use (JSON in, JSON out)::

    echo '{"port": 8000, "path": "/v1/recommendations", "bodies": ["{...}"]}' \\
        | python -m bench.loadgen
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Only ever load the loopback interface: this is a benchmark tool, not a stress tester.
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class LoadResult:
    """One load phase: counts, wall time and latency percentiles (ms, successful requests)."""

    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float = float("nan")
    max_ms: float = float("nan")
    concurrency: int = 0
    #: CPU seconds the client process spent in the measured phase (user + system).
    client_cpu_seconds: float = 0.0
    #: CPU seconds of the ``watch_pid`` process tree (the server) in the measured phase.
    server_cpu_seconds: float = float("nan")
    #: The same per process of that tree, in pid order (a server's parent, then workers):
    #: how evenly the workers shared the load.
    server_cpu_by_process: list[float] = field(default_factory=list)
    #: ``"200"``, ``"500"``, ... and ``"error:<ExceptionName>"`` for failed requests.
    status_counts: dict[str, int] = field(default_factory=dict)
    #: The first few error descriptions, to show why requests failed.
    error_samples: list[str] = field(default_factory=list)


def encode_request(path: str, body: str | bytes, port: int) -> bytes:
    """A complete ``POST`` request (headers and body) ready to write on a keep-alive socket."""
    payload = body.encode() if isinstance(body, str) else body
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + payload


class ProtocolError(Exception):
    """A response this client cannot parse."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """``(status, body, keep_alive)`` of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = b"close" not in value.lower()
    if chunked:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then a blank line
                    pass
                break
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
        return status, bytes(body), keep_alive
    if length is not None:
        return status, await reader.readexactly(length), keep_alive
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep_alive
    # No length and not chunked: the body runs to the end of the connection.
    return status, await reader.read(), False


def _proc_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the ppid field of ``/proc/*/stat`` (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:  # the process exited while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its end.
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_usage(root: int) -> dict[str, Any]:
    """RSS and peak RSS (MB, summed over the tree) and CPU seconds of a process tree, in
    all (``cpu_s``) and per process (``by_pid``).

    The summed VmHWM is the sum of each process's own peak, an upper bound of the tree's
    simultaneous peak.  CPU is utime + stime of the live processes (all their threads).
    """
    rss = hwm = cpu = 0.0
    by_pid: dict[int, float] = {}
    pids = _proc_tree(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) / 1024
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            by_pid[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            cpu += by_pid[pid]
        except OSError:
            continue
    return {"rss_mb": rss, "hwm_mb": hwm, "cpu_s": cpu, "processes": len(pids), "by_pid": by_pid}


class _Phase:
    """Shared state of one phase: the workers run on one event loop, so no locks needed."""

    def __init__(self, limit: int, deadline_ns: int) -> None:
        self.limit = limit
        self.deadline_ns = deadline_ns
        self.issued = 0
        self.latencies_ns: list[int] = []
        self.statuses: Counter[str] = Counter()
        self.errors = 0
        self.error_samples: list[str] = []
        self.last_done_ns = 0

    def take(self) -> int:
        """The number of the next request to send, or -1 when the phase is over."""
        if self.issued >= self.limit or time.perf_counter_ns() >= self.deadline_ns:
            return -1
        self.issued += 1
        return self.issued - 1

    def error(self, key: str, detail: str) -> None:
        self.errors += 1
        self.statuses[key] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail[:300])


class _Connection:
    """One keep-alive connection, reopened after an error or a ``Connection: close``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        status, body, keep_alive = await read_response(self.reader)
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _worker(
    conn: _Connection, phase: _Phase, requests: list[bytes], offset: int, timeout: float
) -> None:
    # One shared cycle over the bodies (request k of the phase sends body offset + k): the
    # connections interleave over distinct customers instead of each replaying the list.
    n = len(requests)
    while (k := phase.take()) >= 0:
        raw = requests[(offset + k) % n]
        t0 = time.perf_counter_ns()
        try:
            async with asyncio.timeout(timeout):
                status, body = await conn.request(raw)
        except (
            OSError,  # includes TimeoutError and ConnectionResetError
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ProtocolError,
            ValueError,
        ) as exc:
            conn.close()
            phase.error(f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            continue
        t1 = time.perf_counter_ns()
        phase.last_done_ns = t1
        if 200 <= status < 300:
            phase.statuses[str(status)] += 1
            phase.latencies_ns.append(t1 - t0)
        else:
            phase.error(str(status), f"HTTP {status}: {body[:200].decode(errors='replace')}")


async def _run_phase(
    conns: list[_Connection],
    requests: list[bytes],
    limit: int,
    seconds: float,
    timeout: float,
    offset: int = 0,
) -> tuple[_Phase, int]:
    start = time.perf_counter_ns()
    phase = _Phase(limit, start + int(seconds * 1e9))
    await asyncio.gather(*(_worker(c, phase, requests, offset, timeout) for c in conns))
    return phase, start


async def run_async(
    port: int,
    path: str,
    bodies: Sequence[str | bytes],
    *,
    concurrency: int = 8,
    max_requests: int = 10_000,
    max_seconds: float = 30.0,
    warmup: int = 0,
    timeout: float = 10.0,
    watch_pid: int | None = None,
) -> LoadResult:
    """Run one bounded phase (after ``warmup`` uncounted requests) on the current event loop.

    ``watch_pid``: a server process whose tree's CPU time is read just before and after the
    measured phase (``server_cpu_seconds``), so the warm-up is not in it.
    """
    if not bodies:
        raise ValueError("no request bodies")
    if concurrency < 1 or max_requests < 1 or max_seconds <= 0:
        raise ValueError("concurrency, max_requests and max_seconds must be positive")
    requests = [encode_request(path, b, port) for b in bodies]
    conns = [_Connection(port) for _ in range(concurrency)]
    try:
        offset = 0
        if warmup:
            # Same connections as the measured phase: the warm-up also opens them.  The
            # measured phase continues the cycle where the warm-up stopped.
            warm, _ = await _run_phase(conns, requests, warmup, max_seconds, timeout)
            offset = warm.issued
        server0 = tree_usage(watch_pid) if watch_pid else None
        cpu0 = time.process_time()
        phase, start = await _run_phase(conns, requests, max_requests, max_seconds, timeout, offset)
        cpu = time.process_time() - cpu0
        server1 = tree_usage(watch_pid) if watch_pid else None
    finally:
        for c in conns:
            c.close()
    server, by_process = float("nan"), []
    if server0 is not None and server1 is not None:
        server = server1["cpu_s"] - server0["cpu_s"]
        before = server0["by_pid"]
        by_process = [
            round(s - before.get(pid, 0.0), 3) for pid, s in sorted(server1["by_pid"].items())
        ]
    end = max(phase.last_done_ns, start + 1)
    # Wall time up to the last completed request: a worker stopped by the deadline adds no
    # idle tail to the denominator.
    seconds = (end - start) / 1e9
    lat = np.asarray(phase.latencies_ns, dtype=np.float64) / 1e6
    done = len(lat) + phase.errors
    if len(lat):
        p50, p99 = (float(v) for v in np.percentile(lat, [50, 99]))
        mean, top = float(lat.mean()), float(lat.max())
    else:
        p50 = p99 = mean = top = float("nan")
    return LoadResult(
        requests=done,
        errors=phase.errors,
        seconds=round(seconds, 3),
        rps=round(done / seconds, 1) if done else 0.0,
        p50_ms=round(p50, 3),
        p99_ms=round(p99, 3),
        mean_ms=round(mean, 3),
        max_ms=round(top, 3),
        concurrency=concurrency,
        client_cpu_seconds=round(cpu, 3),
        server_cpu_seconds=round(server, 3),
        server_cpu_by_process=by_process,
        status_counts=dict(sorted(phase.statuses.items())),
        error_samples=phase.error_samples,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop works, at ~1.5x the client CPU
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(port: int, path: str, bodies: Sequence[str | bytes], **kwargs: Any) -> LoadResult:
    """:func:`run_async` on a fresh event loop (uvloop when installed), in this process."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(run_async(port, path, bodies, **kwargs))
    finally:
        loop.close()


def run_in_subprocess(
    port: int, path: str, bodies: Sequence[str], *, cpu: int | None = None, **kwargs: Any
) -> LoadResult:
    """:func:`run` in a child ``python -m bench.loadgen`` (JSON over stdin/stdout).

    ``cpu`` pins the child to one CPU (``sched_setaffinity``); by default it floats.
    Raises ``RuntimeError`` with the child's stderr if it fails.
    """
    job = {"port": port, "path": path, "bodies": list(bodies), **kwargs}
    if cpu is not None:
        job["cpu"] = cpu
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    limit = float(kwargs.get("max_seconds", 30.0)) * 2 + float(kwargs.get("timeout", 10.0)) + 60
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=limit,
    )
    if proc.returncode:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    job = json.load(sys.stdin)
    cpu = job.pop("cpu", None)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    port, path, bodies = job.pop("port"), job.pop("path"), job.pop("bodies")
    result = run(port, path, bodies, **job)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
