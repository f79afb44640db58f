"""``POST /admin/reload`` reaches every worker of ``touchpoint serve --workers N``.

The workers share one port, so a reload request reaches one of them.  On its own, that
worker would serve the new bundle and the others the old one, indefinitely.  So the
worker that reloaded writes the bundle folder to a file in a directory the workers share
(serving/server.py creates and removes it), and every worker follows that file with a
:class:`serving.model_source.ModelWatcher` polling every :data:`POLL_SECONDS`: the file
is a :class:`serving.model_source.ModelSource` like a registry alias.  Within about a
second every worker serves the same bundle; one that fails to load it keeps its model,
logs the error and counts it in ``touchpoint_model_reloads_total{result="failed"}``.

An identifier is ``"<ns since the epoch>:<folder>"``: a reload of the same folder (a
bundle rewritten in place) is a new identifier, so the other workers reload it too.  The
file is written to a temporary name and renamed into place, so a reader never sees half
of it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["POLL_SECONDS", "STARTUP", "SharedReload"]

#: How often each worker looks for a reload made by another (seconds).
POLL_SECONDS = 1.0
#: The identifier before any reload: every worker serves the model it started with.
STARTUP = "startup"


class SharedReload:
    """The last bundle folder a worker reloaded, as a model source for the others."""

    def __init__(self, directory: str | Path) -> None:
        self.file = Path(directory) / "reload.json"

    def next_ident(self, folder: str | Path) -> str:
        """A new identifier for a reload of ``folder`` (see the module docstring)."""
        return f"{time.time_ns()}:{Path(folder).resolve()}"

    def announce(self, ident: str) -> None:
        """Make ``ident`` the model every worker should serve."""
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ident": ident}))
        os.replace(tmp, self.file)

    # ------------------------------------------------------------------ ModelSource
    def current(self) -> str | None:
        try:
            return str(json.loads(self.file.read_text())["ident"])
        except FileNotFoundError:
            return STARTUP  # no worker has reloaded yet

    def fetch(self, ident: str) -> Path:
        return Path(ident.split(":", 1)[1])

    def describe(self) -> str:
        return "the workers' shared reload"
