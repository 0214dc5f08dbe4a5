"""Queue depth: how long one claim takes with 1k, 100k and 1M tasks queued.

The queue is filled straight into the database (`seed.queue_tasks`: executemany on SQLite,
COPY then ANALYZE on PostgreSQL): queued `noop` tasks for any agent, priority 0. At each
depth, two kinds of claim by one agent (task types [`noop`]), one after the other:
the store's `claim_task` called in this process (the query and its write transaction
alone), and `POST /api/v1/agent/claim?wait=0` on a running server (the whole path: HTTP,
authentication, `seen`, the claim, the JSON answer). Each claim takes a task; the queue is
filled that much deeper first, so it ends each round at the stated depth.
"""

from __future__ import annotations

import base64
import dataclasses
import time

import httpx
import infra
import seed
from common import Context, median, percentile

from taskfleet.store.sql import SqlStore, open_store

WORKLOAD = "depth"
CLAIMS = 200  #: claims of each kind at each depth, unless they take long:
BUDGET_SECONDS = 15.0  #: past this, stop at MIN_CLAIMS
MIN_CLAIMS = 10
LEASE_SECONDS = 3600.0


async def run(ctx: Context, depths: list[int]) -> None:
    for backend in ctx.backends:
        mark = ctx.cleanup.mark()
        try:
            await one(ctx, backend, sorted(depths))
        finally:
            ctx.cleanup.run_now(mark)


async def one(ctx: Context, backend: str, depths: list[int]) -> None:
    db = await ctx.new_db(backend, "depth")
    await seed.migrate(db)
    await seed.add_agents(db, ["depth0"])
    server = infra.start_server(ctx.cleanup, db, ctx.workdir)
    store = await open_store(db)
    auth = base64.b64encode(f"depth0:{infra.SECRET}".encode()).decode()
    queued = 0
    p50: dict[tuple[str, int], float] = {}
    try:
        async with httpx.AsyncClient(
            base_url=server.base, headers={"Authorization": f"Basic {auth}"}, timeout=60
        ) as client:
            hello = {"version": "bench", "platform": "bench", "task_types": ["noop"], "tags": []}
            (await client.post("/api/v1/agent/hello", json=hello)).raise_for_status()
            for depth in depths:
                started = time.monotonic()
                await seed.queue_tasks(db, depth + 2 * CLAIMS - queued)
                fill_s = time.monotonic() - started
                note = f"{depth:,} queued"
                ctx.results.add(WORKLOAD, backend, "fill time", fill_s, "s", note)
                p50["store", depth] = await _store_claims(ctx, backend, store, note)
                with ctx.profiler.record(f"depth-{backend}-{depth}", server.pid):
                    p50["http", depth] = await _http_claims(ctx, backend, client, note)
                queued = depth
    finally:
        await store.close()
    low, high = depths[0], depths[-1]
    for kind, label in (("store", "store call"), ("http", "HTTP")):
        ratio = p50[kind, high] / p50[kind, low]
        ctx.results.add(
            WORKLOAD, backend, f"claim p50 ratio, {label}", ratio, "x", f"{high:,} vs {low:,}"
        )


async def _store_claims(ctx: Context, backend: str, store: SqlStore, note: str) -> float:
    agent = await store.get_agent("depth0")
    assert agent is not None
    agent = dataclasses.replace(agent, task_types=("noop",))
    took: list[float] = []
    began = time.monotonic()
    while _more(took, began):
        started = time.perf_counter()
        task = await store.claim_task(agent, time.time(), LEASE_SECONDS)
        took.append((time.perf_counter() - started) * 1e3)
        if task is None:
            raise RuntimeError("the queue ran dry")
    note += f", {len(took)} claims"
    ctx.results.add(WORKLOAD, backend, "claim p50, store call", median(took), "ms", note)
    ctx.results.add(WORKLOAD, backend, "claim p99, store call", percentile(took, 99), "ms", note)
    return median(took)


async def _http_claims(ctx: Context, backend: str, client: httpx.AsyncClient, note: str) -> float:
    took: list[float] = []
    began = time.monotonic()
    while _more(took, began):
        started = time.perf_counter()
        response = await client.post("/api/v1/agent/claim", params={"wait": 0})
        took.append((time.perf_counter() - started) * 1e3)
        if response.status_code != 200:
            raise RuntimeError(f"claim: {response.status_code} {response.text[:200]}")
    note += f", {len(took)} claims"
    ctx.results.add(WORKLOAD, backend, "claim p50, HTTP", median(took), "ms", note)
    ctx.results.add(WORKLOAD, backend, "claim p99, HTTP", percentile(took, 99), "ms", note)
    return median(took)


def _more(took: list[float], began: float) -> bool:
    if len(took) >= CLAIMS:
        return False
    return len(took) < MIN_CLAIMS or time.monotonic() - began < BUDGET_SECONDS
