"""Benchmark of the HTTP recommendation service under bounded load, next to ``mlflow models serve``.

Usage::

    touchpoint simulate --out /tmp/tpb/big --customers 100000 --days 180   # ~9.8M events
    MLFLOW_TRACKING_URI=sqlite:////tmp/tpb/mlflow.db \\
        python bench/bench_serving.py --events /tmp/tpb/big/events.parquet \\
        --model models:/touchpoint@champion --concurrency 8 32

What is measured (issue "Serving"): ``POST /v1/recommendations`` of ``touchpoint serve``
(one uvicorn worker unless ``--workers``) on 127.0.0.1, with a history store holding the
whole simulation (100k customers, ~100 events each) in SQLite.  Each request names a
customer and an ``as_of`` at the end of the simulated period, so the service does the full
recommendation: read the customer's history and attributes from the store, compute the
point-in-time features, score conversion and churn for every action, apply the contact
rules, draw from the exploration policy, explain the top actions (SHAP) and append the
decision to the decision log.

The load comes from :mod:`bench.loadgen`, a closed-loop keep-alive client in its own
process (bounded by ``--requests`` and ``--seconds``, after ``--warmup`` uncounted
requests), at each ``--concurrency``.  It reports requests, errors, rps, p50 and p99
latency; the server's RSS (VmRSS, summed over its process tree) is read after each phase.
Two more columns say why the numbers are what they are: the server's CPU time per request
(utime + stime of its tree over the measured phase) is how much of a core one request
costs, which bounds rps on this 2-core machine; the server's CPU % (of one core) well
under 100 for a one-process server means it waited, e.g. for a CPU held by someone else;
the same per process of the server (its parent first, then the workers) shows how evenly
the workers shared the load.  ``steal %`` is the machine's CPU time taken by the
hypervisor for other guests during the phase: on a shared machine, a slow phase with high
steal says more about the neighbours than about the server.

Side by side, in the same run, ``mlflow models serve`` (``--env-manager local``) serves
the same model version (the pyfunc wrapper of the same bundle, training/pyfunc_model.py)
and is sent, for the same customers, the exact feature rows the service computes: one row
per action (``dataframe_split``, NaN as null).  That server does strictly less work:
scoring only, with no history lookup, no feature computation, no contact rules, policy,
explanations or decision log.  Before the load, the service's ``p_conversion`` of one
customer is checked equal to mlflow's for the same rows.  The two servers run one after
the other (never competing for the CPU), each bounded by its own ``--mlflow-*`` options
(warm-up: at most 50 requests); the rps and p50 ratios are printed at the end.

The history store (``--store``) is built once from ``--events``/``--customers`` (in the
file's order, or in time order with ``--store-order time``: a store filled through
``/v1/events`` holds each customer's events scattered among everyone's) and reused
while it holds all the events, and then read once from end to end (``--no-prewarm`` not
to), so that every phase meets the steady state of a busy service, the store in the page
cache: this machine reclaims idle page cache (DAMON), and a phase that started on a cold
store waited for the disk (one worker at 25-77% CPU, 133-674 rps, p99 up to 46 ms).
The machine is shared, so the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import HOST, LoadResult, run_in_subprocess, tree_usage  # noqa: E402

RECOMMEND_PATH = "/v1/recommendations"
INVOCATIONS_PATH = "/invocations"


#: What each worker of ``touchpoint serve`` logs once its model is loaded and it takes
#: connections (serving/connection_handoff.py).  /readyz answers as soon as the first one
#: is: a load phase started then would hand every connection to it, and measure one worker.
WORKER_READY = "Taking connections from the parent process"


def progress(msg: str) -> None:
    print(f"[bench_serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess in its own session (so its whole group can be stopped)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        # A file, not a pipe: nobody reads a pipe during the load, and a full one would stall
        # the server.  Closed in stop().
        self._log = open(log_path, "wb")  # noqa: SIM115
        progress(f"starting {name}: {' '.join(cmd)}")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, port: int, path: str, timeout: float) -> float:
        """Poll ``GET path`` until 200; return the seconds it took.  Raises if it dies."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                status, _ = http_request(port, "GET", path, timeout=2)
                if status == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_for_log(self, line: str, count: int, timeout: float, what: str) -> float:
        """Wait until ``line`` is in the log ``count`` times; return the seconds it took."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.log_path.read_text(errors="replace").count(line) >= count:
                return time.perf_counter() - start
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited before {what}:\n" + self.log_tail())
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not {count} {what} after {timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after ``timeout``."""
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        if _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        # Wait for the workers too, not only the leader: mlflow's uvicorn outlives its CLI.
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader, or it stays a zombie member of the group
            if not _group_members(pgid):
                break
            time.sleep(0.1)
        else:
            progress(f"{self.name}: {_group_members(pgid)} still there after SIGTERM: SIGKILL")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        _reap_orphans()
        self._log.close()


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    On SIGTERM the ``mlflow`` CLI dies before the uvicorn process it started; orphaned, that
    process would be re-parented to init, which here does not reap it promptly, and linger
    as a zombie.  Adopted by this process instead, :func:`_reap_orphans` reaps it.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        pass


