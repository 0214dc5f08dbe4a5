"""What every workload shares: the run's context, figures, databases, agents and counts."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import infra

SQLITE = "sqlite"
POSTGRES = "postgresql"


@dataclass
class Figure:
    workload: str
    backend: str
    name: str
    value: float | None
    unit: str
    note: str = ""


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  #: None: not measured in this run
    why: str = ""


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def add(
        self, workload: str, backend: str, name: str, value: float | None, unit: str, note: str = ""
    ) -> float | None:
        self.figures.append(Figure(workload, backend, name, value, unit, note))
        shown = "n/a" if value is None else f"{value:,.4g}"
        extra = f"  ({note})" if note else ""
        print(f"  {workload:<11} {backend:<13} {name:<44} {shown:>12} {unit}{extra}", flush=True)
        return value

    def get(self, workload: str, backend: str, name: str) -> float | None:
        for f in self.figures:
            if (f.workload, f.backend, f.name) == (workload, backend, name):
                return f.value
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": [asdict(f) for f in self.figures],
            "targets": [asdict(t) for t in self.targets],
        }


@dataclass
class Context:
    cleanup: infra.Cleanup
    workdir: Path
    results: Results
    quick: bool
    backends: Sequence[str]
    pg: infra.Postgres | None = None
    profiler: infra.Profiler = field(default_factory=lambda: infra.Profiler(None))
    _names: int = 0

    async def new_db(self, backend: str, name: str) -> str:
        self._names += 1
        if backend == SQLITE:
            return str(self.workdir / f"{name}-{self._names}.db")
        assert self.pg is not None
        return await infra.create_database(self.pg, f"{name}_{self._names}")


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Counts:
    """Reads task counts straight from the database, beside the server."""

    def __init__(self, db: str) -> None:
        self.db = db
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def open(self) -> Counts:
        if self.db.startswith("postgresql"):
            import asyncpg

            self._pg = await asyncpg.connect(self.db)
        else:
            self._sqlite = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        return self

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            pg_sql = sql
            for i in range(len(args)):
                pg_sql = pg_sql.replace("?", f"${i + 1}", 1)
            return [tuple(r) for r in await self._pg.fetch(pg_sql, *args)]
        assert self._sqlite is not None
        return list(self._sqlite.execute(sql, args).fetchall())

    async def status(self, status: str) -> int:
        rows = await self.query("SELECT count(*) FROM tasks WHERE status = ?", status)
        return int(rows[0][0])

    async def wait_settled(self, completed: int, timeout: float) -> float:
        """Polls until no task is queued or running, then checks that `completed` tasks
        completed; returns the time.monotonic() it saw the queue settle. Each poll is one
        index lookup: counting completed rows every 10 ms would cost the bench a growing
        share of the machine it is measuring (Celery's check, a key count, costs nothing)."""
        deadline = time.monotonic() + timeout
        busy = "SELECT 1 FROM tasks WHERE status IN ('queued', 'active') LIMIT 1"
        while await self.query(busy):
            if time.monotonic() > deadline:
                seen = await self.status("completed")
                raise TimeoutError(f"{seen} of {completed} tasks completed after {timeout:.0f} s")
            await asyncio.sleep(0.01)
        settled = time.monotonic()
        if (seen := await self.status("completed")) != completed:
            raise RuntimeError(f"{seen} tasks completed, {completed} expected")
        return settled

    async def wait_status(self, status: str, count: int, timeout: float) -> float:
        """Polls until `count` tasks have `status`; returns the time.monotonic() it saw it."""
        deadline = time.monotonic() + timeout
        while (seen := await self.status(status)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {count} tasks {status} after {timeout:.0f} s")
            await asyncio.sleep(0.01)
        return time.monotonic()


def agent_argv(server: infra.Server, name: str, secret_file: Path, concurrency: int) -> list[str]:
    """The native agent, as an operator runs it (websocket transport)."""
    spool = secret_file.parent / f"{name}.spool"
    return [
        *(sys.executable, "-m", "taskfleet.agent", "run", "--server", server.base),
        *("--name", name, "--secret-file", str(secret_file), "--spool", str(spool)),
        *("--concurrency", str(concurrency), "--transport", "ws", "--log-level", "warning"),
    ]


def secret_file(workdir: Path) -> Path:
    path = workdir / "agent.secret"
    path.write_text(infra.SECRET + "\n")
    path.chmod(0o600)
    return path


async def wait_online(server: infra.Server, names: Sequence[str], timeout: float = 60) -> None:
    wanted = set(names)
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=server.base, headers=infra.admin_headers()) as client:
        while time.monotonic() < deadline:
            response = await client.get("/api/v1/agents")
            online = {a["name"] for a in response.json() if a.get("online")}
            if wanted <= online:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"agents not online after {timeout} s: {sorted(wanted - online)[:5]}")


async def submit_batches(
    client: httpx.AsyncClient, count: int, batch: int, task: dict[str, Any]
) -> list[int]:
    """Submits `count` copies of `task` through POST /api/v1/tasks/batch; returns the ids."""
    ids: list[int] = []
    while len(ids) < count:
        size = min(batch, count - len(ids))
        response = await client.post("/api/v1/tasks/batch", json={"tasks": [task] * size})
        if response.status_code != 201:
            raise RuntimeError(f"batch submit: {response.status_code} {response.text[:300]}")
        ids += [t["id"] for t in response.json()]
    return ids
