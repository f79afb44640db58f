"""A reload made through one worker is followed by the others (serving.shared_reload)."""

from __future__ import annotations

from pathlib import Path

from serving.model_source import RELOADED, UNCHANGED, ModelWatcher
from serving.shared_reload import STARTUP, SharedReload


def _worker(directory: Path, loaded: list[Path]) -> tuple[SharedReload, ModelWatcher]:
    shared = SharedReload(directory)
    watcher = ModelWatcher(shared, loaded.append, interval=60.0, initial=shared.current())
    return shared, watcher


def test_the_other_workers_load_what_one_announced(tmp_path: Path) -> None:
    loaded_a: list[Path] = []
    loaded_b: list[Path] = []
    shared_a, watcher_a = _worker(tmp_path, loaded_a)
    _, watcher_b = _worker(tmp_path, loaded_b)
    # Before any reload, every worker keeps the model it started with.
    assert watcher_a.served == STARTUP
    assert watcher_b.check_now().status == UNCHANGED and loaded_b == []

    bundle = tmp_path / "v2"
    ident = shared_a.next_ident(bundle)
    watcher_a.note_served(ident)  # worker A loaded it itself
    shared_a.announce(ident)
    assert watcher_a.check_now().status == UNCHANGED and loaded_a == []
    result = watcher_b.check_now()
    assert result.status == RELOADED and loaded_b == [bundle.resolve()]
    assert watcher_b.check_now().status == UNCHANGED  # once

    # The same folder again (a bundle rewritten in place) is a new reload.
    again = shared_a.next_ident(bundle)
    assert again != ident
    watcher_a.note_served(again)
    shared_a.announce(again)
    assert watcher_b.check_now().status == RELOADED and len(loaded_b) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # written, then renamed into place


def test_a_worker_that_cannot_load_it_keeps_its_model(tmp_path: Path) -> None:
    def broken(path: Path) -> None:
        raise ValueError(f"cannot load {path}")

    shared = SharedReload(tmp_path)
    watcher = ModelWatcher(shared, broken, interval=60.0, initial=shared.current())
    shared.announce(shared.next_ident(tmp_path / "v3"))
    result = watcher.check_now()
    assert result.status == "failed" and isinstance(result.error, ValueError)
    assert watcher.served == STARTUP