def _reap_orphans(timeout: float = 5.0) -> None:
    """Reap adopted descendants until none is left (called once the servers are stopped and
    no other child runs); a process still exiting is waited for, up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all: done
            return
        if pid == 0:  # a child is still running (or not yet a zombie)
            time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from ``/proc/*/stat``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[2] the process group.
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def http_request(
    port: int, method: str, path: str, body: str | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _executable(name: str, module: str) -> list[str]:
    """The venv's console script, or ``python -m module`` when there is none."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # LightGBM's OpenMP threads spin when idle by default, which on a shared 2-core machine
    # steals the other server's (and the client's) CPU; the touchpoint CLI sets the same.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- inputs
def resolve_model(
    model: str, mlflow_model: str | None, workdir: Path
) -> tuple[Path, Path | None, str]:
    """``(bundle folder, local MLflow model folder or None, description)``.

    A ``models:/`` or ``runs:/`` URI is downloaded once, so that both servers load the very
    same files: ``touchpoint serve`` the bundle inside it, ``mlflow models serve`` the
    pyfunc model around it.
    """

    def download(uri: str) -> Path:
        import mlflow

        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
        dst = Path(tempfile.mkdtemp(prefix="model-", dir=workdir))
        progress(f"downloading {uri} to {dst}")
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))

    def local(ref: str) -> Path:
        return download(ref) if "://" in ref or ref.startswith("models:/") else Path(ref)

    def bundle_in(folder: Path) -> Path:
        if (folder / "bundle.json").exists():
            return folder
        manifests = sorted(folder.rglob("bundle.json"))
        if not manifests:
            raise SystemExit(f"{folder}: no touchpoint bundle (bundle.json) inside")
        return manifests[0].parent

    folder = local(model)
    bundle = bundle_in(folder)
    pyfunc: Path | None = folder if (folder / "MLmodel").exists() else None
    if mlflow_model is not None:
        pyfunc = local(mlflow_model)
        if not (pyfunc / "MLmodel").exists():
            raise SystemExit(f"--mlflow-model {mlflow_model}: no MLmodel file in {pyfunc}")
        ours = json.loads((bundle / "bundle.json").read_text()).get("model_version")
        theirs = json.loads((bundle_in(pyfunc) / "bundle.json").read_text()).get("model_version")
        if ours != theirs:
            raise SystemExit(
                f"--model is version {ours} but --mlflow-model is {theirs}: not the same model"
            )
    return bundle, pyfunc, model


def build_store(
    store_path: Path, events_path: Path, customers_path: Path | None, order: str = "file"
) -> int:
    """Load the events and customers into the SQLite history store unless already there."""
    import pyarrow.parquet as pq

    from serving.store import SQLiteHistoryStore

    n_file = (
        pq.ParquetFile(events_path).metadata.num_rows
        if events_path.suffix in (".parquet", ".pq")
        else None
    )
    store = SQLiteHistoryStore(store_path)
    try:
        have = store.count()
        if n_file is not None and have >= n_file:
            progress(f"store {store_path} already holds {have:,} events: reused")
            return have
        from features.ingest import read_customers, read_events

        started = time.perf_counter()
        if customers_path is not None:
            cres = read_customers(customers_path)
            store.load_customers(cres.customers)
            progress(f"{len(cres.customers):,} customers stored")
        progress(f"reading {events_path}")
        eres = read_events(events_path)
        events = eres.events
        if order == "time":  # as a store fed by /v1/events over time holds them
            events = events.sort_values("timestamp", kind="stable", ignore_index=True)
        progress(
            f"storing {len(events):,} events in {store_path} in {order} order "
            "(once; reused next time)"
        )
        # Slices of 1M rows bound the memory of the dedup keys (Python strings); the
        # simulated events carry event ids, so a slice boundary changes no key.
        step = 1_000_000
        accepted = 0
        for lo in range(0, len(events), step):
            accepted += store.add(events.iloc[lo : lo + step])[0]
            progress(f"  {min(lo + step, len(events)):,} / {len(events):,}")
        total = store.count()
        progress(
            f"store built in {time.perf_counter() - started:.0f} s: {accepted:,} new, "
            f"{total:,} events in all"
        )
        return total
    finally:
        store.close()


