"""Hot reload from a moving model reference: a :class:`ModelSource` and a :class:`ModelWatcher`.

A *source* is anything that names "the model to serve now" with a cheap identifier (for
the MLflow registry: the version number an alias such as ``champion`` points at) and can
turn an identifier into a local bundle folder.  The watcher polls the source and, when the
identifier changes, fetches the new bundle and hands its folder to the service's reload
(:meth:`serving.app.Service.reload`), which loads it and swaps it in with one reference
assignment; requests in flight finish on the model they started with.

Design choices:

* **Polling.**  The MLflow model registry has no push notification for an alias change
  (no webhook or event stream in open-source MLflow), so the only portable way to notice
  that ``champion`` moved is to ask.  One ``get_model_version_by_alias`` call is a single
  indexed lookup; polling every 30 s costs nothing measurable.
* **A thread, not an asyncio task.**  Both the check and the fetch are blocking I/O (the
  MLflow client is synchronous, a download can take seconds, loading a bundle is CPU work);
  on the event loop they would stall every request.  A daemon thread that waits on a
  :class:`threading.Event` sleeps between polls yet stops at once when asked.
* **A failed identifier is not retried.**  A bundle that fails to fetch or load will, in
  all likelihood, fail the same way on the next poll; retrying it every interval would
  download it again and again and flood the log while changing nothing.  The watcher
  remembers the failed identifier and tries again only once the source points somewhere
  else (a new version, or a move away and back).  ``check_now(force=True)`` retries it on
  demand.  The model being served is never touched by a failure: the watcher only ever
  calls ``reload``, and a reload that raises leaves the old model in place.

This module is deliberately free of MLflow (``serving`` never imports ``training`` or
``mlflow``; see ``tests/test_repo_contract.py``): the registry implementation lives in
:mod:`training.registry_source` and the CLI plugs the two together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "FAILED",
    "RELOADED",
    "SKIPPED",
    "UNAVAILABLE",
    "UNCHANGED",
    "ModelSource",
    "ModelWatcher",
    "PollResult",
]

log = logging.getLogger("touchpoint.serving.watcher")

#: The source points at the served model: nothing to do.
UNCHANGED: Final = "unchanged"
#: A new identifier was fetched and reloaded: it is now being served.
RELOADED: Final = "reloaded"
#: Fetching or loading the new identifier raised; the previous model keeps serving.
FAILED: Final = "failed"
#: The source still points at an identifier that failed before; not retried.
SKIPPED: Final = "skipped"
#: The source could not say what it points at (``current()`` returned None or raised).
UNAVAILABLE: Final = "unavailable"


@runtime_checkable
class ModelSource(Protocol):
    """Where the model to serve comes from, e.g. an MLflow registry alias."""

    def current(self) -> str | None:
        """A cheap identifier of what the source points at now; None when unknown."""
        ...

    def fetch(self, ident: str) -> Path:
        """Materialize ``ident`` as a local bundle folder; raises on failure."""
        ...

    def describe(self) -> str:
        """A human-readable name for logs (e.g. ``models:/touchpoint@champion``)."""
        ...


@dataclass(frozen=True)
class PollResult:
    """What one poll did: ``status`` is one of the module constants."""

    status: str
    ident: str | None
    error: BaseException | None = None
    path: Path | None = None


OnResult = Callable[[str, str | None, BaseException | None], None]


class ModelWatcher:
    """Polls a :class:`ModelSource` and reloads the service when it points somewhere new.

    ``reload`` is the service's reload (``Service.reload``): it receives the fetched bundle
    folder and must raise if the bundle is broken (the old model then keeps serving).
    ``initial`` is the identifier being served at start (None = unknown: the first poll
    that sees an identifier reloads it).  ``on_result(status, ident, error)`` is called
    after every poll with one of :data:`UNCHANGED`, :data:`RELOADED`, :data:`FAILED`,
    :data:`SKIPPED`, :data:`UNAVAILABLE`; an exception raised by it is logged and ignored.

    The first poll happens ``interval`` seconds after :meth:`start`.  Polls never overlap:
    :meth:`check_now` called from another thread waits for a poll in progress.
    """

    def __init__(
        self,
        source: ModelSource,
        reload: Callable[[Path], object],
        *,
        interval: float,
        initial: str | None = None,
        on_result: OnResult | None = None,
        logger: logging.Logger | None = None,
        join_timeout: float = 5.0,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.source = source
        self.interval = float(interval)
        self.join_timeout = join_timeout
        self._reload = reload
        self._on_result = on_result
        self._log = logger or log
        self._served = initial
        self._failed: str | None = None
        self._last_unavailable: str | None = None  # the message last warned about
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_result: PollResult | None = None

    # ------------------------------------------------------------------ state
    @property
    def served(self) -> str | None:
        """The identifier the watcher last loaded (or ``initial``)."""
        return self._served

    @property
    def failed(self) -> str | None:
        """The identifier that last failed and is not being retried, if any."""
        return self._failed

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def note_served(self, ident: str) -> None:
        """Record that ``ident`` is being served already (loaded by someone else), so that
        the next poll that sees it does not load it again."""
        with self._poll_lock:
            self._served = ident
            self._failed = None

    # ------------------------------------------------------------------ polling
    def check_now(self, *, force: bool = False) -> PollResult:
        """One synchronous poll; ``force`` retries an identifier that failed before.

        Never raises (except ``KeyboardInterrupt``/``SystemExit``): every failure is logged
        and returned as a :class:`PollResult`.
        """
        with self._poll_lock:
            result = self._poll(force=force)
            self.last_result = result
        if self._on_result is not None:
            try:
                self._on_result(result.status, result.ident, result.error)
            except Exception:
                self._log.exception("the on_result hook of the model watcher raised")
        return result

    def _poll(self, *, force: bool) -> PollResult:
        name = self._name()
        try:
            ident = self.source.current()
        except Exception as exc:
            self._unavailable(f"{name}: checking for a new model failed: {_one_line(exc)}")
            return PollResult(UNAVAILABLE, None, exc)
        if ident is None:
            self._unavailable(f"{name}: the source points at no model")
            return PollResult(UNAVAILABLE, None)
        ident = str(ident)
        if self._last_unavailable is not None:
            self._log.info("%s: reachable again, points at %s", name, ident)
            self._last_unavailable = None
        if ident != self._failed:
            self._failed = None  # the source moved: a later return to it is a new attempt
        if ident == self._served:
            return PollResult(UNCHANGED, ident)
        if ident == self._failed and not force:
            return PollResult(SKIPPED, ident)

        self._log.info("%s now points at %s (serving %s): reloading", name, ident, self._served)
        try:
            path = self.source.fetch(ident)
        except Exception as exc:
            return self._failure(name, ident, "fetching", exc)
        try:
            self._reload(path)
        except Exception as exc:
            return self._failure(name, ident, f"loading {path}", exc, path)
        previous, self._served = self._served, ident
        self._failed = None
        self._log.info("%s: now serving %s from %s (was %s)", name, ident, path, previous)
        return PollResult(RELOADED, ident, None, path)

    def _failure(
        self, name: str, ident: str, step: str, exc: BaseException, path: Path | None = None
    ) -> PollResult:
        self._failed = ident
        self._log.error(
            "%s: %s %s failed, still serving %s; not retried until the source moves: %s",
            name,
            step,
            ident,
            self._served,
            _one_line(exc),
            exc_info=exc,
        )
        return PollResult(FAILED, ident, exc, path)

    def _name(self) -> str:
        try:
            return str(self.source.describe())
        except Exception:
            return repr(self.source)

    def _unavailable(self, message: str) -> None:
        if message != self._last_unavailable:  # once per distinct message, not every poll
            self._log.warning("%s; still serving %s", message, self._served)
            self._last_unavailable = message

    # ------------------------------------------------------------------ thread
    def start(self) -> ModelWatcher:
        """Start polling in a daemon thread; returns ``self``.  Raises if already running."""
        if self.running:
            raise RuntimeError("the model watcher is already running")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="touchpoint-model-watcher", daemon=True
        )
        self._thread.start()
        self._log.info(
            "watching %s every %gs (serving %s)", self._name(), self.interval, self._served
        )
        return self

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check_now()
            except Exception:  # check_now catches everything; belt and braces for the thread
                self._log.exception("model watcher poll failed")

    def stop(self, timeout: float | None = None) -> bool:
        """Stop polling and wait (at most ``timeout`` s) for the thread; safe to call twice.

        Returns True when the thread has ended.  A poll in progress (a long download) is
        not interrupted; the daemon thread then ends on its own after that poll.
        """
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(self.join_timeout if timeout is None else timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def __enter__(self) -> ModelWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: stable enough to rate-limit warnings on."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
