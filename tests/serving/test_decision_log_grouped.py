"""The decision log's group commit: the appends of one event-loop turn share a transaction,
each call still logs all or none, and no call returns before its rows are committed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from serving.decision_log import DecisionLog, DecisionRecord

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _record(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        decision_time=T0,
        customer_id="c1",
        model_version="v1",
        action="email_promo",
        propensity=0.9,
        candidates=[{"action": "email_promo", "score": 1.0}],
        suppressed=[],
    )


def _logged(path: Path) -> list[str]:
    """The decision ids another connection sees (committed rows only)."""
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT decision_id FROM decisions"))
    finally:
        conn.close()


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    log = DecisionLog(tmp_path / "decisions.db")
    yield log
    log.close()


def test_calls_of_one_loop_turn_share_one_commit(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[list[str]] = []
    insert = log._insert

    def counting(rows: list[tuple[object, ...]]) -> None:
        transactions.append([r[0] for r in rows])  # type: ignore[misc]
        insert(rows)

    monkeypatch.setattr(log, "_insert", counting)

    async def main() -> list[str]:
        seen_on_return: list[str] = []

        async def request(i: int) -> None:
            await log.append_grouped([_record(f"d{i}a"), _record(f"d{i}b")])
            seen_on_return.extend(x for x in _logged(log.path) if x.startswith(f"d{i}"))

        await asyncio.gather(*(request(i) for i in range(5)))
        await request(9)  # a later turn: a commit of its own
        return seen_on_return

    seen = asyncio.run(main())
    assert [sorted(t) for t in transactions] == [
        sorted(f"d{i}{s}" for i in range(5) for s in "ab"),
        ["d9a", "d9b"],
    ]
    # every call found its own rows committed when it returned
    assert sorted(seen) == sorted(f"d{i}{s}" for i in (*range(5), 9) for s in "ab")


def test_a_failing_call_raises_alone_and_logs_none_of_its_rows(log: DecisionLog) -> None:
    log.append([_record("taken")])

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(
            log.append_grouped([_record("ok1")]),
            # a decision id that is already logged: its whole call must fail, its other
            # row included, and only that call
            log.append_grouped([_record("new"), _record("taken")]),
            log.append_grouped([_record("ok2"), _record("ok3")]),
            return_exceptions=True,
        )
        return list(results)

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert _logged(log.path) == ["ok1", "ok2", "ok3", "taken"]


def test_close_commits_what_a_stopped_loop_left_pending(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.db")
    loop = asyncio.new_event_loop()
    task = loop.create_task(log.append_grouped([_record("late")]))
    # one step of the task queues the commit; the loop then stops before running it
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not task.done() and _logged(log.path) == []
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    loop.close()
    log.close()
    assert _logged(tmp_path / "decisions.db") == ["late"]