def prewarm(path: Path, chunk: int = 16 << 20) -> None:
    """Read ``path`` (and its WAL) from end to end, into the OS page cache."""
    started = time.perf_counter()
    size = 0
    for f in (path, path.with_name(path.name + "-wal")):
        if f.exists():
            with open(f, "rb", buffering=0) as fh:
                while data := fh.read(chunk):
                    size += len(data)
    progress(
        f"read {size / 1e9:.2f} GB of store into the page cache in {time.perf_counter() - started:.1f} s"
    )


def sample_customers(events_path: Path, n: int, seed: int) -> tuple[list[str], Any]:
    """``n`` customer ids (seeded, from those with events) and the last event time."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(events_path, columns=["customer_id", "timestamp"])
    last = pd.Timestamp(pc.max(table["timestamp"]).as_py())
    ids = pc.unique(table["customer_id"].cast("string")).to_pylist()
    ids = sorted(i for i in ids if i is not None)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), min(n, len(ids)), replace=False)
    return [ids[i] for i in picked], last


def default_as_of(last: Any) -> Any:
    """The day after the last event, at noon UTC (clear of any quiet hours)."""
    import pandas as pd

    last = pd.Timestamp(last)
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    return last.floor("D") + pd.Timedelta(days=1, hours=12)


def mlflow_bodies(
    bundle_path: Path, store_path: Path, ids: Sequence[str], as_of: Any
) -> tuple[list[str], list[int], list[str]]:
    """``dataframe_split`` bodies: the service's feature row, once per action, per customer.

    Returns the bodies, the history length of each customer, and the action of each row.
    """
    try:  # the service's own feature function (it moved out of serving.app at one point)
        from serving.online_features import customer_features
    except ImportError:
        from serving.app import customer_features  # type: ignore[attr-defined,no-redef]
    from serving.bundle import load_bundle
    from serving.store import SQLiteHistoryStore

    bundle = load_bundle(bundle_path)
    store = SQLiteHistoryStore(store_path)
    actions = list(bundle.actions)
    columns = [*bundle.spec.feature_names, "action"]
    bodies, lengths = [], []
    try:
        for cid in ids:
            # The same reads the service does (history_days default 365 > the simulation).
            history = store.history(cid, before=as_of)
            customers = store.customers([cid])
            x = customer_features(bundle.spec, history, customers, cid, as_of)[0]
            row = [None if np.isnan(v) else float(v) for v in x.tolist()]  # NaN -> null
            data = [[*row, a] for a in actions]
            bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": data}}))
            lengths.append(len(history))
    finally:
        store.close()
    return bodies, lengths, actions


# ---------------------------------------------------------------------------- phases
def load_phase(
    server: Server,
    port: int,
    path: str,
    bodies: list[str],
    concurrency: int,
    requests: int,
    seconds: float,
    warmup: int,
    cpu: int | None,
) -> dict[str, Any]:
    machine0 = machine_cpu()
    res: LoadResult = run_in_subprocess(
        port,
        path,
        bodies,
        concurrency=concurrency,
        max_requests=requests,
        max_seconds=seconds,
        warmup=warmup,
        watch_pid=server.proc.pid,
        cpu=cpu,
    )
    after = tree_usage(server.proc.pid)
    machine1 = machine_cpu()
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during the load:\n{server.log_tail()}")
    row: dict[str, Any] = {"server": server.name, **res.__dict__}
    row["rss_mb"] = after["rss_mb"]
    row["hwm_mb"] = after["hwm_mb"]
    row["processes"] = after["processes"]
    row["load_1m"] = os.getloadavg()[0]
    # The hypervisor's share of this machine's CPU time over the phase (warm-up included):
    # what other guests took. A phase with high steal is slow for reasons not ours.
    total = machine1[1] - machine0[1]
    row["steal_pct"] = 100 * (machine1[0] - machine0[0]) / total if total > 0 else float("nan")
    # CPU per request bounds the rps one core can give; CPU % of one core below ~100 for a
    # one-worker server means it waited (for the CPU, on a shared machine, or on I/O).
    server_cpu = res.server_cpu_seconds
    row["server_cpu_ms_per_req"] = server_cpu * 1e3 / max(1, res.requests)
    row["server_cpu_pct"] = 100 * server_cpu / max(res.seconds, 1e-9)
    row["client_cpu_pct"] = 100 * res.client_cpu_seconds / max(res.seconds, 1e-9)
    # Per process, in pid order (the parent, then the workers): a worker near 0 means
    # the connections went to the other one.
    row["server_cpu_split"] = "/".join(
        f"{100 * s / max(res.seconds, 1e-9):.0f}" for s in res.server_cpu_by_process
    )
    progress(
        f"{server.name} c={concurrency}: {res.requests} requests, {res.errors} errors, "
        f"{res.rps:.0f} rps, p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, "
        f"RSS {row['rss_mb']:.0f} MB, statuses {res.status_counts}"
    )
    for sample in res.error_samples:
        progress(f"  error: {sample}")
    return row


def machine_cpu() -> tuple[int, int]:
    """``(steal, total)`` CPU time of the whole machine so far, in clock ticks (Linux
    ``/proc/stat``; zeros elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user, nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def check_recommendation(port: int, body: str) -> dict[str, Any]:
    status, raw = http_request(port, "POST", RECOMMEND_PATH, body)
    if status != 200:
        raise RuntimeError(f"POST {RECOMMEND_PATH} {body} -> {status}: {raw[:500]!r}")
    out: dict[str, Any] = json.loads(raw)
    if not out.get("recommendations"):
        raise RuntimeError(f"POST {RECOMMEND_PATH} {body}: no recommendations: {out}")
    return out


def check_invocation(
    port: int, body: str, actions: Sequence[str], service_response: dict[str, Any]
) -> str:
    """POST one body to ``/invocations``; describe the answer and compare it with the service.

    The service's ``p_conversion`` of its recommended actions must equal mlflow's for the
    same customer: the proof that both servers score the same model on the same rows.
    """
    status, raw = http_request(port, "POST", INVOCATIONS_PATH, body)
    if status != 200:
        raise RuntimeError(f"POST {INVOCATIONS_PATH} -> {status}: {raw[:1000]!r}")
    out = json.loads(raw)
    preds = out.get("predictions", out) if isinstance(out, dict) else out
    if not (isinstance(preds, list) and preds and isinstance(preds[0], dict)):
        return f"unexpected shape: {str(out)[:300]}"
    if len(preds) != len(actions):
        raise RuntimeError(f"{len(preds)} predictions for {len(actions)} rows: {raw[:500]!r}")
    text = f"{len(preds)} rows x {len(preds[0])} {sorted(preds[0])}; first {preds[0]}"
    theirs = {a: p.get("p_conversion") for a, p in zip(actions, preds, strict=True)}
    diffs = [
        abs(float(r["p_conversion"]) - float(theirs[r["action"]]))
        for r in service_response.get("recommendations", [])
        if r.get("action") in theirs and r.get("p_conversion") is not None
    ]
    if diffs:
        text += f"; p_conversion vs the service: max |diff| {max(diffs):.2e} over {len(diffs)}"
        if max(diffs) > 1e-6:
            raise RuntimeError(f"mlflow and the service disagree on p_conversion: {text}")
    return text


# ---------------------------------------------------------------------------- table
COLUMNS = [
    ("server", "server"), ("concurrency", "concurrency"), ("requests", "requests"),
    ("errors", "errors"), ("rps", "rps"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
    ("rss_mb", "server RSS MB"), ("hwm_mb", "peak RSS MB"), ("processes", "processes"),
    ("server_cpu_ms_per_req", "server CPU ms/req"), ("server_cpu_pct", "server CPU %"),
    ("server_cpu_split", "CPU % per process"),
    ("client_cpu_pct", "client CPU %"), ("seconds", "seconds"), ("load_1m", "load 1m"),
    ("steal_pct", "steal %"),
]  # fmt: skip


def _cell(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key in ("rps", "rss_mb", "hwm_mb", "client_cpu_pct", "server_cpu_pct", "steal_pct"):
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| " + " | ".join(h for _, h in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(_cell(k, row.get(k, "")) for k, _ in COLUMNS) + " |")


def print_ratios(rows: list[dict[str, Any]], concurrencies: Sequence[int]) -> None:
    by = {(r["server"], r["concurrency"]): r for r in rows}
    for c in concurrencies:
        ours, theirs = by.get(("touchpoint", c)), by.get(("mlflow", c))
        if ours is None or theirs is None or not theirs["rps"]:
            continue
        print(
            f"ratio (touchpoint full recommendation rps / mlflow models serve scoring rps) "
            f"at concurrency {c}: {ours['rps'] / theirs['rps']:.1f}x"
        )
        print(
            f"p50 ratio (mlflow models serve p50 / touchpoint p50) at concurrency {c}: "
            f"{theirs['p50_ms'] / ours['p50_ms']:.1f}x"
        )
    for r in rows:
        if r["server"] == "touchpoint":
            met = r["rps"] >= 2000 and r["p99_ms"] <= 10 and r["errors"] == 0
            print(
                f"target (>= 2,000 rps at p99 <= 10 ms, no errors) at concurrency "
                f"{r['concurrency']}: {'met' if met else 'not met'} "
                f"({r['rps']:,.0f} rps, p99 {r['p99_ms']:.2f} ms)"
            )


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, default=Path("/tmp/tpb/big/events.parquet"))
    parser.add_argument(
        "--customers", type=Path, help="customers table (default: customers.parquet next to it)"
    )
    parser.add_argument(
        "--model",
        default="models:/touchpoint@champion",
        help="bundle folder, MLflow model folder or models:/ URI (default: the champion)",
    )
    parser.add_argument(
        "--mlflow-model",
        help="model for mlflow models serve (default: --model when it is an MLflow model)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:////tmp/tpb/mlflow.db"),
        help="MLflow tracking URI for models:/ URIs (default $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tpb/bench-serving"))
    parser.add_argument(
        "--store", type=Path, help="SQLite history store (default <workdir>/../bench-store.db)"
    )
    parser.add_argument("--as-of", help="ISO time (default: the day after the last event, noon)")
    parser.add_argument("--sample", type=int, default=5000, help="customers in the requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--workers", type=int, help="TOUCHPOINT_WORKERS for the service")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--store-order",
        choices=("file", "time"),
        default="file",
        help="the order a new store receives the events in: the file's (the simulator "
        "writes them customer by customer, as `serve --events` loads them) or time "
        "order, as /v1/events fills a store; give each its own --store",
    )
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="do not read the store into the page cache before the load (measure it cold)",
    )
    parser.add_argument("--mlflow-requests", type=int, default=600)
    parser.add_argument("--mlflow-seconds", type=float, default=30.0)
    parser.add_argument("--mlflow-concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--mlflow-workers", type=int, default=1)
    parser.add_argument(
        "--mlflow-bodies", type=int, default=500, help="distinct customers in mlflow requests"
    )
    parser.add_argument(
        "--client-cpu", type=int, help="pin the load generator to this CPU (default: float)"
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    become_subreaper()
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    progress(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    store_path = args.store or args.workdir.parent / "bench-store.db"
    customers_path = args.customers or args.events.with_name("customers.parquet")
    if not customers_path.exists():
        customers_path = None

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    bundle, pyfunc, model_name = resolve_model(args.model, args.mlflow_model, run_dir)
    if pyfunc is None and not args.skip_mlflow:
        raise SystemExit(
            f"--model {args.model} is a bare bundle: give --mlflow-model (an MLflow model of "
            "the same bundle) or --skip-mlflow"
        )
    n_events = build_store(store_path, args.events, customers_path, args.store_order)
    if args.prewarm:
        prewarm(store_path)
    ids, last = sample_customers(args.events, args.sample, args.seed)
    import pandas as pd

    as_of = pd.Timestamp(args.as_of) if args.as_of else default_as_of(last)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    iso = as_of.isoformat()
    progress(f"{len(ids):,} customers sampled; last event {last}, as_of {iso}")
    bodies = [json.dumps({"customer_id": cid, "as_of": iso}) for cid in ids]

    # Built before any server starts (and even with --skip-mlflow, for the history sizes):
    # the same store reads and feature code as the service, so a failure shows up early.
    n_ml = min(args.mlflow_bodies, len(ids))
    progress(f"building the candidate rows of {n_ml} customers (the service's features)")
    ml_bodies, lengths, ml_actions = mlflow_bodies(bundle, store_path, ids[:n_ml], as_of)
    per_body = len(ml_actions)
    progress(
        f"{per_body} rows per mlflow request; history of those customers: mean "
        f"{np.mean(lengths):.0f}, median {np.median(lengths):.0f}, max {max(lengths)} "
        f"events; body ~{np.mean([len(b) for b in ml_bodies]) / 1024:.0f} KB"
    )

    rows: list[dict[str, Any]] = []
    servers: list[Server] = []
    try:
        # ---------------------------------------------------------------- touchpoint
        port = free_port()
        env = _server_env(
            {
                "TOUCHPOINT_STORE_PATH": str(store_path),
                "TOUCHPOINT_DECISION_LOG_PATH": str(run_dir / "decisions.db"),
                "TOUCHPOINT_SEED": "0",
            }
        )
        if args.workers:
            env["TOUCHPOINT_WORKERS"] = str(args.workers)
        cmd = [
            *_executable("touchpoint", "touchpoint.cli"),
            "serve", "--model", str(bundle), "--host", HOST, "--port", str(port),
        ]  # fmt: skip
        ours = Server("touchpoint", cmd, env, run_dir / "touchpoint-serve.log")
        servers.append(ours)
        took = ours.wait_ready(port, "/readyz", args.ready_timeout)
        if args.workers and args.workers > 1:
            took += ours.wait_for_log(
                WORKER_READY, args.workers, args.ready_timeout - took, "workers ready"
            )
        idle = tree_usage(ours.proc.pid)
        progress(
            f"touchpoint ready in {took:.1f} s, RSS {idle['rss_mb']:.0f} MB idle, "
            f"{idle['processes']:.0f} process(es)"
        )
        if args.workers and args.workers > 1 and idle["processes"] < 2:
            progress(f"warning: TOUCHPOINT_WORKERS={args.workers} had no effect (one process)")
        first = check_recommendation(port, bodies[0])
        progress(
            f"check: {ids[0]} -> {first['chosen']} "
            f"({len(first['recommendations'])} recommendations, model {first['model_version']})"
        )
        for c in args.concurrency:
            row = load_phase(
                ours, port, RECOMMEND_PATH, bodies, c, args.requests, args.seconds,
                args.warmup, args.client_cpu,
            )  # fmt: skip
            rows.append(row)
        ours.stop()

        # ---------------------------------------------------------------- mlflow
        if not args.skip_mlflow:
            assert pyfunc is not None
            port = free_port()
            cmd = [
                *_executable("mlflow", "mlflow"),
                "models", "serve", "-m", str(pyfunc), "--env-manager", "local",
                "--host", HOST, "--port", str(port), "--workers", str(args.mlflow_workers),
            ]  # fmt: skip
            theirs = Server("mlflow", cmd, _server_env({}), run_dir / "mlflow-serve.log")
            servers.append(theirs)
            took = theirs.wait_ready(port, "/ping", args.ready_timeout)
            idle = tree_usage(theirs.proc.pid)
            progress(f"mlflow ready in {took:.1f} s, RSS {idle['rss_mb']:.0f} MB idle")
            progress(f"check: {check_invocation(port, ml_bodies[0], ml_actions, first)}")
            for c in args.mlflow_concurrency:
                row = load_phase(
                    theirs, port, INVOCATIONS_PATH, ml_bodies, c, args.mlflow_requests,
                    args.mlflow_seconds, min(args.warmup, 50), args.client_cpu,
                )  # fmt: skip
                rows.append(row)
            theirs.stop()
    finally:
        for server in servers:
            server.stop()
        # The model downloaded into this run's folder is removed; the logs are kept.
        for child in run_dir.glob("model-*"):
            shutil.rmtree(child, ignore_errors=True)

    load_end = os.getloadavg()
    print()
    print(
        f"bench_serving {started}: model {model_name} ({bundle.name}), store {store_path} "
        f"({n_events:,} events), {len(ids):,} customers, as_of {iso}"
    )
    print(
        f"history of the first {len(lengths)} sampled customers: mean {np.mean(lengths):.0f}, "
        f"median {np.median(lengths):.0f} events; mlflow requests: {per_body} rows each"
    )
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print()
    print_table(rows)
    print()
    print_ratios(rows, args.concurrency)
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print(f"server logs: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
