"""The model watcher against an in-memory source: reload on change, never on a broken twice."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from serving.model_source import (
    FAILED,
    RELOADED,
    SKIPPED,
    UNAVAILABLE,
    UNCHANGED,
    ModelSource,
    ModelWatcher,
)


class FakeSource:
    """Points at ``self.ident``; ``fetch`` returns ``root/<ident>`` or raises for ``broken``."""

    def __init__(self, root: Path, ident: str | None = "1") -> None:
        self.root = root
        self.ident = ident
        self.error: Exception | None = None  # raised by current() when set
        self.broken_fetch: set[str] = set()
        self.fetched: list[str] = []
        self.polls = 0

    def current(self) -> str | None:
        self.polls += 1
        if self.error is not None:
            raise self.error
        return self.ident

    def fetch(self, ident: str) -> Path:
        self.fetched.append(ident)
        if ident in self.broken_fetch:
            raise OSError(f"download of {ident} failed")
        return self.root / ident

    def describe(self) -> str:
        return "fake://model"


class FakeService:
    """``reload(path)`` records the path; raises for paths listed in ``broken``."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []
        self.broken: set[Path] = set()

    def reload(self, path: Path) -> tuple[str, str]:
        if path in self.broken:
            raise ValueError(f"{path}: bundle.json is corrupt")
        self.loaded.append(path)
        return str(path), "old"


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    return FakeSource(tmp_path), FakeService(), []


Reports = list[tuple[str, str | None, bool]]
Parts = tuple[FakeSource, FakeService, Reports]


def _watcher(
    source: FakeSource, service: FakeService, reports: Reports, *, initial: str | None = "1"
) -> ModelWatcher:
    def on_result(status: str, ident: str | None, error: BaseException | None) -> None:
        reports.append((status, ident, error is not None))

    return ModelWatcher(source, service.reload, interval=60.0, initial=initial, on_result=on_result)


def test_fake_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(FakeSource(tmp_path), ModelSource)


def test_unchanged_ident_does_not_reload(parts: Parts) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    result = watcher.check_now()
    assert result.status == UNCHANGED and result.ident == "1"
    assert source.fetched == [] and service.loaded == []
    assert reports == [(UNCHANGED, "1", False)]
    assert watcher.served == "1"


def test_changed_ident_fetches_reloads_and_is_remembered(parts: Parts, tmp_path: Path) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    source.ident = "2"
    result = watcher.check_now()
    assert result.status == RELOADED and result.path == tmp_path / "2"
    assert source.fetched == ["2"]
    assert service.loaded == [tmp_path / "2"]
    assert watcher.served == "2"
    # The next poll sees the served version: nothing fetched again.
    assert watcher.check_now().status == UNCHANGED
    assert source.fetched == ["2"] and len(service.loaded) == 1
    assert reports == [(RELOADED, "2", False), (UNCHANGED, "2", False)]


def test_unknown_initial_loads_whatever_the_source_points_at(parts: Parts, tmp_path: Path) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports, initial=None)
    assert watcher.check_now().status == RELOADED
    assert service.loaded == [tmp_path / "1"] and watcher.served == "1"


