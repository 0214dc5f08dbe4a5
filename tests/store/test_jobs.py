"""Jobs in the store, on SQLite and PostgreSQL (`store` is parametrized): submission in one
transaction, dependencies and job priority in the claim, per-agent failures, the
blacklist, requeueing a job's failed tasks, giving a task back, and bounded outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from taskfleet.core import errors
from taskfleet.core.models import Agent, Job, NewTask, Task, TaskStatus
from taskfleet.store.sql import SqlStore
from tests.store.test_store import LEASE, NOW, claim, claim_one, make_agent, stored

JOB = Job(id=0, name="shot", type="render", priority=0, settings={"user": "ann"})


def new(
    type: str = "render", priority: int = 0, fail_limit: int = 3, job_priority: int = 0
) -> NewTask:
    return NewTask(
        type=type,
        priority=priority,
        fail_limit=fail_limit,
        max_attempts=100,
        job_priority=job_priority,
    )


async def add_job(
    store: SqlStore,
    tasks: Sequence[NewTask],
    edges: Sequence[tuple[int, int]] = (),
    priority: int = 0,
) -> list[Task]:
    job = Job(id=0, name="shot", type="render", priority=priority, settings={})
    queued = [replace(t, job_priority=priority) for t in tasks]
    _, created = await store.add_job_with_tasks(job, queued, edges, NOW)
    return created


async def fail(
    store: SqlStore, task: Task, agent: Agent, candidates: Sequence[Agent], threshold: int = 3
) -> Task:
    done, recorded = await store.fail_task(
        task.id,
        agent.id,
        task.attempt,
        f"{agent.name} failed",
        NOW + 1,
        blacklist_threshold=threshold,
        candidates=[a.id for a in candidates],
    )
    assert recorded
    return done


async def test_a_job_and_its_tasks_are_stored_together(store: SqlStore) -> None:
    job, created = await store.add_job_with_tasks(JOB, [new(), new(), new()], [(2, 0), (2, 1)], NOW)

    assert job.id > 0 and job.settings == {"user": "ann"}
    assert [t.job_id for t in created] == [job.id] * 3
    assert await store.task_parent_ids(created[2].id) == [created[0].id, created[1].id]
    [summary] = await store.job_summaries(10, job.id)
    assert summary.counts == {TaskStatus.QUEUED: 3} and summary.status == "queued"


async def test_a_failing_insert_leaves_no_job_behind(store: SqlStore) -> None:
    with pytest.raises(errors.Conflict):
        await store.add_job_with_tasks(JOB, [new(), new()], [(0, 1), (0, 1)], NOW)
    assert await store.job_summaries(10) == []


async def test_a_task_waits_until_every_parent_completed(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    first, second, last = await add_job(store, [new(), new(), new(priority=9)], [(2, 0), (2, 1)])

    got = [await claim_one(store, agent), await claim_one(store, agent)]
    assert {t.id for t in got} == {first.id, second.id}
    assert await claim(store, agent) is None
    for task in got[:1]:
        await store.finish_task(task.id, agent.id, task.attempt, TaskStatus.COMPLETED, 1, None, NOW)
    assert await claim(store, agent) is None  # one parent is still running
    await store.finish_task(got[1].id, agent.id, got[1].attempt, TaskStatus.COMPLETED, 1, None, NOW)
    assert (await claim_one(store, agent)).id == last.id


async def test_job_priority_orders_the_queue_before_task_priority(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    [low] = await store.add_tasks([new(priority=50, job_priority=1)], NOW)
    [high] = await store.add_tasks([new(priority=-5, job_priority=9)], NOW)
    [high_first] = await store.add_tasks([new(priority=0, job_priority=9)], NOW)

    order = [await claim_one(store, agent) for _ in range(3)]
    assert [t.id for t in order] == [high_first.id, high.id, low.id]


async def test_a_failure_below_the_limit_requeues_for_other_agents(store: SqlStore) -> None:
    a, b, c = [await make_agent(store, n) for n in "abc"]
    [task] = await add_job(store, [new(fail_limit=2)])

    requeued = await fail(store, await claim_one(store, a), a, [a, b, c])
    assert requeued.status is TaskStatus.QUEUED and requeued.lease_owner is None
    assert requeued.error == "a failed"
    assert await claim(store, a) is None  # a failed it: never offered to a again
    again = await claim_one(store, b)
    final = await fail(store, again, b, [a, b, c])
    assert final.status is TaskStatus.FAILED
    assert final.error == "failed by 2 agents (the limit is 2); the last failure: b failed"
    failures = await store.failures_of_task(task.id)
    assert [(f.agent_name, f.attempt) for f in failures] == [("a", 1), ("b", 2)]


async def test_a_repeated_failure_is_accepted_once_and_a_stale_one_conflicts(
    store: SqlStore,
) -> None:
    a, b = await make_agent(store, "a"), await make_agent(store, "b")
    await add_job(store, [new()])
    task = await claim_one(store, a)
    await fail(store, task, a, [a, b])

    again, recorded = await store.fail_task(
        task.id, a.id, task.attempt, "x", NOW, blacklist_threshold=3, candidates=[a.id, b.id]
    )
    assert not recorded and again.status is TaskStatus.QUEUED
    with pytest.raises(errors.Conflict):
        await store.fail_task(
            task.id, b.id, task.attempt, "x", NOW, blacklist_threshold=3, candidates=[]
        )
    with pytest.raises(errors.NotFound):
        await store.fail_task(task.id + 99, a.id, 1, "x", NOW, blacklist_threshold=3, candidates=[])


async def test_a_task_nobody_is_left_to_run_fails_with_its_dependents(store: SqlStore) -> None:
    a, b = await make_agent(store, "a"), await make_agent(store, "b")
    _, child, grandchild = await add_job(store, [new(), new(), new()], [(1, 0), (2, 1)])

    await fail(store, await claim_one(store, a), a, [a, b])
    final = await fail(store, await claim_one(store, b), b, [a, b])

    assert final.status is TaskStatus.FAILED
    assert final.error is not None and final.error.startswith("no agent left to run it")
    for dependent in (child, grandchild):
        lost = await stored(store, dependent.id)
        assert (lost.status, lost.error) == (TaskStatus.FAILED, "a task it depends on failed")


async def test_an_agent_is_blacklisted_after_failing_enough_tasks_of_a_type(
    store: SqlStore,
) -> None:
    a, b = await make_agent(store, "a"), await make_agent(store, "b")
    created = await add_job(store, [new(priority=9 - n) for n in range(4)] + [new(type="encode")])

    for _ in range(2):
        await fail(store, await claim_one(store, a), a, [a, b], threshold=2)
    assert [e.agent_name for e in await store.blacklist_of_job(created[0].job_id or 0)] == ["a"]
    # Neither the untried render nor the failed ones go to a; other types still do.
    assert (await claim_one(store, a)).id == created[4].id
    assert (await claim_one(store, b)).id == created[0].id


async def test_when_every_agent_is_blacklisted_the_queued_tasks_of_that_type_fail(
    store: SqlStore,
) -> None:
    a = await make_agent(store, "a")
    created = await add_job(store, [new(priority=2), new(priority=1), new()])

    await fail(store, await claim_one(store, a), a, [a], threshold=1)

    assert {(await stored(store, t.id)).status for t in created} == {TaskStatus.FAILED}
    assert "blacklisted" in ((await stored(store, created[2].id)).error or "")


async def test_requeue_failed_forgets_failures_and_the_blacklist(store: SqlStore) -> None:
    a = await make_agent(store, "a")
    done, failed, child = await add_job(
        store, [new(priority=1), new(fail_limit=1), new()], [(2, 1)]
    )
    first = await claim_one(store, a)
    await store.finish_task(first.id, a.id, first.attempt, TaskStatus.COMPLETED, 1, None, NOW)
    await fail(store, await claim_one(store, a), a, [a], threshold=1)
    assert (await stored(store, child.id)).status is TaskStatus.FAILED

    requeued = await store.requeue_failed_tasks(done.job_id or 0, NOW + 2, 100)

    assert [t.id for t in requeued] == [failed.id, child.id]
    assert all(t.status is TaskStatus.QUEUED and t.error is None for t in requeued)
    assert await store.failures_of_task(failed.id) == []
    assert await store.blacklist_of_job(done.job_id or 0) == []
    again = await claim_one(store, a)
    assert again.id == failed.id and again.attempt == 2  # attempts never repeat


async def test_a_single_requeue_forgets_the_task_s_failures(store: SqlStore) -> None:
    a = await make_agent(store, "a")
    [task] = await store.add_tasks([NewTask(type="t")], NOW)
    await fail(store, await claim_one(store, a), a, [a])
    await store.requeue_task(task.id, NOW + 2, 3)
    assert (await claim_one(store, a)).id == task.id


async def test_a_released_task_goes_back_to_the_queue(store: SqlStore) -> None:
    a, b = await make_agent(store, "a"), await make_agent(store, "b")
    [task] = await store.add_tasks([NewTask(type="t", max_attempts=2)], NOW)
    first = await claim_one(store, a)

    released = await store.release_task(task.id, a.id, first.attempt, NOW + 1)
    assert released.status is TaskStatus.QUEUED and released.lease_owner is None
    with pytest.raises(errors.Conflict):
        await store.release_task(task.id, a.id, first.attempt, NOW + 1)
    with pytest.raises(errors.NotFound):
        await store.release_task(task.id + 99, a.id, 1, NOW + 1)
    last = await claim_one(store, b)
    ended = await store.release_task(task.id, b.id, last.attempt, NOW + 2)
    assert ended.status is TaskStatus.FAILED  # that was the last attempt allowed


async def test_job_outputs_keep_the_newest_within_the_bound(store: SqlStore) -> None:
    [task] = await add_job(store, [new()])
    job_id = task.job_id or 0
    for n in range(5):
        await store.add_job_output(job_id, task.id, None, NOW + n, {"paths": [f"{n}.png"]}, 3)

    kept = await store.list_job_outputs(job_id, limit=10)
    assert [o.data for o in kept] == [{"paths": [f"{n}.png"]} for n in (2, 3, 4)]
    assert [o.data for o in await store.list_job_outputs(job_id, limit=1)] == [{"paths": ["4.png"]}]


async def test_job_summaries_count_tasks_newest_job_first(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    older = await add_job(store, [new(), new()])
    newer = await add_job(store, [new()])
    await store.claim_task(agent, NOW, LEASE)

    summaries = await store.job_summaries(10)
    assert [s.job.id for s in summaries] == [newer[0].job_id, older[0].job_id]
    assert summaries[0].counts == {TaskStatus.QUEUED: 1}
    assert summaries[1].counts == {TaskStatus.ACTIVE: 1, TaskStatus.QUEUED: 1}  # oldest first
    assert (summaries[1].status, summaries[1].total) == ("active", 2)
