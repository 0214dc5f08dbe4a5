"""Throughput: M no-op tasks submitted in batches, run by K agents of concurrency C, until
every result is recorded; then the same on Celery with Redis (broker and result backend),
K workers of C threads each, in the same run.

taskfleet: `echo` tasks with a null payload (the agent's built-in no-op), submitted through
POST /api/v1/tasks/batch, run by K `python -m taskfleet.agent run` processes over the
websocket. The clock starts before the first batch and stops when the database holds M
completed tasks. Celery: a `noop` task, `group(...).apply_async()` per batch, K
`celery worker -P threads -c C` processes; it stops when the result backend holds M results.
Both are warmed up first with K x C tasks that are not counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import httpx
import infra
import seed
from common import Context, Counts, agent_argv, secret_file, submit_batches, wait_online

from taskfleet.config import Settings

WORKLOAD = "throughput"
NOOP = {"type": "echo", "payload": None}


@dataclass(frozen=True)
class Size:
    tasks: int
    agents: int
    concurrency: int
    batch: int


def size(quick: bool, agents: int, concurrency: int) -> Size:
    return Size(tasks=2_000 if quick else 10_000, agents=agents, concurrency=concurrency, batch=500)


def durability() -> dict[str, str]:
    """What each system promises about a commit, as this bench runs it."""
    sync = Settings().sqlite_synchronous  # the server's default; the bench keeps it
    return {
        "sqlite": f"WAL, synchronous={sync}: a committed task or result survives kill -9 of "
        "the server (the WAL is in the OS page cache); a power cut or OS crash may lose the "
        "last commits (FULL would fsync each commit)",
        "postgresql": "PostgreSQL defaults, fsync=on, synchronous_commit=on: a commit survives "
        "kill -9 and power loss",
        "celery+redis": "redis-server defaults, RDB snapshots, no append-only file: a kill -9 or "
        "power cut of Redis loses queued tasks and results since the last snapshot; Celery "
        "acks a task when a worker takes it (acks_late off)",
    }


async def run(ctx: Context, sz: Size) -> None:
    ctx.results.meta["durability"] = durability()
    ctx.results.meta["throughput_size"] = dataclasses.asdict(sz)
    for system, promise in durability().items():
        print(f"  durability, {system}: {promise}")
    rates: dict[str, float] = {}
    for backend in ctx.backends:
        rate = await taskfleet(ctx, backend, sz)
        if rate is not None:
            rates[backend] = rate
    for backend in ctx.backends:
        await kill_check(ctx, backend, sz)
    celery_rate = await celery(ctx, sz)
    for backend, rate in rates.items():
        ratio = rate / celery_rate if celery_rate else None
        ctx.results.add(WORKLOAD, backend, "taskfleet / Celery+Redis", ratio, "x")


async def taskfleet(ctx: Context, backend: str, sz: Size) -> float | None:
    mark = ctx.cleanup.mark()
    try:
        return await _taskfleet(ctx, backend, sz)
    finally:
        ctx.cleanup.run_now(mark)


async def _taskfleet(ctx: Context, backend: str, sz: Size) -> float | None:
    db = await ctx.new_db(backend, "throughput")
    names = [f"tp{i}" for i in range(sz.agents)]
    await seed.migrate(db)
    await seed.add_agents(db, names)
    server = infra.start_server(ctx.cleanup, db, ctx.workdir)
    secret = secret_file(ctx.workdir)
    agents = [
        ctx.cleanup.popen(
            agent_argv(server, name, secret, sz.concurrency), log=ctx.workdir / f"{name}.log"
        )
        for name in names
    ]
    await wait_online(server, names)
    counts = await Counts(db).open()
    try:
        async with httpx.AsyncClient(
            base_url=server.base, headers=infra.admin_headers(), timeout=60
        ) as client:
            warm = sz.agents * sz.concurrency
            await submit_batches(client, warm, sz.batch, NOOP)
            await counts.wait_status("completed", warm, 60)
            cpu = [infra.cpu_seconds(p.pid) for p in (server.proc, *agents)]
            calls = infra.syscalls(server.pid)
            with ctx.profiler.record(f"throughput-{backend}", server.pid):
                started = time.monotonic()
                await submit_batches(client, sz.tasks, sz.batch, NOOP)
                submitted = time.monotonic() - started
                ended = await counts.wait_settled(warm + sz.tasks, 1800)
        failed = await counts.status("failed")
    finally:
        await counts.close()
    elapsed = ended - started
    server_cpu = infra.cpu_seconds(server.pid) - cpu[0]
    reads, writes = (
        now - then for now, then in zip(infra.syscalls(server.pid), calls, strict=True)
    )
    agent_cpu = sum(infra.cpu_seconds(p.pid) for p in agents) - sum(cpu[1:])
    rate = sz.tasks / elapsed
    r = ctx.results
    r.add(WORKLOAD, backend, "tasks/s (submit to every result recorded)", rate, "tasks/s")
    r.add(WORKLOAD, backend, "submit only (batches of 500)", sz.tasks / submitted, "tasks/s")
    r.add(WORKLOAD, backend, "server CPU per task", server_cpu / sz.tasks * 1e3, "ms")
    r.add(WORKLOAD, backend, "agent CPU per task (all agents)", agent_cpu / sz.tasks * 1e3, "ms")
    r.add(WORKLOAD, backend, "server write system calls per task", writes / sz.tasks, "calls")
    r.add(WORKLOAD, backend, "server read system calls per task", reads / sz.tasks, "calls")
    r.add(WORKLOAD, backend, "failed tasks", failed, "tasks")
    return rate


async def kill_check(ctx: Context, backend: str, sz: Size) -> None:
    mark = ctx.cleanup.mark()
    try:
        await _kill_check(ctx, backend, sz)
    finally:
        ctx.cleanup.run_now(mark)


async def _kill_check(ctx: Context, backend: str, sz: Size) -> None:
    """`kill -9` of the server while the agents work through a quarter of M tasks, then a
    restart on the same database and port: every task the API accepted must be there, and
    must end completed exactly once (the agents replay their spooled results)."""
    db = await ctx.new_db(backend, "kill9")
    names = [f"k9_{i}" for i in range(sz.agents)]
    await seed.migrate(db)
    await seed.add_agents(db, names)
    server = infra.start_server(ctx.cleanup, db, ctx.workdir)
    secret = secret_file(ctx.workdir)
    for name in names:
        argv = agent_argv(server, name, secret, sz.concurrency)
        ctx.cleanup.popen(argv, log=ctx.workdir / f"{name}.log")
    await wait_online(server, names)
    total = max(sz.batch, sz.tasks // 4)
    counts = await Counts(db).open()
    try:
        async with httpx.AsyncClient(
            base_url=server.base, headers=infra.admin_headers(), timeout=60
        ) as client:
            accepted = await submit_batches(client, total, sz.batch, NOOP)
        await counts.wait_status("completed", total // 2, 300)
        infra.kill(server.proc)
        before = await counts.status("completed")
        server = infra.start_server(ctx.cleanup, db, ctx.workdir, port=server.port)
        try:
            await counts.wait_status("completed", total, 180)
        except TimeoutError as exc:
            print(f"  {exc}", flush=True)
        rows = await counts.query("SELECT status, count(*) FROM tasks GROUP BY status")
    finally:
        await counts.close()
    by_status = {str(s): int(n) for s, n in rows}
    r, kept = ctx.results, sum(by_status.values())
    note = f"killed with {before} of {total} completed; after restart: {by_status}"
    r.add(WORKLOAD, backend, "kill -9: accepted tasks lost", len(accepted) - kept, "tasks", note)
    lost = total - by_status.get("completed", 0)
    r.add(WORKLOAD, backend, "kill -9: tasks not completed after restart", lost, "tasks")


async def celery(ctx: Context, sz: Size) -> float | None:
    mark = ctx.cleanup.mark()
    try:
        return await asyncio.to_thread(_celery, ctx, sz)
    finally:
        ctx.cleanup.run_now(mark)


def _celery(ctx: Context, sz: Size) -> float:
    import celery_app
    import redis
    from celery import group

    port = infra.start_redis(ctx.cleanup, ctx.workdir)
    broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    env = {**os.environ, "BENCH_CELERY_BROKER": broker, "BENCH_CELERY_BACKEND": backend}
    env["PYTHONPATH"] = os.pathsep.join([str(infra.BENCH_DIR), env.get("PYTHONPATH", "")])
    workers = [
        ctx.cleanup.popen(
            [
                *(sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "threads"),
                *("-c", str(sz.concurrency), "-n", f"w{i}@bench", "-l", "warning"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            env=env,
            cwd=infra.BENCH_DIR,
            log=ctx.workdir / f"celery-w{i}.log",
        )
        for i in range(sz.agents)
    ]
    app = celery_app.make_app(broker, backend)
    noop = app.tasks["noop"]
    results = redis.Redis(port=port, db=1)
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5)) < sz.agents:
        if time.monotonic() > deadline:
            raise RuntimeError("Celery workers did not answer a ping")
    warm = sz.agents * sz.concurrency
    group(noop.s() for _ in range(warm)).apply_async()
    _wait_results(results, warm, 60)
    results.flushdb()
    cpu = [infra.cpu_seconds(w.pid) for w in workers]
    started = time.monotonic()
    for start in range(0, sz.tasks, sz.batch):
        group(noop.s() for _ in range(min(sz.batch, sz.tasks - start))).apply_async()
    submitted = time.monotonic() - started
    ended = _wait_results(results, sz.tasks, 600)
    worker_cpu = sum(infra.cpu_seconds(w.pid) for w in workers) - sum(cpu)
    rate = sz.tasks / (ended - started)
    r, name = ctx.results, "celery+redis"
    r.add(WORKLOAD, name, "tasks/s (submit to every result recorded)", rate, "tasks/s")
    r.add(WORKLOAD, name, "submit only (group of 500)", sz.tasks / submitted, "tasks/s")
    r.add(WORKLOAD, name, "worker CPU per task (all workers)", worker_cpu / sz.tasks * 1e3, "ms")
    return rate


def _wait_results(results: object, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (seen := int(results.dbsize())) < count:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen} of {count} Celery results after {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic()
