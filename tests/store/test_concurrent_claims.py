"""Several OS processes claim from one database at once: every task is claimed exactly once.

Each worker process opens its own store with its own agent, waits at a start line so
that all of them race, then claims and completes until the queue is empty.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

from taskfleet.core.models import NewTask, TaskFilter, TaskStatus
from taskfleet.store.sql import SqlStore

TASKS = 300
WORKERS = 4
START_SECONDS = 60.0
RUN_SECONDS = 90.0

WORKER = """
import asyncio, json, sys
from taskfleet.core.models import TaskStatus
from taskfleet.store.sql import open_store

async def main(url: str, name: str) -> None:
    store = await open_store(url)
    agent = await store.add_agent(name, None, 0.0)
    print("ready", flush=True)
    sys.stdin.readline()
    claimed = []
    while (task := await store.claim_task(agent, 1.0, 3600.0)) is not None:
        claimed.append([task.id, task.attempt])
        await store.finish_task(
            task.id, agent.id, task.attempt, TaskStatus.COMPLETED, name, None, 2.0
        )
    # The queue looked empty to this claimer; what was left could only be rows other
    # claimers were taking at that very moment.
    left = (await store.count_tasks_by_status()).get(TaskStatus.QUEUED, 0)
    await store.close()
    print(json.dumps({"agent_id": agent.id, "claimed": claimed, "queued_left": left}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def run_workers(url: str, count: int) -> list[dict[str, Any]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            f"worker-{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), START_SECONDS)
            if line != b"ready\n":
                _, err = await proc.communicate()
                raise AssertionError(f"worker did not start: {line!r}\n{err.decode()}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), RUN_SECONDS
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    return [json.loads(out) for out, _ in outputs]


async def test_concurrent_processes_claim_each_task_exactly_once(
    store: SqlStore, db_url: str
) -> None:
    queued = await store.add_tasks([NewTask(type="t", payload=n) for n in range(TASKS)], 0.0)

    results = await run_workers(db_url, WORKERS)

    pairs = [tuple(pair) for r in results for pair in r["claimed"]]
    duplicates = [pair for pair, seen in Counter(pairs).items() if seen > 1]
    assert duplicates == []
    assert sorted(task_id for task_id, _ in pairs) == [t.id for t in queued]
    assert {attempt for _, attempt in pairs} == {1}
    assert await store.count_tasks_by_status() == {TaskStatus.COMPLETED: TASKS}
    owner = {task_id: r["agent_id"] for r in results for task_id, _ in r["claimed"]}
    for task in await store.list_tasks(TaskFilter(limit=TASKS)):
        assert task.lease_owner == owner[task.id] and task.attempt == 1
    # Claims ran side by side, and a claimer saw an empty queue only at the very end.
    assert sum(1 for r in results if r["claimed"]) >= 2
    assert all(r["queued_left"] < WORKERS for r in results), results