def test_broken_reload_keeps_old_is_not_retried_but_newer_is(
    parts: Parts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    service.broken.add(tmp_path / "2")
    source.ident = "2"
    with caplog.at_level(logging.ERROR, logger="touchpoint.serving.watcher"):
        result = watcher.check_now()
    assert result.status == FAILED and result.ident == "2"
    assert isinstance(result.error, ValueError)
    assert watcher.served == "1" and watcher.failed == "2"
    assert service.loaded == []
    # The failure is logged with the version and the cause.
    assert any("2" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)

    # Same broken version on the next polls: skipped, not fetched again.
    for _ in range(3):
        assert watcher.check_now().status == SKIPPED
    assert source.fetched == ["2"]
    assert watcher.served == "1"

    # A newer version is tried (and works).
    source.ident = "3"
    assert watcher.check_now().status == RELOADED
    assert service.loaded == [tmp_path / "3"] and watcher.served == "3"
    assert watcher.failed is None
    assert [r[0] for r in reports] == [FAILED, SKIPPED, SKIPPED, SKIPPED, RELOADED]
    assert reports[0] == (FAILED, "2", True)


def test_failed_fetch_is_reported_and_not_retried(parts: Parts) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    source.broken_fetch.add("2")
    source.ident = "2"
    assert watcher.check_now().status == FAILED
    assert watcher.check_now().status == SKIPPED
    assert source.fetched == ["2"] and service.loaded == [] and watcher.served == "1"


def test_alias_moving_away_and_back_retries_a_failed_ident(parts: Parts, tmp_path: Path) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    service.broken.add(tmp_path / "2")
    source.ident = "2"
    assert watcher.check_now().status == FAILED
    source.ident = "1"  # rolled back to the served version
    assert watcher.check_now().status == UNCHANGED
    service.broken.clear()  # "2" was fixed in place (e.g. a storage outage is over)
    source.ident = "2"
    assert watcher.check_now().status == RELOADED
    assert watcher.served == "2"


def test_force_retries_a_failed_ident(parts: Parts, tmp_path: Path) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    source.broken_fetch.add("2")
    source.ident = "2"
    assert watcher.check_now().status == FAILED
    source.broken_fetch.clear()
    assert watcher.check_now().status == SKIPPED
    assert watcher.check_now(force=True).status == RELOADED
    assert watcher.served == "2" and service.loaded == [tmp_path / "2"]


def test_current_raising_or_none_is_logged_once_and_polling_goes_on(
    parts: Parts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, service, reports = parts
    watcher = _watcher(source, service, reports)
    source.error = ConnectionError("registry unreachable")
    with caplog.at_level(logging.WARNING, logger="touchpoint.serving.watcher"):
        for _ in range(4):
            result = watcher.check_now()
            assert result.status == UNAVAILABLE
            assert isinstance(result.error, ConnectionError)
        source.error = None
        source.ident = None  # alias deleted
        for _ in range(3):
            assert watcher.check_now().status == UNAVAILABLE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One warning per distinct problem, not one per poll.
    assert len(warnings) == 2
    assert "registry unreachable" in warnings[0].getMessage()
    assert "no model" in warnings[1].getMessage()
    assert watcher.served == "1" and service.loaded == []

    # The source comes back pointing at a new version: it is picked up.
    source.ident = "2"
    assert watcher.check_now().status == RELOADED
    assert service.loaded == [tmp_path / "2"]


def test_a_raising_hook_does_not_break_the_poll(tmp_path: Path) -> None:
    source, service = FakeSource(tmp_path), FakeService()

    def bad_hook(status: str, ident: str | None, error: BaseException | None) -> None:
        raise RuntimeError("metrics down")

    watcher = ModelWatcher(source, service.reload, interval=60, initial="1", on_result=bad_hook)
    source.ident = "2"
    assert watcher.check_now().status == RELOADED
    assert watcher.served == "2"


def test_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval"):
        ModelWatcher(FakeSource(tmp_path), FakeService().reload, interval=0)


def test_background_thread_polls_reloads_and_stops_promptly(parts: Parts, tmp_path: Path) -> None:
    source, service, reports = parts
    reloaded = threading.Event()

    def reload(path: Path) -> object:
        out = service.reload(path)
        reloaded.set()
        return out

    watcher = ModelWatcher(source, reload, interval=0.01, initial="1")
    watcher.start()
    try:
        assert watcher.running
        deadline = time.monotonic() + 5
        while source.polls < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert source.polls >= 3  # polling in the background
        source.error = RuntimeError("flaky")  # errors do not kill the thread
        polls = source.polls
        while source.polls < polls + 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert watcher.running
        source.error = None
        source.ident = "2"
        assert reloaded.wait(5)
        assert watcher.served == "2" and service.loaded == [tmp_path / "2"]
        with pytest.raises(RuntimeError, match="already running"):
            watcher.start()
    finally:
        started = time.monotonic()
        assert watcher.stop() is True
    assert time.monotonic() - started < 1.0
    assert not watcher.running
    polls = source.polls
    time.sleep(0.05)
    assert source.polls == polls  # no polls after stop
    assert watcher.stop() is True  # twice is fine


def test_stop_before_start_and_waits_are_interruptible(tmp_path: Path) -> None:
    watcher = ModelWatcher(FakeSource(tmp_path), FakeService().reload, interval=3600)
    assert watcher.stop() is True  # never started
    watcher.start()
    started = time.monotonic()
    assert watcher.stop() is True  # does not wait out the hour
    assert time.monotonic() - started < 1.0
    assert not watcher.running
