"""The spool and the outbox in-process, against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from taskfleet.agent import spool as spool_module
from taskfleet.agent.outbox import Outbox
from taskfleet.agent.spool import SCHEMA, Spool, SpoolBusy
from taskfleet.agent.transports import AuthFailed, Offline, Reply


class Events:
    def __init__(self) -> None:
        self.stale: list[tuple[int, int]] = []
        self.cancels: list[tuple[int, int]] = []
        self.spool_changes = 0

    def task_stale(self, task_id: int, attempt: int) -> None:
        self.stale.append((task_id, attempt))

    def cancel_requested(self, task_id: int, attempt: int) -> None:
        self.cancels.append((task_id, attempt))

    def spool_changed(self) -> None:
        self.spool_changes += 1


class Session:
    """Answers each report with the next scripted reply (or accepts it)."""

    window = 4
    heartbeat_cap = 5.0

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def submit(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        self.sent.append((method, params))
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        future.set_result(self.replies.pop(0) if self.replies else Reply(True, {}))
        return future

    async def serve(self) -> None:
        raise NotImplementedError

    async def sign_off(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def test_reports_survive_a_reopen_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.add("log", {"text": "a"}, 1, 1)
    spool.add("task_status", {"state": "complete", "result": [1]}, 1, 1)
    spool.close()
    spool = Spool(tmp_path / "s.db")
    assert len(spool) == 2
    assert [(e.method, e.params) for e in spool.pending()] == [
        ("log", {"text": "a"}),
        ("task_status", {"state": "complete", "result": [1]}),
    ]
    assert spool.has_final(1, 1) and not spool.has_final(1, 2)
    spool.close()


@pytest.mark.parametrize("fresh_limit", [1000, 2])
def test_pending_reads_old_and_new_reports_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_limit: int
) -> None:
    # Reports of this process come from memory, an earlier one's from the file, and
    # beyond `FRESH_LIMIT` from the file again: the order and the content are the same.
    monkeypatch.setattr(spool_module, "FRESH_LIMIT", fresh_limit)
    spool = Spool(tmp_path / "s.db")
    spool.add("log", {"text": "old"}, 1, 1)
    spool.close()
    spool = Spool(tmp_path / "s.db")
    for n in range(4):
        spool.add("log", {"text": f"new{n}"}, 1, 1)
    spool.add("task_status", {"state": "running", "percent": 1}, 1, 1, "p:1:1")
    spool.add("task_status", {"state": "running", "percent": 2}, 1, 1, "p:1:1")
    texts = [e.params.get("text", e.params.get("percent")) for e in spool.pending()]
    assert texts == ["old", "new0", "new1", "new2", "new3", 2]
    entries = spool.pending()
    assert [e.id for e in spool.pending(entries[2].id, 2)] == [e.id for e in entries[3:5]]
    spool.remove(entries[1].id, entries[3].id)
    expected = [entries[2].id, *(e.id for e in entries[4:])]
    assert [e.id for e in spool.pending(entries[0].id)] == expected
    assert len(spool) == 4
    spool.close()


def test_progress_coalesces_to_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for percent in (10, 20, 30):
        spool.add("task_status", {"state": "running", "percent": percent}, 1, 1, "p:1:1")
    assert [e.params["percent"] for e in spool.pending()] == [30]
    assert len(spool) == 1
    spool.close()


def test_a_spool_of_an_older_agent_keeps_its_reports_and_gets_the_partial_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.split("DROP INDEX")[0])
    old.execute("CREATE INDEX ix_reports_coalesce ON reports (coalesce_key)")
    old.execute(
        "INSERT INTO reports (method, params, task_id, attempt, coalesce_key) "
        "VALUES ('task_status', '{\"state\":\"running\",\"percent\":5}', 1, 1, 'p:1:1')"
    )
    old.commit()
    old.close()
    spool = Spool(path)
    spool.add("task_status", {"state": "running", "percent": 9}, 1, 1, "p:1:1")
    assert [e.params["percent"] for e in spool.pending()] == [9]  # still coalesces
    spool.close()
    indexes = sqlite3.connect(path).execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reports'"
    )
    ((name, sql),) = indexes.fetchall()
    assert name == "ix_reports_coalescing" and "WHERE coalesce_key IS NOT NULL" in sql


async def _flush(outbox: Outbox, session: Session) -> None:
    flusher = asyncio.create_task(outbox.flush_forever(session))
    try:
        await asyncio.wait_for(outbox.wait_empty(), 5)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)


async def test_acknowledged_and_stale_reports_leave_the_spool(tmp_path: Path) -> None:
    events = Events()
    outbox = Outbox(Spool(tmp_path / "s.db"), 100, events)
    outbox.put("log", {"text": "x"}, 1, 1)
    outbox.put("task_status", {"state": "complete"}, 2, 3)
    outbox.put("task_status", {"state": "running"}, 4, 1)
    session = Session(
        Reply(True, {}),
        Reply(False, code="conflict", message="stale"),
        Reply(True, {"cancel_requested": True}),
    )
    await _flush(outbox, session)
    assert [m for m, _ in session.sent] == ["log", "task_status", "task_status"]
    assert events.stale == [(2, 3)]
    assert events.cancels == [(4, 1)]
    outbox.spool.close()


@pytest.mark.parametrize(
    "reply, error",
    [
        (Reply(False, code="internal", message="db"), Offline),
        (Reply(False, code="unauthorized"), AuthFailed),
    ],
)
async def test_other_refusals_keep_the_report_for_later(
    tmp_path: Path, reply: Reply, error: type[Exception]
) -> None:
    outbox = Outbox(Spool(tmp_path / "s.db"), 100, Events())
    outbox.put("task_status", {"state": "complete"}, 1, 1)
    with pytest.raises(error):
        await outbox.flush_forever(Session(reply))
    assert len(outbox.spool) == 1
    outbox.spool.close()


async def test_crossing_the_limit_tells_the_agent(tmp_path: Path) -> None:
    events = Events()
    outbox = Outbox(Spool(tmp_path / "s.db"), 1, events)
    outbox.put("log", {"text": "1"}, 1, 1)
    assert not outbox.over_limit
    outbox.put("log", {"text": "2"}, 1, 1)
    assert outbox.over_limit and events.spool_changes == 1
    await _flush(outbox, Session())
    assert not outbox.over_limit and events.spool_changes == 2
    outbox.spool.close()


def test_one_agent_per_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    with pytest.raises(SpoolBusy):
        Spool(tmp_path / "s.db")
    spool.close()
    Spool(tmp_path / "s.db").close()
