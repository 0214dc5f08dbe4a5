"""JobService and the failure rules of TaskService against a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core.models import Agent, NewJob, NewJobTask, NewTask, Role, TaskStatus
from taskfleet.services import Services, wire
from taskfleet.store.sql import open_store
from tests.core.test_services import ManualClock, agent_named

ECHO: tuple[dict[str, Any], ...] = ({"name": "echo", "settings": {"message": "hi"}},)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Services]:
    store = await open_store(str(tmp_path / "engine.db"))
    settings = Settings(task_fail_limit=2, blacklist_threshold=2, job_output_bound=2)
    yield wire(settings, store, LocalBus(), ManualClock())
    await store.close()


def job(*tasks: NewJobTask, **fields: Any) -> NewJob:
    return NewJob(name=fields.pop("name", "j"), tasks=tasks, **fields)


def task(name: str, *parents: int | str, type: str = "render", **kw: Any) -> NewJobTask:
    return NewJobTask(name=name, type=type, commands=kw.pop("commands", ECHO), parents=parents)


async def worker(found: Services, name: str, *types: str) -> Agent:
    agent = await agent_named(found, name)
    return await found.agents.hello(agent, task_types=types or ("render",))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (job(task("a", "b")), "no task 'b'"),
        (job(task("a", 5)), "not another task"),
        (job(task("a", 0)), "not another task"),
        (job(task("a", "b"), task("b", "c"), task("c", 0)), "cycle: a, b, c"),
        (job(task("a"), task("a")), "unique"),
        (job(task("a", commands=())), "non-empty list"),
        (job(task("a", commands=({"name": ""},))), "the name of command 0"),
        (job(task("a", commands=({"name": "x", "settings": []},))), "settings of command 0"),
        (job(task("a", commands=({"name": "x", "extra": 1},))), "command 0 must be"),
        (job(task("a"), fail_limit=0), "fail_limit"),
        (job(task("a"), priority=10**7), "priority"),
        (job(task("a"), name=""), "job name"),
        (job(task("a", type="")), "task type"),
    ],
)
async def test_bad_jobs_are_refused_whole(engine: Services, bad: NewJob, message: str) -> None:
    with pytest.raises(errors.Invalid, match=message):
        await engine.jobs.submit(bad)
    assert await engine.jobs.all() == []


async def test_a_job_is_queued_with_its_commands_and_priority(engine: Services) -> None:
    stored, created = await engine.jobs.submit(
        job(task("prep"), task("render", "prep"), task("encode", 1, type="enc"), priority=7)
    )

    assert [t.payload for t in created] == [
        {"name": n, "commands": list(ECHO)} for n in ("prep", "render", "encode")
    ]
    assert {(t.job_id, t.job_priority, t.fail_limit) for t in created} == {(stored.id, 7, 2)}
    assert await engine.jobs.parents(created[2].id) == [created[1].id]
    summary = await engine.jobs.get(stored.id)
    assert (summary.status, summary.total, summary.job.priority) == ("queued", 3, 7)
    with pytest.raises(errors.NotFound):
        await engine.jobs.get(stored.id + 1)


async def test_a_failure_soft_fails_then_blacklists_then_fails_for_good(
    engine: Services,
) -> None:
    a, b = await worker(engine, "a"), await worker(engine, "b")
    stored, created = await engine.jobs.submit(job(*(task(f"t{n}") for n in range(3))))

    for _ in range(2):
        claimed = await engine.tasks.claim(a)
        assert claimed is not None
        soft = await engine.tasks.fail(a, claimed.id, claimed.attempt, "boom")
        assert soft.status is TaskStatus.QUEUED
    assert [e.agent_name for e in await engine.jobs.blacklist(stored.id)] == ["a"]
    assert await engine.tasks.claim(a) is None
    claimed = await engine.tasks.claim(b)
    assert claimed is not None and claimed.id == created[0].id
    hard = await engine.tasks.fail(b, claimed.id, claimed.attempt, "boom too")
    assert hard.status is TaskStatus.FAILED
    assert hard.error == "failed by 2 agents (the limit is 2); the last failure: boom too"

    requeued = await engine.jobs.requeue_failed(stored.id)
    assert [t.id for t in requeued] == [created[0].id]
    assert await engine.jobs.blacklist(stored.id) == []
    assert await engine.tasks.claim(a) is not None


async def test_a_native_task_fails_at_once_as_before(engine: Services) -> None:
    a, _ = await worker(engine, "a"), await worker(engine, "b")
    [queued] = await engine.tasks.submit([NewTask(type="render")])
    claimed = await engine.tasks.claim(a)
    assert claimed is not None and claimed.id == queued.id

    failed = await engine.tasks.fail(a, claimed.id, claimed.attempt, "boom")
    assert (failed.status, failed.error) == (TaskStatus.FAILED, "boom")
    again = await engine.tasks.fail(a, claimed.id, claimed.attempt, "boom")
    assert again == failed


async def test_outputs_go_to_the_job_of_the_running_task(engine: Services) -> None:
    a = await worker(engine, "a")
    assert await engine.jobs.record_output(a, {"paths": ["x.png"]}) is None
    stored, _ = await engine.jobs.submit(job(task("t")))
    assert await engine.tasks.claim(a) is not None

    for n in range(3):
        await engine.jobs.record_output(a, {"paths": [f"{n}.png"]})
    kept = await engine.jobs.outputs(stored.id)
    assert [o.data["paths"] for o in kept] == [["1.png"], ["2.png"]]  # the bound is 2
    with pytest.raises(errors.NotFound):
        await engine.jobs.outputs(stored.id + 1)


async def test_a_vouched_registration_passes_a_closed_policy(engine: Services) -> None:
    with pytest.raises(errors.Forbidden):
        await engine.accounts.register_agent("w1", "secret")
    account = await engine.accounts.register_agent("w1", "secret", vouched=True)
    assert account.role is Role.AGENT
    assert (await engine.agents.get("w1")).enabled


async def test_a_job_may_start_empty_and_take_tasks_later(engine: Services) -> None:
    empty, created = await engine.jobs.submit(job())
    assert created == []
    assert (await engine.jobs.get(empty.id)).status == "queued"
    (later,) = await engine.tasks.submit([NewTask(type="echo", job_id=empty.id)])
    summary = await engine.jobs.get(empty.id)
    assert (later.job_id, summary.total) == (empty.id, 1)
