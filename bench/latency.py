"""Latency at low load: one task at a time, one idle agent, and the machine's floor measured
in the same run.

Each sample: note the wall clock, POST /api/v1/tasks a `stamp` task, and wait for it with
GET /api/v1/tasks/{id}/wait. The agent's `stamp` handler returns the wall clock when it
started (the agent has the task); the database's `finished_at` says when the result was
recorded. Every process runs on this machine, so their wall clocks agree.

The floor: a bare websocket echo round trip (websockets, no compression), a bare uvicorn
JSON endpoint round trip (httpx, the client the samples use), and one small committed
write: SQLite in WAL mode with the server's synchronous setting, and a PostgreSQL INSERT.
The floor for submit-to-agent is one HTTP round trip + one commit + one websocket message
(half an echo round trip).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import infra
import seed
from common import POSTGRES, SQLITE, Context, median, percentile, secret_file, wait_online
from websockets.asyncio.client import connect

WORKLOAD = "latency"
FLOOR_SAMPLES = 2000
WARMUP = 20
BODY = {"type": "stamp", "payload": {"n": 1}}


async def run(ctx: Context, samples: int) -> None:
    floors = await machine_floor(ctx)
    for backend in ctx.backends:
        mark = ctx.cleanup.mark()
        try:
            measured = await taskfleet(ctx, backend, samples)
        finally:
            ctx.cleanup.run_now(mark)
        commit = floors["sqlite commit" if backend == SQLITE else "postgresql commit"]
        floor = floors["http round trip"] + commit + floors["websocket echo"] / 2
        ctx.results.add(
            WORKLOAD,
            backend,
            "floor p50: HTTP + commit + 1 ws message",
            floor,
            "ms",
        )
        ratio = measured / floor if floor else None
        ctx.results.add(WORKLOAD, backend, "submit to agent p50 / floor", ratio, "x")


async def _timed(
    ctx: Context, backend: str, name: str, call: Callable[[], Awaitable[Any]], n: int
) -> float:
    for _ in range(min(100, n // 10)):
        await call()
    took = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1e3)
    ctx.results.add(WORKLOAD, backend, f"{name} p50", median(took), "ms")
    ctx.results.add(WORKLOAD, backend, f"{name} p99", percentile(took, 99), "ms")
    return median(took)


async def machine_floor(ctx: Context) -> dict[str, float]:
    mark = ctx.cleanup.mark()
    try:
        return await _machine_floor(ctx)
    finally:
        ctx.cleanup.run_now(mark)


async def _machine_floor(ctx: Context) -> dict[str, float]:
    floors: dict[str, float] = {}
    script = str(infra.BENCH_DIR / "floors.py")
    ws_port, http_port = infra.free_port(), infra.free_port()
    ws_proc = ctx.cleanup.popen([sys.executable, script, "ws", str(ws_port)])
    http_proc = ctx.cleanup.popen([sys.executable, script, "http", str(http_port)])
    infra.wait_port(ws_port, ws_proc, "websocket echo server", None)
    infra.wait_port(http_port, http_proc, "uvicorn JSON server", None)
    message = '{"id": "s1", "version": "v1", "method": "task.run", "params": {"task_id": 1}}'
    async with connect(f"ws://127.0.0.1:{ws_port}", compression=None) as ws:

        async def echo() -> None:
            await ws.send(message)
            await ws.recv()

        floors["websocket echo"] = await _timed(
            ctx, "machine", "websocket echo", echo, FLOOR_SAMPLES
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:

        async def post() -> None:
            (await client.post("/", json=BODY)).raise_for_status()

        floors["http round trip"] = await _timed(
            ctx, "machine", "uvicorn JSON round trip", post, FLOOR_SAMPLES
        )
    floors["sqlite commit"] = await _sqlite_commit(ctx)
    if ctx.pg is not None and POSTGRES in ctx.backends:
        floors["postgresql commit"] = await _pg_commit(ctx)
    return floors


async def _sqlite_commit(ctx: Context) -> float:
    db = sqlite3.connect(ctx.workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # the server's default (Settings)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")

    async def commit() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
        db.execute("COMMIT")

    try:
        return await _timed(ctx, "machine", "SQLite commit (WAL, NORMAL)", commit, FLOOR_SAMPLES)
    finally:
        db.close()


async def _pg_commit(ctx: Context) -> float:
    import asyncpg

    url = await ctx.new_db(POSTGRES, "floor")
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")

    async def commit() -> None:
        await conn.execute("INSERT INTO t (v) VALUES ($1)", "x" * 100)

    try:
        return await _timed(ctx, "machine", "PostgreSQL commit (INSERT)", commit, FLOOR_SAMPLES)
    finally:
        await conn.close()


async def taskfleet(ctx: Context, backend: str, samples: int) -> float:
    db = await ctx.new_db(backend, "latency")
    await seed.migrate(db)
    await seed.add_agents(db, ["lat0"])
    server = infra.start_server(ctx.cleanup, db, ctx.workdir)
    secret = secret_file(ctx.workdir)
    argv = [sys.executable, str(infra.BENCH_DIR / "agent_main.py"), server.base, "lat0"]
    ctx.cleanup.popen(
        [*argv, str(secret), str(ctx.workdir / f"lat0-{server.port}.spool")],
        log=ctx.workdir / "lat0.log",
    )
    await wait_online(server, ["lat0"])
    async with httpx.AsyncClient(
        base_url=server.base, headers=infra.admin_headers(), timeout=30
    ) as client:
        for _ in range(WARMUP):
            await _one(client)
        with ctx.profiler.record(f"latency-{backend}", server.pid):
            rows = [await _one(client) for _ in range(samples)]
    finished = await _finished_at(db, [r[0] for r in rows])
    to_agent = [(r[2] - r[1]) * 1e3 for r in rows]
    recorded = [(finished[r[0]] - r[1]) * 1e3 for r in rows]
    seen = [(r[3] - r[1]) * 1e3 for r in rows]
    r = ctx.results
    r.add(WORKLOAD, backend, "submit to agent p50", median(to_agent), "ms")
    r.add(WORKLOAD, backend, "submit to agent p99", percentile(to_agent, 99), "ms")
    r.add(WORKLOAD, backend, "submit to result recorded p50", median(recorded), "ms")
    r.add(WORKLOAD, backend, "submit to result recorded p99", percentile(recorded, 99), "ms")
    r.add(WORKLOAD, backend, "submit to result seen (/wait) p50", median(seen), "ms")
    r.add(WORKLOAD, backend, "POST /tasks round trip p50", median([x[4] for x in rows]), "ms")
    return median(to_agent)


async def _one(client: httpx.AsyncClient) -> tuple[int, float, float, float, float]:
    """(id, submitted, agent had it, client saw the result, POST round trip ms)"""
    submitted = time.time()
    response = await client.post("/api/v1/tasks", json=BODY)
    acked = time.time()
    response.raise_for_status()
    task_id = response.json()[0]["id"]
    done = await client.get(f"/api/v1/tasks/{task_id}/wait", params={"timeout": 10})
    seen = time.time()
    task = done.json()
    if task["status"] != "completed":
        raise RuntimeError(f"task {task_id} is {task['status']}: {task.get('error')}")
    return task_id, submitted, float(task["result"]["t"]), seen, (acked - submitted) * 1e3


async def _finished_at(db: str, ids: list[int]) -> dict[int, float]:
    if db.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(db)
        try:
            query = "SELECT id, finished_at FROM tasks WHERE id = ANY($1::bigint[])"
            rows = await conn.fetch(query, ids)
        finally:
            await conn.close()
        return {int(r["id"]): float(r["finished_at"]) for r in rows}
    conn2 = sqlite3.connect(db)
    try:
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, finished_at FROM tasks WHERE id IN ({marks})"
        return {int(i): float(f) for i, f in conn2.execute(query, ids)}
    finally:
        conn2.close()
