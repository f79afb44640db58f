"""Metrics of several worker processes, added up in whichever worker answers ``/metrics``.

The workers of ``touchpoint serve --workers N`` share one port, so a scrape reaches one
of them at random; on its own counters alone, a Prometheus counter would jump back and
forth between workers.  Each worker therefore writes a snapshot of its counters to a
directory the workers share, every :data:`PUBLISH_SECONDS` and when it stops, and
``/metrics`` adds the other workers' latest snapshots to its own live counters.  The
sums are at most :data:`PUBLISH_SECONDS` behind for the other workers; counters still
only grow, since a worker's snapshots do.

A snapshot is written to a temporary file and renamed into place, so a reader never sees
half of one.  The directory is the supervisor's (``serving/server.py``), which removes it
when the service stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["PUBLISH_SECONDS", "MetricsPeers"]

log = logging.getLogger("touchpoint.serving")

#: How often each worker publishes its counters (seconds).
PUBLISH_SECONDS = 1.0


class MetricsPeers:
    """One worker's view of the shared snapshot directory."""

    def __init__(self, directory: str | Path, worker: str) -> None:
        self.directory = Path(directory)
        self.worker = worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _own(self) -> Path:
        return self.directory / f"metrics-{self.worker}.json"

    def publish(self, snapshot: dict[str, Any]) -> None:
        """Replace this worker's snapshot, atomically."""
        tmp = self.directory / f".metrics-{self.worker}.json.tmp"
        tmp.write_text(json.dumps(snapshot))
        os.replace(tmp, self._own)

    def others(self) -> list[dict[str, Any]]:
        """The latest snapshot of every other worker (unreadable ones are skipped)."""
        out = []
        for path in sorted(self.directory.glob("metrics-*.json")):
            if path == self._own:
                continue
            with contextlib.suppress(OSError, ValueError):  # gone, or not ours
                out.append(json.loads(path.read_text()))
        return out

    def start(self, snapshot: Any) -> MetricsPeers:
        """Publish ``snapshot()`` now and then every :data:`PUBLISH_SECONDS`, in a thread."""

        def run() -> None:
            while True:
                try:
                    self.publish(snapshot())
                except OSError:  # a full disk must not take the worker down
                    log.exception("publishing metrics to %s failed", self.directory)
                if self._stop.wait(PUBLISH_SECONDS):
                    break
            with contextlib.suppress(OSError):
                self.publish(snapshot())  # the final counts, for the workers still running

        self._thread = threading.Thread(target=run, name="metrics-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
