"""Fleet size: N idle agents on one server, its memory per agent, and a broadcast to all.

Two kinds of agent, each on a fresh server (so one does not inherit the other's memory):
native websocket agents (`fleet_client.py ws`: the protocol's hello, then idle, many per
process) and dutserver long-pollers (`fleet_client.py dut`). Memory per agent is the
server's RSS with all N connected and quiet, minus its RSS before the first connected,
over N. The broadcast is one POST /api/v1/tasks with `broadcast` to the group holding all
N agents (one task per member); its time runs from just before the POST to the moment
the last agent had its task.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import infra
import seed
from common import Context

WORKLOAD = "fleet"
PER_PROCESS = 2500  #: agents per client process
WARM_AGENTS = 50  #: connected before the baseline RSS is read
TASK_TYPE = {"ws": "noop", "dut": "dut"}
KIND_NAME = {"ws": "websocket", "dut": "dut long-poll"}


async def run(ctx: Context, sizes: list[int]) -> None:
    for n in sizes:
        for backend in ctx.backends:
            for kind in ("ws", "dut"):
                mark = ctx.cleanup.mark()
                label = f"{KIND_NAME[kind]}, N={n:,}"
                try:
                    await one(ctx, backend, kind, n, label)
                except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
                    why = f"{type(exc).__name__}: {exc}"[:500]
                    ctx.results.add(WORKLOAD, backend, f"{label}: failed", None, "", why)
                finally:
                    ctx.cleanup.run_now(mark)


@dataclass
class Clients:
    status_files: list[Path]

    def read(self) -> dict[str, Any]:
        total: dict[str, Any] = {"connected": 0, "received": 0, "errors": 0, "samples": []}
        total["first"], total["last"] = math.inf, 0.0
        for path in self.status_files:
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for key in ("connected", "received", "errors"):
                total[key] += state[key]
            total["samples"] += state["samples"]
            if state["first"]:
                total["first"] = min(total["first"], state["first"])
            total["last"] = max(total["last"], state["last"])
        return total

    async def wait(self, key: str, count: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (now := self.read())[key] + now["errors"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{now[key]} of {count} {key} after {timeout:.0f} s; errors: {now['samples']}"
                )
            await asyncio.sleep(0.05)
        return now


def start_clients(ctx: Context, server: infra.Server, kind: str, names: range) -> Clients:
    """Client processes for the agents fleet<i> with i in `names`."""
    files = []
    for first in range(names.start, names.stop, PER_PROCESS):
        status = ctx.workdir / f"fleet-{kind}-{server.port}-{first}.json"
        files.append(status)
        count = min(PER_PROCESS, names.stop - first)
        argv = [sys.executable, str(infra.BENCH_DIR / "fleet_client.py"), kind, "127.0.0.1"]
        argv += [str(server.port), str(first), str(count), str(status)]
        ctx.cleanup.popen(argv, log=ctx.workdir / f"fleet-{kind}-{first}.log")
    return Clients(files)


async def one(ctx: Context, backend: str, kind: str, n: int, label: str) -> None:
    r = ctx.results
    db = await ctx.new_db(backend, f"fleet_{kind}")
    await seed.migrate(db)
    await seed.add_agents(db, [f"fleet{i}" for i in range(n)], group="fleet")
    server = infra.start_server(ctx.cleanup, db, ctx.workdir)
    # A few agents first, so that what the first connection loads or caches once is in
    # the baseline and not counted as memory per agent.
    warm = max(1, min(WARM_AGENTS, n // 10))
    early = start_clients(ctx, server, kind, range(warm))
    await early.wait("connected", warm, 60)
    infra.settle(server.pid, quiet=0.1, timeout=30)
    idle_rss = infra.rss_kib(server.pid)
    started = time.monotonic()
    rest = start_clients(ctx, server, kind, range(warm, n))
    clients = Clients(early.status_files + rest.status_files)
    timeout = max(120.0, n / 40)
    try:
        now = await clients.wait("connected", n, timeout)
        all_in = now["connected"] == n
    except TimeoutError:
        now, all_in = clients.read(), False
    connect_s = time.monotonic() - started
    infra.settle(server.pid, quiet=0.1, timeout=30)
    full_rss = infra.rss_kib(server.pid)
    cpu_before = infra.cpu_seconds(server.pid)
    with ctx.profiler.record(f"fleet-{kind}-{backend}-{n}-idle", server.pid):
        await asyncio.sleep(5)
    idle_cpu = (infra.cpu_seconds(server.pid) - cpu_before) / 5
    connected = now["connected"]
    note = "" if all_in else f"the rest failed (errors below) or took over {timeout:.0f} s"
    r.add(WORKLOAD, backend, f"{label}: agents connected", connected, "agents", note)
    if now["errors"]:
        r.add(
            WORKLOAD, backend, f"{label}: errors connecting", now["errors"], "", now["samples"][0]
        )
    r.add(WORKLOAD, backend, f"{label}: time to connect all but {warm}", connect_s, "s")
    r.add(WORKLOAD, backend, f"{label}: server RSS", full_rss / 1024, "MiB")
    per_agent = (full_rss - idle_rss) / max(1, connected - warm)
    r.add(WORKLOAD, backend, f"{label}: server memory per agent", per_agent, "KiB")
    r.add(WORKLOAD, backend, f"{label}: server CPU, all idle", idle_cpu * 100, "% of a core")
    if not all_in:
        r.add(WORKLOAD, backend, f"{label}: broadcast", None, "", "not tried: agents missing")
        return
    with ctx.profiler.record(f"fleet-{kind}-{backend}-{n}-broadcast", server.pid):
        await broadcast(ctx, backend, kind, server, clients, n, label)


async def broadcast(
    ctx: Context,
    backend: str,
    kind: str,
    server: infra.Server,
    clients: Clients,
    n: int,
    label: str,
) -> None:
    r, budget = ctx.results, max(120.0, n / 50)
    body = {"type": TASK_TYPE[kind], "group": "fleet", "broadcast": True, "payload": {}}
    async with httpx.AsyncClient(
        base_url=server.base, headers=infra.admin_headers(), timeout=budget
    ) as client:
        submitted = time.time()
        try:
            response = await client.post("/api/v1/tasks", json=body)
        except httpx.TimeoutException:
            now = clients.read()
            note = f"POST /api/v1/tasks not answered within {budget:.0f} s"
            r.add(WORKLOAD, backend, f"{label}: broadcast delivered", now["received"], "", note)
            return
        acked = time.time()
    if response.status_code != 201:
        raise RuntimeError(f"broadcast: {response.status_code} {response.text[:300]}")
    r.add(WORKLOAD, backend, f"{label}: broadcast POST answered", acked - submitted, "s")
    try:
        now = await clients.wait("received", n, budget)
    except TimeoutError:
        now = clients.read()
        note = f"{now['received']:,} of {n:,} within {budget:.0f} s"
        r.add(WORKLOAD, backend, f"{label}: broadcast delivered", now["received"], "", note)
        return
    r.add(WORKLOAD, backend, f"{label}: broadcast first delivered", now["first"] - submitted, "s")
    r.add(WORKLOAD, backend, f"{label}: broadcast to all delivered", now["last"] - submitted, "s")
